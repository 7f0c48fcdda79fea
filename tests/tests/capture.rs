//! Issue 13, transparent capture end to end: the rules installed by `whouses-sidecar
//! iptables install` in a network namespace the test creates, the sidecar running as a
//! uid of its own, and real clients that ignore proxy variables — Node.js 20 `fetch` and
//! `http.get`, a Java client without proxy properties, curl `--noproxy '*'`, a keep-alive
//! client, HTTPS to a real TLS server, an opaque TCP client resolving a name, a
//! hard-coded IP, and a protocol where the server speaks first. Every count is compared
//! with what the servers received.
//!
//! The uid: a fixed unused one ([`SIDECAR_UID`]), entered with `setpriv` (no user is
//! created). Test hosts: the app's namespace and the servers' (HTTP, HTTPS, echo, SMTP-like
//! servers in `tests/fixtures/capture/servers.py`, dnsmasq naming each service on an
//! address of its own), addresses from 198.18.0.0/15, DNS through
//! `/etc/netns/NAME/resolv.conf`.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use whouses_tests::bins::{bin_path, secs, Proc};
use whouses_tests::certs::Ca;
use whouses_tests::netns::{Ns, Pair};
use whouses_tests::wait;

/// The sidecar's uid and gid: unused on the test machine (no such user is created).
const SIDECAR_UID: &str = "41337";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/capture")
        .join(name)
}

fn run_ok(what: &str, mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables-save` of both families in the namespace, without its comment lines (dates).
fn ruleset(ns: &Ns) -> String {
    ns.sh("iptables-save; ip6tables-save")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

fn iptables(ns: &Ns, args: &[&str]) -> String {
    let mut cmd = ns.cmd(bin_path("whouses-sidecar").to_str().unwrap());
    cmd.arg("iptables").args(args);
    run_ok(&format!("whouses-sidecar iptables {args:?}"), cmd)
}

/// The sidecar in `ns`, as [`SIDECAR_UID`], on the ports the rules redirect to.
fn sidecar(ns: &Ns, dns_upstream: &str, extra: &[&str]) -> (Proc, String) {
    let mut cmd = ns.cmd("setpriv");
    cmd.args([
        &format!("--reuid={SIDECAR_UID}"),
        &format!("--regid={SIDECAR_UID}"),
        "--clear-groups",
        "--",
        bin_path("whouses-sidecar").to_str().unwrap(),
        "--service",
        "capture-app",
        "--listen",
        "127.0.0.1:15001",
        "--admin-listen",
        "127.0.0.1:0",
        "--dns-listen",
        "127.0.0.1:15053",
        "--dns-upstream",
        &format!("{dns_upstream}:53"),
    ])
    .args(extra)
    .env("RUST_LOG", "info,whouses_sidecar=debug");
    let mut p = Proc::spawn("sidecar capture-app", cmd);
    let line = p.wait_line("its listening line", secs(20), |l| {
        l.starts_with("{\"listening\"")
    });
    let v: Value = serde_json::from_str(&line).unwrap();
    let admin = v["listening"]["admin"].as_str().unwrap().to_string();
    (p, admin)
}

fn stats(ns: &Ns, admin: &str) -> Value {
    serde_json::from_str(&ns.sh(&format!("curl -s --noproxy '*' http://{admin}/stats"))).unwrap()
}

fn edge(stats: &Value, host: &str, port: u16, scheme: &str, field: &str) -> u64 {
    stats["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["host"] == host && e["port"] == port && e["scheme"] == scheme)
        .and_then(|e| e[field].as_u64())
        .unwrap_or(0)
}

#[test]
fn every_client_that_ignores_proxy_variables_is_counted_exactly() {
    let net = Pair::new("cp");
    let (app, srv) = (&net.a, &net.b);
    let dir = tempfile::tempdir().unwrap();
    // One address per service, so a connection's name is the one its client resolved.
    let addrs = net.more_b_addresses(5);
    let (old, secure, db, mail, bare) = (&addrs[0], &addrs[1], &addrs[2], &addrs[3], &addrs[4]);

    // The servers' host: HTTP, HTTPS, echo and SMTP-like servers, and dnsmasq.
    let ca = Ca::new(dir.path(), "ca");
    let leaf = ca.issue(
        "secure",
        "secure.internal",
        &dir.path().join("secure.pem"),
        &dir.path().join("secure.key"),
    );
    let mut cmd = srv.cmd("python3");
    cmd.arg("-u")
        .arg(fixture("servers.py"))
        .arg(&leaf.cert)
        .arg(&leaf.key);
    let mut servers = Proc::spawn("servers", cmd);
    servers.wait_line("ready", secs(20), |l| l == "ready");
    let mut cmd = srv.cmd("dnsmasq");
    cmd.args([
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        &format!("--listen-address={}", srv.addr),
        &format!("--address=/old.internal/{old}"),
        &format!("--address=/secure.internal/{secure}"),
        &format!("--address=/db.internal/{db}"),
        &format!("--address=/mail.internal/{mail}"),
        "--pid-file=",
    ]);
    let dns = Proc::spawn("dnsmasq", cmd);
    wait::until("dnsmasq to start", secs(20), || {
        dns.output().contains("started").then_some(())
    });

    // The app's host: its resolver is the real DNS server; the rules send its queries to
    // the sidecar's forwarder and its TCP to the sidecar.
    app.resolv_conf(&format!("nameserver {}\n", srv.addr));
    let before = ruleset(app);
    iptables(
        app,
        &[
            "install",
            "--proxy-uid",
            SIDECAR_UID,
            "--proxy-gid",
            SIDECAR_UID,
        ],
    );
    let (sidecar, admin) = sidecar(app, &srv.addr, &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", sidecar.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(SIDECAR_UID)),
        "the sidecar runs as its own uid: {status}"
    );

    // HTTP/1.1 clients that ignore HTTP_PROXY (set, pointing nowhere, to show it).
    let node = r#"
const http = require('http');
const get = (url) => new Promise((ok, fail) => http.get(url, (r) => { r.resume(); r.on('end', () => ok(r.statusCode)); }).on('error', fail));
(async () => {
  for (let i = 0; i < 6; i++) {
    const r = await fetch('http://old.internal:8080/node-fetch');
    await r.text();
    if (r.status !== 200) throw new Error('fetch ' + r.status);
    const s = await get('http://old.internal:8080/node-get');
    if (s !== 200) throw new Error('http.get ' + s);
  }
  console.log('node made 12 requests');
})().catch((e) => { console.error(e); process.exit(1); });
"#;
    let mut cmd = app.cmd("node");
    cmd.args(["-e", node])
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9");
    assert!(run_ok("node", cmd).contains("node made 12 requests"));
    let mut cmd = app.cmd("java");
    cmd.arg(fixture("Main.java"))
        .args(["http://old.internal:8080/java", "5"]);
    assert!(run_ok("java", cmd).contains("java made 5 requests"));
    for _ in 0..3 {
        let mut cmd = app.cmd("curl");
        cmd.args([
            "-sf",
            "--noproxy",
            "*",
            "-o",
            "/dev/null",
            "http://old.internal:8080/curl",
        ])
        .env("http_proxy", "http://127.0.0.1:9");
        run_ok("curl", cmd);
    }
    // Explicit proxy requests keep working on the same port.
    for _ in 0..2 {
        let mut cmd = app.cmd("curl");
        cmd.args([
            "-sf",
            "-x",
            "http://127.0.0.1:15001",
            "-o",
            "/dev/null",
            "http://old.internal:8080/explicit",
        ]);
        run_ok("curl through the proxy", cmd);
    }
    // Twenty requests on one keep-alive connection: curl opens one connection.
    let mut cmd = app.cmd("curl");
    cmd.args(["-sf", "--noproxy", "*", "-w", "%{num_connects}\n"]);
    for i in 0..20 {
        cmd.args([
            "-o",
            "/dev/null",
            &format!("http://old.internal:8080/keep-alive/{i}"),
        ]);
    }
    let connects: u64 = run_ok("curl keep-alive", cmd)
        .lines()
        .map(|l| l.trim().parse::<u64>().unwrap())
        .sum();
    assert_eq!(connects, 1, "the twenty requests shared one connection");

    // HTTPS to a real TLS server: counted by SNI, TLS never terminated (curl checks the
    // server's own certificate).
    for _ in 0..3 {
        let mut cmd = app.cmd("curl");
        cmd.args(["-sf", "--noproxy", "*", "-o", "/dev/null", "--cacert"])
            .arg(&ca.cert)
            .arg("https://secure.internal:8443/tls");
        run_ok("curl https", cmd);
    }

    // Opaque TCP: by the name the client resolved, by a hard-coded IP, and a protocol where
    // the server speaks first (on a port of the skip-list, and on one that is not, which
    // the detection timeout settles).
    let tcp = |mode: &str, host: &str, port: &str, count: &str| {
        let mut cmd = app.cmd("python3");
        cmd.arg(fixture("tcp_client.py"))
            .args([mode, host, port, count]);
        run_ok(&format!("{mode} client to {host}:{port}"), cmd);
    };
    tcp("echo", "db.internal", "9000", "4");
    tcp("echo", bare, "9000", "2");
    let started = Instant::now();
    tcp("smtp", "mail.internal", "25", "1");
    tcp("smtp", "mail.internal", "2525", "2");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "server-speaks-first connections do not stall: {:?}",
        started.elapsed()
    );

    // What the servers received.
    let received = |prefix: &str| {
        servers
            .stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count() as u64
    };
    wait::until_eq("the servers to log every call", secs(10), 54, || {
        received("http old.internal:8080 ")
            + received("https secure.internal:8443 ")
            + received(&format!("echo {db} "))
            + received(&format!("echo {bare} "))
            + received("smtp ")
    });
    let http = received("http old.internal:8080 ");
    assert_eq!(http, 12 + 5 + 3 + 2 + 20);
    assert_eq!(received("https secure.internal:8443 /tls"), 3);

    // The sidecar counted exactly that, under the names the clients dialed.
    let s = wait::until("the sidecar's counts", secs(10), || {
        let s = stats(app, &admin);
        (edge(&s, "old.internal", 8080, "http", "requests") == http
            && edge(&s, "mail.internal", 2525, "tcp", "connections") == 2)
            .then_some(s)
    });
    assert_eq!(edge(&s, "old.internal", 8080, "http", "errors"), 0, "{s}");
    assert_eq!(
        edge(&s, "secure.internal", 8443, "https", "connections"),
        received("https secure.internal:8443 "),
        "{s}"
    );
    assert_eq!(
        edge(&s, "db.internal", 9000, "tcp", "connections"),
        4,
        "{s}"
    );
    assert_eq!(
        edge(&s, "db.internal", 9000, "tcp", "bytes_sent"),
        4 * "ping 0\n".len() as u64,
        "{s}"
    );
    assert_eq!(edge(&s, bare, 9000, "tcp", "connections"), 2, "{s}");
    assert_eq!(
        edge(&s, "mail.internal", 25, "tcp", "connections"),
        1,
        "{s}"
    );
    assert_eq!(
        edge(&s, "mail.internal", 2525, "tcp", "connections"),
        2,
        "{s}"
    );
    assert_eq!(received(&format!("echo {db} ")), 4);
    assert_eq!(received(&format!("echo {bare} ")), 2);
    assert_eq!(received("smtp 2525 "), 2);
    assert_eq!(received("smtp 25 "), 1);
    // Nothing else: no edge for an address or a name that was not dialed.
    let keys: Vec<String> = s["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}/{}",
                e["host"].as_str().unwrap(),
                e["port"],
                e["scheme"].as_str().unwrap()
            )
        })
        .collect();
    let mut want = vec![
        "old.internal:8080/http".to_string(),
        "secure.internal:8443/https".into(),
        "db.internal:9000/tcp".into(),
        format!("{bare}:9000/tcp"),
        "mail.internal:25/tcp".into(),
        "mail.internal:2525/tcp".into(),
    ];
    let mut got = keys.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{s}");
    // The app's lookups went through the forwarder.
    let looked_up: Vec<&str> = s["lookups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    for name in [
        "old.internal",
        "secure.internal",
        "db.internal",
        "mail.internal",
    ] {
        assert!(looked_up.contains(&name), "{name} not in {looked_up:?}");
    }

    drop(sidecar);
    iptables(app, &["uninstall"]);
    assert_eq!(ruleset(app), before, "uninstall restores the ruleset");
}

#[test]
fn iptables_install_is_idempotent_and_uninstall_restores_the_ruleset_exactly() {
    let net = Pair::new("ip");
    let app = &net.a;
    // Rules of the app's own, in the nat table and elsewhere, which we must leave alone.
    app.sh(
        "iptables -t nat -N APP_OWN && iptables -t nat -A OUTPUT -p tcp --dport 7 -j APP_OWN \
         && iptables -A OUTPUT -p tcp --dport 9 -j ACCEPT",
    );
    let before = ruleset(app);
    assert!(iptables(app, &["show"]).contains("not installed"));

    let install = [
        "install",
        "--proxy-uid",
        SIDECAR_UID,
        "--exclude-ports",
        "22,5432",
        "--exclude-cidrs",
        "10.0.0.0/8",
    ];
    let out = iptables(app, &install);
    assert!(out.contains("Installed the IPv4 redirect"), "{out}");
    let once = ruleset(app);
    assert_ne!(once, before);
    iptables(app, &install);
    assert_eq!(ruleset(app), once, "install twice = once");

    let shown = iptables(app, &["show"]);
    for rule in [
        "-A OUTPUT -p tcp -j WHOUSES_OUTPUT",
        "-A OUTPUT -p udp -m udp --dport 53 -j WHOUSES_DNS",
        "-A WHOUSES_OUTPUT -m owner --uid-owner 41337 -j RETURN",
        "-A WHOUSES_OUTPUT -o lo -j RETURN",
        "-A WHOUSES_OUTPUT -p tcp -m multiport --dports 22,5432 -j RETURN",
        "-A WHOUSES_OUTPUT -d 10.0.0.0/8 -j RETURN",
        "-A WHOUSES_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        "-A WHOUSES_DNS -p udp -j REDIRECT --to-ports 15053",
    ] {
        assert!(shown.contains(rule), "{rule} missing from:\n{shown}");
    }
    assert!(
        !shown.contains("APP_OWN"),
        "show prints only ours:\n{shown}"
    );

    // Without DNS capture, a second install drops the DNS chain.
    iptables(
        app,
        &[
            "install",
            "--proxy-uid",
            SIDECAR_UID,
            "--capture-dns",
            "false",
        ],
    );
    assert!(!iptables(app, &["show"]).contains("WHOUSES_DNS"));

    iptables(app, &["uninstall"]);
    assert_eq!(
        ruleset(app),
        before,
        "uninstall restores the ruleset exactly"
    );
    iptables(app, &["uninstall"]);
    assert_eq!(ruleset(app), before, "uninstall twice = once");
}

#[test]
fn iptables_errors_are_clear() {
    let net = Pair::new("ie");
    // Without CAP_NET_ADMIN: a uid of its own, no capabilities.
    let out = net
        .a
        .cmd("setpriv")
        .args([
            &format!("--reuid={SIDECAR_UID}"),
            &format!("--regid={SIDECAR_UID}"),
            "--clear-groups",
            "--",
            bin_path("whouses-sidecar").to_str().unwrap(),
            "iptables",
            "install",
            "--proxy-uid",
            "1337",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("NET_RAW"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A usage error names the flag, before anything is touched.
    let out = net
        .a
        .cmd(bin_path("whouses-sidecar").to_str().unwrap())
        .args(["iptables", "install"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--proxy-uid"));
}
