//! Issue 14, the callee's view, end to end with the real binaries on loopback — each
//! "host" its own 127.0.0.x address, clients binding their source address:
//!
//! * an old service behind an inbound sidecar; caller A with an outbound sidecar (counted
//!   by both sides: one row, `seen_by: both`, equal counts); caller B with no sidecar (an
//!   unattributed row with its address and exact count); caller C whose sidecar reports
//!   but which calls around it (attributed through the address book, flagged) — through
//!   the API, the CLI's table, JSON and CSV, `check` and `coverage`;
//! * `check` verdicts for each combination of both sides, from batches crafted with the
//!   collector's clock in mind (coverage is trusted only within `--max-backfill`);
//! * an address held by X yesterday and by Y today: yesterday's calls are X's, today's Y's;
//! * keep-alive HTTP, TLS passed through (keyed by SNI) and opaque TCP through inbound
//!   mode, bytes identical and counts exact, while the collector is down and restarted;
//! * the transparent capture: `whouses-sidecar iptables install --inbound-ports` in a
//!   network namespace, callers unchanged; the one `iptables` subcommand installing the
//!   inbound and the outbound capture together, replacing either, and `uninstall`
//!   restoring the ruleset exactly.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use whouses_tests::bins::{bin_path, secs, Proc};
use whouses_tests::collector::{whouses, Collector};
use whouses_tests::reports::{report, DAY, HOUR, MIN};
use whouses_tests::sidecar::Sidecar;
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;
use whouses_wire::{Counts, InboundEdge, Report, Scheme, Side, Timestamp};

/// A blocking client that leaves from `source` and finds `name` at `addr` (no proxy).
fn client_from(source: &str, name: &str, addr: SocketAddr) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .resolve(name, addr)
        .timeout(secs(30))
        .build()
        .unwrap()
}

/// GET `url` `n` times with `client`; every answer 200 and `want` bytes long.
fn get_n(client: &reqwest::blocking::Client, url: &str, n: usize, want: usize) {
    for _ in 0..n {
        let r = client.get(url).send().unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(r.bytes().unwrap().len(), want, "{url}");
    }
}

/// The inbound key of `(host, port, address)` in a sidecar's `/stats`.
fn inbound_key(s: &Sidecar, host: &str, port: u16, address: &str) -> Option<Value> {
    s.stats()["inbound"]
        .as_array()?
        .iter()
        .find(|e| e["host"] == host && e["port"] == port && e["address"] == address)
        .cloned()
}

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn the_callee_sees_every_caller_and_both_sides_are_reconciled() {
    let collector = Collector::spawn();
    let url = collector.url();
    // The old service on its own host, behind an inbound sidecar there.
    let old = Upstream::start("127.0.0.20");
    let inbound = Sidecar::builder("old-reference")
        .ip("127.0.0.20")
        .collector(&url)
        .args(&[
            "--mode",
            "inbound",
            "--upstream",
            &old.addr().to_string(),
            "--inbound-host",
            "old.internal",
            "--advertise-address",
            "127.0.0.20",
            "--flush-interval",
            "200ms",
        ])
        .spawn();
    let port = inbound.proxy.port();
    let name = format!("old.internal:{port}");
    // Caller A: an outbound sidecar on its host (its connections leave from there).
    let a = Sidecar::builder("caller-a")
        .ip("127.0.0.21")
        .collector(&url)
        .resolve("old.internal", port, inbound.proxy)
        .args(&[
            "--advertise-address",
            "127.0.0.21",
            "--flush-interval",
            "200ms",
        ])
        .spawn();
    // Caller C: its sidecar reports (heartbeats, its address) …
    let c = Sidecar::builder("caller-c")
        .ip("127.0.0.23")
        .collector(&url)
        .args(&[
            "--advertise-address",
            "127.0.0.23",
            "--flush-interval",
            "200ms",
        ])
        .spawn();

    // A calls through its sidecar, with keep-alive.
    let via_a = reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::http(a.proxy_url()).unwrap())
        .timeout(secs(30))
        .build()
        .unwrap();
    get_n(&via_a, &format!("http://{name}/bytes/300"), 7, 300);
    // B has no sidecar.
    let b = client_from("127.0.0.22", "old.internal", inbound.proxy);
    get_n(&b, &format!("http://{name}/bytes/100"), 5, 100);
    // … but C's app calls the old host directly, around it.
    let around = client_from("127.0.0.23", "old.internal", inbound.proxy);
    get_n(&around, &format!("http://{name}/"), 3, 3);
    assert_eq!(old.requests(), 15, "every call reached the service");

    // The inbound sidecar counted each caller address exactly.
    for (address, n) in [("127.0.0.21", 7), ("127.0.0.22", 5), ("127.0.0.23", 3)] {
        wait::until(&format!("{n} requests from {address}"), secs(20), || {
            let k = inbound_key(&inbound, "old.internal", port, address)?;
            (k["requests"] == n).then_some(())
        });
    }
    // Two more batches each: the second was cut after the last call (a batch in flight
    // when the wait starts may hold only part of them).
    for s in [&inbound, &a, &c] {
        s.wait_acked(2, secs(30));
    }

    // callers: one row per calling service, both sides merged.
    let v = collector.get_json("/v1/callers?host=old.internal");
    let callers = v["callers"].as_array().unwrap();
    assert_eq!(callers.len(), 2, "{v:#}");
    let ra = callers.iter().find(|c| c["service"] == "caller-a").unwrap();
    assert_eq!(ra["seen_by"], "both", "{ra:#}");
    assert_eq!(ra["requests"], 7);
    for field in [
        "requests",
        "connections",
        "errors",
        "bytes_sent",
        "bytes_received",
    ] {
        assert_eq!(
            ra["caller_counts"][field], ra["callee_counts"][field],
            "{field} counted the same by both sides: {ra:#}"
        );
    }
    assert_eq!(ra["callee_counts"]["bytes_received"], 7 * 300);
    assert_eq!(ra["addresses"], serde_json::json!(["127.0.0.21"]));
    assert!(ra.get("around_sidecar").is_none(), "{ra:#}");
    let rc = callers.iter().find(|c| c["service"] == "caller-c").unwrap();
    assert_eq!(rc["seen_by"], "callee", "{rc:#}");
    assert_eq!(rc["requests"], 3);
    assert_eq!(rc["around_sidecar"], true);
    let un = v["unattributed"].as_array().unwrap();
    assert_eq!(un.len(), 1, "{v:#}");
    assert_eq!(un[0]["address"], "127.0.0.22");
    assert_eq!(un[0]["requests"], 5);
    assert_eq!(un[0]["bytes_received"], 500);
    assert!(un[0]["first_seen"].is_string() && un[0]["last_seen"].is_string());

    // The CLI: the same rows in every format.
    let out = whouses(&["--url", &url, "--format", "json", "callers", "old.internal"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["unattributed"][0]["address"], "127.0.0.22");
    let out = whouses(&["--url", &url, "callers", "old.internal"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("2 service(s) and 1 caller address(es) no sidecar holds call old.internal"),
        "{table}"
    );
    assert!(table.contains("around its sidecar"), "{table}");
    assert!(
        table.contains("(unattributed)") && table.contains("127.0.0.22"),
        "{table}"
    );
    let out = whouses(&["--url", &url, "--format", "csv", "callers", "old.internal"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = csv.lines().collect();
    assert!(
        rows.iter()
            .any(|l| l.starts_with("caller-a,default,7,0,") && l.contains(",both,127.0.0.21,")),
        "{csv}"
    );
    assert!(
        rows.iter()
            .any(|l| l.starts_with("(unattributed),,5,0,") && l.contains(",callee,127.0.0.22,")),
        "{csv}"
    );

    // check: in use, and C is named as going around its sidecar.
    let out = whouses(&["--url", &url, "check", "old.internal", "--quiet-for", "1h"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("caller-c reaches old.internal around its sidecar"),
        "{text}"
    );
    assert!(text.contains("127.0.0.22 (unattributed)"), "{text}");
    assert!(
        text.contains("Callee side: old-reference (default)"),
        "{text}"
    );
    let out = whouses(&[
        "--url",
        &url,
        "--format",
        "json",
        "check",
        "old.internal",
        "--quiet-for",
        "1h",
    ]);
    let v = json(&out);
    assert_eq!(v["verdict"], "in-use");
    assert_eq!(v["disagreements"][0]["service"], "caller-c");
    assert_eq!(
        v["callee_side"][0]["instances"][0],
        inbound.instance.as_str()
    );

    // coverage: the old host, its callers, and the one address still to find.
    let out = whouses(&["--url", &url, "--format", "json", "coverage"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    let h = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "old.internal")
        .unwrap();
    assert_eq!(
        h["callee_services"],
        serde_json::json!(["old-reference (default)"])
    );
    assert_eq!(
        h["callers"],
        serde_json::json!(["caller-a (default)", "caller-c (default)"])
    );
    assert_eq!(h["unattributed"][0]["address"], "127.0.0.22");
    let share = h["attributed_share"].as_f64().unwrap();
    assert!(share > 0.5 && share < 1.0, "{h}");
    let out = whouses(&["--url", &url, "coverage"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("1 caller address(es) still to find") && table.contains("127.0.0.22 ("),
        "{table}"
    );

    // The report shows both sides too (the last column, issue 16's owner, is empty here).
    let out = whouses(&[
        "--url",
        &url,
        "--format",
        "csv",
        "export",
        "--host",
        "old.internal",
    ]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.lines()
            .any(|l| l.starts_with("caller-a,default,old.internal,")
                && l.ends_with(",both,127.0.0.21,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with(",,old.internal,") && l.ends_with(",callee,127.0.0.22,")),
        "{csv}"
    );
}

/// A callee-side batch of `old` (instance `old-in`) for `[start, end]`: the names it
/// witnesses and its inbound calls `(address, requests, at)`.
fn callee_batch(host: &str, seq: u64, start: i64, end: i64, calls: &[(&str, u64, i64)]) -> Report {
    let mut r = report(
        &format!("{host}-svc"),
        &format!("{host}-in"),
        seq,
        start,
        end,
        vec![],
    );
    r.side = Side::Callee;
    r.inbound_hosts = vec![host.into()];
    r.inbound = calls
        .iter()
        .map(|&(address, requests, at)| InboundEdge {
            host: host.into(),
            port: 80,
            scheme: Scheme::Http,
            address: address.into(),
            counts: Counts {
                requests,
                connections: 1,
                first_seen: Timestamp(at - MIN),
                last_seen: Timestamp(at),
                ..Counts::default()
            },
        })
        .collect();
    r
}

/// A caller-side heartbeat of `service` holding `address` over `[start, end]`, with
/// calls to `host` (if any) at `at`.
fn caller_batch(
    service: &str,
    seq: u64,
    start: i64,
    end: i64,
    address: &str,
    calls: Option<(&str, u64, i64)>,
) -> Report {
    let edges = calls
        .map(|(host, n, at)| vec![whouses_tests::reports::edge(host, 80, n, at)])
        .unwrap_or_default();
    let mut r = report(service, &format!("{service}-1"), seq, start, end, edges);
    r.addresses = vec![address.into()];
    r
}

fn post(c: &Collector, r: &Report) {
    let (status, v) = c.post_report(r, None);
    assert_eq!(status, 200, "{v}");
}

fn verdict(c: &Collector, host: &str) -> (i32, String) {
    let out = whouses(&["--url", &c.url(), "check", host, "--quiet-for", "2h"]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_weighs_the_callee_against_the_callers() {
    let c = Collector::spawn();
    let now = Timestamp::now().0;
    // Every period below is recent (within --max-backfill), so it counts as coverage;
    // the quiet period asked for is 2 hours.
    let (start, end) = (now - 3 * HOUR, now - 1_000);

    // 1. The callee reported throughout and saw nothing; the only past caller's sidecar
    //    went quiet an hour before the period: unused, on the callee's evidence.
    post(
        &c,
        &caller_batch(
            "gone",
            1,
            start,
            now - 150 * MIN,
            "10.1.0.1",
            Some(("quiet.internal", 4, now - 160 * MIN)),
        ),
    );
    post(&c, &callee_batch("quiet.internal", 1, start, end, &[]));
    let (code, text) = verdict(&c, "quiet.internal");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("on the callee's evidence") && text.contains("reported throughout"),
        "{text}"
    );
    assert!(
        text.contains("gone (last report"),
        "the callers' side is said too: {text}"
    );

    // 2. One unattributed call within the period: in use.
    post(
        &c,
        &callee_batch(
            "one.internal",
            1,
            start,
            end,
            &[("10.9.9.9", 1, now - 30 * MIN)],
        ),
    );
    let (code, text) = verdict(&c, "one.internal");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("10.9.9.9 (unattributed)"), "{text}");

    // 3. A caller without a sidecar seen before the period, and a callee whose sidecar
    //    stopped reporting: nobody can say it stopped — unknown.
    post(
        &c,
        &callee_batch(
            "stopped.internal",
            1,
            start,
            now - 150 * MIN,
            &[("10.9.9.8", 2, now - 160 * MIN)],
        ),
    );
    let (code, text) = verdict(&c, "stopped.internal");
    assert_eq!(code, 3, "{text}");
    assert!(
        text.contains("callers no sidecar of theirs reports (10.9.9.8)"),
        "{text}"
    );

    // 4. Both sides quiet and reporting throughout: unused, and both agree.
    post(
        &c,
        &caller_batch(
            "steady",
            1,
            start,
            end,
            "10.1.0.2",
            Some(("both.internal", 3, now - 170 * MIN)),
        ),
    );
    post(
        &c,
        &callee_batch(
            "both.internal",
            1,
            start,
            end,
            &[("10.1.0.2", 3, now - 170 * MIN)],
        ),
    );
    let (code, text) = verdict(&c, "both.internal");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("the callers' side agrees"), "{text}");

    // 5. A service whose sidecar reports calls the host around it: in use, named.
    post(&c, &caller_batch("sly", 1, start, end, "10.1.0.3", None));
    post(
        &c,
        &callee_batch(
            "around.internal",
            1,
            start,
            end,
            &[("10.1.0.3", 6, now - 20 * MIN)],
        ),
    );
    let (code, text) = verdict(&c, "around.internal");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("sly reaches around.internal around its sidecar"),
        "{text}"
    );

    // 6. No callee side: the callers' side alone, as before issue 14.
    post(
        &c,
        &caller_batch(
            "plain",
            1,
            start,
            end,
            "10.1.0.4",
            Some(("plain.internal", 2, now - 170 * MIN)),
        ),
    );
    assert_eq!(verdict(&c, "plain.internal").0, 0);
    assert_eq!(verdict(&c, "typo.internal").0, 3);
}

#[test]
fn an_address_held_by_x_yesterday_and_y_today_attributes_each_days_calls() {
    let c = Collector::spawn();
    let now = Timestamp::now().0;
    // X held 10.7.0.1 yesterday, Y holds it today (both within --max-backfill, so both
    // claims are trusted).
    post(
        &c,
        &caller_batch("x", 1, now - 30 * HOUR, now - 20 * HOUR, "10.7.0.1", None),
    );
    post(
        &c,
        &caller_batch("y", 1, now - 2 * HOUR, now - 1_000, "10.7.0.1", None),
    );
    post(
        &c,
        &callee_batch(
            "reused.internal",
            1,
            now - 30 * HOUR,
            now - 20 * HOUR,
            &[("10.7.0.1", 11, now - 25 * HOUR)],
        ),
    );
    post(
        &c,
        &callee_batch(
            "reused.internal",
            2,
            now - 2 * HOUR,
            now - 1_000,
            &[("10.7.0.1", 4, now - HOUR)],
        ),
    );
    let v = c.get_json("/v1/callers?host=reused.internal");
    let got: Vec<(&str, u64)> = v["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap(),
                c["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![("x", 11), ("y", 4)], "{v:#}");
    assert!(v["unattributed"].as_array().unwrap().is_empty(), "{v:#}");
    // Since this morning: only Y.
    let v = c.get_json("/v1/callers?host=reused.internal&since=12h");
    assert_eq!(v["callers"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["callers"][0]["service"], "y");
    // A claim about a period older than --max-backfill is not trusted: it cannot take
    // the calls of the day before yesterday.
    post(
        &c,
        &caller_batch("z", 1, now - 9 * DAY, now - 8 * DAY, "10.7.0.2", None),
    );
    post(
        &c,
        &callee_batch(
            "reused.internal",
            3,
            now - 9 * DAY,
            now - 8 * DAY,
            &[("10.7.0.2", 2, now - 8 * DAY - HOUR)],
        ),
    );
    let v = c.get_json("/v1/callers?host=reused.internal");
    assert_eq!(v["unattributed"][0]["address"], "10.7.0.2", "{v:#}");
}

/// An echo server on `ip`: every connection gets back what it sends.
fn echo_server(ip: &str) -> SocketAddr {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

#[test]
fn keep_alive_tls_and_opaque_tcp_are_relayed_exactly_while_the_collector_restarts() {
    let mut collector = Collector::spawn();
    let url = collector.url();
    let dir = tempfile::tempdir().unwrap();
    let inbound = |service: &str, ip: &str, extra: &[&str]| -> Sidecar {
        Sidecar::builder(service)
            .ip(ip)
            .collector(&url)
            .args(&["--mode", "inbound", "--flush-interval", "200ms"])
            .args(extra)
            .spawn()
    };

    // HTTP with keep-alive.
    let web = Upstream::start("127.0.0.30");
    let web_in = inbound(
        "web",
        "127.0.0.30",
        &["--upstream", &web.addr().to_string()],
    );
    // TLS: an openssl server for the file we fetch; the sidecar never sees the keys.
    let ca = whouses_tests::certs::Ca::new(dir.path(), "ca");
    let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    ca.issue("tls", "tls.internal", &cert, &key);
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("payload.bin"), &payload).unwrap();
    let tls_addr = whouses_tests::bins::free_addr("127.0.0.31");
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir.path()).args([
        "s_server",
        "-accept",
        &tls_addr.to_string(),
        "-cert",
        cert.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
        "-WWW",
        "-quiet",
    ]);
    let _tls_server = Proc::spawn("openssl s_server", cmd);
    wait::port_open(tls_addr, secs(20));
    let tls_in = inbound(
        "tls",
        "127.0.0.31",
        &[
            "--upstream",
            &tls_addr.to_string(),
            "--inbound-host",
            "fallback.internal",
        ],
    );
    // Opaque TCP: an echo server, named by --inbound-host.
    let echo = echo_server("127.0.0.32");
    let db_in = inbound(
        "db",
        "127.0.0.32",
        &[
            "--upstream",
            &echo.to_string(),
            "--inbound-host",
            "db.internal",
        ],
    );
    for s in [&web_in, &tls_in, &db_in] {
        s.wait_acked(1, secs(30));
    }

    // The collector goes away; traffic goes on.
    collector.kill9();

    // 40 keep-alive requests on one connection from 127.0.0.35.
    let web_port = web_in.proxy.port();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .local_address("127.0.0.35".parse::<std::net::IpAddr>().unwrap())
        .resolve("web.internal", web_in.proxy)
        .pool_max_idle_per_host(1)
        .timeout(secs(30))
        .build()
        .unwrap();
    for i in 0..40 {
        let r = client
            .get(format!("http://web.internal:{web_port}/bytes/{}", 1000 + i))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().unwrap();
        assert_eq!(body.len(), 1000 + i);
        assert!(body.iter().all(|&b| b == b'x'));
    }
    assert_eq!(
        web.connections(),
        1,
        "keep-alive: one connection to the service"
    );

    // TLS: curl verifies the service's certificate through the sidecar, by SNI.
    let tls_port = tls_in.proxy.port();
    for _ in 0..3 {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--noproxy",
                "*",
                "--interface",
                "127.0.0.36",
                "--cacert",
                ca.cert.to_str().unwrap(),
                "--resolve",
                &format!("tls.internal:{tls_port}:127.0.0.31"),
                &format!("https://tls.internal:{tls_port}/payload.bin"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == payload,
            "the bytes through the TLS tunnel are the file's"
        );
    }

    // Opaque TCP: binary bytes (not HTTP, not TLS) echoed back unchanged.
    let mut sent_total = 0u64;
    for round in 0..2u8 {
        let mut s = TcpStream::connect_timeout(&db_in.proxy, secs(5)).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i as u8) ^ round).collect();
        assert_eq!(
            data[0], round,
            "the first byte is not an HTTP method or TLS"
        );
        let writer = {
            let mut w = s.try_clone().unwrap();
            let d = data.clone();
            std::thread::spawn(move || {
                w.write_all(&d).unwrap();
                w.shutdown(std::net::Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        s.set_read_timeout(Some(secs(20))).unwrap();
        s.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == data, "echoed bytes identical");
        sent_total += data.len() as u64;
    }

    // Counted exactly, in the sidecars…
    let exact = |s: &Sidecar, host: &str, port: u16, scheme: &str| -> Value {
        wait::until(&format!("{host} counted"), secs(20), || {
            s.stats()["inbound"]
                .as_array()?
                .iter()
                .find(|e| e["host"] == host && e["port"] == port && e["scheme"] == scheme)
                .cloned()
        })
    };
    let w = exact(&web_in, "web.internal", web_port, "http");
    assert_eq!(
        (w["requests"].as_u64(), w["connections"].as_u64()),
        (Some(40), Some(1)),
        "{w}"
    );
    assert_eq!(w["address"], "127.0.0.35");
    let body_bytes: u64 = (0..40).map(|i| 1000 + i).sum();
    assert_eq!(w["bytes_received"].as_u64(), Some(body_bytes));
    let t = exact(&tls_in, "tls.internal", tls_port, "https");
    assert_eq!(t["connections"].as_u64(), Some(3), "{t}");
    assert!(
        t["bytes_received"].as_u64().unwrap() > 3 * payload.len() as u64,
        "{t}"
    );
    let d = wait::until("both TCP connections counted", secs(20), || {
        let d = exact(&db_in, "db.internal", db_in.proxy.port(), "tcp");
        (d["connections"] == 2 && d["bytes_received"].as_u64() == Some(sent_total)).then_some(d)
    });
    assert_eq!(d["bytes_sent"].as_u64(), Some(sent_total), "{d}");

    // … and at the collector once it is back: nothing lost, nothing twice.
    collector.restart();
    for s in [&web_in, &tls_in, &db_in] {
        s.wait_acked(2, secs(60));
    }
    let unattributed = |host: &str| -> Value {
        let v = collector.get_json(&format!("/v1/callers?host={host}"));
        v["unattributed"][0].clone()
    };
    let u = unattributed("web.internal");
    assert_eq!(
        (u["address"].as_str(), u["requests"].as_u64()),
        (Some("127.0.0.35"), Some(40)),
        "{u}"
    );
    assert_eq!(u["bytes_received"].as_u64(), Some(body_bytes));
    let u = unattributed("tls.internal");
    assert_eq!(
        (u["address"].as_str(), u["connections"].as_u64()),
        (Some("127.0.0.36"), Some(3)),
        "{u}"
    );
    assert_eq!(u["bytes_received"], t["bytes_received"]);
    let u = unattributed("db.internal");
    assert_eq!(u["connections"].as_u64(), Some(2), "{u}");
    assert_eq!(u["bytes_sent"].as_u64(), Some(sent_total));
    assert_eq!(u["bytes_received"].as_u64(), Some(sent_total));
}

#[test]
fn the_transparent_capture_counts_without_changing_the_callers() {
    if Command::new("iptables").arg("--version").output().is_err() {
        eprintln!("skipped: iptables is not installed");
        return;
    }
    let net = whouses_tests::netns::Pair::new("ib");
    let (caller, host) = (&net.a, &net.b);
    // The service on the old host's port 8080, unchanged.
    let mut cmd = host.cmd("python3");
    cmd.args([
        "-u",
        "-c",
        &format!(
            "import http.server as h\n\
             h.SimpleHTTPRequestHandler.protocol_version = 'HTTP/1.1'\n\
             s = h.ThreadingHTTPServer(('{}', 8080), h.SimpleHTTPRequestHandler)\n\
             print('Serving HTTP', flush=True)\n\
             s.serve_forever()\n",
            host.addr
        ),
    ]);
    let mut service = Proc::spawn("service", cmd);
    service.wait_line("the service's start line", secs(20), |l| {
        l.contains("Serving HTTP")
    });
    // The inbound sidecar on 15006, no --upstream: each connection's original destination.
    let mut cmd = host.cmd(bin_path("whouses-sidecar").to_str().unwrap());
    cmd.args([
        "--service",
        "old",
        "--mode",
        "inbound",
        "--listen",
        "0.0.0.0:15006",
        "--admin-listen",
        "127.0.0.1:15020",
        "--inbound-host",
        "old.internal",
    ]);
    let mut sidecar = Proc::spawn("inbound sidecar", cmd);
    sidecar.wait_line("the sidecar's listening line", secs(20), |l| {
        l.starts_with("{\"listening\"")
    });
    let install = host
        .cmd(bin_path("whouses-sidecar").to_str().unwrap())
        .args([
            "iptables",
            "install",
            "--inbound-ports",
            "8080",
            "--inbound-proxy-port",
            "15006",
        ])
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );

    // The caller calls the old address as always.
    for _ in 0..4 {
        let code = caller.sh(&format!(
            "curl -s -o /dev/null -w '%{{http_code}}' --noproxy '*' -H 'Host: old.internal' http://{}:8080/",
            host.addr
        ));
        assert_eq!(code.trim(), "200");
    }
    let stats: Value =
        serde_json::from_str(&host.sh("curl -s http://127.0.0.1:15020/stats")).unwrap();
    let k = stats["inbound"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["host"] == "old.internal")
        .cloned()
        .unwrap_or_else(|| panic!("no old.internal key: {stats:#}"));
    assert_eq!(k["port"], 8080, "the port the caller dialed: {k}");
    assert_eq!(k["address"], caller.addr.as_str());
    assert_eq!(k["requests"], 4);

    // Removed: calls go straight to the service again, uncounted.
    let out = host
        .cmd(bin_path("whouses-sidecar").to_str().unwrap())
        .args(["iptables", "uninstall"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = caller.sh(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' --noproxy '*' http://{}:8080/",
        host.addr
    ));
    assert_eq!(code.trim(), "200");
    let stats: Value =
        serde_json::from_str(&host.sh("curl -s http://127.0.0.1:15020/stats")).unwrap();
    let total: u64 = stats["inbound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 4);
    drop(sidecar);
    drop(service);
    std::thread::sleep(Duration::from_millis(100));
}

/// The one `whouses-sidecar iptables` subcommand serves both captures: the inbound
/// redirect alone (no `--proxy-uid` needed), both at once, then the inbound one dropped by
/// an install that no longer names it; `show` lists our chains only; `uninstall` restores
/// the namespace's ruleset exactly, rules of the host's own untouched.
#[test]
fn one_iptables_subcommand_installs_both_captures_and_uninstall_restores_the_ruleset() {
    if Command::new("iptables").arg("--version").output().is_err() {
        eprintln!("skipped: iptables is not installed");
        return;
    }
    let net = whouses_tests::netns::Pair::new("iu");
    let ns = &net.b;
    let ruleset = || -> String {
        ns.sh("iptables-save; ip6tables-save")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let iptables = |args: &[&str]| -> String {
        let out = ns
            .cmd(bin_path("whouses-sidecar").to_str().unwrap())
            .arg("iptables")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iptables {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ns.sh(
        "iptables -t nat -N HOST_OWN && iptables -t nat -A PREROUTING -p tcp --dport 7 -j HOST_OWN",
    );
    let before = ruleset();

    let out = iptables(&["install", "--inbound-ports", "8080,8443"]);
    assert!(
        out.contains("inbound ports 8080,8443 to port 15006"),
        "{out}"
    );
    let shown = iptables(&["show"]);
    for rule in [
        "-A PREROUTING -p tcp -j WHOUSES_INBOUND",
        "-A WHOUSES_INBOUND -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 15006",
        "-A WHOUSES_INBOUND -p tcp -m tcp --dport 8443 -j REDIRECT --to-ports 15006",
    ] {
        assert!(shown.contains(rule), "{rule} missing from:\n{shown}");
    }
    assert!(
        !shown.contains("WHOUSES_OUTPUT") && !shown.contains("HOST_OWN"),
        "{shown}"
    );

    // Both captures in one install, twice = once.
    let both = [
        "install",
        "--proxy-uid",
        "41337",
        "--inbound-ports",
        "8080",
        "--inbound-proxy-port",
        "15007",
    ];
    iptables(&both);
    let once = ruleset();
    iptables(&both);
    assert_eq!(ruleset(), once, "install twice = once");
    let shown = iptables(&["show"]);
    assert!(
        shown.contains("-A OUTPUT -p tcp -j WHOUSES_OUTPUT"),
        "{shown}"
    );
    assert!(
        shown.contains("--dport 8080 -j REDIRECT --to-ports 15007") && !shown.contains("8443"),
        "{shown}"
    );

    // An install that names only the outbound capture removes the inbound one.
    iptables(&["install", "--proxy-uid", "41337"]);
    let shown = iptables(&["show"]);
    assert!(
        !shown.contains("WHOUSES_INBOUND") && shown.contains("WHOUSES_OUTPUT"),
        "{shown}"
    );

    iptables(&["install", "--proxy-uid", "41337", "--inbound-ports", "8080"]);
    iptables(&["uninstall"]);
    assert_eq!(ruleset(), before, "uninstall restores the ruleset exactly");
}
