//! The callee's view in a batch (issue 14): which side of a call a sidecar stands on, the
//! calls an inbound sidecar saw *to* its service (per name the caller dialed and per
//! caller address), the names it witnesses, and the addresses an instance held (the
//! address book that attributes a caller address to a service).
//!
//! An inbound edge's counts are deltas like an edge's; its `first_seen`/`last_seen` are
//! the instance's cumulative first and last observation of the key. The address
//! `(other)` holds the calls of callers beyond the sidecar's `--max-peers` (and the host
//! `(other)`, port 0, those beyond `--max-hosts`): counted, never attributable.

use serde::{Deserialize, Serialize};

use crate::counts::{Counts, MAX_COUNT};
use crate::host::{normalize_host, Scheme, MAX_HOST_LEN};
use crate::report::{check_ip, Report, ReportError, MAX_EDGES_PER_REPORT, OTHER_HOST};

/// Most addresses one batch may claim for its instance.
pub const MAX_ADDRESSES: usize = 64;
/// Most names one inbound sidecar may declare.
pub const MAX_INBOUND_HOSTS: usize = 64;

/// Which side of a call a sidecar stands on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Beside a service, counting the calls it makes (explicit or transparent capture).
    #[default]
    Caller,
    /// In front of a service (inbound mode), counting the calls made to it.
    Callee,
}

impl Side {
    pub fn is_caller(&self) -> bool {
        *self == Side::Caller
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::Caller => "caller",
            Side::Callee => "callee",
        }
    }

    /// The stored spelling back (anything unknown reads as the caller side).
    pub fn parse(s: &str) -> Side {
        if s == "callee" {
            Side::Callee
        } else {
            Side::Caller
        }
    }
}

/// Calls to this sidecar's service under one name, from one caller address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FlatInbound")]
pub struct InboundEdge {
    /// The name the caller dialed (`Host`, TLS SNI, or `--inbound-host` for opaque TCP).
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    /// The caller's IP address (canonical form), or `(other)` for callers folded at
    /// `--max-peers`.
    pub address: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The wire shape of an [`InboundEdge`], decoded field by field (errors name the field).
#[derive(Deserialize)]
struct FlatInbound {
    host: String,
    port: u16,
    scheme: Scheme,
    address: String,
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
    first_seen: crate::Timestamp,
    last_seen: crate::Timestamp,
}

impl From<FlatInbound> for InboundEdge {
    fn from(f: FlatInbound) -> InboundEdge {
        InboundEdge {
            host: f.host,
            port: f.port,
            scheme: f.scheme,
            address: f.address,
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

/// A normalised host name, or `(other)` when `other` allows it.
fn check_host(field: &str, host: &str, other: bool) -> Result<(), ReportError> {
    if other && host == OTHER_HOST {
        return Ok(());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(ReportError::field(
            field,
            format!("longer than {MAX_HOST_LEN} characters"),
        ));
    }
    match normalize_host(host) {
        Ok(n) if n == host => Ok(()),
        Ok(_) => Err(ReportError::field(
            field,
            "must be lower-case without a trailing dot",
        )),
        Err(e) => Err(ReportError::field(field, e.to_string())),
    }
}

/// The inbound part of a batch: limits, normal forms, counts and times. Called by
/// [`Report::validate`].
pub(crate) fn validate(r: &Report) -> Result<(), ReportError> {
    if r.inbound.len() > MAX_EDGES_PER_REPORT {
        return Err(ReportError::field(
            "inbound",
            format!("at most {MAX_EDGES_PER_REPORT} per report"),
        ));
    }
    if !r.inbound.is_empty() && r.side != Side::Callee {
        return Err(ReportError::field(
            "inbound",
            "only a callee-side (inbound) sidecar reports inbound calls",
        ));
    }
    for (i, e) in r.inbound.iter().enumerate() {
        let f = |name: &str| format!("inbound[{i}].{name}");
        check_host(&f("host"), &e.host, true)?;
        if e.port == 0 && e.host != OTHER_HOST {
            return Err(ReportError::field(f("port"), "must be 1-65535"));
        }
        if e.address != OTHER_HOST {
            check_ip(&f("address"), &e.address)?;
        }
        for (name, v) in e.counts.fields() {
            if v > MAX_COUNT {
                return Err(ReportError::field(
                    f(name),
                    format!("must be at most {MAX_COUNT}"),
                ));
            }
        }
        r.check_times(&f, e.counts.first_seen, e.counts.last_seen)?;
    }
    if r.inbound_hosts.len() > MAX_INBOUND_HOSTS {
        return Err(ReportError::field(
            "inbound_hosts",
            format!("at most {MAX_INBOUND_HOSTS}"),
        ));
    }
    for (i, h) in r.inbound_hosts.iter().enumerate() {
        check_host(&format!("inbound_hosts[{i}]"), h, false)?;
    }
    if r.addresses.len() > MAX_ADDRESSES {
        return Err(ReportError::field(
            "addresses",
            format!("at most {MAX_ADDRESSES}"),
        ));
    }
    for (i, a) in r.addresses.iter().enumerate() {
        check_ip(&format!("addresses[{i}]"), a)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Timestamp, REPORT_VERSION};

    fn callee() -> Report {
        Report {
            version: REPORT_VERSION,
            service: "tis-reference".into(),
            environment: "prod".into(),
            instance: "tis-reference-in-1".into(),
            seq: 1,
            started_at: Timestamp(1_795_000_000_000),
            period_start: Timestamp(1_795_000_000_000),
            period_end: Timestamp(1_795_000_010_000),
            flush_interval_ms: 10_000,
            side: Side::Callee,
            inbound: vec![InboundEdge {
                host: "tis-reference.internal".into(),
                port: 80,
                scheme: Scheme::Http,
                address: "10.0.4.7".into(),
                counts: Counts {
                    requests: 12,
                    connections: 1,
                    first_seen: Timestamp(1_795_000_001_000),
                    last_seen: Timestamp(1_795_000_009_000),
                    ..Counts::default()
                },
            }],
            inbound_hosts: vec!["tis-reference.internal".into()],
            addresses: vec!["10.0.9.1".into(), "fd00::1".into()],
            ..Default::default()
        }
    }

    fn err_for(mutate: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(callee()).unwrap();
        mutate(&mut v);
        Report::from_json(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_callee_batch_round_trips_flat() {
        let r = callee();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["side"], "callee");
        assert_eq!(v["inbound"][0]["requests"], 12);
        assert_eq!(v["inbound"][0]["address"], "10.0.4.7");
        assert!(v["inbound"][0].get("counts").is_none(), "{v}");
        let back = Report::from_json(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // A caller-side batch carries none of it on the wire.
        let plain = Report {
            side: Side::Caller,
            inbound: vec![],
            inbound_hosts: vec![],
            addresses: vec![],
            ..r
        };
        let v = serde_json::to_value(&plain).unwrap();
        for k in ["side", "inbound", "inbound_hosts", "addresses"] {
            assert!(v.get(k).is_none(), "{k} in {v}");
        }
        assert_eq!(
            Report::from_json(&serde_json::to_vec(&plain).unwrap()).unwrap(),
            plain
        );
    }

    #[test]
    fn errors_name_the_inbound_field() {
        let e = err_for(|v| v["inbound"][0]["address"] = serde_json::json!("10.0.4.007"));
        assert!(e.contains("inbound[0].address"), "{e}");
        let e = err_for(|v| v["inbound"][0]["address"] = serde_json::json!("somewhere"));
        assert!(e.contains("inbound[0].address"), "{e}");
        let e = err_for(|v| v["inbound"][0]["host"] = serde_json::json!("Tis.Internal"));
        assert!(e.contains("inbound[0].host"), "{e}");
        let e = err_for(|v| v["inbound"][0]["port"] = serde_json::json!(0));
        assert!(e.contains("inbound[0].port"), "{e}");
        let e = err_for(|v| v["inbound"][0]["requests"] = serde_json::json!(u64::MAX));
        assert!(e.contains("inbound[0].requests"), "{e}");
        let e =
            err_for(|v| v["inbound"][0]["last_seen"] = serde_json::json!("9999-01-01T00:00:00Z"));
        assert!(e.contains("inbound[0].last_seen"), "{e}");
        let e = err_for(|v| v["addresses"][1] = serde_json::json!("FD00::1"));
        assert!(e.contains("addresses[1]"), "{e}");
        let e = err_for(|v| v["inbound_hosts"][0] = serde_json::json!("a b"));
        assert!(e.contains("inbound_hosts[0]"), "{e}");
        let e = err_for(|v| v["side"] = serde_json::json!("caller"));
        assert!(e.contains("callee-side"), "{e}");
        let e = err_for(|v| v["side"] = serde_json::json!("middle"));
        assert!(e.contains("side"), "{e}");
    }

    #[test]
    fn folded_callers_and_names_are_valid() {
        let mut r = callee();
        r.inbound[0].address = OTHER_HOST.into();
        r.inbound.push(InboundEdge {
            host: OTHER_HOST.into(),
            port: 0,
            ..r.inbound[0].clone()
        });
        r.validate().unwrap();
        assert_eq!(r.items(), 2);
    }
}
