//! OTLP/HTTP metrics bodies → service-graph [`Point`]s: protobuf or JSON
//! (`Content-Type`), gzip or not (`Content-Encoding`), decoded with the
//! `opentelemetry-proto` messages. Only the service-graph counters are taken
//! (`traces_service_graph_request_total` and `…_failed_total`, as the OpenTelemetry
//! Collector's servicegraph connector, Tempo's metrics-generator and Beyla name them);
//! other metrics are counted and ignored. Anything wrong in a service-graph series is
//! an error naming the field, and the whole export is refused (nothing stored).

use std::collections::BTreeMap;
use std::io::Read as _;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, NumberDataPoint,
};
use whouses_wire::host::{normalize_host, split_authority};
use whouses_wire::report::check_name;
use whouses_wire::MAX_COUNT;

use crate::store::otel::OtelField;

/// Most service-graph data points one export may carry (the sidecar's per-batch bound).
pub const MAX_POINTS: usize = whouses_wire::report::MAX_EDGES_PER_REPORT;
/// The environment of a client whose series names none.
pub const DEFAULT_ENVIRONMENT: &str = "default";

/// The metric names taken, and the count each adds to. The servicegraph connector's
/// OTLP names carry the `_total` suffix; a pipeline that strips it is accepted too.
pub fn field_of(name: &str) -> Option<OtelField> {
    match name {
        "traces_service_graph_request_total" | "traces_service_graph_request" => {
            Some(OtelField::Requests)
        }
        "traces_service_graph_request_failed_total" | "traces_service_graph_request_failed" => {
            Some(OtelField::Errors)
        }
        _ => None,
    }
}

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// From `Content-Type`: `application/x-protobuf` (OTLP's default) or `application/json`.
    pub fn from_content_type(ct: Option<&str>) -> Result<Encoding, String> {
        let ct = ct.unwrap_or("application/x-protobuf");
        let base = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(format!(
                "unsupported Content-Type {ct:?}: send application/x-protobuf or application/json (OTLP/HTTP)"
            )),
        }
    }
}

/// One service-graph data point, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// The series' identity: resource, metric and every attribute, and for a cumulative
    /// series its start time (a restart starts a new series). Hashed into the key.
    pub identity: String,
    pub field: OtelField,
    pub cumulative: bool,
    /// The client and its environment.
    pub service: String,
    pub environment: String,
    /// The server: a host and a port (0: none named).
    pub host: String,
    pub port: u16,
    /// Start of the point's period and the point's time, ms since the epoch.
    pub start_ms: i64,
    pub time_ms: i64,
    pub value: u64,
}

/// What a body held.
#[derive(Debug, Default)]
pub struct Decoded {
    pub points: Vec<Point>,
    /// Data points of other metrics, ignored.
    pub ignored: usize,
}

/// Undo `Content-Encoding` (`gzip` or none), reading at most `limit` bytes.
pub fn decompress(body: &[u8], encoding: Option<&str>, limit: usize) -> Result<Vec<u8>, String> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(body.to_vec()),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::new();
            let mut rd = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
            rd.read_to_end(&mut out)
                .map_err(|e| format!("invalid gzip body: {e}"))?;
            if out.len() > limit {
                return Err(format!(
                    "the body inflates to more than {limit} bytes; send smaller exports"
                ));
            }
            Ok(out)
        }
        Some(other) => Err(format!(
            "unsupported Content-Encoding {other:?}: send gzip or no encoding"
        )),
    }
}

/// Decode an export and take its service-graph points.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<Decoded, String> {
    let req: ExportMetricsServiceRequest = match encoding {
        Encoding::Protobuf => {
            prost::Message::decode(body).map_err(|e| format!("malformed OTLP protobuf: {e}"))?
        }
        Encoding::Json => {
            serde_json::from_slice(body).map_err(|e| format!("malformed OTLP JSON: {e}"))?
        }
    };
    points(&req)
}

fn text(v: &Option<AnyValue>) -> Option<String> {
    match v.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Attributes as a sorted map of their text values (others spelled with `{:?}`, for the
/// identity only).
fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let v = text(&kv.value).unwrap_or_else(|| format!("{:?}", kv.value));
            (kv.key.clone(), v)
        })
        .collect()
}

/// Nanoseconds since the epoch → milliseconds, rejecting 0 and absurd times.
fn ms(ns: u64, field: &str) -> Result<i64, String> {
    if ns == 0 {
        return Err(format!("invalid field `{field}`: missing (0)"));
    }
    let ms = ns / 1_000_000;
    // Before 2000 or after 2200: a unit mistake (seconds or microseconds).
    if !(946_684_800_000..=7_258_118_400_000).contains(&ms) {
        return Err(format!(
            "invalid field `{field}`: {ns} ns is not a plausible time (nanoseconds since 1970 expected)"
        ));
    }
    i64::try_from(ms).map_err(|_| format!("invalid field `{field}`: out of range"))
}

fn value(p: &NumberDataPoint, field: &str) -> Result<u64, String> {
    match p.value {
        Some(number_data_point::Value::AsInt(i)) if i >= 0 => {
            Ok(u64::try_from(i).unwrap_or(0).min(MAX_COUNT))
        }
        Some(number_data_point::Value::AsInt(i)) => Err(format!(
            "invalid field `{field}`: {i} is negative (a call count cannot be)"
        )),
        Some(number_data_point::Value::AsDouble(d))
            if d.is_finite() && d >= 0.0 && d.fract() == 0.0 =>
        {
            // Exact up to 2^53; larger counts saturate like every count here.
            Ok(if d >= MAX_COUNT as f64 {
                MAX_COUNT
            } else {
                d as u64
            })
        }
        Some(number_data_point::Value::AsDouble(d)) => Err(format!(
            "invalid field `{field}`: {d} is not a whole non-negative number of calls"
        )),
        None => Err(format!(
            "invalid field `{field}`: missing (asInt or asDouble)"
        )),
    }
}

/// The client/server attributes, as the connector names them, or Tempo/Beyla spellings.
fn attr<'a>(a: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| a.get(*n).map(String::as_str))
        .filter(|v| !v.is_empty())
}

/// `server` as a host and port: `host:port`, `[v6]:port`, or a bare name (port 0).
pub fn server_host(server: &str) -> Result<(String, u16), String> {
    let (host, port) = split_authority(server).map_err(|e| e.to_string())?;
    let host = normalize_host(host).map_err(|e| e.to_string())?;
    let port = match port {
        None => 0,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port {p:?}"))?,
    };
    Ok((host, port))
}

fn points(req: &ExportMetricsServiceRequest) -> Result<Decoded, String> {
    let mut out = Decoded::default();
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        let resource = rm
            .resource
            .as_ref()
            .map(|r| attrs(&r.attributes))
            .unwrap_or_default();
        let resource_env = attr(
            &resource,
            &["deployment.environment.name", "deployment.environment"],
        )
        .map(str::to_string);
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            for (mi, m) in sm.metrics.iter().enumerate() {
                let at = format!("resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]");
                let Some(field) = field_of(&m.name) else {
                    out.ignored += count_points(&m.data);
                    continue;
                };
                let sum = match &m.data {
                    Some(metric::Data::Sum(s)) => s,
                    _ => {
                        return Err(format!(
                            "invalid field `{at}` ({}): must be a Sum (a counter)",
                            m.name
                        ))
                    }
                };
                if !sum.is_monotonic {
                    return Err(format!(
                        "invalid field `{at}.sum.isMonotonic` ({}): must be true (a counter)",
                        m.name
                    ));
                }
                let cumulative = match AggregationTemporality::try_from(sum.aggregation_temporality) {
                    Ok(AggregationTemporality::Cumulative) => true,
                    Ok(AggregationTemporality::Delta) => false,
                    _ => {
                        return Err(format!(
                            "invalid field `{at}.sum.aggregationTemporality` ({}): must be 1 (delta) or 2 (cumulative)",
                            m.name
                        ))
                    }
                };
                for (pi, p) in sum.data_points.iter().enumerate() {
                    let f = |name: &str| format!("{at}.sum.dataPoints[{pi}].{name}");
                    if out.points.len() >= MAX_POINTS {
                        return Err(format!(
                            "too many service-graph data points (more than {MAX_POINTS} in one export); send smaller exports (the exporter's batch size)"
                        ));
                    }
                    let a = attrs(&p.attributes);
                    let client = attr(&a, &["client", "client_service_name"]).ok_or_else(|| {
                        format!("invalid field `{}`: missing", f("attributes.client"))
                    })?;
                    check_name(&f("attributes.client"), client).map_err(|e| e.to_string())?;
                    let server = attr(&a, &["server", "server_service_name"]).ok_or_else(|| {
                        format!("invalid field `{}`: missing", f("attributes.server"))
                    })?;
                    let (host, port) = server_host(server).map_err(|e| {
                        format!(
                            "invalid field `{}`: {server:?}: {e}",
                            f("attributes.server")
                        )
                    })?;
                    let environment = attr(
                        &a,
                        &[
                            "client_deployment.environment.name",
                            "client_deployment.environment",
                            "client_deployment_environment",
                        ],
                    )
                    .map(str::to_string)
                    .or_else(|| resource_env.clone())
                    .unwrap_or_else(|| DEFAULT_ENVIRONMENT.to_string());
                    check_name(&f("attributes.client_deployment.environment"), &environment)
                        .map_err(|e| e.to_string())?;
                    let time_ms = ms(p.time_unix_nano, &f("timeUnixNano"))?;
                    let start_ms = if p.start_time_unix_nano == 0 {
                        if cumulative {
                            return Err(format!(
                                "invalid field `{}`: missing (a cumulative series needs its start time to tell a restart from a reset)",
                                f("startTimeUnixNano")
                            ));
                        }
                        time_ms
                    } else {
                        ms(p.start_time_unix_nano, &f("startTimeUnixNano"))?
                    };
                    if start_ms > time_ms {
                        return Err(format!(
                            "invalid field `{}`: after timeUnixNano",
                            f("startTimeUnixNano")
                        ));
                    }
                    let value = value(p, &f("value"))?;
                    let mut identity = format!(
                        "{}\u{1}{}\u{1}{}",
                        m.name,
                        if cumulative { "c" } else { "d" },
                        if cumulative { start_ms } else { 0 }
                    );
                    for (k, v) in resource.iter().chain(a.iter()) {
                        identity.push('\u{1}');
                        identity.push_str(k);
                        identity.push('=');
                        identity.push_str(v);
                    }
                    out.points.push(Point {
                        identity,
                        field,
                        cumulative,
                        service: client.to_string(),
                        environment,
                        host,
                        port,
                        start_ms,
                        time_ms,
                        value,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn count_points(d: &Option<metric::Data>) -> usize {
    match d {
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(
        name: &str,
        temporality: i64,
        attrs: serde_json::Value,
        point: serde_json::Value,
    ) -> Vec<u8> {
        let mut p = point;
        p["attributes"] = attrs;
        serde_json::to_vec(&json!({"resourceMetrics": [{
            "resource": {"attributes": [{"key": "deployment.environment", "value": {"stringValue": "prod"}}]},
            "scopeMetrics": [{"metrics": [{"name": name, "sum": {
                "aggregationTemporality": temporality, "isMonotonic": true, "dataPoints": [p]}}]}]
        }]}))
        .unwrap()
    }

    fn kv(pairs: &[(&str, &str)]) -> serde_json::Value {
        pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": {"stringValue": v}}))
            .collect()
    }

    const T: &str = "1795000000000000000";
    const S: &str = "1794999990000000000";

    #[test]
    fn points_are_read_with_their_names_and_attributes() {
        let d = decode(
            &body(
                "traces_service_graph_request_failed",
                2,
                kv(&[
                    ("client", "web"),
                    ("server", "Ref.Internal:8080"),
                    ("client_deployment.environment", "stage"),
                ]),
                json!({"startTimeUnixNano": S, "timeUnixNano": T, "asDouble": 3.0}),
            ),
            Encoding::Json,
        )
        .unwrap();
        let p = &d.points[0];
        assert_eq!(p.field, OtelField::Errors);
        assert!(p.cumulative);
        assert_eq!(
            (p.service.as_str(), p.environment.as_str()),
            ("web", "stage")
        );
        assert_eq!((p.host.as_str(), p.port), ("ref.internal", 8080));
        assert_eq!(
            (p.start_ms, p.time_ms, p.value),
            (1_794_999_990_000, 1_795_000_000_000, 3)
        );
        // Delta temporality, the resource's environment, a bare server name.
        let d = decode(
            &body(
                "traces_service_graph_request_total",
                1,
                kv(&[("client", "web"), ("server", "reference")]),
                json!({"timeUnixNano": T, "asInt": "4"}),
            ),
            Encoding::Json,
        )
        .unwrap();
        let p = &d.points[0];
        assert!(!p.cumulative);
        assert_eq!(
            (p.environment.as_str(), p.port, p.start_ms),
            ("prod", 0, p.time_ms)
        );
        // Other metrics are ignored.
        let d = decode(
            &body(
                "http.server.requests",
                2,
                kv(&[]),
                json!({"timeUnixNano": T, "asInt": "1"}),
            ),
            Encoding::Json,
        )
        .unwrap();
        assert_eq!((d.points.len(), d.ignored), (0, 1));
    }

    #[test]
    fn errors_name_the_field() {
        let name = "traces_service_graph_request_total";
        let ok = kv(&[("client", "web"), ("server", "ref")]);
        let cases = [
            (
                kv(&[("server", "ref")]),
                json!({"startTimeUnixNano": S, "timeUnixNano": T, "asInt": "1"}),
                "dataPoints[0].attributes.client`: missing",
            ),
            (
                kv(&[("client", "web"), ("server", "bad host")]),
                json!({"startTimeUnixNano": S, "timeUnixNano": T, "asInt": "1"}),
                "attributes.server",
            ),
            (
                ok.clone(),
                json!({"startTimeUnixNano": S, "timeUnixNano": T, "asInt": "-1"}),
                "dataPoints[0].value`: -1 is negative",
            ),
            (
                ok.clone(),
                json!({"startTimeUnixNano": S, "timeUnixNano": T, "asDouble": 1.5}),
                "not a whole",
            ),
            (
                ok.clone(),
                json!({"startTimeUnixNano": S, "timeUnixNano": T}),
                "value`: missing",
            ),
            (
                ok.clone(),
                json!({"timeUnixNano": T, "asInt": "1"}),
                "startTimeUnixNano`: missing",
            ),
            (
                ok.clone(),
                json!({"startTimeUnixNano": S, "timeUnixNano": "1795000000", "asInt": "1"}),
                "not a plausible time",
            ),
            (
                ok.clone(),
                json!({"startTimeUnixNano": T, "timeUnixNano": S, "asInt": "1"}),
                "after timeUnixNano",
            ),
        ];
        for (attrs, point, want) in cases {
            let e = decode(&body(name, 2, attrs, point), Encoding::Json).unwrap_err();
            assert!(e.contains(want), "{e} (expected {want:?})");
            assert!(
                e.contains("resourceMetrics[0].scopeMetrics[0].metrics[0]"),
                "{e}"
            );
        }
        let e = decode(
            &body(
                name,
                0,
                ok.clone(),
                json!({"timeUnixNano": T, "asInt": "1"}),
            ),
            Encoding::Json,
        )
        .unwrap_err();
        assert!(e.contains("aggregationTemporality"), "{e}");
        assert!(decode(b"\x0a\xff", Encoding::Protobuf)
            .unwrap_err()
            .contains("malformed OTLP protobuf"));
        assert!(Encoding::from_content_type(Some("text/plain")).is_err());
        assert_eq!(Encoding::from_content_type(None), Ok(Encoding::Protobuf));
        assert!(decompress(b"not gzip", Some("gzip"), 100)
            .unwrap_err()
            .contains("invalid gzip"));
        assert!(decompress(b"x", Some("br"), 100)
            .unwrap_err()
            .contains("Content-Encoding"));
    }

    #[test]
    fn gzip_is_bounded_when_inflated() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[0u8; 10_000]).unwrap();
        let small = gz.finish().unwrap();
        assert_eq!(
            decompress(&small, Some("gzip"), 10_000).unwrap().len(),
            10_000
        );
        assert!(decompress(&small, Some("gzip"), 9_999)
            .unwrap_err()
            .contains("inflates"));
    }
}
