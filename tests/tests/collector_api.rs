//! Issue 3: the real collector on a real SQLite file, and the real `whouses` CLI.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use serde_json::{json, Value};
use whouses_tests::collector::{whouses, Collector};
use whouses_tests::reports::{edge, now, report, HOUR, MIN};
use whouses_wire::{Report, Timestamp};

fn callers(c: &Collector, host: &str) -> Vec<(String, u64)> {
    let v = c.get_json(&format!("/v1/callers?host={host}"));
    let mut out: Vec<(String, u64)> = v["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap().to_string(),
                c["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn reports_in_exact_answers_out_and_a_restart_keeps_everything() {
    let mut c = Collector::spawn();
    let t = now();
    let ok = |r: &Report| {
        let (status, body) = c.post_report(r, None);
        assert_eq!(status, 200, "{body}");
        body
    };
    ok(&report(
        "tis-sync",
        "sync-1",
        1,
        t - 20 * MIN,
        t - 10 * MIN,
        vec![
            edge("tis-reference.internal", 443, 1200, t - 11 * MIN),
            edge("auth.internal", 80, 7, t - 12 * MIN),
        ],
    ));
    ok(&report(
        "tis-sync",
        "sync-1",
        2,
        t - 10 * MIN,
        t,
        vec![edge("tis-reference.internal", 443, 34, t - MIN)],
    ));
    ok(&report(
        "tis-profile",
        "profile-1",
        1,
        t - 20 * MIN,
        t,
        vec![edge("tis-reference.internal", 8080, 5, t - 2 * MIN)],
    ));
    // A repeated (instance, seq) is acknowledged and not counted again.
    let body = ok(&report(
        "tis-sync",
        "sync-1",
        2,
        t - 10 * MIN,
        t,
        vec![edge("tis-reference.internal", 443, 34, t - MIN)],
    ));
    assert_eq!(body["duplicate"], true);

    let check_all = |c: &Collector| {
        assert_eq!(
            callers(c, "tis-reference.internal"),
            vec![("tis-profile".into(), 5), ("tis-sync".into(), 1234)]
        );
        assert_eq!(
            callers(c, "tis-reference.internal:443"),
            vec![("tis-sync".into(), 1234)]
        );
        assert_eq!(callers(c, "*.internal").len(), 2);
        let v = c.get_json("/v1/callers?host=tis-reference.internal");
        let sync = v["callers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["service"] == "tis-sync")
            .unwrap();
        assert_eq!(sync["environment"], "prod");
        assert_eq!(sync["errors"], 120 + 3);
        assert_eq!(sync["connections"], 2);
        assert_eq!(sync["hosts"], json!(["tis-reference.internal:443"]));
        let v = c.get_json("/v1/callees?service=tis-sync");
        let callees: Vec<(String, u64)> = v["callees"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["host"].as_str().unwrap().to_string(),
                    e["requests"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            callees,
            vec![
                ("tis-reference.internal".into(), 1234),
                ("auth.internal".into(), 7)
            ]
        );
        let v = c.get_json("/v1/hosts");
        let hosts: Vec<String> = v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                format!(
                    "{}:{}={}",
                    h["host"].as_str().unwrap(),
                    h["port"],
                    h["callers"]
                )
            })
            .collect();
        assert_eq!(hosts.len(), 3, "{hosts:?}");
        assert!(hosts.contains(&"tis-reference.internal:443=1".to_string()));
        let v = c.get_json("/v1/services");
        let services: Vec<&str> = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["service"].as_str().unwrap())
            .collect();
        assert_eq!(services, vec!["tis-profile", "tis-sync"]);
        let sync = &v["services"][1]["instances"][0];
        assert_eq!(sync["instance"], "sync-1");
        assert_eq!(sync["last_seq"], 2);
        assert_eq!(sync["reports"], 2);
    };
    check_all(&c);
    // hosts --unused-since: only those quiet for that long.
    let v = c.get_json("/v1/hosts?unused_since=5m");
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);
    assert_eq!(v["hosts"][0]["host"], "auth.internal");

    c.stop();
    c.restart();
    check_all(&c);
    c.kill9();
    c.restart();
    check_all(&c);
}

#[test]
fn bad_input_is_rejected_with_its_reason_and_nothing_is_stored() {
    let c = Collector::builder()
        .ingest_token("s3cret")
        .read_token("r3ad")
        .spawn();
    let t = now();
    let good = report(
        "billing",
        "billing-1",
        1,
        t - MIN,
        t,
        vec![edge("pay.internal", 443, 3, t - 1000)],
    );
    let body = serde_json::to_vec(&good).unwrap();

    let (s, v) = c.post_raw(body.clone(), None);
    assert_eq!(s, 401, "{v}");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("missing bearer token"));
    let (s, v) = c.post_raw(body.clone(), Some("wrong"));
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not valid"));
    let (s, v) = c.post_raw(body[..body.len() / 2].to_vec(), Some("s3cret"));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("JSON"), "{v}");
    // 10 MB: curl copes with the early 413 answer to a body it is still sending.
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![b' '; 10 * 1024 * 1024]).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-H",
            "Authorization: Bearer s3cret",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!("@{}", big.path().display()),
            "-w",
            "\n%{http_code}",
            &format!("{}/v1/reports", c.url()),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.ends_with("413") && out.contains("larger than"), "{out}");
    let mut neg: Value = serde_json::to_value(&good).unwrap();
    neg["edges"][0]["requests"] = json!(-5);
    let (s, v) = c.post_raw(serde_json::to_vec(&neg).unwrap(), Some("s3cret"));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("edges[0].requests"),
        "{v}"
    );
    let mut future: Value = serde_json::to_value(&good).unwrap();
    future["version"] = json!(99);
    let (s, v) = c.post_raw(serde_json::to_vec(&future).unwrap(), Some("s3cret"));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("version 99"), "{v}");
    let mut ahead = good.clone();
    ahead.period_end = Timestamp(t + 24 * HOUR);
    let (s, v) = c.post_report(&ahead, Some("s3cret"));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("period_end"), "{v}");

    // Nothing stored by any of that (queries need the read token).
    let r = c.get("/v1/callers?host=pay.internal");
    assert_eq!(r.status(), 401);
    let q = |c: &Collector| -> Value {
        whouses_tests::sidecar::client()
            .get(format!("{}/v1/callers?host=pay.internal", c.url()))
            .bearer_auth("r3ad")
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    assert_eq!(q(&c)["callers"], json!([]));
    // The next good batch is accepted.
    let (s, v) = c.post_report(&good, Some("s3cret"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(q(&c)["callers"][0]["requests"], 3);
    // Bad queries get 400s with reasons.
    let bad = whouses_tests::sidecar::client()
        .get(format!(
            "{}/v1/check?host=pay.internal&quiet_for=soon",
            c.url()
        ))
        .bearer_auth("r3ad")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("quiet_for"));
}

#[test]
fn check_says_unused_in_use_or_unknown_and_the_cli_exits_accordingly() {
    let c = Collector::spawn();
    let t = now();
    let day = 24 * HOUR;
    let post = |r: Report| {
        let (s, v) = c.post_report(&r, None);
        assert_eq!(s, 200, "{v}");
    };
    // "old.internal": called 3 days ago by two services that reported all along since.
    for (svc, inst) in [("a", "a-1"), ("b", "b-1")] {
        post(report(
            svc,
            inst,
            1,
            t - 10 * day,
            t - 3 * day,
            vec![edge("old.internal", 80, 4, t - 3 * day - HOUR)],
        ));
        // The live heartbeat's period ends a few minutes ahead (within the collector's
        // clock-skew allowance), so the verdicts below hold however slowly the CLI runs.
        post(report(svc, inst, 2, t - 3 * day, t + 4 * MIN, vec![]));
    }
    // "busy.internal": called a minute ago.
    post(report(
        "a",
        "a-1",
        3,
        t - 1000,
        t,
        vec![edge("busy.internal", 80, 9, t - MIN)],
    ));
    // "flaky.internal": its only caller's sidecar went silent two days ago.
    post(report(
        "c",
        "c-1",
        1,
        t - 10 * day,
        t - 2 * day,
        vec![edge("flaky.internal", 80, 2, t - 5 * day)],
    ));

    let run = |host: &str, quiet: &str| {
        let out = whouses(&["--url", &c.url(), "check", host, "--quiet-for", quiet]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, _) = run("old.internal", "2d");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("UNUSED"), "{out}");
    let (code, out, _) = run("old.internal", "4d");
    assert_eq!(code, Some(1), "{out}");
    let (code, out, _) = run("busy.internal", "1h");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("IN-USE"));
    let (code, out, _) = run("flaky.internal", "1d");
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("UNKNOWN") && out.contains("c (last report"),
        "{out}"
    );
    let (code, out, _) = run("never-seen.internal", "1d");
    assert_eq!(code, Some(3), "{out}");
    // A longer window than the quiet period so far: in use.
    let (code, out, _) = run("old.internal", "30d");
    assert_eq!(code, Some(1), "{out}");
    // JSON carries the evidence.
    let out = whouses(&[
        "--url",
        &c.url(),
        "--format",
        "json",
        "check",
        "flaky.internal",
        "--quiet-for",
        "1d",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "unknown");
    assert_eq!(v["evidence"][0]["service"], "c");
    assert_eq!(v["evidence"][0]["reporting_through_window"], false);
    assert!(v["evidence"][0]["last_report"].is_string());

    // Exit 2: a bad flag, a bad duration, an unreachable collector.
    let (code, _, err) = run("old.internal", "eventually");
    assert_eq!(code, Some(2), "{err}");
    let out = whouses(&["--url", &c.url(), "check", "old.internal", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    // Port 1 (tcpmux): nothing listens there, so the connection is refused.
    let out = whouses(&["--url", "http://127.0.0.1:1", "callers", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the collector"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line message: {err}");
}

#[test]
fn targets_name_every_address_of_a_service_and_the_cli_formats() {
    let dir = tempfile::tempdir().unwrap();
    let targets = dir.path().join("targets.toml");
    std::fs::write(
        &targets,
        r#"
[targets.reference]
hosts = ["tis-reference.internal", "10.0.3.7:8080", "*.reference.svc.cluster.local"]
"#,
    )
    .unwrap();
    let c = Collector::builder()
        .arg("--targets")
        .arg(targets.to_str().unwrap())
        .spawn();
    let t = now();
    let (s, v) = c.post_report(
        &report(
            "x",
            "x-1",
            1,
            t - MIN,
            t,
            vec![
                edge("tis-reference.internal", 443, 1, t - 1000),
                edge("10.0.3.7", 8080, 2, t - 1000),
                edge("10.0.3.7", 9090, 100, t - 1000),
                edge("api.reference.svc.cluster.local", 80, 4, t - 1000),
                edge("unrelated.internal", 80, 1000, t - 1000),
            ],
        ),
        None,
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(callers(&c, "reference"), vec![("x".into(), 7)]);

    let out = whouses(&["--url", &c.url(), "callers", "reference"]);
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("SERVICE") && (table.contains("just now") || table.contains("second")),
        "{table}"
    );
    let out = whouses(&["--url", &c.url(), "--format", "csv", "callers", "reference"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("service,environment,requests,errors,first_seen,last_seen,hosts,seen_by,address,note"),
        "issue 14 appended the last three columns"
    );
    assert!(lines.next().unwrap().starts_with("x,prod,7,"), "{csv}");
    for cmd in [vec!["hosts"], vec!["services"], vec!["callees", "x"]] {
        let mut args = vec!["--url", c.url().leak() as &str];
        args.extend(cmd.iter());
        let out = whouses(&args);
        assert_eq!(out.status.code(), Some(0), "{cmd:?}: {out:?}");
    }
    // A bad targets file is refused at start with a clear message.
    std::fs::write(&targets, "[targets.x]\nhosts = []\n").unwrap();
    let out = std::process::Command::new(whouses_tests::bins::bin_path("whouses-collector"))
        .args([
            "--targets",
            targets.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--db",
            &format!("sqlite://{}", dir.path().join("x.db").display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no hosts"));
}

#[test]
fn the_cli_authenticates_and_exits_2_on_every_failure() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("read-tokens");
    std::fs::write(&tokens, "# the page's token\nr3ad\nother\n").unwrap();
    let c = Collector::builder()
        .arg("--read-token-file")
        .arg(tokens.to_str().unwrap())
        .spawn();
    let t = now();
    let (s, v) = c.post_report(
        &report(
            "a",
            "a-1",
            1,
            t - MIN,
            t,
            vec![edge("x.internal", 80, 2, t - 1000)],
        ),
        None,
    );
    assert_eq!(s, 200, "{v}");
    let url = c.url();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = std::process::Command::new(whouses_tests::bins::bin_path("whouses"));
        cmd.args(["--url", &url])
            .args(args)
            .env_remove("WHOUSES_TOKEN")
            .env_remove("WHOUSES_URL");
        if let Some(t) = env {
            cmd.env("WHOUSES_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let check = ["check", "x.internal", "--quiet-for", "1h"];
    // No token: 401, exit 2, one line that says what to do.
    let (code, _, err) = run(&check, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("401") && err.contains("read token"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A wrong token: 403.
    let (code, _, err) = run(
        &[
            "--token",
            "nope",
            "check",
            "x.internal",
            "--quiet-for",
            "1h",
        ],
        None,
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("403"), "{err}");
    // Either token of the file, by flag or by WHOUSES_TOKEN: the verdict's exit code.
    let (code, out, _) = run(
        &[
            "--token",
            "r3ad",
            "check",
            "x.internal",
            "--quiet-for",
            "1h",
        ],
        None,
    );
    assert_eq!(code, Some(1), "{out}");
    let (code, out, _) = run(&check, Some("other"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("IN-USE"), "{out}");

    // A collector that fails (5xx): exit 2 with its reason, never a verdict.
    let failing = whouses_tests::bins::Proc::spawn("failing collector", {
        let mut cmd = std::process::Command::new("python3");
        cmd.args([
            "-c",
            r#"
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = json.dumps({'error': 'database unavailable; retry'}).encode()
        self.send_response(503)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#,
        ]);
        cmd
    });
    let port: u16 = whouses_tests::wait::until(
        "the failing server's port",
        whouses_tests::bins::secs(20),
        || {
            failing
                .output()
                .lines()
                .next()
                .and_then(|l| l.trim().parse().ok())
        },
    );
    let out = whouses(&[
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "check",
        "x.internal",
        "--quiet-for",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("503") && err.contains("database unavailable"),
        "{err}"
    );
}
