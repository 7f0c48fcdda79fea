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
    merge_intervals(intervals);
}

/// Sort `intervals` and merge those that overlap or touch (within
/// [`CONTINUITY_SLACK_MS`]), in place.
pub fn merge_intervals(intervals: &mut Vec<Interval>) {
    intervals.sort_by_key(|i| i.start);
    // `dedup_by` hands each interval with the last one kept: fold it in when they touch.
    intervals.dedup_by(|later, kept| {
        let touches = later.start.0 <= kept.end.0.saturating_add(CONTINUITY_SLACK_MS);
        if touches {
            kept.end = Timestamp(kept.end.0.max(later.end.0));
        }
        touches
    });
}

/// Coverage gathered one entry per instance, in one order: by instance, each
/// instance's intervals by start. The coverage statements do not sort (for a host with
/// a thousand callers, SQLite's sort was a fifth of the statement's time): rows of one
/// instance come together in their plans, and this puts them together if they do not.
pub fn canonical_coverage(out: &mut Vec<super::InstanceCoverage>) {
    if !out.windows(2).all(|w| w[0].instance < w[1].instance) {
        out.sort_by(|a, b| a.instance.cmp(&b.instance));
        out.dedup_by(|later, first| {
            let same = later.instance == first.instance;
            if same {
                first.intervals.append(&mut later.intervals);
            }
            same
        });
    }
    for c in out {
        if !c.intervals.is_sorted_by_key(|i| i.start) {
            c.intervals.sort_by_key(|i| i.start);
        }
        c.intervals.dedup();
    }
}

/// The span in which stored intervals can merge with `new` ones (their earliest start
/// and latest end, widened by [`CONTINUITY_SLACK_MS`]): which stored rows to read back.
pub fn touching_span(new: &[Interval]) -> (i64, i64) {
    let lo = new.iter().map(|i| i.start.0).min().unwrap_or(0);
    let hi = new.iter().map(|i| i.end.0).max().unwrap_or(0);
    (
        lo.saturating_sub(CONTINUITY_SLACK_MS),
        hi.saturating_add(CONTINUITY_SLACK_MS),
    )
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

/// Which table a stored bucket row is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BucketKind {
    /// `edge_days`: keyed by day; it starts at the day's first hour, before that day's
    /// hourly rows.
    Day,
    /// `edge_hours`: keyed by hour.
    Hour,
}

/// One stored bucket row of an edge and its calls, for [`calls_before`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketCalls {
    pub kind: BucketKind,
    /// The day or the hour.
    pub key: i64,
    pub calls: u64,
}

impl BucketCalls {
    /// Where the bucket starts, in hours, then its kind: the order of an edge's buckets
    /// in time (a day's row before its hours).
    fn order(&self) -> (i64, BucketKind) {
        match self.kind {
            BucketKind::Day => (self.key.saturating_mul(24), BucketKind::Day),
            BucketKind::Hour => (self.key, BucketKind::Hour),
        }
    }
}

/// Every stored bucket row's `calls_before` (migration 0009): the edge's calls in the
/// buckets before it, including pruned ones. `total` is the edge's total calls and
/// `current` its current bucket's, which is newer than every stored row. Sorts `rows` in
/// time order and returns their values in that order. Saturating: never below zero.
pub fn calls_before(total: u64, current: u64, rows: &mut [BucketCalls]) -> Vec<u64> {
    rows.sort_by_key(BucketCalls::order);
    let stored = rows
        .iter()
        .fold(0u64, |n, r| whouses_wire::counts::add(n, r.calls));
    // What the rows do not hold: calls pruned before the oldest of them.
    let mut before = total.saturating_sub(current).saturating_sub(stored);
    rows.iter()
        .map(|r| {
            let v = before;
            before = whouses_wire::counts::add(before, r.calls);
            v
        })
        .collect()
}

/// An edge's calls from `since` on, from its totals and its first bucket row in the
/// window (see [`WindowRow`]); `None` when that row's `calls_before` is not known (a late
/// batch wrote an older hour since it was computed): sum the buckets instead.
pub fn window_calls(w: &WindowRow, since: Timestamp) -> Option<u64> {
    let hour = hour_of(since);
    let day = day_of(since);
    let total = whouses_wire::counts::add(w.requests, w.connections);
    // The first bucket at or after `since`: a day row counts whole when `since` falls
    // inside it (the answer errs towards "still used", as `edges` with `since` does).
    let first = match (w.first_hour, w.first_day) {
        (Some(h), Some(d)) if d.0.saturating_mul(24) <= h.0 => Some((d.0.saturating_mul(24), d.1)),
        (Some(h), _) => Some((h.0, h.1)),
        (None, Some(d)) => Some((d.0.saturating_mul(24), d.1)),
        (None, None) => None,
    };
    let Some((start, calls_before)) = first else {
        // No stored bucket in the window: only the current one can be.
        return Some(match w.cur_hour {
            Some(c) if c >= hour => w.cur_calls,
            _ => 0,
        });
    };
    let calls_before = calls_before?;
    if w.stale_after.is_some_and(|s| start > s) {
        return None;
    }
    // From the first row on, minus what lies between the start of `since`'s day and its
    // hour when that row is `since`'s own day (hours of that day kept beside its day
    // row, and the current bucket when it is one of them).
    let mut calls = total.saturating_sub(calls_before);
    if w.first_day.is_some_and(|d| d.0 == day) && start == day.saturating_mul(24) {
        calls = calls.saturating_sub(w.day_hours_before);
        if w.cur_hour.is_some_and(|c| c >= start && c < hour) {
            calls = calls.saturating_sub(w.cur_calls);
        }
    }
    Some(calls)
}

/// Say how many bucket rows the upkeep recomputed: at info when it is a lot (an upgraded
/// database, a large backfill), else at debug (the few late batches of every hour).
pub fn log_repaired(rows: u64) {
    if rows >= 10_000 {
        tracing::info!(rows, "Recomputed the window sums (calls_before) of edges that late batches or an upgrade left stale.");
    } else if rows > 0 {
        tracing::debug!(
            rows,
            "Recomputed the window sums of edges late batches left stale."
        );
    }
}

/// The order edges are answered in: host, port, scheme, service, environment, compared
/// byte by byte (SQLite's `BINARY`, PostgreSQL's `COLLATE "C"`).
pub fn edge_key(r: &EdgeRow) -> (&str, u16, &str, &str, &str) {
    (
        &r.host,
        r.port,
        r.scheme.as_str(),
        &r.service,
        &r.environment,
    )
}

/// Window calls put in [`edge_key`] order.
pub fn sort_window_calls(out: &mut [crate::store::WindowCalls]) {
    out.sort_unstable_by(|a, b| edge_key(&a.edge).cmp(&edge_key(&b.edge)));
}

/// Marks an edge whose window calls [`window_calls`] could not tell (`None`): never a
/// count, which stops at [`whouses_wire::MAX_COUNT`].
pub const STALE: u64 = u64::MAX;

/// The filter that sums the edges [`window_calls`] left [`STALE`] the long way: their hosts
/// by exact name (a late batch touches a few; the rest of the hosts are not summed again).
pub fn stale_hosts(
    out: &[crate::store::WindowCalls],
    since: Timestamp,
) -> crate::store::EdgeFilter {
    let mut hosts: Vec<&str> = out
        .iter()
        .filter(|w| w.calls == STALE)
        .map(|w| w.edge.host.as_str())
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    crate::store::EdgeFilter {
        hosts: Some(
            hosts
                .into_iter()
                .map(|h| crate::targets::HostPattern::Host(h.to_string()))
                .collect(),
        ),
        since: Some(since),
        ..Default::default()
    }
}

/// Replace the calls of stale edges ([`STALE`]) by the sums of `summed` (`edges` with
/// [`stale_hosts`]).
pub fn fill_stale(out: &mut [crate::store::WindowCalls], summed: &[EdgeRow]) {
    let key = |e: &'_ EdgeRow| -> (String, u16, Scheme, String, String) {
        (
            e.host.clone(),
            e.port,
            e.scheme,
            e.service.clone(),
            e.environment.clone(),
        )
    };
    let by_key: std::collections::HashMap<_, u64> =
        summed.iter().map(|e| (key(e), e.counts.calls())).collect();
    for w in out.iter_mut().filter(|w| w.calls == STALE) {
        w.calls = by_key.get(&key(&w.edge)).copied().unwrap_or(0);
    }
}

/// Whether [`window_calls`] needs `day_hours_before` for this edge: its first row in the
/// window is the daily row of `since`'s own day, and `since` is past that day's start.
pub fn needs_day_hours(w: &WindowRow, since: Timestamp) -> bool {
    let day = day_of(since);
    w.first_day.is_some_and(|(d, _)| d == day) && hour_of(since) > day.saturating_mul(24)
}

/// What [`window_calls`] needs of one edge, read in one statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowRow {
    /// The edge's totals.
    pub requests: u64,
    pub connections: u64,
    /// Its current hour bucket, and the calls in it.
    pub cur_hour: Option<i64>,
    pub cur_calls: u64,
    /// `edges.stale_after`: rows after this hour miss a late batch's calls.
    pub stale_after: Option<i64>,
    /// The first hourly row at or after `since`'s hour: its hour and `calls_before`.
    pub first_hour: Option<(i64, Option<u64>)>,
    /// The first daily row at or after `since`'s day: its day and `calls_before`.
    pub first_day: Option<(i64, Option<u64>)>,
    /// Calls in hourly rows from the start of `since`'s day up to (not including)
    /// `since`'s hour.
    pub day_hours_before: u64,
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

    #[test]
    fn many_intervals_merge_at_once_whatever_their_order() {
        let mut v = vec![
            iv(40_000, 50_000),
            iv(0, 10_000),
            iv(5_000, 8_000),
            iv(10_900, 20_000),
            iv(60_000, 70_000),
            iv(49_000, 55_000),
        ];
        merge_intervals(&mut v);
        assert_eq!(
            v,
            vec![iv(0, 20_000), iv(40_000, 55_000), iv(60_000, 70_000)]
        );
        let mut empty: Vec<Interval> = vec![];
        merge_intervals(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn coverage_rows_in_any_order_come_out_one_per_instance_in_order() {
        let cov = |instance: &str, intervals: Vec<Interval>| super::super::InstanceCoverage {
            instance: instance.into(),
            service: "a".into(),
            environment: "prod".into(),
            flush_interval_ms: 10_000,
            observed_until: Timestamp(0),
            intervals,
        };
        // b's rows split in two runs, a's intervals out of order, a duplicate row.
        let mut v = vec![
            cov("b", vec![iv(0, 1)]),
            cov("a", vec![iv(5, 6), iv(1, 2)]),
            cov("b", vec![iv(3, 4), iv(0, 1)]),
            cov("c", vec![]),
        ];
        canonical_coverage(&mut v);
        let got: Vec<(&str, &[Interval])> = v
            .iter()
            .map(|c| (c.instance.as_str(), c.intervals.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", &[iv(1, 2), iv(5, 6)][..]),
                ("b", &[iv(0, 1), iv(3, 4)][..]),
                ("c", &[][..]),
            ]
        );
        // Already in order: unchanged.
        let before = v.clone();
        canonical_coverage(&mut v);
        assert_eq!(v, before);
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
    fn calls_before_runs_in_time_order_with_pruned_calls_first() {
        let b = |kind, key, calls| BucketCalls { kind, key, calls };
        // Day 1 (hours 24..48) folded, then hours 50 and 49 (out of order), 10 calls
        // pruned before them and 7 in the current bucket.
        let mut rows = vec![
            b(BucketKind::Hour, 50, 5),
            b(BucketKind::Day, 1, 100),
            b(BucketKind::Hour, 49, 3),
            b(BucketKind::Hour, 30, 1), // a late hour of the folded day, after its row
        ];
        let total = 10 + 100 + 1 + 3 + 5 + 7;
        assert_eq!(calls_before(total, 7, &mut rows), vec![10, 110, 111, 114]);
        assert_eq!(rows[0], b(BucketKind::Day, 1, 100));
        // Counts that saturated never go below zero.
        assert_eq!(calls_before(5, 7, &mut rows), vec![0, 100, 101, 104]);
    }

    #[test]
    fn window_calls_from_the_first_row_in_the_window() {
        let w = WindowRow {
            requests: 120,
            connections: 6, // 126 calls in all
            cur_hour: Some(60),
            cur_calls: 7,
            stale_after: None,
            first_hour: Some((49, Some(111))),
            first_day: None,
            day_hours_before: 0,
        };
        let at = |hour: i64| Timestamp(hour * HOUR_MS + 17);
        assert_eq!(window_calls(&w, at(49)), Some(15));
        // Nothing stored in the window: the current bucket alone, or nothing.
        let only_cur = WindowRow {
            first_hour: None,
            ..w
        };
        assert_eq!(window_calls(&only_cur, at(60)), Some(7));
        assert_eq!(window_calls(&only_cur, at(61)), Some(0));
        // Inside a folded day: the day counts whole, less its hours before `since` and
        // the current bucket when it is one of them.
        let day = WindowRow {
            first_hour: None,
            first_day: Some((2, Some(20))),
            cur_hour: Some(50),
            day_hours_before: 4,
            ..w
        };
        let from_midnight = WindowRow {
            day_hours_before: 0, // nothing before `since` in its day
            ..day
        };
        assert_eq!(window_calls(&from_midnight, at(48)), Some(106));
        assert_eq!(window_calls(&day, at(52)), Some(106 - 4 - 7));
        // A later day row than `since`'s day: nothing to take off.
        assert_eq!(window_calls(&day, at(40)), Some(106));
        // Unknown or stale: sum the buckets instead.
        let unknown = WindowRow {
            first_hour: Some((49, None)),
            ..w
        };
        assert_eq!(window_calls(&unknown, at(49)), None);
        let stale = WindowRow {
            stale_after: Some(45),
            ..w
        };
        assert_eq!(window_calls(&stale, at(49)), None);
        // A late batch at the row's own hour or after it leaves the row's value right.
        let late_after = WindowRow {
            stale_after: Some(49),
            ..w
        };
        assert_eq!(window_calls(&late_after, at(49)), Some(15));
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
