//! Issue 12 (the proxy's items) against the HTTP/1 relay of issue 18: `Host` rewritten to
//! the counted authority, userinfo never forwarded, an empty port, the head-size limit on
//! the whole head, and WebSocket through the proxy (counted, then tunnelled). Each of
//! these failed on the hyper-based path (see `tests/fixtures/relay/` for the recorded
//! behaviour of the first three).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use whouses_tests::bins::{free_addr, secs, Proc};
use whouses_tests::sidecar::Sidecar;
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;

/// Send raw bytes, read the answer until close or timeout.
fn raw(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into()
}

#[test]
fn host_is_rewritten_to_the_counted_authority_and_userinfo_never_forwarded() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("vhost")
        .resolve("billing.internal", 80, up.addr())
        .spawn();
    // The app names one host in the URI (what is counted) and another in Host.
    let r = raw(
        s.proxy,
        b"GET http://admin:secret@billing.internal/headers HTTP/1.1\r\nHost: payroll.internal\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let seen = r.to_lowercase();
    assert!(seen.contains("\nhost: billing.internal\n"), "{r}");
    assert!(
        !seen.contains("payroll"),
        "the client's Host was forwarded: {r}"
    );
    assert!(
        !seen.contains("admin") && !seen.contains("secret"),
        "userinfo leaked: {r}"
    );
    assert_eq!(s.count("billing.internal", 80, "http", "requests"), 1);

    // A port in the authority stays in Host; no Host at all gets one.
    let r = raw(
        s.proxy,
        format!(
            "GET http://{}/headers HTTP/1.1\r\nConnection: close\r\n\r\n",
            up.addr()
        )
        .as_bytes(),
    );
    assert!(
        r.to_lowercase()
            .contains(&format!("\nhost: {}\n", up.addr())),
        "{r}"
    );
}

#[test]
fn an_empty_port_is_the_default_port() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("port")
        .resolve("example.internal", 80, up.addr())
        .spawn();
    let r = raw(
        s.proxy,
        b"GET http://example.internal:/ HTTP/1.1\r\nHost: example.internal:\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("ok\n"), "{r}");
    assert_eq!(s.count("example.internal", 80, "http", "requests"), 1);
}

#[test]
fn the_header_limit_covers_the_whole_head() {
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("limits")
        .args(&["--max-header-bytes", "65536"])
        .spawn();
    let head = |n: usize| {
        format!(
            "GET http://{}/ HTTP/1.1\r\nX-A: {}\r\nX-B: {}\r\nConnection: close\r\n\r\n",
            up.addr(),
            "a".repeat(n / 2),
            "b".repeat(n / 2)
        )
    };
    let r = raw(s.proxy, head(100_000).as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "a 100 KB head: {r:.200}");
    assert!(r.contains("--max-header-bytes"), "{r}");
    // Just under the limit passes.
    let r = raw(s.proxy, head(60_000).as_bytes());
    assert!(r.starts_with("HTTP/1.1 200"), "a 60 KB head: {r:.200}");
    assert_eq!(up.requests(), 1);
}

/// A real WebSocket server (Python `websockets`, echoing) and a real client, through the
/// sidecar: the upgrade is one request on the key, and after `101` every frame both ways
/// is counted as tunnel bytes. The client speaks absolute-form to the proxy, as an HTTP
/// proxy client does for `ws://` (curl does); a second client uses `CONNECT`.
#[test]
fn websocket_through_the_proxy_is_counted_then_tunnelled() {
    ensure_websockets();
    let server_addr = free_addr("127.0.0.1");
    let mut server = Command::new("python3");
    server.args([
        "-c",
        &format!(
            "from websockets.sync.server import serve\n\
             def echo(ws):\n\
             \x20   for m in ws: ws.send(m)\n\
             with serve(echo, '127.0.0.1', {}) as s: s.serve_forever()\n",
            server_addr.port()
        ),
    ]);
    let _server = Proc::spawn("websocket server", server);
    wait::port_open(server_addr, secs(20));
    let s = Sidecar::builder("ws")
        .resolve("chat.internal", 80, server_addr)
        .resolve("chat.internal", 8443, server_addr)
        .spawn();
    let client = format!(
        "import socket\n\
         import websockets.http11 as h\n\
         from websockets.sync.client import connect\n\
         serialize = h.Request.serialize\n\
         def absolute_form(self):\n\
         \x20   self.path = 'http://chat.internal' + self.path\n\
         \x20   return serialize(self)\n\
         h.Request.serialize = absolute_form\n\
         sock = socket.create_connection(('{ip}', {port}))\n\
         with connect('ws://chat.internal/room', sock=sock, proxy=None, compression=None) as ws:\n\
         \x20   for i in range(3):\n\
         \x20       ws.send('hello %d' % i)\n\
         \x20       assert ws.recv(timeout=5) == 'hello %d' % i\n\
         \x20   ws.send(b'x' * 100000)\n\
         \x20   assert len(ws.recv(timeout=5)) == 100000\n\
         h.Request.serialize = serialize\n\
         with connect('ws://chat.internal:8443/room', proxy='http://{ip}:{port}', compression=None) as ws:\n\
         \x20   ws.send('through CONNECT')\n\
         \x20   assert ws.recv(timeout=5) == 'through CONNECT'\n\
         print('done')\n",
        ip = s.proxy.ip(),
        port = s.proxy.port()
    );
    let out = Command::new("python3")
        .args(["-c", &client])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("done"),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The upgrade: one request, no error; then the frames both ways as bytes.
    wait::until("the WebSocket bytes counted", secs(10), || {
        let e = s.edge("chat.internal", 80, "http")?;
        (e["requests"] == 1
            && e["errors"] == 0
            && e["bytes_sent"].as_u64()? > 100_000
            && e["bytes_received"].as_u64()? > 100_000)
            .then_some(())
    });
    // Through CONNECT: one tunnel.
    wait::until_eq("the CONNECT tunnel counted", secs(10), 1, || {
        s.count("chat.internal", 8443, "tcp", "connections")
    });
}

/// The Python `websockets` package (scripts/test-all.sh installs it; installed here if a
/// developer's machine lacks it).
fn ensure_websockets() {
    let have = Command::new("python3")
        .args(["-c", "import websockets.sync.client"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "websockets>=14"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "pip install websockets failed; install it to run this test"
        );
    }
}

/// `--tunnel-splice` (the default) and `--tunnel-splice false`: a CONNECT tunnel copied by
/// the kernel is byte-identical and counted like one copied through user space.
#[test]
fn tunnels_copied_with_splice_are_byte_identical_and_counted() {
    let up = Upstream::start("127.0.0.1");
    for splice in [false, true] {
        let s = Sidecar::builder("splice")
            .resolve("tunnel.internal", 8080, up.addr())
            .args(&["--tunnel-splice", if splice { "true" } else { "false" }])
            .spawn();
        let out = Command::new("curl")
            .args([
                "-sS",
                "--noproxy",
                "",
                "--proxytunnel",
                "-x",
                &s.proxy_url(),
            ])
            .arg("http://tunnel.internal:8080/bytes/3000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), 3_000_000, "splice: {splice}");
        assert!(out.stdout.iter().all(|&b| b == b'x'));
        wait::until("the tunnel counted", secs(10), || {
            let e = s.edge("tunnel.internal", 8080, "tcp")?;
            (e["connections"] == 1
                && e["bytes_received"].as_u64()? > 3_000_000
                && e["bytes_sent"].as_u64()? > 50)
                .then_some(())
        });
    }
}

/// An upstream that closes an idle keep-alive connection (its keep-alive timeout): the
/// app connection's next request — a POST, whose body cannot be sent twice — goes on a
/// new upstream connection instead of failing on the closed one.
#[test]
fn a_request_after_the_upstream_closed_its_idle_connection_gets_a_new_one() {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    // Answers one request per connection (keep-alive in words), then closes after 100 ms.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
                std::thread::sleep(Duration::from_millis(100));
            });
        }
    });
    let s = Sidecar::builder("stale")
        .resolve("keepalive.internal", 80, addr)
        .spawn();
    let mut app = TcpStream::connect(s.proxy).unwrap();
    app.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let read_answer = |app: &mut TcpStream| {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok\n")
            && !String::from_utf8_lossy(&got).contains("whouses-sidecar:")
        {
            match app.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).to_string()
    };
    app.write_all(b"GET http://keepalive.internal/ HTTP/1.1\r\nHost: keepalive.internal\r\n\r\n")
        .unwrap();
    let first = read_answer(&mut app);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // The upstream closes its side meanwhile.
    std::thread::sleep(Duration::from_millis(400));
    app.write_all(
        b"POST http://keepalive.internal/ HTTP/1.1\r\nHost: keepalive.internal\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let second = read_answer(&mut app);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(s.count("keepalive.internal", 80, "http", "requests"), 2);
    assert_eq!(s.count("keepalive.internal", 80, "http", "errors"), 0);
}
