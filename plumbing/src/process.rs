//! Child processes of ours (the demo's collector and sidecars, the tests' binaries):
//! sending them a signal without a `kill` binary, and reading the listening line
//! ([`crate::listening`]) they print on stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

pub use rustix::process::Signal;

/// Send `signal` to a child (e.g. `Signal::TERM` for an orderly stop with a final flush).
pub fn signal(child: &Child, signal: Signal) -> std::io::Result<()> {
    rustix::process::kill_process(rustix::process::Pid::from_child(child), signal)
        .map_err(std::io::Error::from)
}

/// What a child announced: its listeners by name, and the rest of the line.
#[derive(Debug, Clone)]
pub struct Listening {
    pub addrs: BTreeMap<String, SocketAddr>,
    pub line: serde_json::Value,
}

impl Listening {
    /// The address of one named listener (`api`, `proxy`, `admin`, …).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.get(name).copied()
    }
}

/// Parse a listening line; `None` for any other line.
pub fn parse_listening(line: &str) -> Option<Listening> {
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    let l = v.get("listening")?.as_object()?;
    let addrs = l
        .iter()
        .filter_map(|(k, a)| Some((k.clone(), a.as_str()?.parse().ok()?)))
        .collect();
    Some(Listening { addrs, line: v })
}

/// Read `stdout` on a thread until the listening line appears (or `timeout` passes, or
/// the pipe closes because the child died). Every other line is handed to `other`.
/// The thread keeps draining the pipe afterwards so the child never blocks on a full pipe.
pub fn await_listening<R, F>(stdout: R, timeout: Duration, mut other: F) -> Option<Listening>
where
    R: Read + Send + 'static,
    F: FnMut(&str) + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match (tx.as_ref(), parse_listening(&line)) {
                (Some(_), Some(l)) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(l);
                    }
                }
                _ => other(&line),
            }
        }
    });
    rx.recv_timeout(timeout).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse_and_others_do_not() {
        let l = parse_listening(
            r#"{"listening":{"proxy":"127.0.0.1:1234","admin":"[::1]:5"},"instance":"a","pid":7}"#,
        )
        .unwrap();
        assert_eq!(l.addr("proxy"), Some("127.0.0.1:1234".parse().unwrap()));
        assert_eq!(l.addr("admin"), Some("[::1]:5".parse().unwrap()));
        assert_eq!(l.line["instance"], "a");
        assert!(parse_listening("Collector started.").is_none());
        assert!(parse_listening(r#"{"other":1}"#).is_none());
    }
}
