//! A real `whouses-sidecar` for tests: `Sidecar::builder("svc").collector(url).spawn()`.
//!
//! The sidecar binds port 0 and prints its bound addresses as one JSON line on stdout;
//! the builder reads that line (no port is ever chosen by the test and released, so no
//! other process can take it in between), then checks that `/healthz` names this
//! child's instance, so a test never talks to another process by mistake. A restart
//! binds the same addresses again, explicitly, and fails clearly if one is taken.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::bins::{bin_path, Proc};

pub struct Builder {
    service: String,
    ip: String,
    collector: Option<String>,
    instance: Option<String>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    proxy_addr: Option<SocketAddr>,
    probe: bool,
}

pub struct Sidecar {
    pub proc: Proc,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    /// The `--probe-listen` address, when asked for with [`Builder::probe`].
    pub probe: Option<SocketAddr>,
    pub service: String,
    pub instance: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

/// The line the sidecar prints once listening.
struct Announced {
    proxy: SocketAddr,
    admin: SocketAddr,
    probe: Option<SocketAddr>,
}

impl Sidecar {
    pub fn builder(service: &str) -> Builder {
        Builder {
            service: service.to_string(),
            ip: "127.0.0.1".into(),
            collector: None,
            instance: None,
            args: Vec::new(),
            envs: Vec::new(),
            proxy_addr: None,
            probe: false,
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

    /// `GET` an admin path: status and body.
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        let r = client()
            .get(self.admin_url(path))
            .send()
            .unwrap_or_else(|e| panic!("GET {path} on the admin port: {e}"));
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }

    /// The `"shipping"` object of `/stats`.
    pub fn shipping(&self) -> Value {
        self.stats()["shipping"].clone()
    }

    /// Wait until `more` further batches are acknowledged and none is waiting: whatever
    /// was pending before has been delivered (or set aside), so the collector's totals
    /// can be compared exactly. Heartbeats make this progress every flush interval.
    pub fn wait_acked(&self, more: u64, timeout: Duration) {
        let acked = |s: &Sidecar| s.shipping()["batches_acked"].as_u64();
        let start = acked(self).expect("shipping status in /stats");
        crate::wait::until(
            &format!("{more} more acknowledged batches and none pending"),
            timeout,
            || {
                let sh = self.shipping();
                (sh["batches_acked"].as_u64()? >= start + more
                    && sh["pending_batches"].as_u64()? == 0)
                    .then_some(())
            },
        );
    }

    /// The edge of one key, if counted yet.
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

    /// One sample of `/metrics` (the first line starting with `name`), as a number.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.admin_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
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

    /// Start a new process with the same flags, instance and addresses (after a stop or
    /// kill). Panics with a clear message if an address is taken meanwhile.
    pub fn restart(&mut self) {
        let (proc, announced) = start(
            &self.service,
            &self.instance,
            &self.args,
            &self.envs,
            Addrs {
                proxy: self.proxy.to_string(),
                admin: self.admin.to_string(),
                probe: self.probe.map(|p| p.to_string()),
            },
        );
        assert_eq!(
            (announced.proxy, announced.admin, announced.probe),
            (self.proxy, self.admin, self.probe),
            "a restarted sidecar keeps its addresses"
        );
        self.proc = proc;
    }
}

impl Builder {
    /// Listen on this loopback address instead of 127.0.0.1.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.to_string();
        self
    }

    /// Listen on exactly this proxy address (e.g. one an environment variable must name
    /// before the sidecar starts).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.proxy_addr = Some(addr);
        self
    }

    /// Also serve `--probe-listen` (on 127.0.0.1, port 0).
    pub fn probe(mut self) -> Self {
        self.probe = true;
        self
    }

    pub fn collector(mut self, url: &str) -> Self {
        self.collector = Some(url.to_string());
        self
    }

    /// `--instance` (default: the service name, this test process's id and a counter).
    pub fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.to_string());
        self
    }

    /// An environment variable for the sidecar process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
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
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let instance = self.instance.clone().unwrap_or_else(|| {
            format!(
                "{}-{}-{}",
                self.service,
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut args = vec!["--service".to_string(), self.service.clone()];
        if let Some(c) = &self.collector {
            args.push("--collector-url".into());
            args.push(c.clone());
        }
        args.extend(self.args);
        let addrs = Addrs {
            proxy: self
                .proxy_addr
                .map(|a| a.to_string())
                .unwrap_or_else(|| format!("{}:0", self.ip)),
            admin: "127.0.0.1:0".into(),
            probe: self.probe.then(|| "127.0.0.1:0".to_string()),
        };
        let (proc, announced) = start(&self.service, &instance, &args, &self.envs, addrs);
        Sidecar {
            proc,
            proxy: announced.proxy,
            admin: announced.admin,
            probe: announced.probe,
            service: self.service,
            instance,
            args,
            envs: self.envs,
        }
    }
}

/// Addresses to pass as `--listen`, `--admin-listen`, `--probe-listen`.
struct Addrs {
    proxy: String,
    admin: String,
    probe: Option<String>,
}

fn start(
    service: &str,
    instance: &str,
    args: &[String],
    envs: &[(String, String)],
    addrs: Addrs,
) -> (Proc, Announced) {
    let mut cmd = Command::new(bin_path("whouses-sidecar"));
    cmd.args(args)
        .args(["--instance", instance])
        .args(["--listen", &addrs.proxy, "--admin-listen", &addrs.admin])
        .env("RUST_LOG", "info,whouses_sidecar=debug");
    if let Some(p) = &addrs.probe {
        cmd.args(["--probe-listen", p]);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut proc = Proc::spawn(&format!("sidecar {service}"), cmd);
    let line = proc.wait_line(
        &format!(
            "its listening line (--listen {} --admin-listen {})",
            addrs.proxy, addrs.admin
        ),
        Duration::from_secs(20),
        |l| l.starts_with("{\"listening\""),
    );
    let v: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("sidecar {service}: bad listening line {line:?}: {e}"));
    let addr = |k: &str| -> Option<SocketAddr> { v["listening"][k].as_str()?.parse().ok() };
    let announced = Announced {
        proxy: addr("proxy").unwrap_or_else(|| panic!("no proxy address in {line}")),
        admin: addr("admin").unwrap_or_else(|| panic!("no admin address in {line}")),
        probe: addr("probe"),
    };
    assert_eq!(v["instance"], instance, "{line}");
    assert_eq!(v["pid"], proc.pid(), "{line}");
    // The process answering on the admin port is this child.
    let healthz = get_text(&format!("http://{}/healthz", announced.admin)).unwrap_or_else(|| {
        panic!(
            "sidecar {service}: /healthz does not answer\n{}",
            proc.output()
        )
    });
    assert_eq!(
        healthz,
        format!("ok {instance}\n"),
        "/healthz of sidecar {service}"
    );
    (proc, announced)
}

/// GET a JSON document without any proxy.
pub fn get_json(url: &str) -> Option<Value> {
    client().get(url).send().ok()?.json().ok()
}

/// GET a text document without any proxy; `None` unless 2xx.
pub fn get_text(url: &str) -> Option<String> {
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
