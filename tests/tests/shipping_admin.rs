//! Issue 12 item 9: the admin and probe listeners are bounded. A thousand idle or slow
//! connections to each must neither grow the sidecar's memory toward its limit nor stop
//! `/healthz` from answering; heads are small, slow ones are cut off, and only GET and
//! HEAD are served.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use whouses_tests::bins::secs;
use whouses_tests::sidecar::{get_text, Sidecar};
use whouses_tests::wait;

/// Whether the peer has closed `c` (EOF or a reset), without waiting long.
fn closed(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a response or an error page; read on
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// One raw request; returns the status line.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_thousand_idle_and_slow_connections_leave_memory_bounded_and_probes_answered() {
    let s = Sidecar::builder("guarded").probe().spawn();
    let probe = s.probe.unwrap();
    let ok = format!("ok {}\n", s.instance);
    let mut held = Vec::new();
    for i in 0..1000 {
        for addr in [s.admin, probe] {
            // A full accept backlog may refuse a few; the rest are held.
            if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                if i % 2 == 1 {
                    // Slow: half a request head, never finished.
                    let _ = c.write_all(b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                }
                held.push(c);
            }
        }
    }
    assert!(held.len() >= 1800, "only {} connections opened", held.len());
    for (what, addr) in [("admin", s.admin), ("probe", probe)] {
        let got = wait::until(&format!("{what} /healthz"), secs(10), || {
            get_text(&format!("http://{addr}/healthz"))
        });
        assert_eq!(got, ok, "{what}");
        let ready = wait::until(&format!("{what} /readyz"), secs(10), || {
            get_text(&format!("http://{addr}/readyz"))
        });
        assert!(ready.contains("\"ready\":true"), "{what}: {ready}");
    }
    let rss_mib = s.proc.rss_kib() / 1024;
    let peak_mib = s.proc.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 40,
        "RSS {rss_mib} MiB, peak {peak_mib} MiB with {} held connections",
        held.len()
    );
    // The sidecar closed them: evicted at the connection cap, or cut off by the
    // head-read timeout (3 s), or at the latest by the per-connection deadline (15 s).
    wait::until(
        "every held connection closed by the sidecar",
        secs(30),
        || {
            held.retain_mut(|c| !closed(c));
            held.is_empty().then_some(())
        },
    );
    assert_eq!(
        get_text(&format!("http://{}/healthz", s.admin)).as_deref(),
        Some(ok.as_str())
    );
}

#[test]
fn admin_requests_are_small_and_read_only() {
    let s = Sidecar::builder("strict").probe().spawn();
    let probe = s.probe.unwrap();
    for addr in [s.admin, probe] {
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        let status = raw(addr, big.as_bytes());
        assert!(
            status.starts_with("HTTP/1.1 431"),
            "a 20 KB head is refused: {status:?}"
        );
        let status = raw(
            addr,
            b"DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(status.starts_with("HTTP/1.1 405"), "{status:?}");
        let status = raw(
            addr,
            b"HEAD /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
    }
    let status = raw(
        probe,
        b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        status.starts_with("HTTP/1.1 404"),
        "probe serves no stats: {status:?}"
    );
}

/// Issue 19, ports: the sidecar binds port 0 and says where on stdout, in exactly one
/// JSON line; a restart binds the same addresses again, and fails clearly (never talks
/// to another process) when one was taken meanwhile.
#[test]
fn the_listening_line_names_the_bound_addresses_and_a_restart_keeps_them() {
    let mut s = Sidecar::builder("ports").probe().spawn();
    let probe = s.probe.unwrap();
    let line = format!(
        r#"{{"listening":{{"proxy":"{}","admin":"{}","probe":"{probe}"}},"instance":"{}","pid":{}}}"#,
        s.proxy,
        s.admin,
        s.instance,
        s.proc.pid()
    );
    assert_eq!(
        s.proc.stdout.lock().unwrap().clone(),
        vec![line],
        "stdout holds the listening line and nothing else"
    );
    let (old_pid, addrs) = (s.proc.pid(), (s.proxy, s.admin, s.probe));
    s.kill9();
    s.restart();
    assert_ne!(s.proc.pid(), old_pid);
    assert_eq!((s.proxy, s.admin, s.probe), addrs);
    assert_eq!(
        get_text(&s.admin_url("/healthz")),
        Some(format!("ok {}\n", s.instance))
    );

    // Someone else takes the proxy port while the sidecar is down.
    s.kill9();
    let _squatter = std::net::TcpListener::bind(s.proxy).unwrap();
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.restart()));
    let message = failed.expect_err("a restart onto a taken port fails");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("cannot listen on --listen") && message.contains(&s.proxy.to_string()),
        "the failure says which address: {message}"
    );
}
