//! `POST /v1/reports`: one batch of count deltas from one sidecar instance.
//!
//! A batch carries `instance` and a per-instance, strictly increasing `seq`. The collector
//! applies each `(instance, seq)` once; the sidecar re-sends the *same* batch until it is
//! acknowledged. Together that gives exactly-once totals whatever fails in between.
//!
//! Counts are *deltas* since the previous batch of the same instance; `first_seen` and
//! `last_seen` are the instance's cumulative first/last observation of the edge. A batch
//! with no edges is a heartbeat: it proves the sidecar was alive and observing.

use serde::{Deserialize, Serialize};

use crate::counts::Counts;
pub use crate::counts::MAX_COUNT;
use crate::host::{normalize_host, Scheme, MAX_HOST_LEN};
pub use crate::inbound::{InboundEdge, Side};
use crate::time::Timestamp;

/// The report schema version this build writes and understands.
pub const REPORT_VERSION: u32 = 1;
/// Most edges one batch may carry; a sidecar with more pending keys splits them.
pub const MAX_EDGES_PER_REPORT: usize = 10_000;
/// Longest service, environment or instance name.
pub const MAX_NAME_LEN: usize = 128;
/// Shortest and longest flush interval a batch may claim.
pub const FLUSH_INTERVAL_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// How far an edge's times may stray outside its batch's period (clock granularity
/// between the moment a call is counted and the moment the batch is cut).
pub const EDGE_TIME_SLACK_MS: i64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Schema version, [`REPORT_VERSION`].
    pub version: u32,
    pub service: String,
    pub environment: String,
    pub instance: String,
    /// Strictly increasing per instance, also across restarts of the instance.
    pub seq: u64,
    /// When this sidecar process started observing.
    pub started_at: Timestamp,
    /// Start of the period the deltas cover (the cut of the previous batch).
    pub period_start: Timestamp,
    /// End of the period the deltas cover (when this batch was cut).
    pub period_end: Timestamp,
    /// The sidecar's flush interval; tells the collector how often to expect a report.
    pub flush_interval_ms: u64,
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// Names the app looked up through the sidecar's DNS forwarder in this period (a
    /// lookup is a sign of use even before a connection; also what names the addresses
    /// of opaque and bypassing connections).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<Lookup>,
    /// Connections the app made around the proxy, seen by the bypass detector in this
    /// period (explicit mode): evidence that the counts above are not the whole story.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bypass: Vec<Bypass>,
    /// The team that owns the service (the sidecar's `--owner`, e.g. from a pod label):
    /// shown beside the service in answers and alerts when no `--owners` file names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    // Issue 14, the callee's view and the address book (see `crate::inbound`).
    /// Which side of a call this sidecar stands on: `caller` (the default, omitted: it
    /// counts its service's own calls) or `callee` (inbound mode, in front of its service).
    #[serde(default, skip_serializing_if = "Side::is_caller")]
    pub side: Side,
    /// Inbound mode: calls *to* this service in this period, per name the caller dialed
    /// and per caller address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound: Vec<InboundEdge>,
    /// Inbound mode: the names this service is reached by (`--inbound-host`): the hosts
    /// this sidecar witnesses, so that its silence about them is evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbound_hosts: Vec<String>,
    /// The addresses this instance was reachable from during the period (its address
    /// book entry): what attributes a callee's caller address to this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// Lookups of one name through the sidecar's DNS forwarder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    /// The name asked for, normalised like a host.
    pub name: String,
    /// Queries for the name in this period (any record type).
    pub lookups: u64,
    /// The addresses the answers held (at most [`MAX_LOOKUP_ADDRESSES`]).
    #[serde(default)]
    pub addresses: Vec<String>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Connections to one remote address that did not go through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bypass {
    /// The remote IP address (canonical form).
    pub address: String,
    pub port: u16,
    /// The name the app resolved for the address through the DNS forwarder, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Distinct connections seen in this period (a sampler: short ones can be missed).
    pub connections: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Most addresses one lookup entry carries.
pub const MAX_LOOKUP_ADDRESSES: usize = 16;

/// One edge's counts in a batch: the upstream key and the [`Counts`] since the previous
/// batch (on the wire, the count fields sit beside `host`, `port` and `scheme`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FlatEdge")]
pub struct Edge {
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The wire shape of an [`Edge`], decoded field by field: faster than serde's `flatten`
/// on a hot path (10,000 edges a batch) and errors name the exact field
/// (`edges[3].requests`).
#[derive(Deserialize)]
struct FlatEdge {
    host: String,
    port: u16,
    scheme: Scheme,
    #[serde(default)]
    requests: u64,
    #[serde(default)]
    connections: u64,
    #[serde(default)]
    errors: u64,
    #[serde(default)]
    bytes_sent: u64,
    #[serde(default)]
    bytes_received: u64,
    first_seen: Timestamp,
    last_seen: Timestamp,
}

impl From<FlatEdge> for Edge {
    fn from(f: FlatEdge) -> Edge {
        Edge {
            host: f.host,
            port: f.port,
            scheme: f.scheme,
            counts: Counts {
                requests: f.requests,
                connections: f.connections,
                errors: f.errors,
                bytes_sent: f.bytes_sent,
                bytes_received: f.bytes_received,
                first_seen: f.first_seen,
                last_seen: f.last_seen,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("invalid field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error(
        "unsupported report version {0} (this collector understands version {REPORT_VERSION})"
    )]
    Version(u64),
    #[error("too many edges: {0} (at most {MAX_EDGES_PER_REPORT} per report)")]
    TooManyEdges(usize),
}

impl ReportError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ReportError::Field {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

impl Report {
    /// Decode and validate a report body. Errors name the offending field.
    pub fn from_json(body: &[u8]) -> Result<Report, ReportError> {
        // Check the version first so a future schema gets a version error, not a
        // confusing field error.
        let v: VersionOnly =
            serde_json::from_slice(body).map_err(|e| ReportError::Json(e.to_string()))?;
        match v.version {
            None => return Err(ReportError::field("version", "missing")),
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(n) if n == REPORT_VERSION as u64 => {}
                Some(n) => return Err(ReportError::Version(n)),
                None => return Err(ReportError::field("version", "must be a positive integer")),
            },
            Some(_) => return Err(ReportError::field("version", "must be a positive integer")),
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        let report: Report = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                ReportError::Json(inner.to_string())
            } else {
                ReportError::field(path, strip_position(&inner.to_string()))
            }
        })?;
        report.validate()?;
        Ok(report)
    }

    /// Check limits and normalisation. Called by [`Report::from_json`].
    pub fn validate(&self) -> Result<(), ReportError> {
        check_name("service", &self.service)?;
        check_name("environment", &self.environment)?;
        check_name("instance", &self.instance)?;
        if let Some(owner) = &self.owner {
            check_name("owner", owner)?;
        }
        if self.seq > MAX_COUNT {
            return Err(ReportError::field(
                "seq",
                format!("must be at most {MAX_COUNT}"),
            ));
        }
        if self.period_start > self.period_end {
            return Err(ReportError::field("period_start", "is after period_end"));
        }
        if self.period_start < self.started_at {
            return Err(ReportError::field(
                "period_start",
                "is before started_at (a sidecar cannot observe before it started)",
            ));
        }
        if !FLUSH_INTERVAL_MS.contains(&self.flush_interval_ms) {
            return Err(ReportError::field(
                "flush_interval_ms",
                format!(
                    "must be {}-{} (100ms to 1h)",
                    FLUSH_INTERVAL_MS.start(),
                    FLUSH_INTERVAL_MS.end()
                ),
            ));
        }
        if self.edges.len() > MAX_EDGES_PER_REPORT {
            return Err(ReportError::TooManyEdges(self.edges.len()));
        }
        for (i, e) in self.edges.iter().enumerate() {
            let f = |name: &str| format!("edges[{i}].{name}");
            if e.host.len() > MAX_HOST_LEN {
                return Err(ReportError::field(
                    f("host"),
                    format!("longer than {MAX_HOST_LEN} characters"),
                ));
            }
            match normalize_host(&e.host) {
                Ok(n) if n == e.host || e.host == crate::report::OTHER_HOST => {}
                Ok(_) => {
                    return Err(ReportError::field(
                        f("host"),
                        "must be lower-case without a trailing dot",
                    ))
                }
                Err(err) if e.host == OTHER_HOST => drop(err),
                Err(err) => return Err(ReportError::field(f("host"), err.to_string())),
            }
            // Port 0: the `(other)` bucket, or a service-graph server that named no port.
            if e.port == 0 && e.host != OTHER_HOST && e.scheme != Scheme::Otel {
                return Err(ReportError::field(f("port"), "must be 1-65535"));
            }
            for (name, v) in e.counts.fields() {
                if v > MAX_COUNT {
                    return Err(ReportError::field(
                        f(name),
                        format!("must be at most {MAX_COUNT}"),
                    ));
                }
            }
            let c = &e.counts;
            if c.first_seen > c.last_seen {
                return Err(ReportError::field(f("first_seen"), "is after last_seen"));
            }
            if c.last_seen.0 > self.period_end.0.saturating_add(EDGE_TIME_SLACK_MS) {
                return Err(ReportError::field(
                    f("last_seen"),
                    "is after the batch's period_end",
                ));
            }
            if c.first_seen.0 < self.started_at.0.saturating_sub(EDGE_TIME_SLACK_MS) {
                return Err(ReportError::field(
                    f("first_seen"),
                    "is before the sidecar's started_at",
                ));
            }
        }
        if self.lookups.len() > MAX_EDGES_PER_REPORT {
            return Err(ReportError::field(
                "lookups",
                format!("at most {MAX_EDGES_PER_REPORT} per report"),
            ));
        }
        for (i, l) in self.lookups.iter().enumerate() {
            let f = |name: &str| format!("lookups[{i}].{name}");
            match normalize_host(&l.name) {
                Ok(n) if n == l.name => {}
                Ok(_) => {
                    return Err(ReportError::field(
                        f("name"),
                        "must be lower-case without a trailing dot",
                    ))
                }
                Err(err) => return Err(ReportError::field(f("name"), err.to_string())),
            }
            if l.lookups > MAX_COUNT {
                return Err(ReportError::field(
                    f("lookups"),
                    format!("must be at most {MAX_COUNT}"),
                ));
            }
            if l.addresses.len() > MAX_LOOKUP_ADDRESSES {
                return Err(ReportError::field(
                    f("addresses"),
                    format!("at most {MAX_LOOKUP_ADDRESSES}"),
                ));
            }
            for a in &l.addresses {
                check_ip(&f("addresses"), a)?;
            }
            self.check_times(&f, l.first_seen, l.last_seen)?;
        }
        if self.bypass.len() > MAX_EDGES_PER_REPORT {
            return Err(ReportError::field(
                "bypass",
                format!("at most {MAX_EDGES_PER_REPORT} per report"),
            ));
        }
        for (i, b) in self.bypass.iter().enumerate() {
            let f = |name: &str| format!("bypass[{i}].{name}");
            check_ip(&f("address"), &b.address)?;
            if b.port == 0 {
                return Err(ReportError::field(f("port"), "must be 1-65535"));
            }
            if let Some(n) = &b.name {
                if normalize_host(n).as_deref() != Ok(n.as_str()) {
                    return Err(ReportError::field(
                        f("name"),
                        "must be a normalised host name",
                    ));
                }
            }
            if b.connections > MAX_COUNT {
                return Err(ReportError::field(
                    f("connections"),
                    format!("must be at most {MAX_COUNT}"),
                ));
            }
            self.check_times(&f, b.first_seen, b.last_seen)?;
        }
        crate::inbound::validate(self)?;
        Ok(())
    }
}

impl Report {
    /// Entries the batch carries: edges, lookups and bypass observations (what a split
    /// divides).
    pub fn items(&self) -> usize {
        self.edges.len() + self.lookups.len() + self.bypass.len() + self.inbound.len()
    }

    /// A first/last seen pair must be ordered and within the batch's lifetime.
    pub(crate) fn check_times(
        &self,
        f: &dyn Fn(&str) -> String,
        first: Timestamp,
        last: Timestamp,
    ) -> Result<(), ReportError> {
        if first > last {
            return Err(ReportError::field(f("first_seen"), "is after last_seen"));
        }
        if last.0 > self.period_end.0.saturating_add(EDGE_TIME_SLACK_MS) {
            return Err(ReportError::field(
                f("last_seen"),
                "is after the batch's period_end",
            ));
        }
        if first.0 < self.started_at.0.saturating_sub(EDGE_TIME_SLACK_MS) {
            return Err(ReportError::field(
                f("first_seen"),
                "is before the sidecar's started_at",
            ));
        }
        Ok(())
    }
}

/// An IP address in its canonical spelling.
pub(crate) fn check_ip(field: &str, a: &str) -> Result<(), ReportError> {
    match a.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.to_string() == a => Ok(()),
        Ok(_) => Err(ReportError::field(
            field,
            "must be an IP address in canonical form",
        )),
        Err(_) => Err(ReportError::field(
            field,
            format!("{a:?} is not an IP address"),
        )),
    }
}

/// The host of the bucket that absorbs keys beyond a sidecar's `--max-hosts`. Its port is
/// 0 (one bucket per scheme), the only place port 0 is valid.
pub const OTHER_HOST: &str = "(other)";

/// Check a service, environment or instance name (charset and length).
pub fn check_name(field: &str, v: &str) -> Result<(), ReportError> {
    if v.is_empty() {
        return Err(ReportError::field(field, "must not be empty"));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(ReportError::field(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')))
    {
        return Err(ReportError::field(
            field,
            format!("invalid character {c:?} (allowed: letters, digits, - _ . : /)"),
        ));
    }
    Ok(())
}

/// serde_json appends " at line 1 column 42"; the field path already says where.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            version: REPORT_VERSION,
            service: "tis-sync".into(),
            environment: "prod".into(),
            instance: "tis-sync-7f9c-1234".into(),
            seq: 1,
            started_at: Timestamp(1_795_000_000_000),
            period_start: Timestamp(1_795_000_000_000),
            period_end: Timestamp(1_795_000_010_000),
            flush_interval_ms: 10_000,
            edges: vec![Edge {
                host: "tis-reference.internal".into(),
                port: 443,
                scheme: Scheme::Https,
                counts: Counts {
                    requests: 0,
                    connections: 3,
                    errors: 0,
                    bytes_sent: 100,
                    bytes_received: 2000,
                    first_seen: Timestamp(1_795_000_001_000),
                    last_seen: Timestamp(1_795_000_009_000),
                },
            }],
            ..Default::default()
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        let body = serde_json::to_vec(&r).unwrap();
        assert_eq!(Report::from_json(&body).unwrap(), r);
    }

    fn err_for(mutate: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(sample()).unwrap();
        mutate(&mut v);
        Report::from_json(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let e = err_for(|v| v["edges"][0]["requests"] = serde_json::json!(-5));
        assert!(e.contains("edges[0].requests"), "{e}");
        let e = err_for(|v| v["edges"][0]["host"] = serde_json::json!("Bad Host"));
        assert!(e.contains("edges[0].host"), "{e}");
        let e = err_for(|v| v["service"] = serde_json::json!(""));
        assert!(e.contains("`service`"), "{e}");
        let e = err_for(|v| v["version"] = serde_json::json!(2));
        assert!(e.contains("unsupported report version 2"), "{e}");
        let e = err_for(|v| {
            v.as_object_mut().unwrap().remove("seq");
        });
        assert!(e.contains("seq"), "{e}");
    }

    #[test]
    fn the_wire_shape_is_flat() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["edges"][0]["connections"], 3);
        assert_eq!(v["edges"][0]["host"], "tis-reference.internal");
        assert!(v["edges"][0].get("counts").is_none(), "{v}");
    }

    #[test]
    fn impossible_periods_and_times_are_refused() {
        let e = err_for(|v| v["flush_interval_ms"] = serde_json::json!(1u64 << 61));
        assert!(e.contains("flush_interval_ms"), "{e}");
        let e = err_for(|v| v["flush_interval_ms"] = serde_json::json!(0));
        assert!(e.contains("flush_interval_ms"), "{e}");
        let e = err_for(|v| v["period_start"] = serde_json::json!("1970-01-01T00:00:00Z"));
        assert!(e.contains("started_at"), "{e}");
        let e = err_for(|v| v["edges"][0]["last_seen"] = serde_json::json!("9999-01-01T00:00:00Z"));
        assert!(e.contains("edges[0].last_seen"), "{e}");
        let e =
            err_for(|v| v["edges"][0]["first_seen"] = serde_json::json!("1970-01-01T00:00:00Z"));
        assert!(e.contains("edges[0].first_seen"), "{e}");
    }

    #[test]
    fn an_owner_is_optional_and_checked_like_a_name() {
        let mut r = sample();
        r.owner = Some("team-payments".into());
        let body = serde_json::to_vec(&r).unwrap();
        assert_eq!(
            Report::from_json(&body).unwrap().owner.as_deref(),
            Some("team-payments")
        );
        assert!(
            !String::from_utf8_lossy(&serde_json::to_vec(&sample()).unwrap()).contains("owner")
        );
        let e = err_for(|v| v["owner"] = serde_json::json!("team payments"));
        assert!(
            e.contains("`owner`") && e.contains("invalid character"),
            "{e}"
        );
        let e = err_for(|v| v["owner"] = serde_json::json!(""));
        assert!(e.contains("`owner`"), "{e}");
    }

    #[test]
    fn truncated_json_is_malformed() {
        let body = serde_json::to_vec(&sample()).unwrap();
        let e = Report::from_json(&body[..body.len() / 2]).unwrap_err();
        assert!(matches!(e, ReportError::Json(_)), "{e}");
    }
}
