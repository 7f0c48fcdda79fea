//! Arithmetic every backend shares, as plain functions: hour and day buckets, coverage
//! intervals (merging, and how much of a batch's period is trusted as observation), and
//! summing edge rows from several sources.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use whouses_wire::api::EdgeRow;
use whouses_wire::{Edge, Report, Scheme, Timestamp};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// How far apart two periods of one instance may be and still count as continuous
/// observation (clock granularity between a batch's end and the next one's start).
pub const CONTINUITY_SLACK_MS: i64 = 1_000;

/// The hour bucket of a time (hours since the epoch).
pub fn hour_of(t: Timestamp) -> i64 {
    t.0.div_euclid(HOUR_MS)
}

/// The UTC day bucket of a time (days since the epoch).
pub fn day_of(t: Timestamp) -> i64 {
    t.0.div_euclid(DAY_MS)
}

/// An interval an instance was observing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Merge `new` into sorted, disjoint `intervals` (within [`CONTINUITY_SLACK_MS`]).
pub fn merge_interval(intervals: &mut Vec<Interval>, new: Interval) {
    intervals.push(new);
    intervals.sort_by_key(|i| i.start);
    let mut out: Vec<Interval> = Vec::with_capacity(intervals.len());
    for i in intervals.drain(..) {
        match out.last_mut() {
            Some(last) if i.start.0 <= last.end.0.saturating_add(CONTINUITY_SLACK_MS) => {
                last.end = Timestamp(last.end.0.max(i.end.0));
            }
            _ => out.push(i),
        }
    }
    *intervals = out;
}

/// The part of a batch's period the collector accepts as proof that its sidecar was
/// observing: never before `received - max_backfill_ms`, never after
/// `received + max_skew_ms`. A batch about older times still adds its counts (evidence
/// of use), but an old or forged heartbeat cannot manufacture evidence of *non*-use for a
/// period the collector never heard about while it was happening.
pub fn trusted_coverage(
    r: &Report,
    received: Timestamp,
    max_backfill_ms: i64,
    max_skew_ms: i64,
) -> Option<Interval> {
    let start = r.period_start.max(received.minus_ms(max_backfill_ms));
    let end = r
        .period_end
        .min(Timestamp(received.0.saturating_add(max_skew_ms)));
    (start <= end).then_some(Interval { start, end })
}

/// The first call of an edge's delta that can fall in its bucket: the delta happened
/// within the batch's period, so never before the period start (and never after the
/// last call).
pub fn bucket_first_seen(e: &Edge, r: &Report) -> Timestamp {
    e.counts
        .first_seen
        .max(r.period_start)
        .min(e.counts.last_seen)
}

/// The first call of a delta's `counts` that can fall in its bucket (inbound edges, issue
/// 14): as [`bucket_first_seen`], never before the batch's period.
pub fn first_in_period(c: &whouses_wire::Counts, r: &Report) -> Timestamp {
    c.first_seen.max(r.period_start).min(c.last_seen)
}

/// Two row lists of the same filter, summed per edge (sorted by host, port, scheme,
/// service, environment). Counts saturate.
pub fn sum_rows(a: Vec<EdgeRow>, b: Vec<EdgeRow>) -> Vec<EdgeRow> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    type Key = (String, u16, Scheme, String, String);
    let mut by_key: BTreeMap<Key, EdgeRow> = BTreeMap::new();
    for row in a.into_iter().chain(b) {
        let key = (
            row.host.clone(),
            row.port,
            row.scheme,
            row.service.clone(),
            row.environment.clone(),
        );
        match by_key.entry(key) {
            Entry::Vacant(v) => {
                v.insert(row);
            }
            Entry::Occupied(mut o) => o.get_mut().counts.merge(&row.counts),
        }
    }
    by_key.into_values().collect()
}

/// `LIKE` pattern text with its wildcards escaped (`\` as the escape character).
pub fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::REPORT_VERSION;

    fn iv(a: i64, b: i64) -> Interval {
        Interval {
            start: Timestamp(a),
            end: Timestamp(b),
        }
    }

    #[test]
    fn intervals_merge_when_continuous() {
        let mut v = vec![];
        merge_interval(&mut v, iv(0, 10_000));
        merge_interval(&mut v, iv(10_000, 20_000));
        merge_interval(&mut v, iv(40_000, 50_000));
        assert_eq!(v, vec![iv(0, 20_000), iv(40_000, 50_000)]);
        merge_interval(&mut v, iv(20_500, 40_000));
        assert_eq!(v, vec![iv(0, 50_000)]);
        merge_interval(&mut v, iv(i64::MAX - 5, i64::MAX));
        assert_eq!(v.len(), 2);
    }

    fn heartbeat(start: i64, end: i64) -> Report {
        Report {
            version: REPORT_VERSION,
            service: "a".into(),
            environment: "prod".into(),
            instance: "a-1".into(),
            seq: 1,
            started_at: Timestamp(start),
            period_start: Timestamp(start),
            period_end: Timestamp(end),
            flush_interval_ms: 10_000,
            edges: vec![],
            ..Default::default()
        }
    }

    #[test]
    fn old_periods_are_not_trusted_as_observation() {
        let now = Timestamp(100 * DAY_MS);
        // A live batch: its whole period.
        let r = heartbeat(now.0 - 10_000, now.0);
        assert_eq!(
            trusted_coverage(&r, now, 7 * DAY_MS, 300_000),
            Some(iv(now.0 - 10_000, now.0))
        );
        // A forged heartbeat from 1970: only the last 7 days of its claim.
        let r = heartbeat(0, now.0);
        assert_eq!(
            trusted_coverage(&r, now, 7 * DAY_MS, 300_000),
            Some(iv(93 * DAY_MS, now.0))
        );
        // Wholly older than the backfill window: counts only.
        let r = heartbeat(0, 50 * DAY_MS);
        assert_eq!(trusted_coverage(&r, now, 7 * DAY_MS, 300_000), None);
    }
}
