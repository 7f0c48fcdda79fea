//! OpenTelemetry both ways (issue 17), against real parts nobody here wrote:
//!
//! * ingest: the Python OpenTelemetry SDK (`opentelemetry-sdk` with its OTLP/HTTP
//!   exporter, `tests/otel/sdk_client.py`) counts `traces_service_graph_request_total`
//!   for a few client/server pairs over several exports, including a client restart,
//!   in protobuf, gzip and JSON: `callers` shows exactly what the SDK counted, as `otel`
//!   edges. A repeated export counts once; bad bodies get a 400 naming the field and
//!   store nothing; a series that stops leaves its client a silent caller (`check`
//!   unknown, naming it) while one that keeps arriving lets `check` say unused.
//! * export: a receiver decoding with `opentelemetry-proto` (`tests/otel/receiver.py`)
//!   gets the stored edges under the service-graph names and whouses' own, cumulative
//!   and monotonic, with values equal to the stored counts after several export cycles
//!   and after a collector restart; beyond `--otlp-max-series` edges are summed as
//!   `(other)` and counted.
//!
//! The tools come from `tests/otel/install-tools.sh` (run by the test if missing, and by
//! scripts/test-all.sh). PostgreSQL variants run when `WHOUSES_TEST_POSTGRES_URL` is set.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use whouses_tests::bins::secs;
use whouses_tests::collector::Collector;
use whouses_tests::reports::{edge, now, report};
use whouses_tests::{postgres, wait};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python, installing the pinned tools first if they are missing.
fn python() -> PathBuf {
    let py = root().join("target/tools/otel-venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import opentelemetry.sdk, opentelemetry.proto"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let st = Command::new("bash")
            .arg(root().join("tests/otel/install-tools.sh"))
            .status()
            .unwrap();
        assert!(st.success(), "tests/otel/install-tools.sh failed");
    }
    py
}

/// Run the SDK client with a plan; returns what it counted: "client server" → [requests, failed].
fn sdk(plan: &Value) -> Value {
    let out = Command::new(python())
        .arg(root().join("tests/otel/sdk_client.py"))
        .arg(plan.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sdk_spawn(plan: &Value) -> Child {
    Command::new(python())
        .arg(root().join("tests/otel/sdk_client.py"))
        .arg(plan.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn endpoint(c: &Collector) -> String {
    format!("{}/v1/otlp/v1/metrics", c.url())
}

fn callers(c: &Collector, host: &str) -> Vec<Value> {
    c.get_json(&format!("/v1/callers?host={host}"))["callers"]
        .as_array()
        .unwrap()
        .clone()
}

fn caller<'a>(cs: &'a [Value], service: &str) -> &'a Value {
    cs.iter()
        .find(|c| c["service"] == service)
        .unwrap_or_else(|| panic!("no caller {service} in {cs:?}"))
}

fn post_otlp(
    c: &Collector,
    body: Vec<u8>,
    content_type: &str,
    gzip: bool,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = c
        .client()
        .post(endpoint(c))
        .header("content-type", content_type)
        .body(body);
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // The system's gzip: no compression crate in the test crate for one helper.
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

/// An OTLP/JSON export of one cumulative `traces_service_graph_request_total` point.
fn export_json(client: &str, server: &str, start_ms: i64, time_ms: i64, value: i64) -> Value {
    json!({"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "otelcol"}}]},
        "scopeMetrics": [{"scope": {"name": "servicegraph"}, "metrics": [{
            "name": "traces_service_graph_request_total",
            "sum": {"aggregationTemporality": 2, "isMonotonic": true, "dataPoints": [{
                "attributes": [
                    {"key": "client", "value": {"stringValue": client}},
                    {"key": "server", "value": {"stringValue": server}},
                    {"key": "connection_type", "value": {"stringValue": ""}}
                ],
                "startTimeUnixNano": (start_ms * 1_000_000).to_string(),
                "timeUnixNano": (time_ms * 1_000_000).to_string(),
                "asInt": value.to_string()
            }]}
        }]}]
    }]})
}

/// Every pair the SDK counted shows in `callers` with exactly its counts, as otel edges.
fn assert_callers_match(c: &Collector, counted: &Value) {
    for (pair, v) in counted.as_object().unwrap() {
        let (client, server) = pair.split_once(' ').unwrap();
        let host = server.split(':').next().unwrap();
        let cs = callers(c, host);
        let got = caller(&cs, client);
        assert_eq!(got["requests"], v[0], "{pair}: {got}");
        assert_eq!(got["errors"], v[1], "{pair}: {got}");
        assert_eq!(got["connections"], 0, "{pair}: {got}");
        assert_eq!(
            got["hosts"],
            json!([format!("otel://{server}")]),
            "the source shows: {got}"
        );
    }
}

fn ingest_from_the_sdk(c: &Collector) {
    let mut all = serde_json::Map::new();
    for enc in ["protobuf", "gzip", "json"] {
        let plan = json!({
            "endpoint": endpoint(c), "token": "otel-token", "encoding": enc,
            "resource": {"service.name": format!("otelcol-{enc}")},
            "steps": [
                {"add": [[format!("web-{enc}"), "reference:8080", 5, 1], [format!("batch-{enc}"), "reference", 2, 0]]},
                {"add": [[format!("web-{enc}"), "reference:8080", 3, 0], [format!("web-{enc}"), "billing", 7, 2]]},
                {"add": []},
                // The client restarts: its counters start again from 0, with a new start time.
                {"restart": true, "add": [[format!("web-{enc}"), "reference:8080", 4, 2]]},
                {"add": [[format!("batch-{enc}"), "reference", 1, 1]]}
            ]
        });
        let counted = sdk(&plan);
        assert_eq!(counted[format!("web-{enc} reference:8080")], json!([12, 3]));
        all.extend(counted.as_object().unwrap().clone());
    }
    assert_callers_match(c, &Value::Object(all));
    // The source shows in callees (the scheme) and hosts.
    let ce = c.get_json("/v1/callees?service=web-json");
    let callees = ce["callees"].as_array().unwrap();
    assert_eq!(callees.len(), 2, "{ce}");
    assert!(callees.iter().all(|e| e["scheme"] == "otel"), "{ce}");
    let hosts = c.get_json("/v1/hosts");
    let reference = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "reference" && h["port"] == 0)
        .unwrap()
        .clone();
    assert_eq!(reference["schemes"], json!(["otel"]));
    // Each series is an instance of its client, named otel:….
    let svcs = c.get_json("/v1/services");
    let web = svcs["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "web-protobuf")
        .unwrap()
        .clone();
    assert!(web["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["instance"].as_str().unwrap().starts_with("otel:")));
}

#[test]
fn callers_show_exactly_what_the_sdk_counted() {
    let c = Collector::builder().ingest_token("otel-token").spawn();
    ingest_from_the_sdk(&c);
    // The ingest token is required, and its scope holds.
    let body = serde_json::to_vec(&export_json("web", "x", now() - 1000, now(), 1)).unwrap();
    assert_eq!(
        post_otlp(&c, body.clone(), "application/json", false, None).0,
        401
    );
    let scoped = Collector::builder()
        .ingest_token("t service=billing-*")
        .spawn();
    let (s, msg) = post_otlp(&scoped, body, "application/json", false, Some("t"));
    assert_eq!(s, 403, "{msg}");
    assert!(msg.contains("web"), "{msg}");
}

#[test]
fn callers_show_exactly_what_the_sdk_counted_on_postgres() {
    let Some(url) = postgres::database("otlp_sdk") else {
        eprintln!("skipped: set WHOUSES_TEST_POSTGRES_URL");
        return;
    };
    let c = Collector::builder()
        .db_url(&url)
        .ingest_token("otel-token")
        .spawn();
    ingest_from_the_sdk(&c);
}

fn hosts_snapshot(c: &Collector) -> (Value, Value) {
    let mut hosts = c.get_json("/v1/hosts")["hosts"].clone();
    for h in hosts.as_array_mut().unwrap() {
        h.as_object_mut().unwrap().remove("quiet_for_ms"); // time passes
    }
    (hosts, c.get_json("/v1/services")["services"].clone())
}

fn repeats_and_bad_bodies(c: &Collector) {
    let t0 = now() - 60_000;
    let body =
        |v: i64, t: i64| serde_json::to_vec(&export_json("web", "reference", t0, t, v)).unwrap();
    // The same export three times (a retry, a second delivery): counted once.
    for _ in 0..3 {
        let (s, b) = post_otlp(c, body(5, t0 + 10_000), "application/json", false, None);
        assert_eq!((s, b.as_str()), (200, "{}"));
    }
    assert_eq!(c.requests_from("reference", "web"), 5);
    // The next point, gzip: its difference.
    let (s, _) = post_otlp(
        c,
        gzip(&body(9, t0 + 20_000)),
        "application/json",
        true,
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(c.requests_from("reference", "web"), 9);
    // An older point arriving late: nothing.
    assert_eq!(
        post_otlp(c, body(7, t0 + 15_000), "application/json", false, None).0,
        200
    );
    assert_eq!(c.requests_from("reference", "web"), 9);

    let before = hosts_snapshot(c);
    let bad = |what: &str, body: Vec<u8>, ct: &str, gz: bool, reason: &str| {
        let (s, msg) = post_otlp(c, body, ct, gz, None);
        assert_eq!(s, 400, "{what}: {msg}");
        assert!(msg.contains(reason), "{what}: {msg} (expected {reason:?})");
    };
    bad(
        "garbage protobuf",
        b"\xff\xff\xff\xff not protobuf".to_vec(),
        "application/x-protobuf",
        false,
        "malformed OTLP protobuf",
    );
    bad(
        "truncated JSON",
        body(11, t0 + 30_000)[..40].to_vec(),
        "application/json",
        false,
        "malformed OTLP JSON",
    );
    bad(
        "not gzip",
        body(11, t0 + 30_000),
        "application/json",
        true,
        "invalid gzip body",
    );
    bad(
        "text/plain",
        body(11, t0 + 30_000),
        "text/plain",
        false,
        "unsupported Content-Type",
    );
    let mut v = export_json("web", "reference", t0, t0 + 30_000, 11);
    v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0]["attributes"]
        .as_array_mut()
        .unwrap()
        .remove(1);
    bad(
        "no server",
        serde_json::to_vec(&v).unwrap(),
        "application/json",
        false,
        "attributes.server`: missing",
    );
    let v = export_json("web", "reference", t0, t0 + 30_000, -3);
    bad(
        "negative",
        serde_json::to_vec(&v).unwrap(),
        "application/json",
        false,
        "is negative",
    );
    let mut v = export_json("web", "reference", t0, t0 + 30_000, 11);
    v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["isMonotonic"] = json!(false);
    bad(
        "not monotonic",
        serde_json::to_vec(&v).unwrap(),
        "application/json",
        false,
        "isMonotonic",
    );
    let v = export_json("web", "reference", t0, now() + 3_600_000, 11);
    bad(
        "future",
        serde_json::to_vec(&v).unwrap(),
        "application/json",
        false,
        "in the future",
    );
    let v = export_json("bad service!", "reference", t0, t0 + 30_000, 11);
    bad(
        "bad client",
        serde_json::to_vec(&v).unwrap(),
        "application/json",
        false,
        "attributes.client",
    );
    // A good point beside a bad one: the whole export is refused, nothing stored.
    let mut v = export_json("web", "reference", t0, t0 + 30_000, 100);
    let good = v["resourceMetrics"][0].clone();
    let mut broken =
        export_json("other", "nowhere", t0, t0 + 30_000, 1)["resourceMetrics"][0].clone();
    broken["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0]["timeUnixNano"] = json!("0");
    v["resourceMetrics"] = json!([good, broken]);
    bad(
        "one bad point",
        serde_json::to_vec(&v).unwrap(),
        "application/json",
        false,
        "timeUnixNano",
    );
    assert_eq!(hosts_snapshot(c), before, "bad bodies stored nothing");
    assert_eq!(c.requests_from("reference", "web"), 9);
    // Other metrics are ignored, not refused.
    let mut v = export_json("web", "reference", t0, t0 + 30_000, 11);
    v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["name"] =
        json!("http.server.duration");
    assert_eq!(
        post_otlp(
            c,
            serde_json::to_vec(&v).unwrap(),
            "application/json",
            false,
            None
        )
        .0,
        200
    );
    assert_eq!(hosts_snapshot(c), before);
}

#[test]
fn a_repeated_export_counts_once_and_bad_bodies_store_nothing() {
    repeats_and_bad_bodies(&Collector::spawn());
}

#[test]
fn a_repeated_export_counts_once_and_bad_bodies_store_nothing_on_postgres() {
    let Some(url) = postgres::database("otlp_bad") else {
        eprintln!("skipped: set WHOUSES_TEST_POSTGRES_URL");
        return;
    };
    repeats_and_bad_bodies(&Collector::builder().db_url(&url).spawn());
}

#[test]
fn a_series_that_stops_is_a_silent_caller() {
    let c = Collector::spawn();
    let plan = |client: &str, host: &str, heartbeats: usize| {
        let mut steps = vec![json!({"add": [[client, host, 3, 0]], "sleep": 1.0})];
        steps.extend((0..heartbeats).map(|_| json!({"add": [], "sleep": 1.0})));
        json!({"endpoint": endpoint(&c), "encoding": "protobuf",
               "resource": {"service.name": format!("otelcol-{client}")}, "steps": steps})
    };
    // `quiet` calls old-quiet once, then its series stops after 2 more exports; `steady`
    // calls old-steady once and keeps exporting (its series arrive, unchanged).
    let mut steady = sdk_spawn(&plan("steady", "old-steady", 25));
    sdk(&plan("quiet", "old-quiet", 2));
    let last_seen = |host: &str| {
        let cs = callers(&c, host);
        whouses_wire::Timestamp::parse_rfc3339(cs[0]["last_seen"].as_str().unwrap())
            .unwrap()
            .0
    };
    // Past the quiet client's grace (two export intervals and 5 s).
    std::thread::sleep(secs(10));
    let check = |host: &str| {
        let quiet_ms = now() - last_seen(host) - 500;
        c.get_json(&format!("/v1/check?host={host}&quiet_for={quiet_ms}ms"))
    };
    let v = check("old-quiet");
    assert_eq!(v["verdict"], "unknown", "{v}");
    assert!(v["reason"].as_str().unwrap().contains("quiet"), "{v}");
    assert_eq!(v["evidence"][0]["reporting_through_window"], false, "{v}");
    assert_eq!(
        v["evidence"][0]["hosts"],
        json!(["otel://old-quiet"]),
        "{v}"
    );
    let v = check("old-steady");
    assert_eq!(v["verdict"], "unused", "{v}");
    assert_eq!(v["evidence"][0]["reporting_through_window"], true, "{v}");
    let _ = steady.kill();
    let _ = steady.wait();
}

// ---- export ----

struct Receiver {
    child: Child,
    port: u16,
}

impl Receiver {
    fn spawn() -> Receiver {
        let mut child = Command::new(python())
            .arg(root().join("tests/otel/receiver.py"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .unwrap()
            .parse()
            .unwrap();
        Receiver { child, port }
    }

    fn latest(&self) -> Value {
        reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}/latest", self.port))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The receiver's latest value of a series, by name and a subset of its attributes.
fn value(latest: &Value, name: &str, attrs: &[(&str, Value)]) -> Option<(u64, Value)> {
    latest["series"].as_array()?.iter().find_map(|s| {
        (s["name"] == name && attrs.iter().all(|(k, v)| &s["attributes"][*k] == v))
            .then(|| (s["value"].as_u64().unwrap_or(0), s.clone()))
    })
}

/// A series the receiver should hold: name, some of its attributes, value.
type Want = (String, Vec<(&'static str, Value)>, u64);

/// What the receiver should hold for the stored edges: with `--otlp-max-series 3`, the
/// first three edges in the store's order (host first) have series of their own, and
/// `zz.internal` is summed into `(other)`.
fn expected(c: &Collector) -> Vec<Want> {
    let mut out = Vec::new();
    let mut other = [0u64; 4];
    let mut callees = Vec::new();
    for s in ["a", "b"] {
        for e in c.get_json(&format!("/v1/callees?service={s}"))["callees"]
            .as_array()
            .unwrap()
        {
            let mut e = e.clone();
            e["service"] = json!(s);
            callees.push(e);
        }
    }
    const NAMES: [&str; 4] = ["requests", "errors", "bytes_sent", "bytes_received"];
    for e in &callees {
        let calls = e["requests"].as_u64().unwrap() + e["connections"].as_u64().unwrap();
        let vals = [
            calls,
            e["errors"].as_u64().unwrap(),
            e["bytes_sent"].as_u64().unwrap(),
            e["bytes_received"].as_u64().unwrap(),
        ];
        if e["host"] == "zz.internal" {
            for (o, v) in other.iter_mut().zip(vals) {
                *o += v;
            }
            continue;
        }
        let attrs = vec![
            ("service", e["service"].clone()),
            ("host", e["host"].clone()),
            ("port", e["port"].clone()),
            ("scheme", e["scheme"].clone()),
            ("environment", e["environment"].clone()),
        ];
        for (name, v) in NAMES.iter().zip(vals) {
            out.push((format!("whouses.edge.{name}"), attrs.clone(), v));
        }
        if e["scheme"] != "otel" {
            let graph = vec![
                ("client", e["service"].clone()),
                (
                    "server",
                    json!(format!("{}:{}", e["host"].as_str().unwrap(), e["port"])),
                ),
                ("connection_type", json!("")),
            ];
            out.push((
                "traces_service_graph_request_total".into(),
                graph.clone(),
                vals[0],
            ));
            out.push((
                "traces_service_graph_request_failed_total".into(),
                graph,
                vals[1],
            ));
        }
    }
    for (name, v) in NAMES.iter().zip(other) {
        out.push((
            format!("whouses.edge.{name}"),
            vec![("service", json!("(other)"))],
            v,
        ));
    }
    out
}

/// Wait until every expected series holds the stored value, from a start after `after_start`.
fn wait_for_export(c: &Collector, r: &Receiver, after_start: u64) -> Value {
    let want = expected(c);
    wait::until("the receiver holds the stored counts", secs(30), || {
        let latest = r.latest();
        want.iter()
            .all(|(name, attrs, v)| {
                value(&latest, name, attrs)
                    .is_some_and(|(got, s)| got == *v && s["start"].as_u64().unwrap() > after_start)
            })
            .then_some(latest)
    })
}

fn post(c: &Collector, service: &str, seq: u64, edges: Vec<whouses_wire::Edge>) {
    let t = now();
    let r = report(
        service,
        &format!("{service}-1"),
        seq,
        t - 2_000,
        t - 1_000,
        edges,
    );
    let (s, v) = c.post_report(&r, None);
    assert_eq!(s, 200, "{v}");
}

#[test]
fn export_holds_the_stored_counts_across_cycles_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whouses.db");
    // Counts first, so the first export sees every edge (which ones get series of their
    // own is then the store's order).
    let mut first = Collector::builder().db(&db).spawn();
    let t = now();
    post(
        &first,
        "a",
        1,
        vec![
            edge("old.internal", 80, 5, t - 1_500),
            edge("new.internal", 443, 7, t - 1_500),
        ],
    );
    post(
        &first,
        "b",
        1,
        vec![edge("zz.internal", 5432, 3, t - 1_500)],
    );
    // An edge that came in over OTLP: exported as whouses.edge.* with scheme otel, not
    // again under the service-graph names.
    let body =
        serde_json::to_vec(&export_json("a", "graph-server", t - 30_000, t - 1_000, 4)).unwrap();
    assert_eq!(
        post_otlp(&first, body, "application/json", false, None).0,
        200
    );
    first.stop();

    let r = Receiver::spawn();
    let mut c = Collector::builder()
        .db(&db)
        .args(&[
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", r.port),
            "--otlp-interval",
            "1s",
            "--otlp-header",
            "Authorization=Bearer export-secret",
            "--otlp-max-series",
            "3",
        ])
        .spawn();
    let latest = wait_for_export(&c, &r, 0);
    // Cumulative (2), monotonic sums, the resource, the auth header, protobuf.
    for s in latest["series"].as_array().unwrap() {
        if s["name"] != "whouses.export.overflow_edges" {
            assert_eq!(s["kind"], "sum", "{s}");
            assert_eq!(s["temporality"], 2, "{s}");
            assert_eq!(s["monotonic"], true, "{s}");
        }
    }
    assert!(
        latest["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["service.name"] == "whouses-collector"),
        "{latest}"
    );
    assert_eq!(latest["auth"], "Bearer export-secret");
    assert!(latest["content_types"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c == "application/x-protobuf"));
    assert!(value(
        &latest,
        "traces_service_graph_request_total",
        &[("server", json!("graph-server:0"))]
    )
    .is_none());
    // Four edges, three with series of their own: one summed into (other), counted.
    let (overflow, _) = value(&latest, "whouses.export.overflow_edges", &[]).unwrap();
    assert_eq!(overflow, 1);
    let (otel, _) = value(
        &latest,
        "whouses.edge.requests",
        &[("scheme", json!("otel"))],
    )
    .unwrap();
    assert_eq!(otel, 4);

    // More counts: the next cycles carry the new totals.
    post(
        &c,
        "a",
        2,
        vec![edge("old.internal", 80, 11, now() - 1_500)],
    );
    post(
        &c,
        "b",
        2,
        vec![edge("zz.internal", 5432, 2, now() - 1_500)],
    );
    let before = wait_for_export(&c, &r, 0);
    let old = [("client", json!("a")), ("server", json!("old.internal:80"))];
    let start = |l: &Value| {
        value(l, "traces_service_graph_request_total", &old)
            .unwrap()
            .1["start"]
            .as_u64()
            .unwrap()
    };
    let first_start = start(&before);
    // A restart: a new start time, and the values go on from the stored totals.
    c.stop();
    c.restart();
    post(&c, "a", 3, vec![edge("old.internal", 80, 1, now() - 1_500)]);
    let after = wait_for_export(&c, &r, first_start);
    assert!(start(&after) > first_start);
    let (v, _) = value(&after, "traces_service_graph_request_total", &old).unwrap();
    assert_eq!(v, 5 + 11 + 1 + 3, "requests, and one connection per batch");
}
