//! A real `whouses-sidecar` for tests: `Sidecar::builder("svc").collector(url).spawn()`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::bins::{bin_path, free_addr, Proc};
use crate::wait;

pub struct Builder {
    service: String,
    ip: String,
    collector: Option<String>,
    args: Vec<String>,
    proxy_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
}

pub struct Sidecar {
    pub proc: Proc,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub service: String,
    args: Vec<String>,
}

impl Sidecar {
    pub fn builder(service: &str) -> Builder {
        Builder {
            service: service.to_string(),
            ip: "127.0.0.1".into(),
            collector: None,
            args: Vec::new(),
            proxy_addr: None,
            admin_addr: None,
        }
    }

    /// `http://127.0.0.1:PORT`, for `HTTP_PROXY` or `curl -x`.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn stats(&self) -> Value {
        get_json(&self.admin_url("/stats")).expect("GET /stats")
    }

    /// The `/stats` entry of one key, if counted yet.
    pub fn edge(&self, host: &str, port: u16, scheme: &str) -> Option<Value> {
        self.stats()["edges"]
            .as_array()?
            .iter()
            .find(|e| e["host"] == host && e["port"] == port && e["scheme"] == scheme)
            .cloned()
    }

    /// A counter of one key (0 when the key is absent).
    pub fn count(&self, host: &str, port: u16, scheme: &str, field: &str) -> u64 {
        self.edge(host, port, scheme)
            .and_then(|e| e[field].as_u64())
            .unwrap_or(0)
    }

    pub fn sigterm(&self) {
        self.proc.signal("TERM");
    }

    pub fn kill9(&mut self) {
        self.proc.signal("KILL");
        let _ = self.proc.wait_exit(Duration::from_secs(10));
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.proc.wait_exit(timeout)
    }

    /// Start a new process with the same flags and addresses (after a stop or kill).
    pub fn restart(&mut self) {
        let proc = start(&self.service, &self.args, self.admin);
        self.proc = proc;
    }
}

impl Builder {
    /// Listen on this loopback address instead of 127.0.0.1.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.to_string();
        self
    }

    pub fn collector(mut self, url: &str) -> Self {
        self.collector = Some(url.to_string());
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// `--resolve HOST:PORT:ADDR`.
    pub fn resolve(self, host: &str, port: u16, addr: SocketAddr) -> Self {
        self.arg("--resolve").arg(&format!("{host}:{port}:{addr}"))
    }

    pub fn spool(self, dir: &std::path::Path) -> Self {
        self.arg("--spool-dir").arg(&dir.display().to_string())
    }

    pub fn spawn(self) -> Sidecar {
        let proxy = self.proxy_addr.unwrap_or_else(|| free_addr(&self.ip));
        let admin = self.admin_addr.unwrap_or_else(|| free_addr("127.0.0.1"));
        let mut args = vec![
            "--service".to_string(),
            self.service.clone(),
            "--listen".into(),
            proxy.to_string(),
            "--admin-listen".into(),
            admin.to_string(),
            "--instance".into(),
            format!("{}-{}", self.service, proxy.port()),
        ];
        if let Some(c) = &self.collector {
            args.push("--collector-url".into());
            args.push(c.clone());
        }
        args.extend(self.args);
        let proc = start(&self.service, &args, admin);
        Sidecar {
            proc,
            proxy,
            admin,
            service: self.service,
            args,
        }
    }
}

fn start(service: &str, args: &[String], admin: SocketAddr) -> Proc {
    let mut cmd = Command::new(bin_path("whouses-sidecar"));
    cmd.args(args).env("RUST_LOG", "info,whouses_sidecar=debug");
    let proc = Proc::spawn(&format!("sidecar {service}"), cmd);
    wait::until(
        &format!("sidecar {service} /healthz"),
        Duration::from_secs(20),
        || get_json_or_text(&format!("http://{admin}/healthz")).map(|_| ()),
    );
    proc
}

/// GET a JSON document without any proxy.
pub fn get_json(url: &str) -> Option<Value> {
    client().get(url).send().ok()?.json().ok()
}

fn get_json_or_text(url: &str) -> Option<String> {
    let r = client().get(url).send().ok()?;
    r.status().is_success().then(|| r.text().ok()).flatten()
}

/// A blocking HTTP client that never uses a proxy from the environment.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building a reqwest client")
}

/// A blocking client that sends everything through `proxy`.
pub fn proxied_client(proxy: &str) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::all(proxy).expect("proxy URL"))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("building a reqwest client")
}

/// Send `n` GETs to `url` through `proxy`, spread over `threads` keep-alive clients;
/// returns how many got a 2xx.
pub fn send_through(proxy: &str, url: &str, n: usize, threads: usize) -> usize {
    let per = n / threads;
    let extra = n % threads;
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let proxy = proxy.to_string();
            let url = url.to_string();
            let count = per + usize::from(i < extra);
            std::thread::spawn(move || {
                let c = proxied_client(&proxy);
                (0..count)
                    .filter(|_| {
                        c.get(&url)
                            .send()
                            .map(|r| {
                                let ok = r.status().is_success();
                                let _ = r.bytes();
                                ok
                            })
                            .unwrap_or(false)
                    })
                    .count()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("sender thread"))
        .sum()
}

/// A fresh temporary directory path kept for the life of the returned guard.
pub fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_path_buf();
    (d, p)
}
