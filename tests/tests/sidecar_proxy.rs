//! Issue 2: the real `whouses-sidecar` between real clients (curl, Python urllib, reqwest)
//! and real upstreams (hyper, a TLS server), counting exactly and failing cleanly.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use whouses_tests::bins::{free_addr, secs, Proc};
use whouses_tests::sidecar::{send_through, temp_dir, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;

fn curl(args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", ""])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .expect("curl is installed (scripts/test-all.sh installs it)");
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Write raw bytes to the proxy and read its answer until close or timeout.
fn raw(proxy: SocketAddr, bytes: &[u8], wait_for: Duration) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(wait_for)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into()
}

/// The sidecar's `/metrics` has this exact line.
fn assert_metric(s: &Sidecar, line: &str) {
    let metrics = whouses_tests::sidecar::client()
        .get(s.admin_url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == line),
        "{line} not in:\n{metrics}"
    );
}

fn works(s: &Sidecar, up: &Upstream) {
    let (code, body, err) = curl(&["-x", &s.proxy_url(), &format!("http://{}/", up.addr())]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(body, b"ok\n");
}

#[test]
fn curl_plain_http_is_byte_identical_and_counted() {
    let up = Upstream::start("127.0.0.1");
    // One worker thread: the single-threaded event loop.
    let s = Sidecar::builder("web").args(&["--threads", "1"]).spawn();
    let url = format!("http://{}/bytes/300000", up.addr());
    let (_, direct, _) = curl(&[&url]);
    let (code, proxied, err) = curl(&["-x", &s.proxy_url(), &url]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(direct.len(), 300_000);
    assert_eq!(direct, proxied);
    let e = s.edge("127.0.0.1", up.port(), "http").expect("key counted");
    assert_eq!(e["requests"], 1);
    assert_eq!(e["errors"], 0);
    assert_eq!(e["bytes_received"], 300_000);
    assert!(e["first_seen"].is_string() && e["last_seen"].is_string());
    let stats = s.stats();
    assert_eq!(stats["service"], "web");
    assert_eq!(stats["environment"], "default");
}

#[test]
fn hop_by_hop_headers_are_not_forwarded_and_uploads_stream() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("web").spawn();
    let (code, body, err) = curl(&[
        "-x",
        &s.proxy_url(),
        "-U",
        "user:secret",
        "-H",
        "Connection: keep-alive, X-Hop",
        "-H",
        "X-Hop: 1",
        "-H",
        "X-End: 2",
        &format!("http://{}/headers", up.addr()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let head = String::from_utf8_lossy(&body).to_lowercase();
    assert!(
        head.starts_with("get /headers"),
        "origin-form upstream: {head}"
    );
    assert!(head.contains("x-end: 2"), "{head}");
    for h in [
        "proxy-authorization",
        "proxy-connection",
        "x-hop",
        "connection:",
    ] {
        assert!(!head.contains(h), "{h} forwarded: {head}");
    }
    // A chunked upload with Expect: 100-continue passes through, counted as sent bytes.
    let (_g, dir) = temp_dir();
    let file = dir.join("upload.bin");
    std::fs::write(&file, vec![7u8; 1_500_000]).unwrap();
    let (code, body, err) = curl(&[
        "-x",
        &s.proxy_url(),
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{}/echo-size", up.addr()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&body).trim(), "1500000");
    assert_eq!(
        s.count("127.0.0.1", up.port(), "http", "bytes_sent"),
        1_500_000
    );
}

/// A TLS upstream: Python's http.server wrapped in ssl, with a throwaway self-signed cert.
struct TlsServer {
    _proc: Proc,
    addr: SocketAddr,
    cert: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn tls_server() -> TlsServer {
    let (dir, path) = temp_dir();
    let (cert, key) = (path.join("cert.pem"), path.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=secure.internal",
            "-addext",
            "subjectAltName=DNS:secure.internal,DNS:localhost,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed")
        .success();
    assert!(ok, "openssl req failed");
    std::fs::write(
        path.join("file.txt"),
        "secret reference data\n".repeat(1000),
    )
    .unwrap();
    let addr = free_addr("127.0.0.1");
    let script = format!(
        "import http.server, ssl, functools\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={dir:?})\n\
         s = http.server.ThreadingHTTPServer(('127.0.0.1', {port}), h)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain({cert:?}, {key:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        dir = path.display().to_string(),
        port = addr.port(),
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    let mut cmd = Command::new("python3");
    cmd.args(["-c", &script]);
    let proc = Proc::spawn("tls upstream", cmd);
    wait::port_open(addr, secs(20));
    TlsServer {
        _proc: proc,
        addr,
        cert,
        _dir: dir,
    }
}

#[test]
fn https_through_connect_is_byte_identical_and_counted() {
    let tls = tls_server();
    let s = Sidecar::builder("api")
        .resolve("secure.internal", 443, tls.addr)
        .spawn();
    let cacert = tls.cert.display().to_string();
    let (code, direct, err) = curl(&[
        "--cacert",
        &cacert,
        &format!("https://localhost:{}/file.txt", tls.addr.port()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    let (code, proxied, err) = curl(&[
        "--cacert",
        &cacert,
        "-x",
        &s.proxy_url(),
        "https://secure.internal/file.txt",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(direct, proxied);
    assert_eq!(proxied.len(), 22_000);
    // One tunnel = one connection; bytes both ways are counted (TLS included).
    wait::until("tunnel closed and counted", secs(10), || {
        let e = s.edge("secure.internal", 443, "https")?;
        (e["connections"] == 1
            && e["bytes_received"].as_u64()? > 22_000
            && e["bytes_sent"].as_u64()? > 0)
            .then_some(())
    });
    assert_eq!(s.count("secure.internal", 443, "https", "requests"), 0);
}

#[test]
fn python_urllib_uses_the_sidecar_through_proxy_env_vars() {
    let up = Upstream::start("127.0.0.1");
    let tls = tls_server();
    let s = Sidecar::builder("py")
        .resolve("plain.internal", 80, up.addr())
        .resolve("secure.internal", 443, tls.addr)
        .spawn();
    let script = format!(
        "import urllib.request, ssl\n\
         ctx = ssl.create_default_context(cafile={cert:?})\n\
         for _ in range(3):\n\
         \x20   assert urllib.request.urlopen('http://plain.internal/py').read() == b'ok\\n'\n\
         body = urllib.request.urlopen('https://secure.internal/file.txt', context=ctx).read()\n\
         assert body.startswith(b'secret reference data'), body[:50]\n\
         print('done')\n",
        cert = tls.cert.display().to_string()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .env("HTTP_PROXY", s.proxy_url())
        .env("HTTPS_PROXY", s.proxy_url())
        .env("http_proxy", s.proxy_url())
        .env("https_proxy", s.proxy_url())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.count("plain.internal", 80, "http", "requests"), 3);
    assert_eq!(up.requests(), 3);
    wait::until_eq("python's tunnel counted", secs(10), 1, || {
        s.count("secure.internal", 443, "https", "connections")
    });
}

#[test]
fn concurrent_keep_alive_clients_are_counted_exactly() {
    let a = Upstream::start("127.0.0.2");
    let b = Upstream::start("127.0.0.3");
    let s = Sidecar::builder("load")
        .args(&["--threads", "2"])
        .resolve("alpha.internal", 80, a.addr())
        .resolve("alpha.internal", 8080, b.addr())
        .spawn();
    let ok = send_through(&s.proxy_url(), "http://alpha.internal/k", 12_800, 64);
    assert_eq!(ok, 12_800);
    assert_eq!(s.count("alpha.internal", 80, "http", "requests"), 12_800);
    assert_eq!(s.count("alpha.internal", 80, "http", "errors"), 0);
    assert_eq!(a.requests(), 12_800);
    // A mix of names and ports lands on the right keys.
    assert_eq!(
        send_through(&s.proxy_url(), "http://ALPHA.internal.:8080/m", 30, 3),
        30
    );
    assert_eq!(
        send_through(&s.proxy_url(), &format!("http://{}/d", b.addr()), 20, 2),
        20
    );
    assert_eq!(s.count("alpha.internal", 8080, "http", "requests"), 30);
    assert_eq!(s.count("127.0.0.3", b.port(), "http", "requests"), 20);
    assert_eq!(s.count("alpha.internal", 80, "http", "requests"), 12_800);
    assert_eq!(b.requests(), 50);
    // Keep-alive and pooling: far fewer upstream connections than requests.
    let conns = s.count("alpha.internal", 80, "http", "connections");
    assert!((1..=200).contains(&conns), "upstream connections: {conns}");
}

#[test]
fn a_200_mib_response_streams_with_small_memory() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("big").spawn();
    let size: u64 = 200 * 1024 * 1024;
    let (code, _, err) = curl(&[
        "-x",
        &s.proxy_url(),
        "-o",
        "/dev/null",
        &format!("http://{}/bytes/{size}", up.addr()),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        s.count("127.0.0.1", up.port(), "http", "bytes_received"),
        size
    );
    let peak_mib = s.proc.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 64,
        "sidecar peak RSS {peak_mib} MiB while streaming 200 MiB"
    );
}

#[test]
fn bad_input_gets_its_error_and_the_next_request_works() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("robust")
        .args(&["--header-read-timeout", "1s", "--max-header-bytes", "16384"])
        .spawn();

    let r = raw(s.proxy, b"\x00\x01garbage\r\n\r\n", secs(5));
    assert!(r.starts_with("HTTP/1.1 400"), "garbage: {r:?}");
    assert!(r.contains("not an HTTP request"), "garbage: {r:?}");
    works(&s, &up);

    // An app whose proxy URL says https:// starts TLS with us: say so.
    let r = raw(
        s.proxy,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        secs(5),
    );
    assert!(
        r.starts_with("HTTP/1.1 400"),
        "TLS to the proxy port: {r:?}"
    );
    assert!(r.contains("TLS") && r.contains("http://"), "TLS: {r:?}");
    works(&s, &up);

    // A request line hyper cannot parse still gets its 400.
    let r = raw(s.proxy, b"GET\x01 / HTTP/9\r\n\r\n", secs(5));
    assert!(r.starts_with("HTTP/1.1 400"), "bad request line: {r:?}");
    works(&s, &up);
    assert_metric(&s, "whouses_sidecar_client_connections_not_http_total 2");

    let big = format!(
        "GET http://{}/ HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        up.addr(),
        "a".repeat(40_000)
    );
    let r = raw(s.proxy, big.as_bytes(), secs(5));
    assert!(r.starts_with("HTTP/1.1 431"), "oversized header: {r:?}");
    works(&s, &up);

    // Half a request: the head never completes; the connection is closed after the
    // header-read timeout instead of being held forever.
    let t = std::time::Instant::now();
    let r = raw(
        s.proxy,
        format!("GET http://{}/ HTTP/1.1\r\nHost: x\r\n", up.addr()).as_bytes(),
        secs(10),
    );
    assert!(
        t.elapsed() < secs(8),
        "half-sent request held {:?}",
        t.elapsed()
    );
    assert!(!r.contains("200 OK"), "{r:?}");
    works(&s, &up);

    // Origin-form: a helpful 400.
    let (_, body, _) = curl(&[&format!("http://{}/index.html", s.proxy)]);
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("forward proxy") && body.contains("HTTP_PROXY"),
        "{body}"
    );

    // CONNECT to a closed port: 502 with a reason, counted as an error.
    let closed = free_addr("127.0.0.1");
    let r = raw(
        s.proxy,
        format!("CONNECT {closed} HTTP/1.1\r\nHost: {closed}\r\n\r\n").as_bytes(),
        secs(5),
    );
    assert!(r.starts_with("HTTP/1.1 502"), "{r:?}");
    assert!(r.contains("refused"), "{r:?}");
    assert_eq!(s.count("127.0.0.1", closed.port(), "tcp", "errors"), 1);
    // Plain HTTP to a closed port and an unresolvable name: 502, counted.
    let (_, body, _) = curl(&["-x", &s.proxy_url(), &format!("http://{closed}/")]);
    assert!(String::from_utf8_lossy(&body).contains("refused"));
    assert_eq!(s.count("127.0.0.1", closed.port(), "http", "errors"), 1);
    let (_, body, _) = curl(&[
        "-x",
        &s.proxy_url(),
        "-w",
        "%{http_code}",
        "http://no-such-host.invalid/",
    ]);
    // 502 when the resolver says there is no such name; 504 when the machine's resolver
    // does not answer within --connect-timeout (a fresh root behind a forwarding DNS did
    // that for `.invalid`). Either way the answer names the host and is counted.
    let body = String::from_utf8_lossy(&body);
    assert!(
        (body.ends_with("502") || body.ends_with("504")) && body.contains("no-such-host.invalid"),
        "{body}"
    );
    assert_eq!(s.count("no-such-host.invalid", 80, "http", "errors"), 1);
    // An upstream 5xx is passed through and counted as an error.
    let (_, body, _) = curl(&[
        "-x",
        &s.proxy_url(),
        "-w",
        "%{http_code}",
        &format!("http://{}/status/503", up.addr()),
    ]);
    assert!(String::from_utf8_lossy(&body).ends_with("503"));
    assert_eq!(s.count("127.0.0.1", up.port(), "http", "errors"), 1);
    works(&s, &up);
    assert!(s.proc.child.id() > 0);
}

#[test]
fn clients_outside_allow_from_are_refused() {
    let up = Upstream::start("127.0.0.1");
    // Listening on 127.0.0.2, allowing only 127.0.0.1: a client from 127.0.0.2 is refused.
    let s = Sidecar::builder("guarded")
        .ip("127.0.0.2")
        .args(&["--allow-from", "127.0.0.1/32"])
        .spawn();
    let url = format!("http://{}/", up.addr());
    let (code, body, _) = curl(&[
        "--interface",
        "127.0.0.2",
        "-x",
        &s.proxy_url(),
        "-w",
        "%{http_code}",
        &url,
    ]);
    assert_eq!(code, Some(0));
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("not allowed") && body.ends_with("403"),
        "{body}"
    );
    let (code, body, _) = curl(&["--interface", "127.0.0.1", "-x", &s.proxy_url(), &url]);
    assert_eq!(code, Some(0));
    assert_eq!(body, b"ok\n");
    assert_eq!(up.requests(), 1, "the refused client reached nothing");
    // By default, only loopback is served (a non-loopback bind address needs --allow-from).
    assert_metric(&s, "whouses_sidecar_client_connections_refused_total 1");
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let up = Upstream::start("127.0.0.1");
    let mut s = Sidecar::builder("graceful").spawn();
    let proxy = s.proxy_url();
    let url = format!("http://{}/slow/1500", up.addr());
    let inflight = std::thread::spawn(move || {
        let (code, body, err) = curl(&["-x", &proxy, &url]);
        (code, String::from_utf8_lossy(&body).to_string(), err)
    });
    wait::until("the slow request to reach the upstream", secs(10), || {
        (s.count("127.0.0.1", up.port(), "http", "requests") == 1).then_some(())
    });
    s.sigterm();
    let (code, body, err) = inflight.join().unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(body, "slow ok\n");
    assert_eq!(s.wait_exit(secs(20)), Some(0));
    // And the port is closed.
    assert!(TcpStream::connect_timeout(&s.proxy, Duration::from_millis(300)).is_err());
}

#[test]
fn a_flood_of_distinct_hosts_folds_into_other() {
    let s = Sidecar::builder("flood")
        .args(&["--max-hosts", "20", "--connect-timeout", "1s"])
        .spawn();
    let closed = free_addr("127.0.0.1");
    let before = s.proc.rss_kib();
    // 300 distinct names (each `host-N.invalid` fails to resolve, but is a new key).
    let names: Vec<String> = (0..300)
        .map(|i| format!("http://host-{i}.invalid:{}/", closed.port()))
        .collect();
    let c = whouses_tests::sidecar::proxied_client(&s.proxy_url());
    for u in &names {
        let r = c.get(u).send().unwrap();
        // Unresolvable (502), or a resolver slower than the connect timeout (504).
        assert!(matches!(r.status().as_u16(), 502 | 504), "{}", r.status());
    }
    let st = s.stats();
    assert!(st["keys"].as_u64().unwrap() <= 21, "{}", st["keys"]);
    assert_eq!(st["folded"].as_u64().unwrap(), 280);
    let other = s.edge("(other)", 0, "http").expect("(other) bucket");
    assert_eq!(other["requests"], 280);
    assert_eq!(other["errors"], 280);
    let after = s.proc.rss_kib();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Upstream connections: an app connection keeps one for all its requests, a closed app
/// connection leaves it to the next one (curl opens a new connection per run), and an
/// upstream connection the upstream closed is replaced, not reused.
#[test]
fn upstream_connections_are_reused_across_app_connections_and_replaced_when_closed() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("reuse").spawn();
    let url = format!("http://{}/", up.addr());
    // An app connection's upstream connection goes back to the pool once the sidecar
    // has seen the app close: a moment between runs.
    let settle = || std::thread::sleep(Duration::from_millis(100));
    for _ in 0..5 {
        let (code, body, err) = curl(&["-x", &s.proxy_url(), &url]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(body, b"ok\n");
        settle();
    }
    assert_eq!(up.requests(), 5);
    assert_eq!(
        up.connections(),
        1,
        "five app connections, one upstream connection"
    );

    // One app connection, many requests (reqwest keeps its connection alive).
    let c = whouses_tests::sidecar::proxied_client(&s.proxy_url());
    for _ in 0..20 {
        assert_eq!(c.get(&url).send().unwrap().text().unwrap(), "ok\n");
    }
    drop(c);
    settle();
    assert_eq!(up.connections(), 1);

    // The upstream closes its side after this answer; the next request gets a new
    // connection and succeeds.
    let (code, body, err) = curl(&["-x", &s.proxy_url(), &format!("{url}close")]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(body, b"closing\n");
    settle();
    for _ in 0..3 {
        let (code, body, err) = curl(&["-x", &s.proxy_url(), &url]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(body, b"ok\n");
        settle();
    }
    assert_eq!(up.requests(), 5 + 20 + 1 + 3);
    assert_eq!(up.connections(), 2);
    // The sidecar counts the connections it opened on the key, as the upstream saw them.
    assert_eq!(
        s.count("127.0.0.1", up.port(), "http", "connections"),
        2,
        "{}",
        s.stats()
    );
    assert_eq!(
        s.count("127.0.0.1", up.port(), "http", "requests"),
        5 + 20 + 1 + 3
    );
}

/// `--idle-timeout`: an upstream connection left idle in the pool is closed after it,
/// without waiting for more traffic to that upstream.
#[test]
fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("idle")
        .args(&["--idle-timeout", "1s"])
        .spawn();
    let (code, body, err) = curl(&["-x", &s.proxy_url(), &format!("http://{}/", up.addr())]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(body, b"ok\n");
    wait::until_eq("the pooled upstream connection", secs(5), 1, || {
        up.open_connections()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(up.open_connections(), 1, "kept for the next app connection");
    wait::until_eq("the idle upstream connection to close", secs(5), 0, || {
        up.open_connections()
    });
}
