//! The collector's answers, as JSON: what `GET /v1/callers`, `/v1/callees`, `/v1/hosts`,
//! `/v1/services`, `/v1/check`, `/v1/coverage` and `/v1/export?format=json` return. The collector builds
//! them, the `whouses` CLI reads them; both link only this crate, so the shapes cannot
//! drift apart. These names are the public interface.

use serde::{Deserialize, Serialize};

use crate::counts::Counts;
use crate::decom::Owner;
use crate::host::Scheme;
use crate::time::Timestamp;

/// One edge: a calling service (in an environment) and an upstream it dialed, with its
/// counts over the whole history or since the query's `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRow {
    pub service: String,
    pub environment: String,
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Lookups of one name by one service through its sidecar's DNS forwarder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRow {
    pub service: String,
    pub environment: String,
    pub name: String,
    pub lookups: u64,
    /// The latest answer's addresses.
    pub addresses: Vec<String>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Connections one service made to one remote address around its proxy (the bypass
/// detector), named when its DNS forwarder saw the lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BypassRow {
    pub service: String,
    pub environment: String,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub name: Option<String>,
    pub connections: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// A row of `/v1/callers`: one calling service, its counts summed over the host's names.
/// With inbound sidecars in front of the host, one row merges both sides: `counts` holds,
/// per counter, the larger of what the caller's sidecar and the callee's sidecar counted
/// (each side's own in `caller_counts` and `callee_counts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub service: String,
    pub environment: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The `host:port` names this caller used.
    pub hosts: Vec<String>,
    /// The team that owns the caller (`--owners` file, or the sidecar's `--owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    // Issue 14: both sides reconciled.
    /// Which side saw these calls: the caller's sidecar, the callee's, or both.
    #[serde(default)]
    pub seen_by: SeenBy,
    /// What the caller's own sidecar counted (absent when it reported none of these calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_counts: Option<Counts>,
    /// What the callee's inbound sidecars counted from this service's addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callee_counts: Option<Counts>,
    /// The addresses the callee saw this service's calls come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The callee saw calls from an address this service's (caller-side) sidecar held,
    /// and that sidecar reported none of them: the service reaches the host around it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub around_sidecar: bool,
}

/// Which side of a call saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeenBy {
    /// Only the calling service's sidecar.
    #[default]
    Caller,
    /// Only the callee's inbound sidecar (attributed through the address book).
    Callee,
    /// Both.
    Both,
}

impl SeenBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SeenBy::Caller => "caller",
            SeenBy::Callee => "callee",
            SeenBy::Both => "both",
        }
    }
}

/// Calls the callee's inbound sidecars saw from an address no sidecar held at the time
/// (a caller without a sidecar: one still to find), or that several services held at
/// once (`candidates`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unattributed {
    /// The caller's address, or `(other)` for callers folded at an inbound sidecar's
    /// `--max-peers`.
    pub address: String,
    #[serde(flatten)]
    pub counts: Counts,
    /// The `host:port` names it called.
    pub hosts: Vec<String>,
    /// Services that all held the address when the calls were made (so none is sure).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallersResponse {
    pub host: String,
    pub since: Option<Timestamp>,
    pub callers: Vec<Caller>,
    /// Caller addresses the callee saw that no sidecar held (issue 14).
    #[serde(default)]
    pub unattributed: Vec<Unattributed>,
}

/// A row of `/v1/callees`: one upstream a service called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callee {
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    pub environment: String,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalleesResponse {
    pub service: String,
    pub since: Option<Timestamp>,
    pub callees: Vec<Callee>,
}

/// A row of `/v1/hosts`: one upstream and how busy it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSummary {
    pub host: String,
    pub port: u16,
    pub schemes: Vec<Scheme>,
    /// Distinct calling services (per environment).
    pub callers: usize,
    pub requests: u64,
    /// Tunnels and opaque TCP connections (these carry no requests).
    #[serde(default)]
    pub connections: u64,
    pub errors: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// Milliseconds since the last call (at the time of the answer).
    pub quiet_for_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostsResponse {
    pub unused_since: Option<Timestamp>,
    pub hosts: Vec<HostSummary>,
}

/// One sidecar instance's reporting history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRow {
    pub instance: String,
    pub service: String,
    pub environment: String,
    /// When the collector received its first and last batch (collector time).
    pub first_report: Timestamp,
    pub last_report: Timestamp,
    /// End of the last period the instance reported on.
    pub observed_until: Timestamp,
    pub last_seq: u64,
    pub started_at: Timestamp,
    pub flush_interval_ms: u64,
    pub reports: u64,
}

/// A row of `/v1/services`: a reporting service and its instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub service: String,
    pub environment: String,
    pub first_report: Timestamp,
    pub last_report: Timestamp,
    pub instances: Vec<InstanceRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicesResponse {
    pub services: Vec<ServiceSummary>,
}

/// The answer of `check`: may the host be switched off?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Nobody called it within the quiet period, and the evidence covers the period.
    Unused,
    /// Somebody called it within the quiet period.
    InUse,
    /// Not enough evidence either way.
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

    /// The CLI's exit code for this verdict: 0 unused (safe), 1 in use, 3 unknown.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Unused => 0,
            Verdict::InUse => 1,
            Verdict::Unknown => 3,
        }
    }
}

/// What `check` knows about one past or present caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerEvidence {
    pub service: String,
    pub environment: String,
    /// Calls (requests and tunnel connections) within the quiet period.
    pub requests_in_window: u64,
    /// Calls over the whole retained history.
    pub requests_total: u64,
    pub last_seen: Timestamp,
    /// Until when this service's sidecars have reported (end of their latest period).
    pub last_report: Option<Timestamp>,
    /// Whether its sidecars reported through the whole quiet period.
    pub reporting_through_window: bool,
    pub hosts: Vec<String>,
    /// The team that owns the caller (`--owners` file, or the sidecar's `--owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A service whose sidecar folded calls into `(other)` (its `--max-hosts` was reached)
/// within the quiet period: any of those calls may have gone to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoldEvidence {
    pub service: String,
    pub environment: String,
    /// Calls folded within the quiet period (at hour granularity).
    pub calls: u64,
    pub last_seen: Timestamp,
    /// Whether the service also called the host by name at some point.
    pub past_caller: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResponse {
    pub host: String,
    pub verdict: Verdict,
    /// One sentence saying why: the evidence that decided.
    pub reason: String,
    pub quiet_for_ms: u64,
    pub window_start: Timestamp,
    pub now: Timestamp,
    /// When the collector started observing (its earliest recorded coverage).
    pub observed_since: Option<Timestamp>,
    /// Callers within the quiet period (for `in-use`).
    pub callers: Vec<CallerEvidence>,
    /// Every service that ever called the host, with its reporting coverage.
    pub evidence: Vec<CallerEvidence>,
    /// Services whose calls were folded into `(other)` within the quiet period.
    #[serde(default)]
    pub folded: Vec<FoldEvidence>,
    /// Connections around a proxy within the quiet period: to the host (by name or
    /// address: in use), or by a past caller to an unnamed address on the host's port (a
    /// doubt).
    #[serde(default)]
    pub bypass: Vec<BypassRow>,
    /// Lookups of the host's names within the quiet period.
    #[serde(default)]
    pub lookups: Vec<LookupRow>,
    // Issue 14: the callee's evidence.
    /// The inbound sidecars in front of the host (the callee side) and whether they
    /// reported through the quiet period.
    #[serde(default)]
    pub callee_side: Vec<CalleeEvidence>,
    /// Calling services the callee saw within the quiet period (attributed through the
    /// address book), with what each side counted.
    #[serde(default)]
    pub inbound_callers: Vec<Caller>,
    /// Caller addresses the callee saw within the quiet period that no sidecar held.
    #[serde(default)]
    pub unattributed: Vec<Unattributed>,
    /// Where the two sides disagree: the callee saw calls from a service whose own
    /// sidecar reported none.
    #[serde(default)]
    pub disagreements: Vec<Disagreement>,
}

/// One callee-side service: inbound sidecars in front of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalleeEvidence {
    pub service: String,
    pub environment: String,
    /// Its inbound sidecar instances.
    pub instances: Vec<String>,
    /// The names they declared (`--inbound-host`) or saw called that match the host.
    pub hosts: Vec<String>,
    /// Until when they have reported (end of their latest period).
    pub last_report: Option<Timestamp>,
    /// Whether, together, they reported through the whole quiet period.
    pub reporting_through_window: bool,
}

/// The callee saw calls from a service whose own sidecar reported none of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disagreement {
    pub service: String,
    pub environment: String,
    /// Calls the callee saw from the service's addresses.
    pub calls: u64,
    pub addresses: Vec<String>,
    pub last_seen: Timestamp,
    /// One sentence: "tis-sync reaches tis-reference.internal around its sidecar".
    pub message: String,
}

/// A row of `/v1/coverage`: one host with a callee-side (inbound) sidecar, and how much
/// of what it saw is attributed to known callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverageRow {
    pub host: String,
    /// The services whose inbound sidecars witness the host (`service (environment)`).
    pub callee_services: Vec<String>,
    /// Calls the callee saw (requests and connections).
    pub calls: u64,
    /// Of those, calls attributed to a known calling service.
    pub attributed_calls: u64,
    /// `attributed_calls / calls` (1 when there were no calls).
    pub attributed_share: f64,
    /// The calling services it was attributed to.
    pub callers: Vec<String>,
    /// The addresses still to find: calls no sidecar's address accounts for.
    pub unattributed: Vec<Unattributed>,
    pub last_seen: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoverageResponse {
    pub since: Option<Timestamp>,
    pub hosts: Vec<CoverageRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_serialise_flat_as_the_contract_shows() {
        let c = Caller {
            service: "tis-sync".into(),
            environment: "prod".into(),
            counts: Counts {
                requests: 1234,
                connections: 12,
                errors: 3,
                first_seen: Timestamp(1_795_000_000_000),
                last_seen: Timestamp(1_795_000_001_000),
                ..Counts::default()
            },
            hosts: vec!["tis-reference.internal:443".into()],
            ..Caller::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        // A caller-side row looks as before issue 14, plus its side.
        assert_eq!(v["seen_by"], "caller");
        for absent in [
            "caller_counts",
            "callee_counts",
            "addresses",
            "around_sidecar",
        ] {
            assert!(v.get(absent).is_none(), "{absent} in {v}");
        }
        for field in [
            "service",
            "environment",
            "requests",
            "connections",
            "errors",
            "bytes_sent",
            "bytes_received",
            "first_seen",
            "last_seen",
            "hosts",
        ] {
            assert!(v.get(field).is_some(), "{field} missing in {v}");
        }
        let back: Caller = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            serde_json::to_value(Verdict::InUse).unwrap(),
            serde_json::json!("in-use")
        );
    }
}
