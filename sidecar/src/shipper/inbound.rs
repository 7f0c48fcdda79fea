//! Cutting the callee's view into a batch (issue 14): every batch says which side its
//! sidecar stands on and which addresses its instance holds (the address book); an
//! inbound sidecar's batches also carry the names it witnesses and the calls to its
//! service since the last cut, per name and caller address — within what is left of
//! `--max-batch-bytes` after the edges (what does not fit waits for the next cut, which
//! comes at once).

use whouses_wire::{Counts, InboundEdge, Report, Side, MAX_EDGES_PER_REPORT};

use super::batch::json_len;
use super::Core;

impl Core {
    /// The batch's side, declared names and addresses.
    pub(super) fn cut_identity(&self, report: &mut Report) {
        let obs = &self.settings.observers;
        if let Some(a) = &obs.addresses {
            report.addresses = a.current();
        }
        if obs.inbound.is_some() {
            report.side = Side::Callee;
            report.inbound_hosts = obs.inbound_hosts.clone();
        }
    }

    /// The inbound calls since the last cut; `used`: the batch's encoded size so far.
    pub(super) fn cut_inbound(&mut self, report: &mut Report, mut used: usize) {
        let Some(peers) = self.settings.observers.inbound.clone() else {
            return;
        };
        // `"inbound":[…]` and its comma.
        used = used.saturating_add(13);
        for (key, totals) in peers.snapshot() {
            let prev = self.cut_inbound.get(&key).copied().unwrap_or_default();
            let d = totals.since(&prev);
            if d.is_zero() {
                continue;
            }
            let edge = InboundEdge {
                host: key.host.to_string(),
                port: key.port,
                scheme: key.scheme,
                address: key.address(),
                counts: Counts {
                    requests: d.requests,
                    connections: d.connections,
                    errors: d.errors,
                    bytes_sent: d.bytes_sent,
                    bytes_received: d.bytes_received,
                    first_seen: d.first_seen_ts(),
                    last_seen: d.last_seen_ts(),
                },
            };
            let grown = used.saturating_add(json_len(&edge) + 1);
            // One always fits (the budget's lower bound is far above an entry), so a cut
            // always makes progress.
            if report.inbound.len() == MAX_EDGES_PER_REPORT
                || (!report.inbound.is_empty() && grown > self.settings.max_batch_bytes)
            {
                self.more = true;
                break;
            }
            used = grown;
            report.inbound.push(edge);
            self.cut_inbound.insert(key, totals);
        }
    }
}
