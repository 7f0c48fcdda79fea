//! A real `whouses-collector` for tests, and the `whouses` CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use whouses_plumbing::process::parse_listening;

use serde_json::Value;
use whouses_wire::Report;

use crate::bins::{bin_path, Proc};
use crate::wait;

pub struct Builder {
    db: Option<PathBuf>,
    db_url: Option<String>,
    args: Vec<String>,
    ca: Option<PathBuf>,
}

pub struct Collector {
    pub proc: Proc,
    pub addr: SocketAddr,
    /// The SQLite file (empty with [`Builder::db_url`]).
    pub db: PathBuf,
    /// The CA that signed its certificate, when it serves HTTPS.
    pub ca: Option<PathBuf>,
    args: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

/// A blocking client for the collector: no proxy, and trusting `ca` when given.
pub fn http(ca: Option<&Path>) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("reading the CA certificate");
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).expect("a PEM CA certificate"),
        );
    }
    b.build().expect("building a reqwest client")
}

impl Collector {
    pub fn builder() -> Builder {
        Builder {
            db: None,
            db_url: None,
            args: Vec::new(),
            ca: None,
        }
    }

    /// A collector on a fresh SQLite file.
    pub fn spawn() -> Collector {
        Self::builder().spawn()
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// A client for this collector (trusting its CA when it serves HTTPS).
    pub fn client(&self) -> reqwest::blocking::Client {
        http(self.ca.as_deref())
    }

    pub fn get(&self, path_and_query: &str) -> reqwest::blocking::Response {
        self.client()
            .get(format!("{}{path_and_query}", self.url()))
            .send()
            .expect("collector request")
    }

    pub fn get_json(&self, path_and_query: &str) -> Value {
        let r = self.get(path_and_query);
        let status = r.status();
        let v: Value = r.json().expect("collector answers JSON");
        assert!(status.is_success(), "GET {path_and_query}: {status} {v}");
        v
    }

    /// POST a report (with an optional token); returns status and JSON body.
    pub fn post_report(&self, r: &Report, token: Option<&str>) -> (u16, Value) {
        self.post_raw(serde_json::to_vec(r).expect("report encodes"), token)
    }

    pub fn post_raw(&self, body: Vec<u8>, token: Option<&str>) -> (u16, Value) {
        let mut req = self
            .client()
            .post(format!("{}/v1/reports", self.url()))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().expect("collector request");
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Total requests stored for callers of `host` (all services).
    pub fn requests_to(&self, host: &str) -> u64 {
        let v = self.get(&format!("/v1/callers?host={host}"));
        if !v.status().is_success() {
            return 0;
        }
        let v: Value = v.json().unwrap_or(Value::Null);
        v["callers"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["requests"].as_u64()).sum())
            .unwrap_or(0)
    }

    /// Requests of one calling service to `host`.
    pub fn requests_from(&self, host: &str, service: &str) -> u64 {
        let v: Value = self
            .get(&format!("/v1/callers?host={host}"))
            .json()
            .unwrap_or(Value::Null);
        v["callers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["service"] == service))
            .and_then(|c| c["requests"].as_u64())
            .unwrap_or(0)
    }

    pub fn sigterm(&self) {
        self.proc.signal("TERM");
    }

    pub fn kill9(&mut self) {
        self.proc.signal("KILL");
        let _ = self.proc.wait_exit(Duration::from_secs(10));
    }

    pub fn stop(&mut self) {
        self.proc.signal("TERM");
        let _ = self.proc.wait_exit(Duration::from_secs(20));
    }

    /// Start again on the same address and database (fails clearly if another
    /// process took the port meanwhile).
    pub fn restart(&mut self) {
        let (proc, addr) = start(&self.args, &self.addr.to_string(), self.ca.as_deref());
        assert_eq!(addr, self.addr);
        self.proc = proc;
    }
}

impl Builder {
    pub fn db(mut self, path: &Path) -> Self {
        self.db = Some(path.to_path_buf());
        self
    }

    /// Use this database URL (e.g. `postgres://…`) instead of a fresh SQLite file.
    pub fn db_url(mut self, url: &str) -> Self {
        self.db_url = Some(url.to_string());
        self
    }

    pub fn ingest_token(self, t: &str) -> Self {
        self.arg("--ingest-token").arg(t)
    }

    pub fn read_token(self, t: &str) -> Self {
        self.arg("--read-token").arg(t)
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    /// Serve HTTPS with this certificate and key, signed by `ca`.
    pub fn tls(mut self, cert: &Path, key: &Path, ca: &Path) -> Self {
        self.ca = Some(ca.to_path_buf());
        self.arg("--tls-cert")
            .arg(&cert.display().to_string())
            .arg("--tls-key")
            .arg(&key.display().to_string())
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    pub fn spawn(self) -> Collector {
        let (dir, db, url) = match (self.db_url, self.db) {
            (Some(url), _) => (None, PathBuf::new(), url),
            (None, Some(p)) => {
                let url = format!("sqlite://{}", p.display());
                (None, p, url)
            }
            (None, None) => {
                let d = tempfile::tempdir().expect("tempdir");
                let p = d.path().join("whouses.db");
                let url = format!("sqlite://{}", p.display());
                (Some(d), p, url)
            }
        };
        let mut args = vec!["--db".to_string(), url];
        args.extend(self.args);
        let (proc, addr) = start(&args, "127.0.0.1:0", self.ca.as_deref());
        Collector {
            proc,
            addr,
            db,
            ca: self.ca,
            args,
            _dir: dir,
        }
    }
}

/// Start the collector on `listen` and wait for its listening line (the real port when
/// `listen` ends in `:0`); then check that the process answering `/healthz` there is
/// this one, and alive.
fn start(args: &[String], listen: &str, ca: Option<&Path>) -> (Proc, SocketAddr) {
    let mut cmd = Command::new(bin_path("whouses-collector"));
    cmd.args(args)
        .args(["--listen", listen])
        .env("RUST_LOG", "info");
    let mut proc = Proc::spawn("collector", cmd);
    let line = proc.wait_line(
        &format!("its listening line (--listen {listen})"),
        Duration::from_secs(30),
        |l| l.starts_with("{\"listening\""),
    );
    let listening = parse_listening(&line)
        .unwrap_or_else(|| panic!("the collector printed a bad listening line: {line:?}"));
    let addr = listening
        .addr("api")
        .expect("the listening line names the api");
    assert_eq!(
        listening.line["pid"].as_u64(),
        Some(u64::from(proc.pid())),
        "another process answered"
    );
    let scheme = if ca.is_some() { "https" } else { "http" };
    let http = http(ca);
    wait::until("collector /healthz", Duration::from_secs(30), || {
        http.get(format!("{scheme}://{addr}/healthz"))
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    });
    (proc, addr)
}

/// Run the `whouses` CLI.
pub fn whouses(args: &[&str]) -> Output {
    Command::new(bin_path("whouses"))
        .args(args)
        .env_remove("WHOUSES_URL")
        .env_remove("WHOUSES_TOKEN")
        .output()
        .expect("running whouses")
}
