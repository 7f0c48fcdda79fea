//! Where a watch's alerts go, for the end-to-end tests of issue 16: a real Alertmanager
//! (Debian's `prometheus-alertmanager`, on loopback with a throwaway configuration and
//! storage directory, clustering off) and a plain webhook receiver that keeps every JSON
//! body it accepted (and can refuse the first few, to exercise retries).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::bins::Proc;
use crate::wait;

/// Where Debian installs Alertmanager.
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// A running Alertmanager; killed when dropped, its directory removed.
pub struct Alertmanager {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Start on 127.0.0.1 (a port of its own choosing, read from its "Listening on"
    /// log line) with one receiver that sends nowhere: the test reads what it holds
    /// through `GET /api/v2/alerts`.
    pub fn start() -> Alertmanager {
        assert!(
            std::path::Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} not found: install Debian's prometheus-alertmanager (scripts/test-all.sh does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nowhere\n  group_wait: 1h\nreceivers:\n  - name: nowhere\n",
        )
        .expect("writing the Alertmanager configuration");
        let mut cmd = Command::new(ALERTMANAGER);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address=");
        let proc = Proc::spawn("alertmanager", cmd);
        let addr = wait::until(
            "Alertmanager's \"Listening on\" line",
            Duration::from_secs(30),
            || {
                let out = proc.output();
                out.lines()
                    .find(|l| l.contains("msg=\"Listening on\""))
                    .and_then(|l| l.split("address=").nth(1))
                    .and_then(|a| a.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
            },
        );
        let am = Alertmanager {
            proc,
            addr,
            _dir: dir,
        };
        wait::until("Alertmanager ready", Duration::from_secs(30), || {
            crate::sidecar::client()
                .get(format!("http://{addr}/-/ready"))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
        am
    }

    /// The URL a watch notifies: `http://ADDR/api/v2/alerts`.
    pub fn alerts_url(&self) -> String {
        format!("http://{}/api/v2/alerts", self.addr)
    }

    /// The alerts it holds now (`GET /api/v2/alerts`, active ones).
    pub fn alerts(&self) -> Vec<Value> {
        crate::sidecar::get_json(&self.alerts_url())
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// The alerts whose label `kind` is `kind`.
    pub fn alerts_of(&self, kind: &str) -> Vec<Value> {
        self.alerts()
            .into_iter()
            .filter(|a| a["labels"]["kind"] == kind)
            .collect()
    }
}

/// A webhook receiver on 127.0.0.1: answers `503` to the first `refuse` POSTs, then
/// `200`, keeping each accepted body (JSON). Stopped when dropped.
pub struct Receiver {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Value>>>,
    refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub fn start(refuse: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the receiver");
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, refd, stopping) = (accepted.clone(), refused.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, refuse, &acc, &refd);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver {
            addr,
            accepted,
            refused,
            stop,
            thread: Some(thread),
        }
    }

    /// The URL to notify.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/decom-channel", self.addr)
    }

    /// The bodies accepted so far, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many POSTs it refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request on one connection (`Connection: close`).
fn serve(
    stream: TcpStream,
    refuse: usize,
    accepted: &Mutex<Vec<Value>>,
    refused: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(stream.try_clone()?);
    let mut len = 0usize;
    let mut first = String::new();
    r.read_line(&mut first)?;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    let status = if !first.starts_with("POST ") {
        "405 Method Not Allowed"
    } else if refused.load(Ordering::SeqCst) < refuse {
        refused.fetch_add(1, Ordering::SeqCst);
        "503 Service Unavailable"
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => {
                accepted
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(v);
                "200 OK"
            }
            Err(_) => "400 Bad Request",
        }
    };
    let mut w = stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    w.flush()
}
