//! `check`: is a host safe to switch off? The safety gate, so it must not lie.
//!
//! * `in-use` — someone called it within the quiet period.
//! * `unused` — nobody called it within the quiet period, the collector has been
//!   observing for at least that long, every service that ever called it kept an
//!   instance reporting through the whole period (heartbeats count: their silence about
//!   the host is evidence, not blindness), and no sidecar folded calls into `(other)`
//!   meanwhile (a folded call could have been to this host).
//! * `unknown` — anything less: the host was never seen (a typo must not read as "safe"),
//!   the collector is too new, a past caller's sidecars went quiet, or calls were folded.
//!
//! [`decide`] is a pure function of the evidence (table-tested below); [`check`] only
//! gathers it from the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

mod callee;
use callee::CalleeView;

use whouses_wire::api::{
    BypassRow, CallerEvidence, CheckResponse, EdgeRow, FoldEvidence, LookupRow, Verdict,
};
use whouses_wire::{counts, Timestamp, OTHER_HOST};

use crate::query::callers_of;
use crate::reconcile::{self, Attribution};
use crate::store::{
    merge_intervals, CalleeInstance, EdgeFilter, InboundFilter, InboundRow, InstanceCoverage,
    Interval, ObsFilter, Store, StoreError, WindowCalls,
};
use crate::targets::HostPattern;

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub host: &'a str,
    /// What the host name stands for (a host, `host:port`, `*.suffix`, a target's list).
    pub patterns: &'a [HostPattern],
    pub quiet_for_ms: u64,
    pub now: Timestamp,
    /// The host's edges over the whole retained history.
    pub edges: &'a [EdgeRow],
    /// The host's edges with their calls since the window start (hour granularity): the
    /// callers' `requests_in_window`.
    pub window_calls: &'a [WindowCalls],
    /// The host's edges counted since the window start, whole (hour granularity): the
    /// callers' side of the callee's view. Needed only when the callee's inbound
    /// sidecars saw calls within the window; empty otherwise.
    pub in_window: &'a [EdgeRow],
    /// `(other)` rows of every service since the window start (their calls in the
    /// window): calls folded at `--max-hosts`, which may include calls to the host.
    pub folded: &'a [WindowCalls],
    /// Coverage of every instance of the past callers.
    pub coverage: &'a [InstanceCoverage],
    /// When the collector's earliest coverage starts.
    pub observed_since: Option<Timestamp>,
    /// Lookups of the host's names through sidecars' DNS forwarders (all retained
    /// history: their addresses name bypassing connections).
    pub lookups: &'a [LookupRow],
    /// Connections seen going around a proxy since the window start: to the host's names
    /// or addresses, or by its past callers.
    pub bypass: &'a [BypassRow],
    /// What the callee's inbound sidecars saw (issue 14).
    pub inbound: Inbound<'a>,
}

/// The callee's evidence (issue 14): what inbound sidecars in front of the host saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inbound<'a> {
    /// The host's inbound buckets over the whole retained history.
    pub rows: &'a [InboundRow],
    /// Who made each of `rows` (the address book's verdict, same order).
    pub attributions: &'a [Attribution],
    /// The callee-side instances that witness the host (declared one of its names, or of
    /// a service whose inbound sidecars saw it called).
    pub witnesses: &'a [CalleeInstance],
    /// Their observation coverage.
    pub coverage: &'a [InstanceCoverage],
    /// Inbound buckets of the `(other)` host since the window start: calls the witnesses'
    /// sidecars folded at `--max-hosts`, which may be to the host.
    pub folded: &'a [InboundRow],
}

/// How a bypassing connection relates to the host being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Around {
    /// To the host: by the name the app resolved, or by one of its addresses.
    Host,
    /// By a past caller, to an address nobody named, on a port the host is called on:
    /// it may be the host.
    Maybe,
    /// Something else.
    Other,
}

/// Classify a bypass row against the host (`patterns`), its known addresses and ports, and
/// its past callers.
fn around(
    b: &BypassRow,
    patterns: &[HostPattern],
    addresses: &BTreeSet<&str>,
    ports: &BTreeSet<u16>,
    past: &BTreeSet<(&str, &str)>,
) -> Around {
    if let Some(n) = &b.name {
        if patterns.iter().any(|p| p.matches(n, b.port)) {
            return Around::Host;
        }
    }
    if addresses.contains(b.address.as_str())
        || patterns.iter().any(|p| p.matches(&b.address, b.port))
    {
        return Around::Host;
    }
    if b.name.is_none()
        && ports.contains(&b.port)
        && past.contains(&(b.service.as_str(), b.environment.as_str()))
    {
        return Around::Maybe;
    }
    Around::Other
}

/// Names for a one-line reason: the first [`REASON_NAMES`], then how many more (the
/// evidence lists them all).
fn name_some<S: AsRef<str>>(names: &[S]) -> String {
    let mut out = names
        .iter()
        .take(REASON_NAMES)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > REASON_NAMES {
        out.push_str(&format!(
            " and {} more (see the evidence)",
            names.len() - REASON_NAMES
        ));
    }
    out
}

/// A quiet period for a sentence: "30 days", "1 day 12h", "6h 30m" (humantime's
/// "30days", with the day count set apart).
fn spell_duration(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms))
        .to_string()
        .split(' ')
        .map(|part| match part.find("day") {
            // humantime writes the count first ("30days"): never at the start.
            Some(i) => format!("{} {}", &part[..i], &part[i..]),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Most names a reason line spells out.
const REASON_NAMES: usize = 10;

/// How long after a period ends its report may still be on its way: two flush intervals
/// plus a little, so a healthy sidecar is never mistaken for a silent one.
pub fn grace_ms(flush_interval_ms: u64) -> i64 {
    i64::try_from(flush_interval_ms)
        .unwrap_or(i64::MAX)
        .saturating_mul(2)
        .saturating_add(5_000)
}

/// How a service's sidecars have been reporting (over all its instances).
#[derive(Debug, Clone, Default)]
pub struct Reporting {
    /// The longest flush interval among its instances.
    pub flush_interval_ms: u64,
    /// The end of the latest period any of its instances reported on.
    pub observed_until: Timestamp,
    /// The union of its instances' observation intervals.
    pub intervals: Vec<Interval>,
}

/// Whether a service's sidecars reported through the whole window: one of their merged
/// observation intervals spans from `window_start` to `now` less the grace of the slowest
/// instance. (Shared with the migration view.)
pub fn reported_throughout(
    rep: Option<&Reporting>,
    window_start: Timestamp,
    now: Timestamp,
) -> bool {
    let grace = grace_ms(rep.map_or(10_000, |r| r.flush_interval_ms));
    let need_until = now.minus_ms(grace);
    rep.is_some_and(|r| {
        r.intervals
            .iter()
            .any(|iv| iv.start <= window_start && iv.end >= need_until)
    })
}

/// Each service's reporting, from its instances' coverage.
pub fn reporting(coverage: &[InstanceCoverage]) -> HashMap<(&str, &str), Reporting> {
    let mut by: HashMap<(&str, &str), Reporting> = HashMap::with_capacity(coverage.len());
    for c in coverage {
        let r = by.entry((&c.service, &c.environment)).or_default();
        r.flush_interval_ms = r.flush_interval_ms.max(c.flush_interval_ms);
        r.observed_until = r.observed_until.max(c.observed_until);
        r.intervals.extend_from_slice(&c.intervals);
    }
    for r in by.values_mut() {
        merge_intervals(&mut r.intervals);
    }
    by
}

/// Who folded calls into `(other)` within the window, busiest first.
fn folds(folded: &[WindowCalls], past_callers: &[CallerEvidence]) -> Vec<FoldEvidence> {
    let rows: Vec<&WindowCalls> = folded
        .iter()
        .filter(|w| w.edge.host == OTHER_HOST && w.calls > 0)
        .collect();
    if rows.is_empty() {
        return Vec::new();
    }
    let past: BTreeSet<(&str, &str)> = past_callers
        .iter()
        .map(|c| (c.service.as_str(), c.environment.as_str()))
        .collect();
    let mut by: BTreeMap<(&str, &str), FoldEvidence> = BTreeMap::new();
    for w in rows {
        let r = &w.edge;
        let f = by
            .entry((&r.service, &r.environment))
            .or_insert_with(|| FoldEvidence {
                service: r.service.clone(),
                environment: r.environment.clone(),
                calls: 0,
                last_seen: r.counts.last_seen,
                past_caller: past.contains(&(r.service.as_str(), r.environment.as_str())),
            });
        f.calls = counts::add(f.calls, w.calls);
        f.last_seen = f.last_seen.max(r.counts.last_seen);
    }
    let mut v: Vec<FoldEvidence> = by.into_values().collect();
    v.sort_by(|a, b| {
        b.past_caller
            .cmp(&a.past_caller)
            .then(b.calls.cmp(&a.calls))
            .then(a.service.cmp(&b.service))
    });
    v
}

/// Decide, from the evidence alone. Pure, so tests control time and every rule has a
/// table test.
pub fn decide(ev: &Evidence<'_>) -> CheckResponse {
    let now = ev.now;
    let window_start = now.minus_ms(i64::try_from(ev.quiet_for_ms).unwrap_or(i64::MAX));
    let reporting = reporting(ev.coverage);
    let in_window = callers_of(ev.in_window);
    let mut window_calls: HashMap<(&str, &str), u64> =
        HashMap::with_capacity(ev.window_calls.len());
    for w in ev.window_calls {
        let n = window_calls
            .entry((w.edge.service.as_str(), w.edge.environment.as_str()))
            .or_default();
        *n = counts::add(*n, w.calls);
    }
    let past_callers = callers_of(ev.edges);
    let callee = CalleeView::of(
        &ev.inbound,
        ev.patterns,
        ev.host,
        window_start,
        now,
        &in_window,
        &past_callers,
    );
    // Each past caller's row becomes its evidence (moved: a host may have a thousand).
    let evidence: Vec<CallerEvidence> = past_callers
        .into_iter()
        .map(|c| {
            let rep = reporting.get(&(c.service.as_str(), c.environment.as_str()));
            let covered = reported_throughout(rep, window_start, now);
            let calls_in_window = if c.counts.last_seen >= window_start {
                window_calls
                    .get(&(c.service.as_str(), c.environment.as_str()))
                    .copied()
                    .unwrap_or(0)
            } else {
                0
            };
            CallerEvidence {
                requests_in_window: calls_in_window,
                requests_total: c.counts.calls(),
                last_seen: c.counts.last_seen,
                last_report: rep.map(|r| r.observed_until),
                reporting_through_window: covered,
                hosts: c.hosts,
                service: c.service,
                environment: c.environment,
                owner: None,
            }
        })
        .collect();
    let folded = folds(ev.folded, &evidence);
    let patterns = ev.patterns;
    let addresses: BTreeSet<&str> = ev
        .lookups
        .iter()
        .flat_map(|l| l.addresses.iter().map(String::as_str))
        .collect();
    let ports: BTreeSet<u16> = ev.edges.iter().map(|e| e.port).collect();
    let in_window_bypass = ev.bypass.iter().filter(|b| b.last_seen >= window_start);
    let past: BTreeSet<(&str, &str)> = if ev.bypass.is_empty() {
        BTreeSet::new()
    } else {
        evidence
            .iter()
            .map(|e| (e.service.as_str(), e.environment.as_str()))
            .collect()
    };
    let (mut bypass, mut maybe_bypass): (Vec<BypassRow>, Vec<BypassRow>) = (Vec::new(), Vec::new());
    for b in in_window_bypass {
        match around(b, patterns, &addresses, &ports, &past) {
            Around::Host => bypass.push(b.clone()),
            Around::Maybe => maybe_bypass.push(b.clone()),
            Around::Other => {}
        }
    }
    let lookups: Vec<LookupRow> = ev
        .lookups
        .iter()
        .filter(|l| l.last_seen >= window_start)
        .cloned()
        .collect();

    let quiet = spell_duration(ev.quiet_for_ms);
    let host = ev.host;
    let callers: Vec<CallerEvidence> = evidence
        .iter()
        .filter(|e| e.last_seen >= window_start)
        .cloned()
        .collect();
    let (mut verdict, mut reason) = if !callers.is_empty()
        || !bypass.is_empty()
        || callee.calls_in_window > 0
    {
        let mut parts = Vec::new();
        if !callers.is_empty() {
            let names: Vec<&str> = callers.iter().map(|c| c.service.as_str()).collect();
            parts.push(format!(
                "called within the last {quiet} by {}",
                name_some(&names)
            ));
        }
        if !bypass.is_empty() {
            let what: Vec<String> = bypass.iter().map(describe_bypass).collect();
            parts.push(format!(
                "reached around the proxy within the last {quiet}: {}",
                name_some(&what)
            ));
        }
        parts.extend(callee.in_use_parts(&quiet));
        (Verdict::InUse, parts.join("; and "))
    } else if ev.edges.is_empty()
        && lookups.is_empty()
        && maybe_bypass.is_empty()
        && ev.inbound.rows.is_empty()
        && callee.side.is_empty()
    {
        (
            Verdict::Unknown,
            format!("no call to {host} has ever been recorded; check the name (a typo must not read as safe)"),
        )
    } else if ev.observed_since.is_none_or(|t| t > window_start) {
        (
            Verdict::Unknown,
            format!(
                "the collector has only been observing since {}, less than {quiet}",
                ev.observed_since
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "never".into())
            ),
        )
    } else {
        let silent: Vec<String> = evidence
            .iter()
            .filter(|e| !e.reporting_through_window)
            .map(|e| match e.last_report {
                Some(t) => format!("{} (last report {t})", e.service),
                None => format!("{} (no report in the period)", e.service),
            })
            .collect();
        let folders: Vec<String> = folded
            .iter()
            .map(|f| {
                format!(
                    "{} ({} call(s){})",
                    f.service,
                    f.calls,
                    if f.past_caller { ", a past caller" } else { "" }
                )
            })
            .collect();
        let mut doubts = Vec::new();
        if !silent.is_empty() {
            doubts.push(format!(
                "these past callers did not report through the whole period, so they may still call it: {}",
                name_some(&silent)
            ));
        }
        if !folders.is_empty() {
            doubts.push(format!(
                "these sidecars hit --max-hosts and folded calls into (other), which may include calls to {host}: {}",
                name_some(&folders)
            ));
        }
        if !maybe_bypass.is_empty() {
            let what: Vec<String> = maybe_bypass.iter().map(describe_bypass).collect();
            doubts.push(format!(
                "these past callers connected around their proxy to unnamed addresses on {host}'s ports, which may be {host}: {}",
                name_some(&what)
            ));
        }
        if !lookups.is_empty() {
            let what: Vec<String> = lookups
                .iter()
                .map(|l| {
                    format!(
                        "{} ({} lookup(s) of {}, last {})",
                        l.service, l.lookups, l.name, l.last_seen
                    )
                })
                .collect();
            doubts.push(format!(
                "these services looked the name up (no call seen): {}",
                name_some(&what)
            ));
        }
        if ev.edges.is_empty() && ev.inbound.rows.is_empty() && callee.side.is_empty() {
            doubts.push(format!(
                "no call to {host} was ever recorded through a proxy"
            ));
        }
        if doubts.is_empty() {
            (
                Verdict::Unused,
                format!(
                    "no calls for {quiet}, and all {} past caller(s) kept reporting throughout",
                    evidence.len()
                ),
            )
        } else {
            (
                Verdict::Unknown,
                format!("no calls for {quiet}, but {}", doubts.join("; and ")),
            )
        }
    };
    // Issue 14: nobody is known to call it; the callee's own evidence decides when its
    // inbound sidecars reported throughout, and is a doubt when they did not.
    if verdict != Verdict::InUse {
        (verdict, reason) = callee.judge(verdict, reason, host, &quiet, !ev.edges.is_empty());
    }
    CheckResponse {
        host: host.to_string(),
        verdict,
        reason,
        quiet_for_ms: ev.quiet_for_ms,
        window_start,
        now,
        observed_since: ev.observed_since,
        callers,
        evidence,
        folded,
        bypass: bypass.into_iter().chain(maybe_bypass).collect(),
        lookups,
        callee_side: callee.side,
        inbound_callers: callee.callers,
        unattributed: callee.unattributed,
        disagreements: callee.disagreements,
    }
}

/// "node-app reached 198.18.0.2:8080 (old.internal) around the proxy 12 times".
fn describe_bypass(b: &BypassRow) -> String {
    let addr = crate::query::host_port(&b.address, b.port);
    match &b.name {
        Some(n) => format!(
            "{} reached {addr} ({n}) {} time(s), last {}",
            b.service, b.connections, b.last_seen
        ),
        None => format!(
            "{} reached {addr} {} time(s), last {}",
            b.service, b.connections, b.last_seen
        ),
    }
}

/// Gather the evidence for `check` from the store, then [`decide`].
pub async fn check(
    store: &dyn Store,
    host: &str,
    patterns: Vec<HostPattern>,
    quiet_for_ms: u64,
    now: Timestamp,
) -> Result<CheckResponse, StoreError> {
    let window_start = now.minus_ms(i64::try_from(quiet_for_ms).unwrap_or(i64::MAX));
    let other = [HostPattern::Host(OTHER_HOST.to_string())];
    let names = ObsFilter {
        names: Some(patterns.clone()),
        ..Default::default()
    };
    // Issue 14: the callee side — inbound calls to the host (attributed through the
    // address book), the inbound sidecars witnessing it and their coverage, and what they
    // folded into (other) within the window.
    let inbound_of_host = InboundFilter {
        hosts: Some(patterns.clone()),
        since: None,
    };
    // Everything that does not depend on another read is read at once (separate
    // connections): the latency of `check` is its longest chain of reads, not their sum.
    // Every edge of the host over all retained time, each with its calls within the
    // window (one bucket row per edge, not every bucket in the window) — and, at the same
    // time, the coverage of every service that ever called it (the services found by the
    // same statement). A caller new between the two reads has no coverage here: it called
    // within the window, so it is `in-use` evidence whatever its coverage.
    let (window_calls, coverage, folded, observed_since, lookups, (rows, attributions), callees) =
        tokio::try_join!(
            store.window_calls(&patterns, window_start),
            store.callers_coverage(&patterns, window_start),
            store.window_calls(&other, window_start),
            store.observed_since(),
            store.lookups(&names),
            crate::query::inbound_attributed(store, &inbound_of_host),
            store.callee_instances(),
        )?;
    let mut services: Vec<(String, String)> = window_calls
        .iter()
        .map(|w| (w.edge.service.clone(), w.edge.environment.clone()))
        .collect();
    services.sort();
    services.dedup();
    let edges: Vec<EdgeRow> = window_calls.iter().map(|w| w.edge.clone()).collect();
    let called_in_window = edges.iter().any(|e| e.counts.last_seen >= window_start);
    let mut addresses: Vec<String> = lookups
        .iter()
        .flat_map(|l| l.addresses.iter().cloned())
        .collect();
    addresses.sort();
    addresses.dedup();
    let witnesses: Vec<CalleeInstance> = reconcile::witnesses(&patterns, &callees, &rows)
        .into_iter()
        .cloned()
        .collect();
    let mut callee_services: Vec<(String, String)> = witnesses
        .iter()
        .map(|w| (w.service.clone(), w.environment.clone()))
        .collect();
    callee_services.sort();
    callee_services.dedup();
    let around = ObsFilter {
        names: Some(patterns.clone()),
        addresses,
        services,
        since: Some(window_start),
    };
    // The callers' side of the callee's view, whole counts (bucket sums): only when the
    // callee's sidecars saw calls within the window.
    let in_window = async {
        if called_in_window && rows.iter().any(|r| r.counts.last_seen >= window_start) {
            store
                .edges(&EdgeFilter {
                    hosts: Some(patterns.clone()),
                    since: Some(window_start),
                    ..Default::default()
                })
                .await
        } else {
            Ok(Vec::new())
        }
    };
    let callee_coverage = async {
        if callee_services.is_empty() {
            Ok(Vec::new())
        } else {
            store.coverage(&callee_services, window_start).await
        }
    };
    let inbound_folded = async {
        if witnesses.is_empty() {
            Ok(Vec::new())
        } else {
            store
                .inbound(&InboundFilter {
                    hosts: Some(other.to_vec()),
                    since: Some(window_start),
                })
                .await
        }
    };
    let (bypass, in_window, callee_coverage, inbound_folded) = tokio::try_join!(
        store.bypass(&around),
        in_window,
        callee_coverage,
        inbound_folded,
    )?;
    Ok(decide(&Evidence {
        host,
        patterns: &patterns,
        quiet_for_ms,
        now,
        edges: &edges,
        window_calls: &window_calls,
        in_window: &in_window,
        folded: &folded,
        coverage: &coverage,
        observed_since,
        lookups: &lookups,
        bypass: &bypass,
        inbound: Inbound {
            rows: &rows,
            attributions: &attributions,
            witnesses: &witnesses,
            coverage: &callee_coverage,
            folded: &inbound_folded,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::api::SeenBy;
    use whouses_wire::{Counts, Scheme};

    const H: i64 = 3_600_000;
    const NOW: i64 = 100 * H;
    const QUIET: u64 = (10 * H) as u64;

    fn row(service: &str, host: &str, calls: u64, last_seen: i64) -> EdgeRow {
        EdgeRow {
            service: service.into(),
            environment: "prod".into(),
            host: host.into(),
            port: if host == OTHER_HOST { 0 } else { 80 },
            scheme: Scheme::Http,
            counts: Counts {
                requests: calls,
                connections: 1,
                first_seen: Timestamp(0),
                last_seen: Timestamp(last_seen),
                ..Counts::default()
            },
        }
    }

    fn edge(service: &str, last_seen: i64) -> EdgeRow {
        row(service, "old.internal", 5, last_seen)
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

    /// The evidence of a typical case, to vary per test.
    struct Case {
        edges: Vec<EdgeRow>,
        in_window: Vec<EdgeRow>,
        folded: Vec<EdgeRow>,
        coverage: Vec<InstanceCoverage>,
        observed: Option<i64>,
        lookups: Vec<LookupRow>,
        bypass: Vec<BypassRow>,
        /// The callee side (issue 14).
        callee: CalleeCase,
    }

    #[derive(Default)]
    struct CalleeCase {
        rows: Vec<InboundRow>,
        attributions: Vec<Attribution>,
        witnesses: Vec<CalleeInstance>,
        coverage: Vec<InstanceCoverage>,
        folded: Vec<InboundRow>,
    }

    impl Case {
        fn new(edges: Vec<EdgeRow>, coverage: Vec<InstanceCoverage>) -> Case {
            Case {
                edges,
                in_window: vec![],
                folded: vec![],
                coverage,
                observed: Some(0),
                lookups: vec![],
                bypass: vec![],
                callee: CalleeCase::default(),
            }
        }

        fn run(&self) -> CheckResponse {
            // The store's window calls are its window rows' calls.
            let calls = |rows: &[EdgeRow]| -> Vec<WindowCalls> {
                rows.iter()
                    .map(|e| WindowCalls {
                        edge: e.clone(),
                        calls: e.counts.calls(),
                    })
                    .collect()
            };
            let window_calls = calls(&self.in_window);
            let folded = calls(&self.folded);
            decide(&Evidence {
                host: "old.internal",
                patterns: &[HostPattern::Host("old.internal".into())],
                quiet_for_ms: QUIET,
                now: Timestamp(NOW),
                edges: &self.edges,
                window_calls: &window_calls,
                in_window: &self.in_window,
                folded: &folded,
                coverage: &self.coverage,
                observed_since: self.observed.map(Timestamp),
                lookups: &self.lookups,
                bypass: &self.bypass,
                inbound: Inbound {
                    rows: &self.callee.rows,
                    attributions: &self.callee.attributions,
                    witnesses: &self.callee.witnesses,
                    coverage: &self.callee.coverage,
                    folded: &self.callee.folded,
                },
            })
        }
    }

    fn bypass(service: &str, address: &str, port: u16, name: Option<&str>, last: i64) -> BypassRow {
        BypassRow {
            service: service.into(),
            environment: "prod".into(),
            address: address.into(),
            port,
            name: name.map(String::from),
            connections: 12,
            first_seen: Timestamp(last - H),
            last_seen: Timestamp(last),
        }
    }

    fn lookup(service: &str, addresses: &[&str], last: i64) -> LookupRow {
        LookupRow {
            service: service.into(),
            environment: "prod".into(),
            name: "old.internal".into(),
            lookups: 3,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            first_seen: Timestamp(0),
            last_seen: Timestamp(last),
        }
    }

    #[test]
    fn quiet_periods_read_as_words() {
        let day = 86_400_000;
        assert_eq!(spell_duration(30 * day), "30 days");
        assert_eq!(spell_duration(day + 12 * 3_600_000), "1 day 12h");
        assert_eq!(spell_duration(6 * 3_600_000 + 30 * 60_000), "6h 30m");
    }

    #[test]
    fn a_reason_names_ten_callers_then_counts_the_rest() {
        let names: Vec<String> = (0..25).map(|i| format!("svc-{i}")).collect();
        let line = name_some(&names);
        assert!(line.starts_with("svc-0, svc-1,"), "{line}");
        assert!(line.contains("svc-9 and 15 more"), "{line}");
        assert!(!line.contains("svc-10"), "{line}");
        assert_eq!(name_some(&names[..2]), "svc-0, svc-1");
        // Exactly ten: all named, nothing "more".
        let ten = name_some(&names[..10]);
        assert!(ten.ends_with("svc-9") && !ten.contains("more"), "{ten}");
    }

    #[test]
    fn each_environment_of_a_service_is_its_own_caller() {
        let mut stage = edge("a", 99 * H);
        stage.environment = "stage".into();
        let mut c = Case::new(
            vec![edge("a", 99 * H), stage.clone()],
            vec![cov("a", 0, NOW)],
        );
        let mut in_prod = row("a", "old.internal", 7, 99 * H);
        in_prod.counts.connections = 0;
        let mut in_stage = in_prod.clone();
        in_stage.environment = "stage".into();
        in_stage.counts.requests = 2;
        c.in_window = vec![in_prod, in_stage];
        let r = c.run();
        let calls = |env: &str| {
            r.callers
                .iter()
                .find(|e| e.environment == env)
                .map(|e| e.requests_in_window)
        };
        assert_eq!((calls("prod"), calls("stage")), (Some(7), Some(2)));
    }

    #[test]
    fn observation_starting_exactly_at_the_window_start_is_enough() {
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.observed = Some(NOW - QUIET as i64);
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
        c.observed = Some(NOW - QUIET as i64 + 1);
        assert_eq!(c.run().verdict, Verdict::Unknown);
    }

    #[test]
    fn recent_call_is_in_use_and_counts_only_the_window() {
        let mut c = Case::new(vec![edge("a", 95 * H)], vec![cov("a", 0, NOW)]);
        c.edges[0].counts.requests = 1_000;
        c.in_window = vec![row("a", "old.internal", 7, 95 * H)];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::InUse);
        assert_eq!(r.callers.len(), 1);
        assert_eq!(
            r.callers[0].requests_in_window, 8,
            "7 requests + 1 connection"
        );
        assert_eq!(r.callers[0].requests_total, 1_001);
        assert!(
            r.reason.contains("called within the last 10h by a"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn the_window_boundaries_are_inclusive() {
        // A call exactly at the window start is in use.
        let c = Case::new(vec![edge("a", NOW - QUIET as i64)], vec![cov("a", 0, NOW)]);
        assert_eq!(c.run().verdict, Verdict::InUse);
        // One millisecond earlier it is not.
        let c = Case::new(
            vec![edge("a", NOW - QUIET as i64 - 1)],
            vec![cov("a", 0, NOW)],
        );
        assert_eq!(c.run().verdict, Verdict::Unused);
        // Coverage starting exactly at the window start and ending exactly at now minus
        // the grace (2 × 10 s + 5 s) is enough; a millisecond short either way is not.
        let (ws, need) = (NOW - QUIET as i64, NOW - 25_000);
        let c = Case::new(vec![edge("a", H)], vec![cov("a", ws, need)]);
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
        let c = Case::new(vec![edge("a", H)], vec![cov("a", ws + 1, need)]);
        assert_eq!(c.run().verdict, Verdict::Unknown);
        let c = Case::new(vec![edge("a", H)], vec![cov("a", ws, need - 1)]);
        assert_eq!(c.run().verdict, Verdict::Unknown);
    }

    #[test]
    fn quiet_and_fully_observed_is_unused() {
        let r = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]).run();
        assert_eq!(r.verdict, Verdict::Unused, "{}", r.reason);
        assert!(
            r.reason.contains("all 1 past caller(s) kept reporting"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn a_silent_caller_makes_it_unknown() {
        let r = Case::new(
            vec![edge("a", 50 * H), edge("b", 40 * H)],
            vec![cov("a", 0, NOW), cov("b", 0, 92 * H)],
        )
        .run();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(
            r.reason.contains("did not report through the whole period")
                && r.reason.contains("b (last report"),
            "{}",
            r.reason
        );
        assert!(!r.reason.contains("a (last report"), "{}", r.reason);
        let b = r.evidence.iter().find(|e| e.service == "b").unwrap();
        assert!(!b.reporting_through_window);
        assert_eq!(b.last_report, Some(Timestamp(92 * H)));
    }

    #[test]
    fn the_slowest_instance_of_a_service_sets_the_grace() {
        // Two instances of a: one flushes every 10 s, one every 10 min. The service's
        // coverage ends 15 minutes ago: within the slow instance's grace (2 × 10 min +
        // 5 s), so a is still reporting.
        let mut slow = cov("a", 0, NOW - 15 * 60_000);
        slow.instance = "a-2".into();
        slow.flush_interval_ms = 600_000;
        let fast = cov("a", 0, NOW - 15 * 60_000);
        let r = Case::new(vec![edge("a", H)], vec![fast.clone(), slow]).run();
        assert_eq!(r.verdict, Verdict::Unused, "{}", r.reason);
        // With only the fast instance, 15 minutes of silence is a silent caller.
        let r = Case::new(vec![edge("a", H)], vec![fast]).run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
    }

    #[test]
    fn a_gap_in_reporting_makes_it_unknown() {
        let mut c = cov("a", 0, 93 * H);
        c.intervals.push(Interval {
            start: Timestamp(94 * H),
            end: Timestamp(NOW),
        });
        let r = Case::new(vec![edge("a", 50 * H)], vec![c]).run();
        assert_eq!(r.verdict, Verdict::Unknown);
    }

    #[test]
    fn a_young_collector_does_not_know() {
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.observed = Some(95 * H);
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(
            r.reason.contains("only been observing since"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn a_never_seen_host_is_unknown() {
        let r = Case::new(vec![], vec![]).run();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.reason.contains("ever been recorded"), "{}", r.reason);
    }

    #[test]
    fn calls_folded_into_other_make_it_unknown() {
        // The past caller a folded calls while at --max-hosts: any may be to the host.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.folded = vec![row("a", OTHER_HOST, 12, 96 * H)];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(
            r.reason.contains("folded calls into (other)"),
            "{}",
            r.reason
        );
        assert!(
            r.reason.contains("a (13 call(s), a past caller)"),
            "{}",
            r.reason
        );
        assert_eq!(r.folded.len(), 1);
        assert!(r.folded[0].past_caller);
        // A service that never called the host by name folds too: still unknown, and
        // it is named.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.folded = vec![row("z", OTHER_HOST, 0, 96 * H)];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(r.reason.contains("z (1 call(s))"), "{}", r.reason);
        // A fold with bytes but no calls is not a call.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        let mut quiet = row("a", OTHER_HOST, 0, 96 * H);
        quiet.counts.connections = 0;
        quiet.counts.bytes_sent = 10;
        c.folded = vec![quiet];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unused, "{}", r.reason);
        assert!(r.folded.is_empty());
        // A recent call still wins: in use.
        let mut c = Case::new(vec![edge("a", 99 * H)], vec![cov("a", 0, NOW)]);
        c.folded = vec![row("a", OTHER_HOST, 12, 96 * H)];
        assert_eq!(c.run().verdict, Verdict::InUse);
    }

    #[test]
    fn silent_callers_and_folds_are_both_named() {
        let mut c = Case::new(
            vec![edge("a", 50 * H), edge("b", 40 * H)],
            vec![cov("a", 0, NOW), cov("b", 0, 92 * H)],
        );
        c.folded = vec![row("a", OTHER_HOST, 1, 96 * H)];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(
            r.reason.contains("b (last report") && r.reason.contains("; and these sidecars hit"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn huge_quiet_periods_do_not_overflow() {
        let r = decide(&Evidence {
            host: "old.internal",
            patterns: &[HostPattern::Host("old.internal".into())],
            quiet_for_ms: u64::MAX,
            now: Timestamp(NOW),
            edges: &[edge("a", H)],
            window_calls: &[],
            in_window: &[],
            folded: &[],
            coverage: &[cov("a", 0, NOW)],
            observed_since: Some(Timestamp(0)),
            lookups: &[],
            bypass: &[],
            inbound: Inbound::default(),
        });
        assert_eq!(r.window_start, Timestamp(0));
        assert_eq!(r.verdict, Verdict::InUse);
        serde_json::to_string(&r).unwrap();
    }

    #[test]
    fn a_connection_around_the_proxy_to_the_host_is_in_use() {
        // By the name the app resolved through the DNS forwarder.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.bypass = vec![bypass(
            "node-app",
            "198.18.0.2",
            8080,
            Some("old.internal"),
            99 * H,
        )];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::InUse, "{}", r.reason);
        assert!(
            r.reason
                .contains("node-app reached 198.18.0.2:8080 (old.internal) 12 time(s)"),
            "{}",
            r.reason
        );
        // By an address the host's name resolved to (the app looked it up elsewhere).
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.lookups = vec![lookup("a", &["198.18.0.2"], 10 * H)];
        c.bypass = vec![bypass("node-app", "198.18.0.2", 8080, None, 99 * H)];
        assert_eq!(c.run().verdict, Verdict::InUse);
        // A host never called through any proxy, only around one: in use, not "never seen".
        let mut c = Case::new(vec![], vec![]);
        c.bypass = vec![bypass(
            "node-app",
            "198.18.0.2",
            8080,
            Some("old.internal"),
            99 * H,
        )];
        assert_eq!(c.run().verdict, Verdict::InUse);
        // Before the window: no longer evidence of use.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.bypass = vec![bypass(
            "node-app",
            "198.18.0.2",
            8080,
            Some("old.internal"),
            80 * H,
        )];
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
    }

    #[test]
    fn a_past_caller_going_around_to_an_unnamed_address_on_the_hosts_port_is_a_doubt() {
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.bypass = vec![bypass("a", "198.18.0.9", 80, None, 99 * H)];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(
            r.reason.contains("connected around their proxy")
                && r.reason.contains("a reached 198.18.0.9:80"),
            "{}",
            r.reason
        );
        // Another port, another service, or a named other host: not about this host.
        for b in [
            bypass("a", "198.18.0.9", 5432, None, 99 * H),
            bypass("z", "198.18.0.9", 80, None, 99 * H),
            bypass("a", "198.18.0.9", 80, Some("db.internal"), 99 * H),
        ] {
            let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
            c.bypass = vec![b.clone()];
            assert_eq!(
                c.run().verdict,
                Verdict::Unused,
                "{b:?}: {}",
                c.run().reason
            );
        }
    }

    #[test]
    fn a_lookup_without_a_call_is_a_doubt_not_a_proof() {
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        c.lookups = vec![lookup("b", &[], 99 * H)];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(r.reason.contains("looked the name up"), "{}", r.reason);
        assert_eq!(r.lookups.len(), 1);
        // Only lookups, never a call: still not "never recorded" (it is a real name).
        let mut c = Case::new(vec![], vec![]);
        c.lookups = vec![lookup("b", &[], 99 * H)];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(!r.reason.contains("ever been recorded"), "{}", r.reason);
    }

    // Issue 14: the callee's evidence.

    /// An inbound bucket of `old.internal` seen by `old`'s inbound sidecar.
    fn inbound(address: &str, calls: u64, last: i64) -> InboundRow {
        InboundRow {
            service: "old".into(),
            environment: "prod".into(),
            host: "old.internal".into(),
            port: 80,
            scheme: Scheme::Http,
            address: address.into(),
            counts: Counts {
                requests: calls,
                first_seen: Timestamp(last - 60_000),
                last_seen: Timestamp(last),
                ..Counts::default()
            },
        }
    }

    fn by(service: &str, caller_side: bool) -> Attribution {
        Attribution::To {
            service: service.into(),
            environment: "prod".into(),
            caller_side,
        }
    }

    /// `old`'s inbound sidecar, declaring old.internal, observing `start..end`.
    fn witness(c: &mut Case, start: i64, end: i64) {
        c.callee.witnesses = vec![CalleeInstance {
            instance: "old-in-1".into(),
            service: "old".into(),
            environment: "prod".into(),
            inbound_hosts: vec!["old.internal".into()],
        }];
        let mut cov = cov("old", start, end);
        cov.instance = "old-in-1".into();
        c.callee.coverage = vec![cov];
    }

    fn saw(c: &mut Case, row: InboundRow, who: Attribution) {
        c.callee.rows.push(row);
        c.callee.attributions.push(who);
    }

    #[test]
    fn the_callee_saw_nothing_and_reported_throughout_so_it_is_unused() {
        // The callers' side alone: a past caller went quiet (unknown). The callee's
        // inbound sidecar covered the window and saw nothing: unused, on its evidence.
        let mut c = Case::new(
            vec![edge("a", 50 * H), edge("b", 40 * H)],
            vec![cov("a", 0, NOW), cov("b", 0, 92 * H)],
        );
        witness(&mut c, 0, NOW);
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unused, "{}", r.reason);
        assert!(
            r.reason.starts_with("on the callee's evidence: the callee (old (prod)) saw no calls to old.internal for 10h and reported throughout")
                && r.reason.contains("the callers' side alone would not tell")
                && r.reason.contains("b (last report"),
            "{}",
            r.reason
        );
        assert_eq!(r.callee_side.len(), 1);
        assert!(r.callee_side[0].reporting_through_window);
        // Old calls the callee saw before the window change nothing.
        saw(&mut c, inbound("10.0.0.2", 3, 60 * H), Attribution::Nobody);
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
        // Both sides agree: said so.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        witness(&mut c, 0, NOW);
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unused);
        assert!(
            r.reason.contains("the callers' side agrees"),
            "{}",
            r.reason
        );
        // A host only ever witnessed, never called ("put whouses in front of what you
        // retire" first): unused once the callee has reported for the whole period.
        let mut c = Case::new(vec![], vec![]);
        witness(&mut c, 0, NOW);
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
    }

    #[test]
    fn one_unattributed_call_is_in_use() {
        let mut c = Case::new(vec![], vec![]);
        witness(&mut c, 0, NOW);
        saw(
            &mut c,
            inbound("127.0.0.12", 1, 99 * H),
            Attribution::Nobody,
        );
        let r = c.run();
        assert_eq!(r.verdict, Verdict::InUse, "{}", r.reason);
        assert!(
            r.reason.contains(
                "the callee saw 1 call(s) within the last 10h, from 127.0.0.12 (unattributed)"
            ),
            "{}",
            r.reason
        );
        assert_eq!(r.unattributed.len(), 1);
        assert_eq!(r.unattributed[0].address, "127.0.0.12");
        // Even with no callee-side coverage at all, and with callers that are quiet.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        saw(
            &mut c,
            inbound("127.0.0.12", 1, 99 * H),
            Attribution::Nobody,
        );
        assert_eq!(c.run().verdict, Verdict::InUse);
        // Callers folded at --max-peers are calls too.
        let mut c = Case::new(vec![], vec![]);
        saw(&mut c, inbound(OTHER_HOST, 4, 99 * H), Attribution::Nobody);
        assert_eq!(c.run().verdict, Verdict::InUse);
    }

    #[test]
    fn a_caller_going_around_its_sidecar_is_in_use_and_flagged() {
        // c's sidecar reports (and saw no call to the host), but its address called.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        witness(&mut c, 0, NOW);
        saw(&mut c, inbound("127.0.0.13", 7, 99 * H), by("c", true));
        let r = c.run();
        assert_eq!(r.verdict, Verdict::InUse, "{}", r.reason);
        assert!(
            r.reason.contains("from c")
                && r.reason
                    .contains("c reaches old.internal around its sidecar"),
            "{}",
            r.reason
        );
        assert_eq!(r.disagreements.len(), 1);
        assert_eq!(r.disagreements[0].service, "c");
        assert_eq!(r.disagreements[0].calls, 7);
        assert_eq!(r.inbound_callers.len(), 1);
        assert_eq!(r.inbound_callers[0].seen_by, SeenBy::Callee);
        assert!(r.inbound_callers[0].around_sidecar);
        // A service with no caller-side sidecar (only an inbound one of its own) is seen
        // by the callee, not flagged.
        let mut c = Case::new(vec![], vec![]);
        saw(&mut c, inbound("127.0.0.14", 2, 99 * H), by("d", false));
        let r = c.run();
        assert_eq!(r.verdict, Verdict::InUse);
        assert!(r.disagreements.is_empty());
    }

    #[test]
    fn a_caller_seen_by_both_sides_is_one_row() {
        let mut c = Case::new(vec![edge("a", 99 * H)], vec![cov("a", 0, NOW)]);
        c.in_window = vec![row("a", "old.internal", 9, 99 * H)];
        witness(&mut c, 0, NOW);
        saw(&mut c, inbound("127.0.0.11", 10, 99 * H), by("a", true));
        let r = c.run();
        assert_eq!(r.verdict, Verdict::InUse);
        assert_eq!(r.inbound_callers.len(), 1);
        let a = &r.inbound_callers[0];
        assert_eq!((a.service.as_str(), a.seen_by), ("a", SeenBy::Both));
        assert_eq!(a.caller_counts.map(|k| k.calls()), Some(10));
        assert_eq!(a.callee_counts.map(|k| k.calls()), Some(10));
        assert!(r.disagreements.is_empty());
    }

    #[test]
    fn a_callee_that_did_not_report_throughout_is_a_doubt_about_callers_only_it_saw() {
        // The caller side alone says unused; the callee saw a caller without a sidecar
        // before the window, and its sidecar went quiet: that caller may still call.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        witness(&mut c, 0, 92 * H);
        saw(
            &mut c,
            inbound("127.0.0.12", 3, 60 * H),
            Attribution::Nobody,
        );
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(
            r.reason.contains(
                "the callee saw calls from callers no sidecar of theirs reports (127.0.0.12)"
            ),
            "{}",
            r.reason
        );
        assert!(!r.callee_side[0].reporting_through_window);
        // A past caller both sides saw: its own sidecar, which reported throughout, vouches
        // for it; the callers' side stands.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        witness(&mut c, 0, 92 * H);
        saw(&mut c, inbound("127.0.0.11", 3, 50 * H), by("a", true));
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
        // One only the callee saw (c went around its sidecar, which cannot vouch): a doubt.
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        witness(&mut c, 0, 92 * H);
        saw(&mut c, inbound("127.0.0.13", 3, 50 * H), by("c", true));
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(r.reason.contains("reports (c)"), "{}", r.reason);
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        witness(&mut c, 0, 92 * H);
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
        // A quiet caller side and a quiet callee: unknown, and both are named.
        let mut c = Case::new(vec![edge("b", 40 * H)], vec![cov("b", 0, 92 * H)]);
        witness(&mut c, 0, 92 * H);
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(
            r.reason.contains("b (last report")
                && r.reason
                    .contains("callee-side sidecars (old (prod)) did not report"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn calls_the_callee_folded_into_other_are_a_doubt() {
        let mut c = Case::new(vec![edge("a", 50 * H)], vec![cov("a", 0, NOW)]);
        witness(&mut c, 0, NOW);
        let mut f = inbound(OTHER_HOST, 5, 99 * H);
        f.host = OTHER_HOST.into();
        f.port = 0;
        c.callee.folded = vec![f.clone()];
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(
            r.reason
                .contains("folded 5 call(s) into (other) at --max-hosts"),
            "{}",
            r.reason
        );
        // Folded by another service's inbound sidecar: not about this host.
        f.service = "elsewhere".into();
        c.callee.folded = vec![f];
        assert_eq!(c.run().verdict, Verdict::Unused, "{}", c.run().reason);
    }

    #[test]
    fn a_never_seen_host_without_a_witness_is_still_unknown() {
        let r = Case::new(vec![], vec![]).run();
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.reason.contains("ever been recorded"), "{}", r.reason);
        // A witness that has not covered the period yet: unknown, not "never recorded".
        let mut c = Case::new(vec![], vec![]);
        witness(&mut c, 95 * H, NOW);
        let r = c.run();
        assert_eq!(r.verdict, Verdict::Unknown, "{}", r.reason);
        assert!(!r.reason.contains("ever been recorded"), "{}", r.reason);
    }
}
