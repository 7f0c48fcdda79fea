//! What changed between two periods (`--before 14d..7d --after 7d..now`): edges that
//! appeared, vanished, or whose calls per hour changed by more than a factor — what a
//! deploy or a cutover did. Counted from the stored buckets: period ends are rounded down
//! to the hour (`now` rounds up, so the current hour counts), and a day bucket (history
//! older than `--hourly-for`) counts whole in every period it overlaps.
//!
//! [`parse_period`] and [`compare`] are pure; [`diff`] gathers the buckets.

use std::collections::BTreeMap;

use whouses_wire::decom::{Change, DiffResponse, EdgeChange, Period};
use whouses_wire::{counts, Scheme, Timestamp};

use crate::store::buckets::{hour_of, HOUR_MS};
use crate::store::decom::BucketRow;
use crate::store::{EdgeFilter, Store, StoreError};

/// Most buckets one diff may read.
pub const MAX_BUCKETS: usize = 500_000;
/// The longest period a diff may compare.
const MAX_PERIOD_HOURS: i64 = 400 * 24;

/// A period as whole hours `[from, to)` (hours since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    pub from: i64,
    pub to: i64,
}

impl Hours {
    pub fn len(&self) -> i64 {
        self.to - self.from
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 0
    }

    pub fn period(&self) -> Period {
        Period {
            from: Timestamp(self.from.saturating_mul(HOUR_MS)),
            to: Timestamp(self.to.saturating_mul(HOUR_MS)),
        }
    }

    /// Whether a bucket overlaps this period.
    fn overlaps(&self, b: &BucketRow) -> bool {
        let start = hour_of(b.start);
        let end = start + if b.daily { 24 } else { 1 };
        start < self.to && end > self.from
    }
}

/// One end of a period: `now`, a duration back from now (`7d`), or an RFC 3339 time.
fn parse_end(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Ok(d) = whouses_wire::parse_duration(s) {
        return Ok(now.saturating_sub(d));
    }
    Timestamp::parse_rfc3339(s).map_err(|_| {
        format!("{s:?} is not `now`, a duration back from now (7d) or an RFC 3339 time")
    })
}

/// `A..B` (e.g. `14d..7d`, `7d..now`, `2026-11-01T00:00:00Z..now`) as whole hours; `name`
/// is the parameter, for the error.
pub fn parse_period(s: &str, now: Timestamp, name: &str) -> Result<Hours, String> {
    let (a, b) = s.split_once("..").ok_or_else(|| {
        format!("invalid {name} {s:?}: expected FROM..TO, e.g. 14d..7d or 7d..now")
    })?;
    let from = parse_end(a, now).map_err(|e| format!("invalid {name}: {e}"))?;
    let to = parse_end(b, now).map_err(|e| format!("invalid {name}: {e}"))?;
    if from >= to {
        return Err(format!(
            "invalid {name} {s:?}: its start ({from}) is not before its end ({to})"
        ));
    }
    let to_hour = if to >= now {
        hour_of(now) + 1
    } else {
        hour_of(to)
    };
    let h = Hours {
        from: hour_of(from),
        to: to_hour,
    };
    if h.is_empty() {
        return Err(format!(
            "invalid {name} {s:?}: shorter than the hour buckets counts are kept in"
        ));
    }
    if h.len() > MAX_PERIOD_HOURS {
        return Err(format!("invalid {name} {s:?}: longer than 400 days"));
    }
    Ok(h)
}

type Key = (String, u16, Scheme, String, String);

#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    before: u64,
    before_errors: u64,
    after: u64,
    after_errors: u64,
}

/// Compare the two periods over `rows` (any buckets; those overlapping neither period
/// are ignored). `factor` > 1.
pub fn compare(
    rows: &[BucketRow],
    before: Hours,
    after: Hours,
    factor: f64,
) -> (Vec<EdgeChange>, usize) {
    let mut by: BTreeMap<Key, Sums> = BTreeMap::new();
    for b in rows {
        let (in_before, in_after) = (before.overlaps(b), after.overlaps(b));
        if !in_before && !in_after {
            continue;
        }
        let s = by
            .entry((
                b.host.clone(),
                b.port,
                b.scheme,
                b.service.clone(),
                b.environment.clone(),
            ))
            .or_default();
        if in_before {
            s.before = counts::add(s.before, b.counts.calls());
            s.before_errors = counts::add(s.before_errors, b.counts.errors);
        }
        if in_after {
            s.after = counts::add(s.after, b.counts.calls());
            s.after_errors = counts::add(s.after_errors, b.counts.errors);
        }
    }
    let (hb, ha) = (before.len().max(1) as f64, after.len().max(1) as f64);
    let mut unchanged = 0;
    let mut changes: Vec<EdgeChange> = Vec::new();
    for ((host, port, scheme, service, environment), s) in by {
        let ratio = (s.before > 0).then(|| (s.after as f64 / ha) / (s.before as f64 / hb));
        let change = match (s.before, s.after, ratio) {
            (0, 0, _) => continue,
            (0, _, _) => Change::Appeared,
            (_, 0, _) => Change::Vanished,
            (_, _, Some(r)) if r >= factor => Change::Grew,
            (_, _, Some(r)) if r <= 1.0 / factor => Change::Shrank,
            _ => {
                unchanged += 1;
                continue;
            }
        };
        changes.push(EdgeChange {
            service,
            environment,
            host,
            port,
            scheme,
            change,
            before: s.before,
            after: s.after,
            before_errors: s.before_errors,
            after_errors: s.after_errors,
            ratio,
        });
    }
    changes.sort_by(|a, b| {
        a.change
            .cmp(&b.change)
            .then(b.before.abs_diff(b.after).cmp(&a.before.abs_diff(a.after)))
            .then(a.host.cmp(&b.host))
            .then(a.service.cmp(&b.service))
    });
    (changes, unchanged)
}

/// Read the buckets both periods need, then [`compare`].
pub async fn diff(
    store: &dyn Store,
    filter: &EdgeFilter,
    before: Hours,
    after: Hours,
    factor: f64,
) -> Result<DiffResponse, StoreError> {
    let rows = store
        .decom()
        .buckets(
            filter,
            before.from.min(after.from),
            before.to.max(after.to),
            MAX_BUCKETS,
        )
        .await?;
    let (changes, unchanged) = compare(&rows, before, after, factor);
    Ok(DiffResponse {
        before: before.period(),
        after: after.period(),
        factor,
        host: None,
        service: filter.service.clone(),
        changes,
        unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::Counts;

    const NOW: i64 = 1_000 * HOUR_MS + 1_234;

    fn bucket(service: &str, host: &str, hour: i64, calls: u64) -> BucketRow {
        BucketRow {
            service: service.into(),
            environment: "prod".into(),
            host: host.into(),
            port: 443,
            scheme: Scheme::Https,
            start: Timestamp(hour * HOUR_MS),
            daily: false,
            counts: Counts {
                requests: calls,
                errors: calls / 10,
                ..Counts::default()
            },
        }
    }

    #[test]
    fn periods_are_whole_hours_and_now_counts_the_current_one() {
        let now = Timestamp(NOW);
        let b = parse_period("14d..7d", now, "before").unwrap();
        let a = parse_period("7d..now", now, "after").unwrap();
        assert_eq!(
            b,
            Hours {
                from: 1_000 - 336,
                to: 1_000 - 168
            }
        );
        assert_eq!(
            a,
            Hours {
                from: 1_000 - 168,
                to: 1_001
            }
        );
        assert_eq!(b.to, a.from, "adjacent periods share no hour");
        for bad in ["7d", "7d..14d", "x..now", "now..now"] {
            let e = parse_period(bad, now, "before").unwrap_err();
            assert!(e.contains("invalid before"), "{bad}: {e}");
        }
        assert!(parse_period("2026-11-01T00:00:00Z..now", now, "after").is_err());
    }

    #[test]
    fn edges_appear_vanish_grow_and_shrink() {
        let before = Hours { from: 0, to: 10 };
        let after = Hours { from: 10, to: 20 };
        let rows = [
            bucket("a", "old", 2, 100),
            bucket("a", "new", 12, 50),
            bucket("b", "x", 3, 10),
            bucket("b", "x", 15, 30),
            bucket("c", "y", 5, 40),
            bucket("c", "y", 11, 10),
            bucket("d", "z", 1, 10),
            bucket("d", "z", 11, 15),
            bucket("e", "w", 30, 15),
        ];
        let (changes, unchanged) = compare(&rows, before, after, 2.0);
        let got: Vec<(&str, &str, Change, u64, u64)> = changes
            .iter()
            .map(|c| {
                (
                    c.service.as_str(),
                    c.host.as_str(),
                    c.change,
                    c.before,
                    c.after,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", "new", Change::Appeared, 0, 50),
                ("a", "old", Change::Vanished, 100, 0),
                ("b", "x", Change::Grew, 10, 30),
                ("c", "y", Change::Shrank, 40, 10),
            ]
        );
        assert_eq!(unchanged, 1, "d: 10 → 15 is within a factor of 2");
        assert_eq!(changes[0].after_errors, 5);
    }

    #[test]
    fn rates_compare_periods_of_different_lengths() {
        // 10 calls in 10 hours vs 10 calls in 2 hours: five times the rate.
        let rows = [bucket("a", "x", 0, 10), bucket("a", "x", 10, 10)];
        let (c, _) = compare(
            &rows,
            Hours { from: 0, to: 10 },
            Hours { from: 10, to: 12 },
            2.0,
        );
        assert_eq!(c[0].change, Change::Grew);
        assert_eq!(c[0].ratio, Some(5.0));
    }

    #[test]
    fn a_day_bucket_counts_in_every_period_it_overlaps() {
        let mut day = bucket("a", "x", 24, 48);
        day.daily = true;
        let (c, unchanged) = compare(
            &[day],
            Hours { from: 20, to: 30 },
            Hours { from: 30, to: 40 },
            2.0,
        );
        assert!(c.is_empty());
        assert_eq!(unchanged, 1);
    }
}
