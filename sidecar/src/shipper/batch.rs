//! Batches by size: the exact encoded size of a report as edges are added (so a cut
//! stays under `--max-batch-bytes`), and splitting a batch the collector refused as too
//! large (413) into two halves.

use std::io::Write;
use std::path::PathBuf;

use whouses_wire::{Edge, Report};

/// A batch cut but not yet acknowledged.
#[derive(Debug)]
pub struct Pending {
    pub report: Report,
    /// Its spool file, when it was spooled.
    pub spool_path: Option<PathBuf>,
    /// An earlier attempt may have been stored (no answer seen, or it came from the spool
    /// of an earlier run). Such a batch is never split: its halves, under new seqs,
    /// would count again what the collector may already hold.
    pub maybe_stored: bool,
    /// Attempts in a row whose request could not be written to its end (see
    /// `client::SendError::Transport::write_failed`).
    pub write_failures: u32,
}

impl Pending {
    pub fn requests(&self) -> u64 {
        self.report
            .edges
            .iter()
            .fold(0u64, |a, e| a.saturating_add(e.counts.requests))
    }
}

/// Counts bytes instead of storing them.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn json_len<T: serde::Serialize>(v: &T) -> usize {
    let mut c = Counter(0);
    // Serialising plain structs into a counter cannot fail; 0 would only under-count.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// The encoded size of a report as edges are added: the envelope (everything but the
/// edges), each edge, and the commas between them.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    bytes: usize,
    edges: usize,
}

impl Size {
    /// `envelope` must have no edges yet.
    pub fn of_envelope(envelope: &Report) -> Size {
        Size {
            bytes: json_len(envelope),
            edges: 0,
        }
    }

    /// The size once `edge` is added.
    pub fn with(self, edge: &Edge) -> Size {
        Size {
            bytes: self.bytes + json_len(edge) + usize::from(self.edges > 0),
            edges: self.edges + 1,
        }
    }

    pub fn bytes(self) -> usize {
        self.bytes
    }
}

/// Split a report into two halves, each with half of its edges, lookups, bypass
/// observations and inbound calls, numbered `seqs`; everything else (instance, period,
/// side, declared names, addresses) is kept, so together they say exactly what the
/// original said.
pub fn split(report: &Report, seqs: (u64, u64)) -> (Report, Report) {
    fn halves<T: Clone>(v: &[T]) -> (Vec<T>, Vec<T>) {
        let (a, b) = v.split_at(v.len() / 2);
        (a.to_vec(), b.to_vec())
    }
    let (e1, e2) = halves(&report.edges);
    let (l1, l2) = halves(&report.lookups);
    let (b1, b2) = halves(&report.bypass);
    let (i1, i2) = halves(&report.inbound);
    let half = |seq, edges, lookups, bypass, inbound| Report {
        seq,
        edges,
        lookups,
        bypass,
        inbound,
        ..report.clone()
    };
    (half(seqs.0, e1, l1, b1, i1), half(seqs.1, e2, l2, b2, i2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::{Scheme, Timestamp, REPORT_VERSION};

    fn report(n: usize) -> Report {
        Report {
            version: REPORT_VERSION,
            service: "svc".into(),
            environment: "prod".into(),
            instance: "svc-1".into(),
            seq: 1_795_000_000_000_000,
            started_at: Timestamp(1),
            period_start: Timestamp(2),
            period_end: Timestamp(3),
            flush_interval_ms: 10_000,
            edges: (0..n)
                .map(|i| Edge {
                    host: format!("host-{i}.example"),
                    port: 80,
                    scheme: Scheme::Http,
                    counts: whouses_wire::Counts {
                        requests: i as u64,
                        connections: 1,
                        errors: 0,
                        bytes_sent: 0,
                        bytes_received: 12345,
                        first_seen: Timestamp(2),
                        last_seen: Timestamp(3),
                    },
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_size_is_exact() {
        for n in [0, 1, 2, 17] {
            let full = report(n);
            let mut size = Size::of_envelope(&Report {
                edges: vec![],
                ..full.clone()
            });
            for e in &full.edges {
                size = size.with(e);
            }
            assert_eq!(
                size.bytes(),
                serde_json::to_vec(&full).unwrap().len(),
                "{n}"
            );
        }
    }

    #[test]
    fn halves_keep_every_edge_once() {
        let r = report(5);
        let (a, b) = split(&r, (10, 11));
        assert_eq!((a.seq, b.seq), (10, 11));
        assert_eq!((a.edges.len(), b.edges.len()), (2, 3));
        let mut both = a.edges.clone();
        both.extend(b.edges.clone());
        assert_eq!(both, r.edges);
        assert_eq!(a.instance, r.instance);
        assert_eq!(b.period_end, r.period_end);
        let p = Pending {
            report: r,
            spool_path: None,
            maybe_stored: false,
            write_failures: 0,
        };
        assert_eq!(p.requests(), 10);
    }
}
