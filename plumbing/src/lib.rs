//! What every whouses program needs around its real work, written once.
//!
//! * [`logging`] — `--log-format text|json`, the level from `RUST_LOG`, logs on stderr.
//! * [`shutdown`] — a future that completes on SIGTERM or SIGINT.
//! * [`error_chain`] — an error and all its sources on one line, for the one-line
//!   message a program prints before it exits non-zero.
//! * [`process`] — child processes of ours: signals, and reading a listening line.
//! * [`listening`] — the one line a server prints on stdout once its listeners are bound,
//!   so whoever started it (a test, a supervisor) learns the real ports of `:0`.
//! * [`tls`] and [`server`] (feature `server`) — a TLS acceptor that reloads its
//!   certificate files when they change, and an HTTP/1 server loop with the limits an
//!   outsider must not be able to push past: connections, head size, head-read time,
//!   connection lifetime, and a bounded drain on shutdown.

pub mod listening;
pub mod logging;
pub mod process;
pub mod shutdown;

#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod tls;

pub use logging::LogFormat;

/// An error and its sources on one line (`a: b: c`), skipping a source whose text the
/// line already holds (many errors repeat their source in their own message).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot read the file")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_sources_once() {
        let e = Outer(std::io::Error::other("permission denied"));
        assert_eq!(error_chain(&e), "cannot read the file: permission denied");
    }
}
