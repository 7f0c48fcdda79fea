//! Timelines: per caller of a host, calls and failing calls per step (`1h` or `1d`),
//! from the stored buckets — is a caller trending to zero? Hours older than the
//! collector's `--hourly-for` are kept as days: with `step=1h` a day's calls sit in its
//! first hour, and the answer says from when (`daily_before`).
//!
//! [`series`] is pure (buckets in, series out); [`timeline`] gathers the buckets.

use std::collections::BTreeMap;

use whouses_wire::decom::{TimelineResponse, TimelineSeries};
use whouses_wire::{counts, Timestamp};

use crate::owners::OwnerMap;
use crate::store::buckets::{hour_of, DAY_MS, HOUR_MS};
use crate::store::decom::BucketRow;
use crate::store::{EdgeFilter, Store, StoreError};

/// Most steps one timeline may have.
pub const MAX_STEPS: usize = 2_000;
/// Most buckets one timeline may read.
pub const MAX_BUCKETS: usize = 500_000;
/// The name of the series that sums the callers beyond the limit.
pub const OTHER_CALLERS: &str = "(other callers)";

/// A step width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Hour,
    Day,
}

impl Step {
    pub fn parse(s: &str) -> Result<Step, String> {
        match s {
            "1h" | "hour" => Ok(Step::Hour),
            "1d" | "day" => Ok(Step::Day),
            other => Err(format!("invalid step {other:?}: expected 1h or 1d")),
        }
    }

    pub fn ms(self) -> i64 {
        match self {
            Step::Hour => HOUR_MS,
            Step::Day => DAY_MS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Hour => "1h",
            Step::Day => "1d",
        }
    }

    /// The default for a window: hours up to three days, days beyond.
    pub fn default_for(since: Timestamp, now: Timestamp) -> Step {
        if now.0.saturating_sub(since.0) <= 3 * DAY_MS {
            Step::Hour
        } else {
            Step::Day
        }
    }
}

/// The steps from `since` (rounded down to a step) to `now`: their starts.
pub fn steps(since: Timestamp, now: Timestamp, step: Step) -> Result<Vec<Timestamp>, String> {
    let w = step.ms();
    let first = since.0.div_euclid(w);
    let last = now.0.div_euclid(w);
    let n = usize::try_from(last.saturating_sub(first).saturating_add(1)).unwrap_or(usize::MAX);
    if n > MAX_STEPS {
        return Err(format!(
            "{n} steps of {} is more than {MAX_STEPS}: use step=1d or a shorter since",
            step.name()
        ));
    }
    Ok((first..=last).map(|i| Timestamp(i * w)).collect())
}

/// Per caller, calls and errors per step, busiest callers first; at most `limit`
/// callers, the rest summed into [`OTHER_CALLERS`]. Returns the series, how many callers
/// were summed, and from when steps come from day buckets (with hourly steps).
pub fn series(
    rows: &[BucketRow],
    steps: &[Timestamp],
    step: Step,
    limit: usize,
) -> (Vec<TimelineSeries>, usize, Option<Timestamp>) {
    let Some(first) = steps.first().copied() else {
        return (Vec::new(), 0, None);
    };
    let w = step.ms();
    let n = steps.len();
    let mut daily_before: Option<Timestamp> = None;
    /// Calls and errors per step.
    type PerStep = (Vec<u64>, Vec<u64>);
    let mut by: BTreeMap<(&str, &str), PerStep> = BTreeMap::new();
    for b in rows {
        // The step holding the bucket's start; a bucket starting before the first step
        // (a day bucket overlapping it) goes to the first step.
        let i = (b.start.0.saturating_sub(first.0)).div_euclid(w).max(0);
        let Ok(i) = usize::try_from(i) else { continue };
        if i >= n {
            continue;
        }
        if b.daily && step == Step::Hour {
            let end = Timestamp(b.start.0.saturating_add(DAY_MS));
            daily_before = Some(daily_before.map_or(end, |d| d.max(end)));
        }
        let (calls, errors) = by
            .entry((&b.service, &b.environment))
            .or_insert_with(|| (vec![0; n], vec![0; n]));
        calls[i] = counts::add(calls[i], b.counts.calls());
        errors[i] = counts::add(errors[i], b.counts.errors);
    }
    let mut all: Vec<TimelineSeries> = by
        .into_iter()
        .map(|((service, environment), (calls, errors))| TimelineSeries {
            service: service.to_string(),
            environment: environment.to_string(),
            owner: None,
            total_calls: calls.iter().fold(0, |a, &c| counts::add(a, c)),
            total_errors: errors.iter().fold(0, |a, &c| counts::add(a, c)),
            calls,
            errors,
        })
        .collect();
    all.sort_by(|a, b| {
        b.total_calls
            .cmp(&a.total_calls)
            .then(a.service.cmp(&b.service))
            .then(a.environment.cmp(&b.environment))
    });
    let more = all.len().saturating_sub(limit);
    if more > 0 {
        let rest = all.split_off(limit);
        let mut other = TimelineSeries {
            service: OTHER_CALLERS.to_string(),
            environment: String::new(),
            owner: None,
            calls: vec![0; n],
            errors: vec![0; n],
            total_calls: 0,
            total_errors: 0,
        };
        for s in rest {
            for i in 0..n {
                other.calls[i] = counts::add(other.calls[i], s.calls[i]);
                other.errors[i] = counts::add(other.errors[i], s.errors[i]);
            }
            other.total_calls = counts::add(other.total_calls, s.total_calls);
            other.total_errors = counts::add(other.total_errors, s.total_errors);
        }
        all.push(other);
    }
    (all, more, daily_before)
}

/// Read the host's buckets since `since` and build the timeline.
#[allow(clippy::too_many_arguments)]
pub async fn timeline(
    store: &dyn Store,
    host: &str,
    filter: &EdgeFilter,
    since: Timestamp,
    now: Timestamp,
    step: Step,
    limit: usize,
    owners: &OwnerMap<'_>,
) -> Result<Result<TimelineResponse, String>, StoreError> {
    let steps = match steps(since, now, step) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let from = steps.first().copied().unwrap_or(since);
    let rows = store
        .decom()
        .buckets(filter, hour_of(from), hour_of(now) + 1, MAX_BUCKETS)
        .await?;
    let (mut callers, more_callers, daily_before) = series(&rows, &steps, step, limit);
    for c in &mut callers {
        c.owner = owners.of(&c.service, &c.environment);
    }
    Ok(Ok(TimelineResponse {
        host: host.to_string(),
        since: from,
        until: now,
        step: step.name().to_string(),
        step_ms: step.ms() as u64,
        steps,
        daily_before,
        callers,
        more_callers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::{Counts, Scheme};

    fn bucket(service: &str, start: i64, daily: bool, calls: u64) -> BucketRow {
        BucketRow {
            service: service.into(),
            environment: "prod".into(),
            host: "old.internal".into(),
            port: 443,
            scheme: Scheme::Https,
            start: Timestamp(start),
            daily,
            counts: Counts {
                requests: calls,
                connections: 1,
                errors: 2,
                ..Counts::default()
            },
        }
    }

    #[test]
    fn steps_are_bounded_and_aligned() {
        let now = Timestamp(100 * DAY_MS + 5 * HOUR_MS + 7);
        let s = steps(Timestamp(now.0 - 3 * HOUR_MS), now, Step::Hour).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0], Timestamp(100 * DAY_MS + 2 * HOUR_MS));
        assert!(steps(Timestamp(0), now, Step::Hour)
            .unwrap_err()
            .contains("use step=1d"));
        assert_eq!(steps(Timestamp(0), now, Step::Day).unwrap().len(), 101);
        assert!(Step::parse("5m").is_err());
    }

    #[test]
    fn buckets_land_in_their_steps_per_caller() {
        let base = 10 * DAY_MS;
        let steps: Vec<Timestamp> = (0..4).map(|i| Timestamp(base + i * HOUR_MS)).collect();
        let rows = [
            bucket("a", base, false, 5),
            bucket("a", base + 2 * HOUR_MS, false, 7),
            bucket("b", base + 3 * HOUR_MS, false, 1),
            bucket("b", base + 9 * HOUR_MS, false, 100),
        ];
        let (s, more, daily) = series(&rows, &steps, Step::Hour, 10);
        assert_eq!((more, daily), (0, None));
        assert_eq!(s[0].service, "a");
        assert_eq!(s[0].calls, vec![6, 0, 8, 0]);
        assert_eq!(s[0].errors, vec![2, 0, 2, 0]);
        assert_eq!(
            s[1].calls,
            vec![0, 0, 0, 2],
            "a bucket past the last step is not counted"
        );
    }

    #[test]
    fn day_buckets_and_the_caller_limit() {
        let base = 10 * DAY_MS;
        let steps: Vec<Timestamp> = (0..48).map(|i| Timestamp(base + i * HOUR_MS)).collect();
        let rows = [
            bucket("a", base - DAY_MS / 2, true, 9),
            bucket("b", base + DAY_MS, true, 3),
            bucket("c", base + 5 * HOUR_MS, false, 1),
        ];
        let (s, more, daily) = series(&rows, &steps, Step::Hour, 1);
        assert_eq!(daily, Some(Timestamp(base + 2 * DAY_MS)));
        assert_eq!(more, 2);
        assert_eq!(s[0].service, "a");
        assert_eq!(
            s[0].calls[0], 10,
            "a day overlapping the first step lands in it"
        );
        assert_eq!(s[1].service, OTHER_CALLERS);
        assert_eq!(s[1].calls[24], 4);
        assert_eq!(s[1].calls[5], 2);
        assert_eq!(s[1].total_calls, 6);
    }
}
