//! The migration view: moving callers from an old host to a new one. Per calling service
//! and environment — every service that ever called the old host — calls to each within
//! the window, the share on the new one, the last call to the old one, and a status:
//!
//! * `not started` — calls the old host, not the new one;
//! * `migrating` — calls both;
//! * `done` — no call to the old host in the window, and its sidecars reported through
//!   the whole window (the same coverage reasoning as `check`: silence is only evidence
//!   when someone was listening);
//! * `unknown` — went quiet: its sidecars stopped reporting, or have gaps in the window,
//!   so where it calls now is not known.
//!
//! [`decide`] is a pure function of the evidence (table-tested below); [`migration`]
//! gathers it; [`checklist`] prints the ticket's Markdown checklist.

use std::collections::BTreeMap;

use whouses_wire::api::EdgeRow;
use whouses_wire::decom::{MigrationCaller, MigrationResponse, MigrationStatus, MigrationSummary};
use whouses_wire::{counts, Timestamp};

use crate::check::{grace_ms, reported_throughout, reporting};
use crate::owners::OwnerMap;
use crate::store::{EdgeFilter, InstanceCoverage, Store, StoreError};
use crate::targets::HostPattern;

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub window_start: Timestamp,
    pub now: Timestamp,
    /// The old host's edges over all retained history (who ever called it, last calls).
    pub old_all: &'a [EdgeRow],
    /// The old host's edges counted since the window start (hour granularity).
    pub old_window: &'a [EdgeRow],
    /// The new host's edges over all retained history, and since the window start.
    pub new_all: &'a [EdgeRow],
    pub new_window: &'a [EdgeRow],
    /// Coverage of every instance of the old host's callers.
    pub coverage: &'a [InstanceCoverage],
}

/// Per `(service, environment)`: calls (summed over hosts and ports) and the last one.
fn per_caller(rows: &[EdgeRow]) -> BTreeMap<(&str, &str), (u64, Timestamp)> {
    let mut by: BTreeMap<(&str, &str), (u64, Timestamp)> = BTreeMap::new();
    for r in rows {
        let e = by
            .entry((&r.service, &r.environment))
            .or_insert((0, r.counts.last_seen));
        e.0 = counts::add(e.0, r.counts.calls());
        e.1 = e.1.max(r.counts.last_seen);
    }
    by
}

/// Decide every caller's status. Owners are left empty (see [`fill_owners`]).
pub fn decide(ev: &Evidence<'_>) -> MigrationResponse {
    let reporting = reporting(ev.coverage);
    let old_all = per_caller(ev.old_all);
    let old_window = per_caller(ev.old_window);
    let new_all = per_caller(ev.new_all);
    let new_window = per_caller(ev.new_window);
    let (from, to) = (ev.from, ev.to);
    let mut callers: Vec<MigrationCaller> = old_all
        .iter()
        .map(|(&(service, environment), &(_, last_old))| {
            let key = (service, environment);
            // A call before the window start can sit in the window's first hour bucket:
            // only a last call inside the window makes the bucket's calls count.
            let calls_old = match old_window.get(&key) {
                Some(&(n, _)) if last_old >= ev.window_start => n,
                _ => 0,
            };
            let last_new = new_all.get(&key).map(|&(_, t)| t);
            let calls_new = match new_window.get(&key) {
                Some(&(n, _)) if last_new.is_some_and(|t| t >= ev.window_start) => n,
                _ => 0,
            };
            let rep = reporting.get(&key);
            let throughout = reported_throughout(rep, ev.window_start, ev.now);
            let reporting_now = rep.is_some_and(|r| {
                r.observed_until >= ev.now.minus_ms(grace_ms(r.flush_interval_ms))
            });
            let total = counts::add(calls_old, calls_new);
            let share_new = (total > 0).then(|| calls_new as f64 / total as f64);
            let pct = share_new.map_or(0.0, |s| s * 100.0);
            let (status, reason) = if !reporting_now {
                let reason = match rep {
                    Some(r) => format!(
                        "went quiet: its sidecars last reported at {}, so where it calls now is not known",
                        r.observed_until
                    ),
                    None => "went quiet: no sidecar of it reported in the window, so where it calls now is not known".to_string(),
                };
                (MigrationStatus::Unknown, reason)
            } else if calls_old > 0 && calls_new > 0 {
                (
                    MigrationStatus::Migrating,
                    format!(
                        "{calls_old} call(s) to {from} and {calls_new} to {to} in the window ({pct:.0}% on {to})"
                    ),
                )
            } else if calls_old > 0 {
                (
                    MigrationStatus::NotStarted,
                    format!("{calls_old} call(s) to {from} in the window, none to {to}"),
                )
            } else if throughout {
                (
                    MigrationStatus::Done,
                    format!(
                        "no call to {from} since {}, and its sidecars reported throughout",
                        ev.window_start
                    ),
                )
            } else {
                (
                    MigrationStatus::Unknown,
                    format!(
                        "no call to {from} in the window, but its sidecars did not report through all of it"
                    ),
                )
            };
            MigrationCaller {
                service: service.to_string(),
                environment: environment.to_string(),
                owner: None,
                status,
                calls_old,
                calls_new,
                share_new,
                last_old: Some(last_old),
                last_new,
                reporting_throughout: throughout,
                last_report: rep.map(|r| r.observed_until),
                reason,
            }
        })
        .collect();
    callers.sort_by(|a, b| {
        rank(a.status)
            .cmp(&rank(b.status))
            .then(b.calls_old.cmp(&a.calls_old))
            .then(a.service.cmp(&b.service))
            .then(a.environment.cmp(&b.environment))
    });
    let mut summary = MigrationSummary::default();
    for c in &callers {
        summary.count(c.status);
    }
    MigrationResponse {
        from: from.to_string(),
        to: to.to_string(),
        since: ev.window_start,
        now: ev.now,
        callers,
        summary,
    }
}

/// The order callers are listed in: still to repoint first, then to confirm, then done.
fn rank(s: MigrationStatus) -> u8 {
    match s {
        MigrationStatus::NotStarted => 0,
        MigrationStatus::Migrating => 1,
        MigrationStatus::Unknown => 2,
        MigrationStatus::Done => 3,
    }
}

/// Put each caller's owner in.
pub fn fill_owners(r: &mut MigrationResponse, owners: &OwnerMap<'_>) {
    for c in &mut r.callers {
        c.owner = owners.of(&c.service, &c.environment);
    }
}

/// Gather the evidence from the store, then [`decide`].
pub async fn migration(
    store: &dyn Store,
    from: (&str, Vec<HostPattern>),
    to: (&str, Vec<HostPattern>),
    window_start: Timestamp,
    now: Timestamp,
) -> Result<MigrationResponse, StoreError> {
    let edges = |hosts: &[HostPattern], since: Option<Timestamp>| EdgeFilter {
        hosts: Some(hosts.to_vec()),
        since,
        ..Default::default()
    };
    let old_all = store.edges(&edges(&from.1, None)).await?;
    let old_window = store.edges(&edges(&from.1, Some(window_start))).await?;
    let new_all = store.edges(&edges(&to.1, None)).await?;
    let new_window = store.edges(&edges(&to.1, Some(window_start))).await?;
    let mut services: Vec<(String, String)> = old_all
        .iter()
        .map(|e| (e.service.clone(), e.environment.clone()))
        .collect();
    services.sort();
    services.dedup();
    let coverage = store.coverage(&services, window_start).await?;
    Ok(decide(&Evidence {
        from: from.0,
        to: to.0,
        window_start,
        now,
        old_all: &old_all,
        old_window: &old_window,
        new_all: &new_all,
        new_window: &new_window,
        coverage: &coverage,
    }))
}

/// The ticket's checklist: every caller still calling the old host (not started,
/// migrating) as an open item with its owner, the ones that went quiet as open items to
/// confirm, the done ones as checked items.
pub fn checklist(r: &MigrationResponse) -> String {
    use std::fmt::Write as _;
    let (from, to) = (r.from.as_str(), r.to.as_str());
    let s = &r.summary;
    let mut out = format!(
        "# Migration: {from} → {to}\n\nCalls since {}, as of {}: {} not started, {} migrating, {} unknown, {} done.\n",
        r.since, r.now, s.not_started, s.migrating, s.unknown, s.done
    );
    let item = |c: &MigrationCaller, checked: bool| {
        let owner = c
            .owner
            .as_ref()
            .map(|o| format!("owner: {}", o.describe()))
            .unwrap_or_else(|| "owner: unknown (add it to --owners)".to_string());
        let last = c
            .last_old
            .map(|t| format!("; last call to {from} {t}"))
            .unwrap_or_default();
        format!(
            "- [{}] **{}** ({}) — {owner} — {}: {}{last}\n",
            if checked { "x" } else { " " },
            md(&c.service),
            md(&c.environment),
            c.status.label(),
            md(&c.reason),
        )
    };
    let section = |title: String, status: &[MigrationStatus], checked: bool| {
        let items: String = r
            .callers
            .iter()
            .filter(|c| status.contains(&c.status))
            .map(|c| item(c, checked))
            .collect();
        if items.is_empty() {
            String::new()
        } else {
            format!("\n## {title}\n\n{items}")
        }
    };
    let _ = write!(
        out,
        "{}{}{}",
        section(
            format!("To repoint: still calling {from}"),
            &[MigrationStatus::NotStarted, MigrationStatus::Migrating],
            false
        ),
        section(
            "Went quiet: confirm by hand".to_string(),
            &[MigrationStatus::Unknown],
            false
        ),
        section("Done".to_string(), &[MigrationStatus::Done], true),
    );
    if r.callers.is_empty() {
        out.push_str(&format!("\nNo call to {from} has ever been recorded.\n"));
    }
    out
}

/// Text safe inside a Markdown list item (no emphasis, links or HTML by accident).
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '*' | '_' | '[' | ']' | '<' | '>' | '`' | '|') {
            out.push('\\');
        }
        if c.is_control() {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Interval;
    use whouses_wire::{Counts, Scheme};

    const H: i64 = 3_600_000;
    const NOW: i64 = 1_000 * H;
    const START: i64 = NOW - 30 * 24 * H;

    fn row(service: &str, host: &str, calls: u64, last: i64) -> EdgeRow {
        EdgeRow {
            service: service.into(),
            environment: "prod".into(),
            host: host.into(),
            port: 443,
            scheme: Scheme::Https,
            counts: Counts {
                requests: calls,
                first_seen: Timestamp(0),
                last_seen: Timestamp(last),
                ..Counts::default()
            },
        }
    }

    fn cov(service: &str, start: i64, end: i64) -> InstanceCoverage {
        InstanceCoverage {
            instance: format!("{service}-1"),
            service: service.into(),
            environment: "prod".into(),
            flush_interval_ms: 10_000,
            observed_until: Timestamp(end),
            intervals: vec![Interval {
                start: Timestamp(start),
                end: Timestamp(end),
            }],
        }
    }

    fn run(
        old_all: &[EdgeRow],
        old_window: &[EdgeRow],
        new_all: &[EdgeRow],
        coverage: &[InstanceCoverage],
    ) -> MigrationResponse {
        decide(&Evidence {
            from: "old.internal",
            to: "new.internal",
            window_start: Timestamp(START),
            now: Timestamp(NOW),
            old_all,
            old_window,
            new_all,
            new_window: new_all,
            coverage,
        })
    }

    fn status(r: &MigrationResponse, service: &str) -> MigrationStatus {
        r.callers
            .iter()
            .find(|c| c.service == service)
            .unwrap()
            .status
    }

    #[test]
    fn the_four_statuses() {
        let old_all = [
            row("not-started", "old.internal", 10, NOW - H),
            row("migrating", "old.internal", 5, NOW - H),
            row("done", "old.internal", 7, START - 5 * H),
            row("quiet", "old.internal", 3, START - 5 * H),
            row("gappy", "old.internal", 3, START - 5 * H),
        ];
        let old_window = [
            row("not-started", "old.internal", 10, NOW - H),
            row("migrating", "old.internal", 5, NOW - H),
        ];
        let new_all = [
            row("migrating", "new.internal", 15, NOW - H),
            row("done", "new.internal", 20, NOW - H),
        ];
        let mut gappy = cov("gappy", 0, 900 * H);
        gappy.intervals.push(Interval {
            start: Timestamp(901 * H),
            end: Timestamp(NOW),
        });
        gappy.observed_until = Timestamp(NOW);
        let coverage = [
            cov("not-started", 0, NOW),
            cov("migrating", 0, NOW),
            cov("done", 0, NOW),
            cov("quiet", 0, NOW - 5 * H),
            gappy,
        ];
        let r = run(&old_all, &old_window, &new_all, &coverage);
        assert_eq!(status(&r, "not-started"), MigrationStatus::NotStarted);
        assert_eq!(status(&r, "migrating"), MigrationStatus::Migrating);
        assert_eq!(status(&r, "done"), MigrationStatus::Done);
        assert_eq!(status(&r, "quiet"), MigrationStatus::Unknown);
        assert_eq!(status(&r, "gappy"), MigrationStatus::Unknown);
        let m = r.callers.iter().find(|c| c.service == "migrating").unwrap();
        assert_eq!((m.calls_old, m.calls_new), (5, 15));
        assert_eq!(m.share_new, Some(0.75));
        assert!(m.reason.contains("75% on new.internal"), "{}", m.reason);
        assert_eq!(
            r.summary,
            MigrationSummary {
                done: 1,
                migrating: 1,
                not_started: 1,
                unknown: 2
            }
        );
        // Order: still to repoint, then unknown, then done.
        let order: Vec<&str> = r.callers.iter().map(|c| c.service.as_str()).collect();
        assert_eq!(
            order,
            ["not-started", "migrating", "gappy", "quiet", "done"]
        );
        assert!(
            r.callers[3].reason.contains("went quiet"),
            "{}",
            r.callers[3].reason
        );
    }

    #[test]
    fn a_caller_quiet_since_the_window_start_hour_is_not_counted_as_calling() {
        // Its last call to old is before the window start, in the window's first hour:
        // the hour bucket holds it, but it is not a call in the window.
        let last = START - 60_000;
        let r = run(
            &[row("a", "old.internal", 4, last)],
            &[row("a", "old.internal", 4, last)],
            &[],
            &[cov("a", 0, NOW)],
        );
        assert_eq!(r.callers[0].status, MigrationStatus::Done);
        assert_eq!(r.callers[0].calls_old, 0);
    }

    #[test]
    fn the_checklist_lists_callers_to_repoint_with_their_owners() {
        let r = run(
            &[
                row("billing", "old.internal", 10, NOW - H),
                row("done_svc", "old.internal", 1, START - H),
            ],
            &[row("billing", "old.internal", 10, NOW - H)],
            &[],
            &[cov("billing", 0, NOW), cov("done_svc", 0, NOW)],
        );
        let mut r = r;
        let file = crate::owners::Owners::parse(
            "[services.billing]\nteam = \"payments\"\ncontact = \"#pay\"",
        )
        .unwrap();
        fill_owners(&mut r, &OwnerMap::file_only(&file));
        let md = checklist(&r);
        assert!(
            md.starts_with("# Migration: old.internal → new.internal"),
            "{md}"
        );
        assert!(
            md.contains(
                "- [ ] **billing** (prod) — owner: payments (#pay) — not started: 10 call(s)"
            ),
            "{md}"
        );
        assert!(
            md.contains("- [x] **done\\_svc** (prod) — owner: unknown"),
            "{md}"
        );
        assert!(!md.contains("Went quiet"), "{md}");
    }
}
