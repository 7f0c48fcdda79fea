//! Hourly buckets folded into daily ones: every answer the fold can keep stays exactly the
//! same (totals, `since` at a day boundary), a `since` inside a folded day counts that
//! whole day, a late batch for a folded day is folded again without doubling, and the
//! retention prunes daily buckets too. A real SQLite file throughout.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use whouses_collector::store::{self, Batch, EdgeFilter, Interval, Store};
use whouses_wire::api::EdgeRow;
use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn report(seq: u64, hour_start: i64, edges: &[(&str, u64)]) -> Report {
    Report {
        version: REPORT_VERSION,
        service: "billing".into(),
        environment: "prod".into(),
        instance: "billing-1".into(),
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
                    bytes_sent: requests * 7,
                    bytes_received: requests * 11,
                    first_seen: Timestamp(hour_start + 60_000),
                    last_seen: Timestamp(hour_start + HOUR - 60_000),
                },
            })
            .collect(),
        ..Default::default()
    }
}

/// Store a batch as the API does (its whole period as coverage).
async fn ingest(store: &dyn Store, r: Report) {
    let coverage = Some(Interval {
        start: r.period_start,
        end: r.period_end,
    });
    store
        .ingest(Batch {
            report: r,
            received: Timestamp::now(),
            coverage,
        })
        .await
        .unwrap();
}

async fn rows(store: &Arc<dyn Store>, since: Option<i64>) -> Vec<EdgeRow> {
    store
        .edges(&EdgeFilter {
            since: since.map(Timestamp),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn requests(rows: &[EdgeRow], host: &str) -> u64 {
    rows.iter()
        .filter(|r| r.host == host)
        .map(|r| r.counts.requests)
        .sum()
}

#[tokio::test]
async fn folding_hours_into_days_keeps_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await
        .unwrap();
    // Three UTC days, 40 days ago: day d+i, every 3rd hour, two hosts.
    let d = (Timestamp::now().0 - 40 * DAY).div_euclid(DAY) * DAY;
    let mut seq = 0;
    for day in 0..3 {
        for hour in (0..24).step_by(3) {
            seq += 1;
            let n = (day * 100 + hour + 1) as u64;
            let r = report(
                seq,
                d + day * DAY + hour * HOUR,
                &[("old.internal", n), ("new.internal", 2 * n)],
            );
            ingest(store.as_ref(), r).await;
        }
    }
    let mid_day1 = d + DAY + 13 * HOUR;
    let before_all = rows(&store, None).await;
    let before_d1 = rows(&store, Some(d + DAY)).await;
    let before_d2 = rows(&store, Some(d + 2 * DAY)).await;
    let before_mid = rows(&store, Some(mid_day1)).await;
    assert!(requests(&before_mid, "old.internal") < requests(&before_d1, "old.internal"));

    // Fold everything older than 14 days: 3 days × 8 hours × 2 edges, less each edge's
    // newest hour (kept in the edge's own row, never in the hourly table).
    let folded = store
        .rollup(Timestamp(Timestamp::now().0 - 14 * DAY))
        .await
        .unwrap();
    assert_eq!(folded, (3 * 8 - 1) * 2);
    assert_eq!(
        store
            .rollup(Timestamp(Timestamp::now().0 - 14 * DAY))
            .await
            .unwrap(),
        0,
        "a second fold finds nothing"
    );

    assert_eq!(rows(&store, None).await, before_all);
    assert_eq!(rows(&store, Some(d + DAY)).await, before_d1);
    assert_eq!(rows(&store, Some(d + 2 * DAY)).await, before_d2);
    // Inside a folded day: the whole day counts (errs towards "still used").
    assert_eq!(rows(&store, Some(mid_day1)).await, before_d1);

    // A late batch for a folded day lands in an hourly bucket; both are summed, and the
    // next fold merges it into the day without doubling.
    seq += 1;
    let late = report(seq, d + DAY + 5 * HOUR, &[("old.internal", 1_000)]);
    ingest(store.as_ref(), late).await;
    let with_late = rows(&store, Some(d + DAY)).await;
    assert_eq!(
        requests(&with_late, "old.internal"),
        requests(&before_d1, "old.internal") + 1_000
    );
    assert_eq!(
        store
            .rollup(Timestamp(Timestamp::now().0 - 14 * DAY))
            .await
            .unwrap(),
        1
    );
    assert_eq!(rows(&store, Some(d + DAY)).await, with_late);
    assert_eq!(
        requests(&rows(&store, None).await, "old.internal"),
        requests(&before_all, "old.internal") + 1_000
    );

    // Retention: a cutoff at the start of day 2 drops days 0 and 1.
    store
        .prune(Timestamp(d + 2 * DAY), Timestamp(0))
        .await
        .unwrap();
    let after = rows(&store, Some(d)).await;
    assert_eq!(after, rows(&store, Some(d + 2 * DAY)).await);
    assert_eq!(after, before_d2);
}

#[tokio::test]
async fn an_in_memory_database_is_refused_with_a_reason() {
    let err = store::open("sqlite::memory:").await.err().unwrap();
    assert!(err.to_string().contains("in-memory"), "{err}");
}
