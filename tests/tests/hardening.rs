//! Issue 12: what broke when the collector was attacked, or used carelessly, stays fixed.
//! Each test reproduces one finding against the real binaries.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use whouses_tests::bins::secs;
use whouses_tests::collector::{whouses, Collector};
use whouses_tests::reports::{edge, now, report, HOUR, MIN};
use whouses_tests::sidecar::{client, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;
use whouses_wire::MAX_COUNT;

fn post_ok(c: &Collector, r: &whouses_wire::Report) {
    let (s, v) = c.post_report(r, None);
    assert_eq!(s, 200, "{v}");
}

fn alive(c: &mut Collector) {
    assert!(
        c.proc.child.try_wait().unwrap().is_none(),
        "the collector died:\n{}",
        c.proc.output()
    );
    assert_eq!(c.get("/healthz").status(), 200);
}

#[test]
fn a_huge_quiet_period_is_refused_and_the_collector_lives_on() {
    let mut c = Collector::spawn();
    let t = now();
    post_ok(
        &c,
        &report("a", "a-1", 1, t - MIN, t, vec![edge("x", 80, 1, t - 1000)]),
    );
    let r = c.get("/v1/check?host=x&quiet_for=300000000y");
    assert_eq!(r.status(), 400);
    let v: Value = r.json().unwrap();
    assert!(v["error"].as_str().unwrap().contains("quiet_for"), "{v}");
    alive(&mut c);
    // A window reaching before the epoch is the whole history.
    let v = c.get_json("/v1/callers?host=x&since=300000000y");
    assert_eq!(v["callers"][0]["requests"], 1);
    let v = c.get_json("/v1/hosts?unused_since=300000000y");
    assert_eq!(v["hosts"], json!([]));
    alive(&mut c);
    // Through the CLI: exit 2 with the collector's one-line reason.
    let out = whouses(&["--url", &c.url(), "check", "x", "--quiet-for", "300000000y"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quiet_for") && err.trim().lines().count() == 1,
        "{err}"
    );
    alive(&mut c);
}

#[test]
fn counts_at_the_limit_saturate_and_every_answer_still_works() {
    let mut c = Collector::spawn();
    let t = now();
    for seq in 1..=2 {
        let mut e = edge("big.internal", 80, 0, t - 1000);
        e.counts.requests = MAX_COUNT;
        e.counts.bytes_received = MAX_COUNT;
        post_ok(&c, &report("a", "a-1", seq, t - MIN, t, vec![e]));
    }
    let check = |c: &Collector| {
        for path in [
            "/v1/callers?host=big.internal",
            "/v1/callers?host=big.internal&since=1h",
        ] {
            let v = c.get_json(path);
            assert_eq!(v["callers"][0]["requests"], MAX_COUNT, "{path}: {v}");
            assert_eq!(v["callers"][0]["bytes_received"], MAX_COUNT, "{path}: {v}");
        }
        let v = c.get_json("/v1/hosts");
        assert_eq!(v["hosts"][0]["requests"], MAX_COUNT, "{v}");
        assert_eq!(
            c.get_json("/v1/callees?service=a")["callees"][0]["requests"],
            MAX_COUNT
        );
        for format in ["csv", "json", "markdown", "dot", "html"] {
            let r = c.get(&format!("/v1/export?format={format}"));
            assert_eq!(r.status(), 200, "{format}");
            assert!(
                r.text().unwrap().contains("9223372036854775807"),
                "{format}"
            );
        }
        let v = c.get_json("/v1/check?host=big.internal&quiet_for=1h");
        assert_eq!(v["verdict"], "in-use");
    };
    check(&c);
    // Survives restarts (it used to be a crash loop).
    c.kill9();
    c.restart();
    check(&c);
    alive(&mut c);
}

#[test]
fn impossible_reports_are_refused_with_the_field_named() {
    let c = Collector::spawn();
    let t = now();
    type Mutation = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "flush_interval_ms",
            Box::new(|v: &mut Value| v["flush_interval_ms"] = json!(1u64 << 61)),
        ),
        (
            "period_start",
            Box::new(|v: &mut Value| v["period_start"] = json!("1970-01-01T00:00:00Z")),
        ),
        (
            "edges[0].last_seen",
            Box::new(|v: &mut Value| v["edges"][0]["last_seen"] = json!("9999-12-31T00:00:00Z")),
        ),
        (
            "period_end",
            Box::new(|v: &mut Value| {
                v["period_end"] = json!("9999-12-31T00:00:00Z");
                v["edges"][0]["last_seen"] = json!("9999-12-30T00:00:00Z");
            }),
        ),
    ];
    for (field, mutate) in cases {
        let mut v = serde_json::to_value(report(
            "a",
            "a-1",
            1,
            t - MIN,
            t,
            vec![edge("x", 80, 1, t - 1000)],
        ))
        .unwrap();
        mutate(&mut v);
        let (s, body) = c.post_raw(serde_json::to_vec(&v).unwrap(), None);
        assert_eq!(s, 400, "{field}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(field),
            "{field}: {body}"
        );
    }
    assert_eq!(c.get_json("/v1/callers?host=x")["callers"], json!([]));
}

/// The setup of the forgery tests: `a` called `old.internal` 3 hours ago and its sidecar
/// went silent an hour ago, so `check old.internal --quiet-for 2h` must be `unknown`.
fn silent_caller(c: &Collector) -> i64 {
    let t = now();
    post_ok(
        c,
        &report(
            "a",
            "a-1",
            1,
            t - 4 * HOUR,
            t - HOUR,
            vec![edge("old.internal", 80, 5, t - 3 * HOUR)],
        ),
    );
    // A long-lived, healthy reporter elsewhere, so the collector has observed long enough.
    post_ok(c, &report("b", "b-1", 1, t - 4 * HOUR, t, vec![]));
    let v = c.get_json("/v1/check?host=old.internal&quiet_for=2h");
    assert_eq!(v["verdict"], "unknown", "{v}");
    t
}

#[test]
fn a_heartbeat_from_1970_does_not_turn_unknown_into_unused() {
    let c = Collector::spawn();
    let t = silent_caller(&c);
    // A heartbeat whose sidecar claims to have started, and observed, since 1970.
    let mut forged = report("a", "a-2", 1, 0, t - 2 * HOUR, vec![]);
    forged.started_at = whouses_wire::Timestamp(0);
    forged.period_start = whouses_wire::Timestamp(0);
    post_ok(&c, &forged);
    let v = c.get_json("/v1/check?host=old.internal&quiet_for=2h");
    assert_eq!(v["verdict"], "unknown", "{v}");
    // …nor moves the start of observation to 1970 for every host.
    let since = v["observed_since"].as_str().unwrap();
    assert!(!since.starts_with("1970"), "{v}");
}

#[test]
fn an_ingest_token_speaks_only_for_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# one token per team\nteam-a service=a-* environment=prod\nfleet\n",
    )
    .unwrap();
    let c = Collector::builder()
        .arg("--ingest-token-file")
        .arg(tokens.to_str().unwrap())
        .spawn();
    let t = now();
    let (s, v) = c.post_report(
        &report("a-api", "a-api-1", 1, t - MIN, t, vec![]),
        Some("team-a"),
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = c.post_report(
        &report(
            "b-api",
            "b-api-1",
            1,
            t - MIN,
            t,
            vec![edge("x", 80, 3, t - 1000)],
        ),
        Some("team-a"),
    );
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("service=a-*"), "{v}");
    assert_eq!(c.get_json("/v1/callers?host=x")["callers"], json!([]));
    let (s, v) = c.post_report(
        &report("b-api", "b-api-1", 1, t - MIN, t, vec![]),
        Some("fleet"),
    );
    assert_eq!(s, 200, "{v}");
}

#[test]
fn an_instance_cannot_be_moved_to_another_service() {
    let c = Collector::spawn();
    let t = silent_caller(&c);
    // Another service's batch claiming a's instance (to take its coverage) is refused.
    let (s, v) = c.post_report(&report("b", "a-1", 7, t - HOUR, t, vec![]), None);
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--instance"), "{v}");
    let services = c.get_json("/v1/services");
    let a = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "a")
        .unwrap();
    assert_eq!(a["instances"][0]["instance"], "a-1");
    let v = c.get_json("/v1/check?host=old.internal&quiet_for=2h");
    assert_eq!(v["verdict"], "unknown", "{v}");
}

#[test]
fn calls_folded_at_max_hosts_make_check_unknown() {
    let c = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    let sidecar = |extra: &[&str]| {
        Sidecar::builder("folder")
            .collector(&c.url())
            .args(&["--flush-interval", "200ms", "--max-hosts", "2"])
            .args(extra)
            .resolve("old.internal", 80, up.addr())
            .resolve("a.internal", 80, up.addr())
            .resolve("b.internal", 80, up.addr())
            .spawn()
    };
    let call = |s: &Sidecar, host: &str| {
        let r = whouses_tests::sidecar::proxied_client(&s.proxy_url())
            .get(format!("http://{host}/"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    // First life: the service calls old.internal by name.
    let mut s = sidecar(&[]);
    call(&s, "old.internal");
    wait::until_eq("old.internal counted", secs(20), 1, || {
        c.requests_from("old.internal", "folder")
    });
    s.sigterm();
    assert_eq!(s.wait_exit(secs(20)), Some(0));
    // Second life: two other hosts fill --max-hosts; old.internal is then folded into
    // (other) — called, but not under its name.
    let s = sidecar(&[]);
    call(&s, "a.internal");
    call(&s, "b.internal");
    call(&s, "old.internal");
    wait::until_eq("the fold shipped", secs(20), 1, || {
        c.get_json("/v1/callers?host=b.internal")["callers"][0]["requests"]
            .as_u64()
            .unwrap_or(0)
    });
    wait::until("the fold counted", secs(20), || {
        let v = c.get_json("/v1/check?host=old.internal&quiet_for=1s");
        (v["folded"][0]["calls"].as_u64().unwrap_or(0) >= 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1200));
    let v = c.get_json("/v1/check?host=old.internal&quiet_for=1s");
    assert_eq!(v["verdict"], "unknown", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("folded calls into (other)") && reason.contains("folder"),
        "{reason}"
    );
    assert_eq!(v["folded"][0]["service"], "folder");
    assert_eq!(v["folded"][0]["past_caller"], true);
    let out = whouses(&[
        "--url",
        &c.url(),
        "check",
        "old.internal",
        "--quiet-for",
        "1s",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn an_empty_token_is_a_startup_error_not_an_open_door() {
    for (flag, what) in [("--read-token", "read"), ("--ingest-token", "ingest")] {
        let out = std::process::Command::new(whouses_tests::bins::bin_path("whouses-collector"))
            .args([
                flag,
                "",
                "--listen",
                "127.0.0.1:0",
                "--db",
                "sqlite:///nonexistent/x.db",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("empty {what} token")), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}

#[test]
fn readiness_fails_when_the_disk_is_nearly_full() {
    // More free space than any disk has: the collector must say it is not ready.
    let c = Collector::builder()
        .arg("--min-free-space")
        .arg(&(u64::MAX / 2).to_string())
        .spawn();
    let r = c.get("/readyz");
    assert_eq!(r.status(), 503);
    let v: Value = r.json().unwrap();
    assert!(v["error"].as_str().unwrap().contains("bytes free"), "{v}");
    let c = Collector::spawn();
    assert_eq!(c.get("/readyz").status(), 200);
}

/// Read until the server closes (or `deadline`): true when it closed.
fn closed_by_server(s: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_and_half_open_requests_are_closed_and_connections_are_bounded() {
    let c = Collector::builder()
        .args(&["--header-read-timeout", "1s", "--max-connections", "600"])
        .spawn();
    // 500 requests whose heads never end.
    let mut open: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(c.addr).unwrap();
            s.write_all(b"GET /v1/hosts HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    // Meanwhile a real request is answered.
    assert_eq!(c.get("/healthz").status(), 200);
    let deadline = Instant::now() + secs(10);
    let closed = open
        .iter_mut()
        .map(|s| closed_by_server(s, deadline))
        .filter(|c| *c)
        .count();
    assert_eq!(
        closed, 500,
        "half-open requests must be closed by the server"
    );
    drop(open);

    // At --max-connections, a new connection waits in the backlog until a slot frees.
    let c = Collector::builder()
        .args(&["--header-read-timeout", "2s", "--max-connections", "20"])
        .spawn();
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(c.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = client().get(format!("{}/healthz", c.url())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "answered before any slot was free ({:?})",
        t.elapsed()
    );
    drop(idle);
}

#[test]
fn many_large_report_bodies_at_once_hold_bounded_memory() {
    let c = Collector::builder()
        .args(&[
            "--max-concurrent-ingest",
            "4",
            "--max-body-bytes",
            "4194304",
        ])
        .spawn();
    let body_len = 4 * 1024 * 1024 - 1;
    let addr = c.addr;
    let threads: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_write_timeout(Some(secs(60))).unwrap();
                let head = format!(
                    "POST /v1/reports HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\nconnection: close\r\n\r\n"
                );
                s.write_all(head.as_bytes()).unwrap();
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < body_len {
                    let n = chunk.len().min(body_len - sent);
                    if s.write_all(&chunk[..n]).is_err() {
                        break;
                    }
                    sent += n;
                }
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer.split_whitespace().nth(1).unwrap_or("").to_string()
            })
        })
        .collect();
    let mut peak = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        peak = peak.max(c.proc.rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    let statuses: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // Every one got an answer: 400 (not a report) or 503 (wait for a slot timed out).
    assert!(
        statuses.iter().all(|s| s == "400" || s == "503"),
        "{statuses:?}"
    );
    assert!(statuses.iter().any(|s| s == "400"), "{statuses:?}");
    assert!(
        peak < 120 * 1024,
        "peak RSS {peak} KiB with 4 ingest slots of 4 MiB"
    );
    assert_eq!(c.get("/healthz").status(), 200);
}
