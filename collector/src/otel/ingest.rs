//! **Where an OTLP export is counted**: service-graph points → exact deltas → the normal
//! batch path ([`Store::ingest`]), so idempotency, saturation, coverage and both backends
//! work as for a sidecar's batch.
//!
//! Each series (resource + metric + attributes, and for a cumulative series its start
//! time) is stored as an instance of its own, `otel:<hash>`, bound to the client
//! service. Every point of the series becomes one batch of that instance with
//! `seq` = the point's time in ms, its period = the time since the series' previous
//! point, and one edge `(client, environment, server host, port, otel)` carrying the
//! delta (none when nothing changed: the batch is then a heartbeat, so a series that
//! keeps arriving keeps its client covered, and one that stops leaves it silent).
//!
//! The delta of a point ([`step`], pure and table-tested):
//! * a series seen for the first time (a new exporter, a restart: the start time
//!   changed): its whole value, counted since its start time;
//! * a later point: value − previous value, or the whole value if it went down (a reset
//!   without a new start time);
//! * a point not newer than the latest one (the same export again, a retry, a late
//!   duplicate): nothing.
//!
//! Exactly once: the series row is advanced by compare-and-set *before* the batch is
//! stored, and the batch is a function of the row alone. A failure between the two
//! leaves the row marked not stored; the next delivery of the same export (a retry) or
//! the series' next point stores that batch again first — the store's `(instance, seq)`
//! idempotency makes the second attempt harmless.

use std::collections::{BTreeMap, HashMap};

use whouses_wire::{report::REPORT_VERSION, Counts, Edge, Report, Scheme, Timestamp};

use super::decode::Point;
use crate::store::otel::{OtelAdvance, OtelField, OtelSeries};
use crate::store::{buckets, Batch, Ingested, Store, StoreError};

/// Tries of a compare-and-set that lost to another writer of the same series.
const TRIES: usize = 5;

/// The instance (and series key) of a point: `otel:` and 128 bits of a stable hash
/// (FNV-1a twice, with two offsets) of its identity, the same on every replica and release.
pub fn series_key(identity: &str) -> String {
    fn fnv(seed: u64, s: &str) -> u64 {
        let mut h = seed;
        for b in s.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
    format!(
        "otel:{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325, identity),
        fnv(0x8422_2325_cbf2_9ce4, identity)
    )
}

/// What to do with one point, given its series' row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing new (a duplicate or an older point); the row's own batch may still need
    /// storing if it is not known stored.
    Skip,
    /// Move the row to `next` (compare-and-set on `expect_at`); first store the row's
    /// previous batch if it is not known stored.
    Advance {
        expect_at: Option<i64>,
        next: OtelSeries,
    },
}

/// The pure rule: a point and where its series stands → the next row.
pub fn step(key: &str, p: &Point, row: Option<&OtelSeries>) -> Step {
    let fresh = |prev_at: i64, delta: u64| OtelSeries {
        key: key.to_string(),
        service: p.service.clone(),
        environment: p.environment.clone(),
        host: p.host.clone(),
        port: p.port,
        field: p.field,
        prev_at,
        at: p.time_ms,
        value: p.value,
        delta,
        stored: false,
    };
    match row {
        None => Step::Advance {
            expect_at: None,
            next: fresh(p.start_ms.min(p.time_ms), p.value),
        },
        Some(r) if p.time_ms <= r.at => Step::Skip,
        Some(r) => {
            let delta = if !p.cumulative {
                p.value
            } else if p.value >= r.value {
                p.value - r.value
            } else {
                // Went down without a new start time: a reset; all of it is new.
                p.value
            };
            let prev_at = if p.cumulative {
                r.at
            } else {
                p.start_ms.clamp(r.at.min(p.time_ms), p.time_ms)
            };
            Step::Advance {
                expect_at: Some(r.at),
                next: fresh(prev_at, delta),
            }
        }
    }
}

/// Shortest and longest interval a batch may claim (the report format's bounds).
const FLUSH_MIN_MS: i64 = 100;
const FLUSH_MAX_MS: i64 = 3_600_000;

/// The batch a series row stands for: instance = key, seq = the point's time, period =
/// since the previous point, one `otel` edge with the delta (none: a heartbeat).
pub fn report_of(row: &OtelSeries) -> Report {
    let at = Timestamp(row.at);
    let prev = Timestamp(row.prev_at.min(row.at));
    let interval = row
        .at
        .saturating_sub(row.prev_at)
        .clamp(FLUSH_MIN_MS, FLUSH_MAX_MS);
    let mut edges = Vec::new();
    if row.delta > 0 {
        let mut counts = Counts {
            first_seen: at,
            last_seen: at,
            ..Counts::default()
        };
        match row.field {
            OtelField::Requests => counts.requests = row.delta,
            OtelField::Errors => counts.errors = row.delta,
        }
        edges.push(Edge {
            host: row.host.clone(),
            port: row.port,
            scheme: Scheme::Otel,
            counts,
        });
    }
    Report {
        version: REPORT_VERSION,
        service: row.service.clone(),
        environment: row.environment.clone(),
        instance: row.key.clone(),
        seq: u64::try_from(row.at).unwrap_or(0),
        started_at: prev,
        period_start: prev,
        period_end: at,
        flush_interval_ms: u64::try_from(interval).unwrap_or(FLUSH_MAX_MS as u64),
        edges,
        ..Report::default()
    }
}

/// What one export came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Points that advanced their series.
    pub points: usize,
    /// Points already counted (a repeated export) or older than their series.
    pub duplicates: usize,
    /// Edges (non-zero deltas) stored.
    pub edges: usize,
}

/// Count an export's points. `now` and `max_backfill_ms` decide how much of each
/// period is trusted as coverage, as for a sidecar's batch.
pub async fn ingest(
    store: &dyn Store,
    points: &[Point],
    now: Timestamp,
    max_backfill_ms: i64,
    max_skew_ms: i64,
) -> Result<Outcome, StoreError> {
    // Points of one series in time order; rounds take the i-th point of every series, so
    // each series advances one point per compare-and-set.
    let mut by_key: BTreeMap<String, Vec<&Point>> = BTreeMap::new();
    for p in points {
        by_key.entry(series_key(&p.identity)).or_default().push(p);
    }
    for v in by_key.values_mut() {
        v.sort_by_key(|p| p.time_ms);
    }
    let rounds = by_key.values().map(Vec::len).max().unwrap_or(0);
    let mut outcome = Outcome::default();
    for round in 0..rounds {
        let mine: Vec<(&String, &Point)> = by_key
            .iter()
            .filter_map(|(k, v)| v.get(round).map(|p| (k, *p)))
            .collect();
        let mut pending = mine;
        let mut tries = 0;
        while !pending.is_empty() {
            tries += 1;
            let keys: Vec<String> = pending.iter().map(|(k, _)| (*k).clone()).collect();
            let rows: HashMap<String, OtelSeries> = store
                .otel_series(&keys)
                .await?
                .into_iter()
                .map(|r| (r.key.clone(), r))
                .collect();
            // Batches to store first (rows not known stored), then the advances.
            let mut unstored: Vec<OtelSeries> = Vec::new();
            let mut steps: Vec<OtelAdvance> = Vec::new();
            let mut stepped: Vec<(&String, &Point)> = Vec::new();
            for (k, p) in &pending {
                let row = rows.get(*k);
                if let Some(r) = row.filter(|r| !r.stored) {
                    unstored.push(r.clone());
                }
                match step(k, p, row) {
                    Step::Skip => outcome.duplicates += 1,
                    Step::Advance { expect_at, next } => {
                        steps.push(OtelAdvance { expect_at, next });
                        stepped.push((*k, *p));
                    }
                }
            }
            store_rows(store, &unstored, now, max_backfill_ms, max_skew_ms).await?;
            let applied = if steps.is_empty() {
                Vec::new()
            } else {
                store.otel_advance(&steps).await?
            };
            let mut won = Vec::new();
            let mut lost = Vec::new();
            for ((s, ok), kp) in steps.into_iter().zip(applied).zip(stepped) {
                if ok {
                    won.push(s.next);
                } else {
                    lost.push(kp);
                }
            }
            outcome.points += won.len();
            outcome.edges += store_rows(store, &won, now, max_backfill_ms, max_skew_ms).await?;
            if !lost.is_empty() && tries >= TRIES {
                return Err(StoreError::Postgres {
                    message: format!(
                        "{} OTLP series kept changing under this export (other deliveries of it?); retry",
                        lost.len()
                    ),
                    retry: true,
                });
            }
            pending = lost;
        }
    }
    Ok(outcome)
}

/// Store the batches of these rows, then mark them stored; returns edges stored.
async fn store_rows(
    store: &dyn Store,
    rows: &[OtelSeries],
    now: Timestamp,
    max_backfill_ms: i64,
    max_skew_ms: i64,
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let batches = rows.iter().map(|r| {
        let report = report_of(r);
        let coverage = buckets::trusted_coverage(&report, now, max_backfill_ms, max_skew_ms);
        store.ingest(Batch {
            report,
            received: now,
            coverage,
        })
    });
    let results = futures_util::future::join_all(batches).await;
    let mut edges = 0;
    let mut done = Vec::with_capacity(rows.len());
    let mut first_error = None;
    for (r, res) in rows.iter().zip(results) {
        match res {
            Ok(Ingested::Stored { edges: n }) => {
                edges += n;
                done.push((r.key.clone(), r.at));
            }
            Ok(Ingested::Duplicate) => done.push((r.key.clone(), r.at)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if !done.is_empty() {
        store.otel_stored(&done).await?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(edges),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(cumulative: bool, start: i64, time: i64, value: u64) -> Point {
        Point {
            identity: "x".into(),
            field: OtelField::Requests,
            cumulative,
            service: "a".into(),
            environment: "prod".into(),
            host: "b".into(),
            port: 0,
            start_ms: start,
            time_ms: time,
            value,
        }
    }

    fn row(at: i64, value: u64) -> OtelSeries {
        match step("k", &point(true, 0, at, value), None) {
            Step::Advance { next, .. } => next,
            Step::Skip => unreachable!(),
        }
    }

    /// (point, row) → (expect_at, delta, prev_at) or skip.
    #[test]
    fn steps() {
        type Want = Option<(Option<i64>, u64, i64)>;
        let cases: Vec<(Point, Option<OtelSeries>, Want)> = vec![
            // first point of a cumulative series: all of it, since its start
            (point(true, 1_000, 5_000, 7), None, Some((None, 7, 1_000))),
            // the next point: the difference, since the previous point
            (
                point(true, 1_000, 9_000, 10),
                Some(row(5_000, 7)),
                Some((Some(5_000), 3, 5_000)),
            ),
            // unchanged: a zero delta (a heartbeat)
            (
                point(true, 1_000, 9_000, 7),
                Some(row(5_000, 7)),
                Some((Some(5_000), 0, 5_000)),
            ),
            // went down without a new start: a reset, all of it
            (
                point(true, 1_000, 9_000, 2),
                Some(row(5_000, 7)),
                Some((Some(5_000), 2, 5_000)),
            ),
            // the same point again, or an older one: nothing
            (point(true, 1_000, 5_000, 7), Some(row(5_000, 7)), None),
            (point(true, 1_000, 4_000, 9), Some(row(5_000, 7)), None),
            // delta temporality: the value itself, over its own period
            (
                point(false, 8_000, 9_000, 4),
                Some(row(5_000, 7)),
                Some((Some(5_000), 4, 8_000)),
            ),
            (point(false, 8_000, 9_000, 4), None, Some((None, 4, 8_000))),
        ];
        for (i, (p, r, want)) in cases.into_iter().enumerate() {
            let got = match step("k", &p, r.as_ref()) {
                Step::Skip => None,
                Step::Advance { expect_at, next } => {
                    assert_eq!(next.at, p.time_ms, "case {i}");
                    assert!(!next.stored, "case {i}");
                    Some((expect_at, next.delta, next.prev_at))
                }
            };
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn a_row_makes_a_valid_batch() {
        let mut r = row(1_795_000_010_000, 5);
        r.prev_at = 1_795_000_000_000;
        let rep = report_of(&r);
        rep.validate().unwrap();
        assert_eq!(rep.seq, 1_795_000_010_000);
        assert_eq!(rep.edges[0].counts.requests, 5);
        assert_eq!(rep.edges[0].scheme, Scheme::Otel);
        assert_eq!(rep.flush_interval_ms, 10_000);
        r.delta = 0;
        assert!(report_of(&r).edges.is_empty(), "a heartbeat");
    }

    #[test]
    fn keys_are_stable_and_fit_an_instance_name() {
        let k = series_key("traces_service_graph_request_total\u{1}c\u{1}1");
        assert_eq!(
            k,
            series_key("traces_service_graph_request_total\u{1}c\u{1}1")
        );
        assert_ne!(
            k,
            series_key("traces_service_graph_request_total\u{1}c\u{1}2")
        );
        whouses_wire::report::check_name("instance", &k).unwrap();
    }
}
