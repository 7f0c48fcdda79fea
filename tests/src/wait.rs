//! Assertions that retry until a deadline, so tests never depend on fixed sleeps.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Call `f` until it returns `Some`, or panic after `timeout` with `what`.
pub fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Call `f` until it returns `expected`; on timeout, panic showing the last value.
pub fn until_eq<T: PartialEq + Debug>(
    what: &str,
    timeout: Duration,
    expected: T,
    mut f: impl FnMut() -> T,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = f();
        if got == expected {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}: expected {expected:?}, last saw {got:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Wait until a TCP connect to `addr` succeeds (a server is listening).
pub fn port_open(addr: std::net::SocketAddr, timeout: Duration) {
    until(&format!("{addr} to accept connections"), timeout, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    });
}
