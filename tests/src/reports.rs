//! Batches as a sidecar would send them, for tests that talk to the collector directly:
//! `report("svc", "svc-1", seq, start, end).edge(edge("old.internal", 80, 5, t))`.

use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

pub const MIN: i64 = 60_000;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

/// Now, in milliseconds.
pub fn now() -> i64 {
    Timestamp::now().0
}

/// An edge with `requests` calls, the last one at `last_seen` (the first a minute
/// before); errors, bytes and connections derived from `requests`.
pub fn edge(host: &str, port: u16, requests: u64, last_seen: i64) -> Edge {
    Edge {
        host: host.into(),
        port,
        scheme: match port {
            443 => Scheme::Https,
            80 | 8080 => Scheme::Http,
            _ => Scheme::Tcp,
        },
        counts: Counts {
            requests,
            connections: 1,
            errors: requests / 10,
            bytes_sent: 10 * requests,
            bytes_received: 100 * requests,
            first_seen: Timestamp(last_seen - MIN),
            last_seen: Timestamp(last_seen),
        },
    }
}

/// A batch of `instance` (of `service` in `prod`) covering `start..end`; the sidecar
/// process started 30 days before `start`.
pub fn report(
    service: &str,
    instance: &str,
    seq: u64,
    start: i64,
    end: i64,
    edges: Vec<Edge>,
) -> Report {
    Report {
        version: REPORT_VERSION,
        service: service.into(),
        environment: "prod".into(),
        instance: instance.into(),
        seq,
        started_at: Timestamp(start - 30 * DAY),
        period_start: Timestamp(start),
        period_end: Timestamp(end),
        flush_interval_ms: 10_000,
        edges,
        ..Default::default()
    }
}
