//! `check`: is a host safe to switch off? The safety gate, so it must not lie.
//!
//! * `in-use` — someone called it within the quiet period.
//! * `unused` — nobody called it within the quiet period, the collector has been
//!   observing for at least that long, **and** every service that ever called it kept an
//!   instance reporting through the whole period (heartbeats count): their silence about
//!   the host is evidence, not blindness.
//! * `unknown` — anything less: the host was never seen (a typo must not read as "safe"),
//!   the collector is too new, or a past caller's sidecars went quiet during the period.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use whouses_wire::Timestamp;

use crate::query::callers_of;
use crate::store::{
    merge_interval, EdgeFilter, EdgeRow, InstanceCoverage, Interval, Store, StoreError,
};
use crate::targets::HostPattern;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Unused,
    InUse,
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unused => "unused",
            Verdict::InUse => "in-use",
            Verdict::Unknown => "unknown",
        }
    }

    /// The CLI's exit code for this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Unused => 0,
            Verdict::InUse => 1,
            Verdict::Unknown => 3,
        }
    }
}

/// What we know about one past or present caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerEvidence {
    pub service: String,
    pub environment: String,
    /// Calls within the quiet period.
    pub requests_in_window: u64,
    pub requests_total: u64,
    pub last_seen: Timestamp,
    /// Until when this service's sidecars have reported (end of their latest period).
    pub last_report: Option<Timestamp>,
    /// Whether its sidecars reported through the whole quiet period.
    pub reporting_through_window: bool,
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResponse {
    pub host: String,
    pub verdict: Verdict,
    /// One sentence saying why.
    pub reason: String,
    pub quiet_for_ms: u64,
    pub window_start: Timestamp,
    pub now: Timestamp,
    /// When the collector started observing (its first report).
    pub observed_since: Option<Timestamp>,
    /// Callers within the quiet period (for `in-use`).
    pub callers: Vec<CallerEvidence>,
    /// Every service that ever called the host, with its reporting coverage.
    pub evidence: Vec<CallerEvidence>,
}

/// How a service's sidecars have been reporting (over all its instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporting {
    /// The longest flush interval among its instances.
    pub flush_interval_ms: u64,
    /// The end of the latest period any of its instances reported on.
    pub observed_until: Timestamp,
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
            Some(i) if i > 0 => format!("{} {}", &part[..i], &part[i..]),
            _ => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Most names a reason line spells out.
const REASON_NAMES: usize = 10;

/// How long after a period ends its report may still be on its way: two flush intervals
/// plus a little, so a healthy sidecar is never mistaken for a silent one.
fn grace_ms(flush_interval_ms: u64) -> i64 {
    (2 * flush_interval_ms as i64) + 5_000
}

/// Decide, from the rows the store gave us. Pure, so tests can control time.
pub fn decide(
    host: &str,
    quiet_for_ms: u64,
    now: Timestamp,
    edges: &[EdgeRow],
    coverage: &[InstanceCoverage],
    reporting: &BTreeMap<(String, String), Reporting>,
    observed_since: Option<Timestamp>,
) -> CheckResponse {
    let window_start = Timestamp(now.0 - quiet_for_ms as i64);
    let mut union: BTreeMap<(String, String), Vec<Interval>> = BTreeMap::new();
    for c in coverage {
        let u = union
            .entry((c.service.clone(), c.environment.clone()))
            .or_default();
        for iv in &c.intervals {
            merge_interval(u, *iv);
        }
    }
    let recent: Vec<EdgeRow> = edges
        .iter()
        .filter(|e| e.last_seen >= window_start)
        .cloned()
        .collect();
    let evidence: Vec<CallerEvidence> = callers_of(edges)
        .into_iter()
        .map(|c| {
            let key = (c.service.clone(), c.environment.clone());
            let ivs = union.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            let rep = reporting.get(&key);
            let grace = grace_ms(rep.map_or(10_000, |r| r.flush_interval_ms));
            let need_until = Timestamp(now.0 - grace);
            let covered = ivs
                .iter()
                .any(|iv| iv.start <= window_start && iv.end >= need_until);
            let in_window = recent
                .iter()
                .filter(|e| e.service == c.service && e.environment == c.environment)
                .count();
            CallerEvidence {
                requests_in_window: if in_window > 0 { c.requests } else { 0 },
                requests_total: c.requests,
                last_seen: c.last_seen,
                last_report: rep.map(|r| r.observed_until),
                reporting_through_window: covered,
                hosts: c.hosts,
                service: c.service,
                environment: c.environment,
            }
        })
        .collect();

    let quiet = spell_duration(quiet_for_ms);
    let (verdict, reason, callers) = if edges.is_empty() {
        (
            Verdict::Unknown,
            format!("no call to {host} has ever been recorded; check the name (a typo must not read as safe)"),
            Vec::new(),
        )
    } else if !recent.is_empty() {
        let callers: Vec<CallerEvidence> = evidence
            .iter()
            .filter(|e| e.last_seen >= window_start)
            .cloned()
            .collect();
        let names: Vec<&str> = callers.iter().map(|c| c.service.as_str()).collect();
        (
            Verdict::InUse,
            format!("called within the last {quiet} by {}", name_some(&names)),
            callers,
        )
    } else if observed_since.is_none_or(|t| t > window_start) {
        (
            Verdict::Unknown,
            format!(
                "the collector has only been observing since {}, less than {quiet}",
                observed_since
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "never".into())
            ),
            Vec::new(),
        )
    } else {
        let silent: Vec<&CallerEvidence> = evidence
            .iter()
            .filter(|e| !e.reporting_through_window)
            .collect();
        if silent.is_empty() {
            (
                Verdict::Unused,
                format!(
                    "no calls for {quiet}, and all {} past caller(s) kept reporting throughout",
                    evidence.len()
                ),
                Vec::new(),
            )
        } else {
            let names: Vec<String> = silent
                .iter()
                .map(|e| match e.last_report {
                    Some(t) => format!("{} (last report {t})", e.service),
                    None => format!("{} (no report in the period)", e.service),
                })
                .collect();
            (
                Verdict::Unknown,
                format!(
                    "no calls for {quiet}, but these past callers did not report through the whole period, so they may still call it: {}",
                    name_some(&names)
                ),
                Vec::new(),
            )
        }
    };
    CheckResponse {
        host: host.to_string(),
        verdict,
        reason,
        quiet_for_ms,
        window_start,
        now,
        observed_since,
        callers,
        evidence,
    }
}

pub async fn check(
    store: &Store,
    host: &str,
    patterns: Vec<HostPattern>,
    quiet_for_ms: u64,
    now: Timestamp,
) -> Result<CheckResponse, StoreError> {
    let edges = store
        .edges(&EdgeFilter {
            hosts: Some(patterns),
            ..Default::default()
        })
        .await?;
    let mut services: Vec<(String, String)> = edges
        .iter()
        .map(|e| (e.service.clone(), e.environment.clone()))
        .collect();
    services.sort();
    services.dedup();
    let window_start = Timestamp(now.0 - quiet_for_ms as i64);
    let coverage = store.coverage(&services, window_start).await?;
    let mut reporting: BTreeMap<(String, String), Reporting> = BTreeMap::new();
    for i in &coverage {
        let r = reporting
            .entry((i.service.clone(), i.environment.clone()))
            .or_insert(Reporting {
                flush_interval_ms: 0,
                observed_until: i.observed_until,
            });
        r.flush_interval_ms = r.flush_interval_ms.max(i.flush_interval_ms);
        r.observed_until = r.observed_until.max(i.observed_until);
    }
    let observed_since = store.observed_since().await?;
    Ok(decide(
        host,
        quiet_for_ms,
        now,
        &edges,
        &coverage,
        &reporting,
        observed_since,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn edge(service: &str, last_seen: i64) -> EdgeRow {
        EdgeRow {
            service: service.into(),
            environment: "prod".into(),
            host: "old.internal".into(),
            port: 80,
            scheme: "http".into(),
            requests: 5,
            connections: 1,
            errors: 0,
            bytes_sent: 0,
            bytes_received: 0,
            first_seen: Timestamp(0),
            last_seen: Timestamp(last_seen),
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

    fn run(edges: &[EdgeRow], coverage: &[InstanceCoverage], observed: i64) -> CheckResponse {
        let now = Timestamp(100 * H);
        let mut reporting = BTreeMap::new();
        for c in coverage {
            let end = c.intervals.iter().map(|i| i.end).max().unwrap();
            reporting.insert(
                (c.service.clone(), c.environment.clone()),
                Reporting {
                    flush_interval_ms: 10_000,
                    observed_until: end,
                },
            );
        }
        decide(
            "old.internal",
            (10 * H) as u64,
            now,
            edges,
            coverage,
            &reporting,
            Some(Timestamp(observed)),
        )
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
    }

    #[test]
    fn recent_call_is_in_use() {
        let r = run(&[edge("a", 95 * H)], &[cov("a", 0, 100 * H)], 0);
        assert_eq!(r.verdict, Verdict::InUse);
        assert_eq!(r.callers.len(), 1);
    }

    #[test]
    fn quiet_and_fully_observed_is_unused() {
        let r = run(&[edge("a", 50 * H)], &[cov("a", 0, 100 * H)], 0);
        assert_eq!(r.verdict, Verdict::Unused, "{}", r.reason);
    }

    #[test]
    fn a_silent_caller_makes_it_unknown() {
        let r = run(
            &[edge("a", 50 * H), edge("b", 40 * H)],
            &[cov("a", 0, 100 * H), cov("b", 0, 92 * H)],
            0,
        );
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.reason.contains('b'), "{}", r.reason);
        let b = r.evidence.iter().find(|e| e.service == "b").unwrap();
        assert!(!b.reporting_through_window);
        assert_eq!(b.last_report, Some(Timestamp(92 * H)));
    }

    #[test]
    fn a_gap_in_reporting_makes_it_unknown() {
        let mut c = cov("a", 0, 93 * H);
        c.intervals.push(Interval {
            start: Timestamp(94 * H),
            end: Timestamp(100 * H),
        });
        let r = run(&[edge("a", 50 * H)], &[c], 0);
        assert_eq!(r.verdict, Verdict::Unknown);
    }

    #[test]
    fn a_young_collector_does_not_know() {
        let r = run(&[edge("a", 50 * H)], &[cov("a", 0, 100 * H)], 95 * H);
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.reason.contains("only been observing"));
    }

    #[test]
    fn a_never_seen_host_is_unknown() {
        let r = run(&[], &[], 0);
        assert_eq!(r.verdict, Verdict::Unknown);
        assert!(r.reason.contains("ever been recorded"), "{}", r.reason);
    }
}
