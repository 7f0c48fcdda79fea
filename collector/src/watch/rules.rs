//! **When an alert fires.** A pure function of one watch, what the evaluator saw of its
//! callers, the stored alert state and the time; every rule has a table test below.
//!
//! * `traffic-after-cutoff` — the cutoff has passed and the caller's last call to the
//!   host is at or after it. Fires once; fires again only when it called again since the
//!   last notification (`mark`: the last call notified about) *and* `renotify_after` has
//!   passed since that notification.
//! * `failing-calls` — the caller's failing-call total exceeds its baseline (its total
//!   when the watch began). Fires once; again only when it grew since the last
//!   notification and `renotify_after` has passed.
//!
//! An alert that is not due changes nothing (no write). The stored state is what makes a
//! restart safe: an alert notified before it is not notified again until both conditions
//! hold, and failing calls made while the collector was down still exceed the mark.

use whouses_wire::decom::AlertKind;
use whouses_wire::Timestamp;

use super::CallerObs;
use crate::store::decom::{AlertRow, AlertUpdate, WatchRow};

/// The alerts due now for one watch: the new state of each (to store with its
/// notifications). `state` may hold any watch's rows; only this watch's are read.
pub fn decide(
    watch: &WatchRow,
    callers: &[CallerObs],
    state: &[AlertRow],
    now: Timestamp,
    renotify_after_ms: i64,
) -> Vec<AlertUpdate> {
    let find = |kind: AlertKind, c: &CallerObs| {
        state.iter().find(|a| {
            a.watch_id == watch.id
                && a.kind == kind
                && a.service == c.service
                && a.environment == c.environment
        })
    };
    // Due again: renotify_after has passed since the last notification.
    let again = |a: &AlertRow| {
        a.notified
            .is_some_and(|t| now.0.saturating_sub(t.0) >= renotify_after_ms)
    };
    let mut out = Vec::new();
    for c in callers {
        let failing_prev = find(AlertKind::FailingCalls, c);
        let base = failing_prev.map_or(0, |a| a.base);
        let failing_since_start = c.errors_total.saturating_sub(base);

        // Traffic after the cutoff.
        if now >= watch.cutoff && c.last_seen >= watch.cutoff {
            let prev = find(AlertKind::TrafficAfterCutoff, c);
            let due = match prev {
                None => true,
                Some(a) if a.notified.is_none() => true,
                Some(a) => c.last_seen.0 > a.mark && again(a),
            };
            if due {
                out.push(AlertUpdate {
                    watch_id: watch.id,
                    kind: AlertKind::TrafficAfterCutoff,
                    service: c.service.clone(),
                    environment: c.environment.clone(),
                    base: prev.map_or(0, |a| a.base),
                    fired: prev.and_then(|a| a.fired).or(Some(now)),
                    notified: Some(now),
                    mark: c.last_seen.0,
                    calls: c.calls_after,
                    errors: failing_since_start,
                    first_seen: c.first_after,
                    last_seen: c.last_seen,
                    notifications: prev.map_or(0, |a| a.notifications).saturating_add(1),
                });
            }
        }

        // Failing calls since the watch began.
        if c.errors_total > base {
            let total = i64::try_from(c.errors_total).unwrap_or(i64::MAX);
            let due = match failing_prev {
                None => true,
                Some(a) if a.notified.is_none() => true,
                Some(a) => total > a.mark && again(a),
            };
            if due {
                let first_seen = match failing_prev {
                    Some(a) if a.fired.is_some() => a.first_seen,
                    _ => c.last_seen,
                };
                out.push(AlertUpdate {
                    watch_id: watch.id,
                    kind: AlertKind::FailingCalls,
                    service: c.service.clone(),
                    environment: c.environment.clone(),
                    base,
                    fired: failing_prev.and_then(|a| a.fired).or(Some(now)),
                    notified: Some(now),
                    mark: total,
                    calls: failing_since_start,
                    errors: failing_since_start,
                    first_seen,
                    last_seen: c.last_seen,
                    notifications: failing_prev
                        .map_or(0, |a| a.notifications)
                        .saturating_add(1),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const CUTOFF: i64 = 100 * H;
    const RENOTIFY: i64 = 4 * H;

    fn watch() -> WatchRow {
        WatchRow {
            id: 7,
            host: "old.internal".into(),
            to: None,
            cutoff: Timestamp(CUTOFF),
            notify: vec![],
            note: None,
            created: Timestamp(CUTOFF - 10 * H),
        }
    }

    fn obs(service: &str, last_seen: i64, errors_total: u64) -> CallerObs {
        CallerObs {
            service: service.into(),
            environment: "prod".into(),
            last_seen: Timestamp(last_seen),
            errors_total,
            calls_after: if last_seen >= CUTOFF { 12 } else { 0 },
            first_after: Timestamp(CUTOFF.max(last_seen - H)),
        }
    }

    fn row(
        kind: AlertKind,
        service: &str,
        base: u64,
        notified: Option<i64>,
        mark: i64,
    ) -> AlertRow {
        AlertRow {
            watch_id: 7,
            kind,
            service: service.into(),
            environment: "prod".into(),
            base,
            fired: notified.map(Timestamp),
            notified: notified.map(Timestamp),
            mark,
            calls: 0,
            errors: 0,
            first_seen: Timestamp(CUTOFF + 1),
            last_seen: Timestamp(0),
            notifications: u64::from(notified.is_some()),
        }
    }

    fn kinds(v: &[AlertUpdate]) -> Vec<(AlertKind, &str)> {
        v.iter().map(|a| (a.kind, a.service.as_str())).collect()
    }

    #[test]
    fn traffic_after_the_cutoff_fires_once_per_caller() {
        let now = Timestamp(CUTOFF + H);
        let callers = [
            obs("late", CUTOFF + 30 * 60_000, 0),
            obs("moved", CUTOFF - 1, 0),
        ];
        let due = decide(&watch(), &callers, &[], now, RENOTIFY);
        assert_eq!(kinds(&due), [(AlertKind::TrafficAfterCutoff, "late")]);
        let a = &due[0];
        assert_eq!((a.calls, a.notifications, a.fired), (12, 1, Some(now)));
        assert_eq!(a.mark, CUTOFF + 30 * 60_000);
        // A call exactly at the cutoff is after it.
        let due = decide(&watch(), &[obs("edge", CUTOFF, 0)], &[], now, RENOTIFY);
        assert_eq!(due.len(), 1);
    }

    #[test]
    fn nothing_fires_before_the_cutoff_comes() {
        let now = Timestamp(CUTOFF - 1);
        let mut w = watch();
        w.cutoff = Timestamp(CUTOFF);
        // A caller with a (clock-skewed) call stamped after the cutoff, before it comes.
        assert!(decide(&w, &[obs("a", CUTOFF + 5, 0)], &[], now, RENOTIFY).is_empty());
    }

    #[test]
    fn a_notified_alert_waits_for_new_calls_and_the_renotify_interval() {
        let notified = CUTOFF + H;
        let state = [row(
            AlertKind::TrafficAfterCutoff,
            "late",
            0,
            Some(notified),
            CUTOFF + 50,
        )];
        let still = obs("late", CUTOFF + 2 * H, 0);
        // Calling on, but within the interval: nothing (a restart lands here too).
        assert!(decide(
            &watch(),
            std::slice::from_ref(&still),
            &state,
            Timestamp(notified + RENOTIFY - 1),
            RENOTIFY
        )
        .is_empty());
        // The interval passed and it called again: notified again, fired kept.
        let due = decide(
            &watch(),
            &[still],
            &state,
            Timestamp(notified + RENOTIFY),
            RENOTIFY,
        );
        assert_eq!(kinds(&due), [(AlertKind::TrafficAfterCutoff, "late")]);
        assert_eq!(due[0].fired, Some(Timestamp(notified)));
        assert_eq!(due[0].notifications, 2);
        // The interval passed but no call since the last notification: nothing.
        let quiet = obs("late", CUTOFF + 50, 0);
        assert!(decide(
            &watch(),
            &[quiet],
            &state,
            Timestamp(notified + 10 * RENOTIFY),
            RENOTIFY
        )
        .is_empty());
    }

    #[test]
    fn failing_calls_fire_above_the_baseline() {
        let now = Timestamp(CUTOFF - 5 * H);
        // Errors from before the watch began (the baseline) never fire.
        let state = [row(AlertKind::FailingCalls, "a", 40, None, 0)];
        assert!(decide(
            &watch(),
            &[obs("a", CUTOFF - 6 * H, 40)],
            &state,
            now,
            RENOTIFY
        )
        .is_empty());
        // Any failing call after it does, before the cutoff too.
        let due = decide(
            &watch(),
            &[obs("a", CUTOFF - 6 * H, 43)],
            &state,
            now,
            RENOTIFY,
        );
        assert_eq!(kinds(&due), [(AlertKind::FailingCalls, "a")]);
        assert_eq!((due[0].errors, due[0].mark, due[0].base), (3, 43, 40));
        // A caller unknown when the watch began: every failing call counts.
        let due = decide(
            &watch(),
            &[obs("new", CUTOFF - 6 * H, 2)],
            &state,
            now,
            RENOTIFY,
        );
        assert_eq!(due[0].errors, 2);
    }

    #[test]
    fn failing_calls_renotify_only_when_more_failed_and_the_interval_passed() {
        let t = CUTOFF + H;
        let state = [row(AlertKind::FailingCalls, "a", 10, Some(t), 15)];
        let c15 = obs("a", CUTOFF - H, 15);
        let c20 = obs("a", CUTOFF - H, 20);
        assert!(decide(
            &watch(),
            std::slice::from_ref(&c15),
            &state,
            Timestamp(t + 10 * RENOTIFY),
            RENOTIFY
        )
        .is_empty());
        assert!(decide(
            &watch(),
            std::slice::from_ref(&c20),
            &state,
            Timestamp(t + RENOTIFY - 1),
            RENOTIFY
        )
        .is_empty());
        let due = decide(&watch(), &[c20], &state, Timestamp(t + RENOTIFY), RENOTIFY);
        assert_eq!(
            (due[0].errors, due[0].mark, due[0].notifications),
            (10, 20, 2)
        );
    }

    #[test]
    fn a_caller_after_the_cutoff_that_fails_fires_both_kinds() {
        let now = Timestamp(CUTOFF + H);
        let due = decide(&watch(), &[obs("a", CUTOFF + 10, 3)], &[], now, RENOTIFY);
        assert_eq!(
            kinds(&due),
            [
                (AlertKind::TrafficAfterCutoff, "a"),
                (AlertKind::FailingCalls, "a")
            ]
        );
        // Other watches' rows are not this watch's state.
        let mut other = row(AlertKind::FailingCalls, "a", 100, Some(CUTOFF), 100);
        other.watch_id = 8;
        assert_eq!(
            decide(
                &watch(),
                &[obs("a", CUTOFF + 10, 3)],
                &[other],
                now,
                RENOTIFY
            )
            .len(),
            2
        );
    }
}
