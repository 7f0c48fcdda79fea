//! **Where both sides of a call meet** (issue 14): the callee's inbound sidecars count
//! calls per caller *address*; the address book says which instance held an address
//! when. This module attributes each inbound bucket to the service that held its address
//! then (or to nobody, or to several at once: not sure), merges the result with what the
//! callers' own sidecars reported — one row per calling service, `seen_by` caller, callee
//! or both — and says what the callee side witnessed for a host. Pure functions over the
//! store's rows: `query`, `check` and the coverage view call them.

use std::collections::{BTreeMap, BTreeSet};

use whouses_wire::api::{CalleeEvidence, Caller, CoverageRow, Disagreement, SeenBy, Unattributed};
use whouses_wire::{counts, Counts, Side, Timestamp, OTHER_HOST};

use crate::query::host_port;
use crate::store::{
    merge_interval, AddressClaim, CalleeInstance, InboundRow, InstanceCoverage, Interval,
    CONTINUITY_SLACK_MS,
};
use crate::targets::HostPattern;

/// How long after a claim's last period its instance is taken to still hold the address:
/// its next report may be on its way (two flush intervals and a little, as `check`'s
/// grace for a silent sidecar).
pub fn hold_grace_ms(flush_interval_ms: u64) -> i64 {
    i64::try_from(flush_interval_ms)
        .unwrap_or(i64::MAX)
        .saturating_mul(2)
        .saturating_add(5_000)
}

/// Who made the calls of one inbound bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    /// The one service that held the address while the calls were made; `caller_side`:
    /// one of its caller-side sidecars held it (so that sidecar should have seen them).
    To {
        service: String,
        environment: String,
        caller_side: bool,
    },
    /// No sidecar held the address then (or it is `(other)`): a caller still to find.
    Nobody,
    /// Several services held it over the bucket's span (`service (environment)`).
    Several(Vec<String>),
}

/// Attribute each row (same order) to whoever held its address over its calls' span.
pub fn attribute(rows: &[InboundRow], claims: &[AddressClaim]) -> Vec<Attribution> {
    let mut by_address: BTreeMap<&str, Vec<&AddressClaim>> = BTreeMap::new();
    for c in claims {
        by_address.entry(&c.address).or_default().push(c);
    }
    rows.iter()
        .map(|r| {
            if r.address == OTHER_HOST {
                return Attribution::Nobody;
            }
            let mut holders: BTreeMap<(&str, &str), bool> = BTreeMap::new();
            for c in by_address.get(r.address.as_str()).into_iter().flatten() {
                let start = c.interval.start.0.saturating_sub(CONTINUITY_SLACK_MS);
                let end = c
                    .interval
                    .end
                    .0
                    .saturating_add(hold_grace_ms(c.flush_interval_ms));
                if start <= r.counts.last_seen.0 && end >= r.counts.first_seen.0 {
                    let caller = holders
                        .entry((c.service.as_str(), c.environment.as_str()))
                        .or_default();
                    *caller |= c.side == Side::Caller;
                }
            }
            match holders.len() {
                0 => Attribution::Nobody,
                1 => {
                    let ((service, environment), caller_side) =
                        holders.into_iter().next().unwrap_or_default();
                    Attribution::To {
                        service: service.to_string(),
                        environment: environment.to_string(),
                        caller_side,
                    }
                }
                _ => Attribution::Several(
                    holders.keys().map(|(s, e)| format!("{s} ({e})")).collect(),
                ),
            }
        })
        .collect()
}

/// Per counter, the larger of two counts; the widest time range.
fn larger(a: &Counts, b: &Counts) -> Counts {
    Counts {
        requests: a.requests.max(b.requests),
        connections: a.connections.max(b.connections),
        errors: a.errors.max(b.errors),
        bytes_sent: a.bytes_sent.max(b.bytes_sent),
        bytes_received: a.bytes_received.max(b.bytes_received),
        first_seen: a.first_seen.min(b.first_seen),
        last_seen: a.last_seen.max(b.last_seen),
    }
}

fn add_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// What the callee side saw, merged with the callers' own rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// One row per calling service, busiest first.
    pub callers: Vec<Caller>,
    /// Caller addresses nobody (or several) held, busiest first.
    pub unattributed: Vec<Unattributed>,
}

/// Merge the caller side's rows (`callers_of` of the host's edges) with the inbound
/// rows and their attributions. `environment`: keep only attributed callers of that
/// environment (unattributed addresses have none and are kept).
pub fn merge(
    caller_side: Vec<Caller>,
    rows: &[InboundRow],
    attributions: &[Attribution],
    environment: Option<&str>,
) -> Merged {
    // The callee side, per attributed service.
    struct Seen {
        counts: Counts,
        hosts: Vec<String>,
        addresses: BTreeSet<String>,
        caller_side: bool,
    }
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    let mut nobody: BTreeMap<String, Unattributed> = BTreeMap::new();
    for (r, a) in rows.iter().zip(attributions) {
        let hp = host_port(&r.host, r.port);
        match a {
            Attribution::To {
                service,
                environment: env,
                caller_side,
            } => {
                if environment.is_some_and(|e| e != env) {
                    continue;
                }
                let s = seen
                    .entry((service.clone(), env.clone()))
                    .or_insert_with(|| Seen {
                        counts: r.counts,
                        hosts: Vec::new(),
                        addresses: BTreeSet::new(),
                        caller_side: false,
                    });
                if s.hosts.is_empty() {
                    s.counts = r.counts;
                } else {
                    s.counts.merge(&r.counts);
                }
                add_unique(&mut s.hosts, hp);
                s.addresses.insert(r.address.clone());
                s.caller_side |= *caller_side;
            }
            Attribution::Nobody | Attribution::Several(_) => {
                let u = nobody
                    .entry(r.address.clone())
                    .or_insert_with(|| Unattributed {
                        address: r.address.clone(),
                        counts: r.counts,
                        ..Unattributed::default()
                    });
                if u.hosts.is_empty() {
                    u.counts = r.counts;
                } else {
                    u.counts.merge(&r.counts);
                }
                add_unique(&mut u.hosts, hp);
                if let Attribution::Several(c) = a {
                    for c in c {
                        add_unique(&mut u.candidates, c.clone());
                    }
                }
            }
        }
    }
    let mut callers = Vec::with_capacity(caller_side.len() + seen.len());
    for mut c in caller_side {
        if let Some(s) = seen.remove(&(c.service.clone(), c.environment.clone())) {
            c.seen_by = SeenBy::Both;
            c.caller_counts = Some(c.counts);
            c.callee_counts = Some(s.counts);
            c.counts = larger(&c.counts, &s.counts);
            for h in s.hosts {
                add_unique(&mut c.hosts, h);
            }
            c.addresses = s.addresses.into_iter().collect();
        }
        callers.push(c);
    }
    for ((service, environment), s) in seen {
        callers.push(Caller {
            service,
            environment,
            counts: s.counts,
            hosts: s.hosts,
            seen_by: SeenBy::Callee,
            caller_counts: None,
            callee_counts: Some(s.counts),
            addresses: s.addresses.into_iter().collect(),
            around_sidecar: s.caller_side,
            owner: None,
        });
    }
    for c in &mut callers {
        c.hosts.sort();
    }
    callers.sort_by(|a, b| {
        b.counts
            .calls()
            .cmp(&a.counts.calls())
            .then(a.service.cmp(&b.service))
            .then(a.environment.cmp(&b.environment))
    });
    let mut unattributed: Vec<Unattributed> = nobody.into_values().collect();
    for u in &mut unattributed {
        u.hosts.sort();
        u.candidates.sort();
    }
    unattributed.sort_by(|a, b| {
        b.counts
            .calls()
            .cmp(&a.counts.calls())
            .then(a.address.cmp(&b.address))
    });
    Merged {
        callers,
        unattributed,
    }
}

/// Whether a pattern names `host` on some port (declared names carry no port).
pub fn names_host(p: &HostPattern, host: &str) -> bool {
    match p {
        HostPattern::Host(h) | HostPattern::HostPort(h, _) => h == host,
        HostPattern::Suffix(_) => p.matches(host, 0),
    }
}

/// The callee side of a host: the callee-side instances that witness it (declared one of
/// its names, or belong to a service whose inbound sidecars saw it called).
pub fn witnesses<'a>(
    patterns: &[HostPattern],
    callees: &'a [CalleeInstance],
    rows: &[InboundRow],
) -> Vec<&'a CalleeInstance> {
    let seen_by: BTreeSet<(&str, &str)> = rows
        .iter()
        .map(|r| (r.service.as_str(), r.environment.as_str()))
        .collect();
    callees
        .iter()
        .filter(|c| {
            c.inbound_hosts
                .iter()
                .any(|h| patterns.iter().any(|p| names_host(p, h)))
                || seen_by.contains(&(c.service.as_str(), c.environment.as_str()))
        })
        .collect()
}

/// What the callee-side services of a host reported, per service: whether their inbound
/// instances together observed `[window_start, now - grace]`.
pub fn callee_evidence(
    witnesses: &[&CalleeInstance],
    coverage: &[InstanceCoverage],
    patterns: &[HostPattern],
    rows: &[InboundRow],
    window_start: Timestamp,
    now: Timestamp,
) -> Vec<CalleeEvidence> {
    struct Acc {
        instances: Vec<String>,
        hosts: Vec<String>,
        flush_interval_ms: u64,
        observed_until: Option<Timestamp>,
        intervals: Vec<Interval>,
    }
    let mut by: BTreeMap<(&str, &str), Acc> = BTreeMap::new();
    for w in witnesses {
        let a = by
            .entry((&w.service, &w.environment))
            .or_insert_with(|| Acc {
                instances: Vec::new(),
                hosts: Vec::new(),
                flush_interval_ms: 0,
                observed_until: None,
                intervals: Vec::new(),
            });
        a.instances.push(w.instance.clone());
        for h in &w.inbound_hosts {
            if patterns.iter().any(|p| names_host(p, h)) {
                add_unique(&mut a.hosts, h.clone());
            }
        }
        for c in coverage.iter().filter(|c| c.instance == w.instance) {
            a.flush_interval_ms = a.flush_interval_ms.max(c.flush_interval_ms);
            a.observed_until = Some(
                a.observed_until
                    .map_or(c.observed_until, |t| t.max(c.observed_until)),
            );
            for iv in &c.intervals {
                merge_interval(&mut a.intervals, *iv);
            }
        }
    }
    for r in rows {
        if let Some(a) = by.get_mut(&(r.service.as_str(), r.environment.as_str())) {
            add_unique(&mut a.hosts, r.host.clone());
        }
    }
    by.into_iter()
        .map(|((service, environment), mut a)| {
            let need_until = now.minus_ms(hold_grace_ms(a.flush_interval_ms.max(1)));
            let covered = a
                .intervals
                .iter()
                .any(|iv| iv.start <= window_start && iv.end >= need_until);
            a.hosts.sort();
            a.instances.sort();
            CalleeEvidence {
                service: service.to_string(),
                environment: environment.to_string(),
                instances: a.instances,
                hosts: a.hosts,
                last_report: a.observed_until,
                reporting_through_window: covered,
            }
        })
        .collect()
}

/// The callee saw calls from a service's address that its own caller-side sidecar did
/// not report: "tis-sync reaches tis-reference.internal around its sidecar".
pub fn disagreements(callers: &[Caller], host: &str) -> Vec<Disagreement> {
    callers
        .iter()
        .filter(|c| c.around_sidecar && c.seen_by == SeenBy::Callee)
        .map(|c| Disagreement {
            service: c.service.clone(),
            environment: c.environment.clone(),
            calls: c.callee_counts.map_or(0, |k| k.calls()),
            addresses: c.addresses.clone(),
            last_seen: c.counts.last_seen,
            message: format!(
                "{} reaches {host} around its sidecar ({} call(s) from {} seen by the callee, none reported by {}'s sidecar)",
                c.service,
                c.callee_counts.map_or(0, |k| k.calls()),
                c.addresses.join(", "),
                c.service
            ),
        })
        .collect()
}

/// The coverage view: for every host with a callee-side sidecar, how much of what it saw
/// is attributed to known callers, and the addresses still to find. `rows` are inbound
/// rows of every host (since the window's start), `attributions` theirs.
pub fn coverage(
    callees: &[CalleeInstance],
    rows: &[InboundRow],
    attributions: &[Attribution],
) -> Vec<CoverageRow> {
    #[derive(Default)]
    struct Acc {
        callee_services: BTreeSet<String>,
        calls: u64,
        attributed: u64,
        callers: BTreeSet<String>,
        rows: Vec<InboundRow>,
        attributions: Vec<Attribution>,
        last_seen: Option<Timestamp>,
    }
    let mut by: BTreeMap<String, Acc> = BTreeMap::new();
    for c in callees {
        for h in &c.inbound_hosts {
            by.entry(h.clone())
                .or_default()
                .callee_services
                .insert(format!("{} ({})", c.service, c.environment));
        }
    }
    for (r, a) in rows.iter().zip(attributions) {
        let acc = by.entry(r.host.clone()).or_default();
        acc.callee_services
            .insert(format!("{} ({})", r.service, r.environment));
        let calls = r.counts.calls();
        acc.calls = counts::add(acc.calls, calls);
        if let Attribution::To {
            service,
            environment,
            ..
        } = a
        {
            acc.attributed = counts::add(acc.attributed, calls);
            acc.callers.insert(format!("{service} ({environment})"));
        } else {
            acc.rows.push(r.clone());
            acc.attributions.push(a.clone());
        }
        acc.last_seen = Some(
            acc.last_seen
                .map_or(r.counts.last_seen, |t| t.max(r.counts.last_seen)),
        );
    }
    by.into_iter()
        .map(|(host, a)| CoverageRow {
            host,
            callee_services: a.callee_services.into_iter().collect(),
            calls: a.calls,
            attributed_calls: a.attributed,
            attributed_share: if a.calls == 0 {
                1.0
            } else {
                a.attributed as f64 / a.calls as f64
            },
            callers: a.callers.into_iter().collect(),
            unattributed: merge(Vec::new(), &a.rows, &a.attributions, None).unattributed,
            last_seen: a.last_seen,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::Scheme;

    const H: i64 = 3_600_000;

    fn row(address: &str, requests: u64, first: i64, last: i64) -> InboundRow {
        InboundRow {
            service: "old".into(),
            environment: "prod".into(),
            host: "old.internal".into(),
            port: 80,
            scheme: Scheme::Http,
            address: address.into(),
            counts: Counts {
                requests,
                connections: 1,
                first_seen: Timestamp(first),
                last_seen: Timestamp(last),
                ..Counts::default()
            },
        }
    }

    fn claim(address: &str, service: &str, side: Side, start: i64, end: i64) -> AddressClaim {
        AddressClaim {
            address: address.into(),
            instance: format!("{service}-1"),
            service: service.into(),
            environment: "prod".into(),
            side,
            flush_interval_ms: 10_000,
            interval: Interval {
                start: Timestamp(start),
                end: Timestamp(end),
            },
        }
    }

    fn to(service: &str, caller_side: bool) -> Attribution {
        Attribution::To {
            service: service.into(),
            environment: "prod".into(),
            caller_side,
        }
    }

    #[test]
    fn an_address_is_attributed_to_whoever_held_it_then() {
        // x held 10.0.0.9 on day 1, y holds it on day 2.
        let claims = [
            claim("10.0.0.9", "x", Side::Caller, 0, 24 * H),
            claim("10.0.0.9", "y", Side::Caller, 30 * H, 50 * H),
            claim("10.0.0.7", "z", Side::Callee, 0, 50 * H),
        ];
        let rows = [
            row("10.0.0.9", 5, 2 * H, 3 * H),
            row("10.0.0.9", 6, 40 * H, 41 * H),
            row("10.0.0.9", 1, 26 * H, 27 * H),
            row("10.0.0.7", 1, 26 * H, 27 * H),
            row("10.0.0.8", 1, 26 * H, 27 * H),
            row(OTHER_HOST, 1, 26 * H, 27 * H),
            // Spanning the hand-over: both held it within the bucket.
            row("10.0.0.9", 1, 20 * H, 35 * H),
        ];
        let a = attribute(&rows, &claims);
        assert_eq!(
            a,
            vec![
                to("x", true),
                to("y", true),
                Attribution::Nobody,
                to("z", false),
                Attribution::Nobody,
                Attribution::Nobody,
                Attribution::Several(vec!["x (prod)".into(), "y (prod)".into()]),
            ]
        );
    }

    #[test]
    fn a_claim_holds_a_little_past_its_last_report() {
        // The holder's next report is on its way: a call 20 s after its last period is
        // still its (2 × 10 s + 5 s grace); 30 s after is not.
        let claims = [claim("10.0.0.9", "x", Side::Caller, 0, H)];
        let a = attribute(
            &[
                row("10.0.0.9", 1, H + 20_000, H + 20_000),
                row("10.0.0.9", 1, H + 30_000, H + 30_000),
            ],
            &claims,
        );
        assert_eq!(a, vec![to("x", true), Attribution::Nobody]);
    }

    fn caller(service: &str, requests: u64) -> Caller {
        Caller {
            service: service.into(),
            environment: "prod".into(),
            counts: Counts {
                requests,
                connections: 2,
                first_seen: Timestamp(H),
                last_seen: Timestamp(2 * H),
                ..Counts::default()
            },
            hosts: vec!["old.internal:80".into()],
            ..Caller::default()
        }
    }

    #[test]
    fn both_sides_merge_into_one_row_per_service() {
        let rows = [
            row("10.0.0.1", 10, H, 2 * H),
            row("10.0.0.3", 4, H, 2 * H),
            row("10.0.0.2", 7, H, 3 * H),
            row("10.0.0.2", 1, 4 * H, 5 * H),
            row("10.0.0.4", 2, H, 2 * H),
        ];
        let attributions = [
            to("a", true),
            to("c", true),
            Attribution::Nobody,
            Attribution::Nobody,
            Attribution::Several(vec!["p (prod)".into(), "q (prod)".into()]),
        ];
        let m = merge(
            vec![caller("a", 10), caller("d", 3)],
            &rows,
            &attributions,
            None,
        );
        let a = m.callers.iter().find(|c| c.service == "a").unwrap();
        assert_eq!(a.seen_by, SeenBy::Both);
        assert_eq!(a.caller_counts.unwrap().requests, 10);
        assert_eq!(a.callee_counts.unwrap().requests, 10);
        assert_eq!(a.counts.requests, 10);
        assert_eq!(a.counts.connections, 2, "the larger side per counter");
        assert_eq!(a.addresses, vec!["10.0.0.1"]);
        assert!(!a.around_sidecar);
        let c = m.callers.iter().find(|c| c.service == "c").unwrap();
        assert_eq!(c.seen_by, SeenBy::Callee);
        assert!(c.around_sidecar);
        assert!(c.caller_counts.is_none());
        let d = m.callers.iter().find(|c| c.service == "d").unwrap();
        assert_eq!(d.seen_by, SeenBy::Caller);
        assert!(d.callee_counts.is_none() && d.addresses.is_empty());
        assert_eq!(
            m.callers
                .iter()
                .map(|c| c.service.as_str())
                .collect::<Vec<_>>(),
            vec!["a", "c", "d"],
            "busiest first"
        );
        assert_eq!(m.unattributed.len(), 2);
        assert_eq!(m.unattributed[0].address, "10.0.0.2");
        assert_eq!(m.unattributed[0].counts.requests, 8);
        assert_eq!(m.unattributed[0].counts.last_seen, Timestamp(5 * H));
        assert_eq!(m.unattributed[1].candidates, vec!["p (prod)", "q (prod)"]);
        let ds = disagreements(&m.callers, "old.internal");
        assert_eq!(ds.len(), 1);
        assert!(
            ds[0]
                .message
                .starts_with("c reaches old.internal around its sidecar"),
            "{}",
            ds[0].message
        );
        // An environment filter keeps the unattributed addresses.
        let m = merge(Vec::new(), &rows, &attributions, Some("stage"));
        assert!(m.callers.is_empty());
        assert_eq!(m.unattributed.len(), 2);
    }

    #[test]
    fn merged_counts_saturate() {
        let mut r = row("10.0.0.9", whouses_wire::MAX_COUNT, H, H);
        r.counts.requests = whouses_wire::MAX_COUNT;
        let rows = [r.clone(), r];
        let m = merge(
            Vec::new(),
            &rows,
            &[Attribution::Nobody, Attribution::Nobody],
            None,
        );
        assert_eq!(m.unattributed[0].counts.requests, whouses_wire::MAX_COUNT);
    }

    fn cov(instance: &str, start: i64, end: i64) -> InstanceCoverage {
        InstanceCoverage {
            instance: instance.into(),
            service: "old".into(),
            environment: "prod".into(),
            flush_interval_ms: 10_000,
            observed_until: Timestamp(end),
            intervals: vec![Interval {
                start: Timestamp(start),
                end: Timestamp(end),
            }],
        }
    }

    #[test]
    fn the_callee_side_reports_through_a_window_over_its_instances() {
        let callees = vec![
            CalleeInstance {
                instance: "old-in-1".into(),
                service: "old".into(),
                environment: "prod".into(),
                inbound_hosts: vec!["old.internal".into(), "other.internal".into()],
            },
            CalleeInstance {
                instance: "old-in-2".into(),
                service: "old".into(),
                environment: "prod".into(),
                inbound_hosts: vec![],
            },
            CalleeInstance {
                instance: "x-in".into(),
                service: "x".into(),
                environment: "prod".into(),
                inbound_hosts: vec!["x.internal".into()],
            },
        ];
        let patterns = [HostPattern::Host("old.internal".into())];
        let w = witnesses(&patterns, &callees, &[]);
        assert_eq!(w.len(), 1, "declared");
        let w = witnesses(&patterns, &callees, &[row("10.0.0.1", 1, H, H)]);
        assert_eq!(w.len(), 2, "declared, or of a service that saw it called");
        // One pod replaced by the next: together they cover the window.
        let coverage = [cov("old-in-1", 0, 50 * H), cov("old-in-2", 50 * H, 100 * H)];
        let now = Timestamp(100 * H);
        let ev = callee_evidence(&w, &coverage, &patterns, &[], Timestamp(90 * H), now);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].reporting_through_window, "{ev:?}");
        assert_eq!(ev[0].instances, vec!["old-in-1", "old-in-2"]);
        assert_eq!(ev[0].hosts, vec!["old.internal"]);
        assert_eq!(ev[0].last_report, Some(now));
        // A gap: not throughout.
        let coverage = [cov("old-in-1", 0, 50 * H), cov("old-in-2", 60 * H, 100 * H)];
        let ev = callee_evidence(&w, &coverage, &patterns, &[], Timestamp(40 * H), now);
        assert!(!ev[0].reporting_through_window);
        // No coverage at all: not throughout, and never reported.
        let ev = callee_evidence(&w, &[], &patterns, &[], Timestamp(40 * H), now);
        assert!(!ev[0].reporting_through_window);
        assert_eq!(ev[0].last_report, None);
    }

    #[test]
    fn the_coverage_view_lists_what_is_left_to_find() {
        let callees = vec![CalleeInstance {
            instance: "old-in-1".into(),
            service: "old".into(),
            environment: "prod".into(),
            inbound_hosts: vec!["quiet.internal".into()],
        }];
        let rows = [row("10.0.0.1", 6, H, H), row("10.0.0.2", 2, H, 2 * H)];
        let c = coverage(&callees, &rows, &[to("a", true), Attribution::Nobody]);
        assert_eq!(c.len(), 2);
        let old = &c[0];
        assert_eq!(old.host, "old.internal");
        assert_eq!((old.calls, old.attributed_calls), (10, 7));
        assert!((old.attributed_share - 0.7).abs() < 1e-9);
        assert_eq!(old.callers, vec!["a (prod)"]);
        assert_eq!(old.unattributed.len(), 1);
        assert_eq!(old.unattributed[0].address, "10.0.0.2");
        assert_eq!(old.last_seen, Some(Timestamp(2 * H)));
        // A declared host nobody called: fully attributed (nothing to find), never seen.
        let quiet = &c[1];
        assert_eq!(quiet.host, "quiet.internal");
        assert_eq!((quiet.calls, quiet.attributed_share), (0, 1.0));
        assert_eq!(quiet.callee_services, vec!["old (prod)"]);
        assert_eq!(quiet.last_seen, None);
    }
}
