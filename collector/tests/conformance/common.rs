//! Reports and helpers the cases share.

use std::sync::Arc;

use whouses_collector::store::{Batch, EdgeFilter, Ingested, Interval, Store, StoreError};
use whouses_wire::api::EdgeRow;
use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

/// A report of `instance` (of `service`) for the hour starting at `hour_start`, each edge
/// `(host, requests)` on port 443.
pub fn report(
    service: &str,
    instance: &str,
    seq: u64,
    hour_start: i64,
    edges: &[(&str, u64)],
) -> Report {
    Report {
        version: REPORT_VERSION,
        service: service.into(),
        environment: "prod".into(),
        instance: instance.into(),
        seq,
        started_at: Timestamp(hour_start - 1000 * DAY),
        period_start: Timestamp(hour_start),
        period_end: Timestamp(hour_start + HOUR),
        flush_interval_ms: HOUR as u64,
        edges: edges
            .iter()
            .map(|&(host, requests)| Edge {
                host: host.into(),
                port: 443,
                scheme: Scheme::Https,
                counts: Counts {
                    requests,
                    connections: 1,
                    errors: requests / 10,
                    bytes_sent: requests.saturating_mul(7),
                    bytes_received: requests.saturating_mul(11),
                    first_seen: Timestamp(hour_start + 60_000),
                    last_seen: Timestamp(hour_start + HOUR - 60_000),
                },
            })
            .collect(),
        ..Default::default()
    }
}

/// Store a batch as the API does (its whole period as coverage), received now.
pub async fn ingest(store: &dyn Store, r: Report) -> Result<Ingested, StoreError> {
    ingest_at(store, r, Timestamp::now()).await
}

pub async fn ingest_at(
    store: &dyn Store,
    r: Report,
    received: Timestamp,
) -> Result<Ingested, StoreError> {
    let coverage = Some(Interval {
        start: r.period_start,
        end: r.period_end,
    });
    store
        .ingest(Batch {
            report: r,
            received,
            coverage,
        })
        .await
}

pub async fn rows(store: &Arc<dyn Store>, since: Option<i64>) -> Vec<EdgeRow> {
    store
        .edges(&EdgeFilter {
            since: since.map(Timestamp),
            ..Default::default()
        })
        .await
        .unwrap()
}

pub fn requests(rows: &[EdgeRow], host: &str) -> u64 {
    rows.iter()
        .filter(|r| r.host == host)
        .map(|r| r.counts.requests)
        .sum()
}

/// The start of the UTC day `days` ago.
pub fn day_start(days: i64) -> i64 {
    (Timestamp::now().0 - days * DAY).div_euclid(DAY) * DAY
}

/// `window_calls` (one bucket row per edge) gives every edge exactly as `edges` does, each
/// with exactly the calls `edges` with the same `since` sums from every bucket, for every
/// `*.internal` host; and `fleet_window_calls` gives the same rows for those hosts.
pub async fn assert_window_calls(store: &dyn Store, since: i64, what: &str) {
    let hosts = vec![whouses_collector::targets::HostPattern::Suffix(
        "internal".into(),
    )];
    let window = store.window_calls(&hosts, Timestamp(since)).await.unwrap();
    let all = store
        .edges(&EdgeFilter {
            hosts: Some(hosts.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let edges: Vec<EdgeRow> = window.iter().map(|w| w.edge.clone()).collect();
    assert_eq!(edges, all, "window_calls' edges ({what})");
    // The whole fleet's window (the dashboard's) holds the same rows for these hosts.
    let pairs = |v: Vec<&whouses_collector::store::WindowCalls>| -> Vec<(EdgeRow, u64)> {
        v.into_iter().map(|w| (w.edge.clone(), w.calls)).collect()
    };
    let fleet = store.fleet_window_calls(Timestamp(since)).await.unwrap();
    assert_eq!(
        pairs(
            fleet
                .iter()
                .filter(|w| w.edge.host == "internal" || w.edge.host.ends_with(".internal"))
                .collect()
        ),
        pairs(window.iter().collect()),
        "fleet_window_calls ({what})"
    );
    let key = |e: &EdgeRow| (e.service.clone(), e.host.clone(), e.port, e.scheme);
    let got: std::collections::BTreeMap<_, u64> = window
        .iter()
        .filter(|w| w.calls > 0)
        .map(|w| (key(&w.edge), w.calls))
        .collect();
    let want: std::collections::BTreeMap<_, u64> = store
        .edges(&EdgeFilter {
            hosts: Some(hosts),
            since: Some(Timestamp(since)),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| (key(e), e.counts.calls()))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(got, want, "window calls since {since} ({what})");
}
