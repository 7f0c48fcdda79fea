//! Test hosts in network namespaces the test creates (and removes): two namespaces joined
//! by a veth pair with addresses from 198.18.0.0/15 (the benchmarking range, used here and
//! only here), each with its own loopback and, if asked, its own `resolv.conf`
//! (`/etc/netns/NAME/resolv.conf`, which `ip netns exec` mounts over `/etc/resolv.conf`).
//! Nothing outside the two namespaces is touched. Needs root (tests and CI run as root).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace of ours.
#[derive(Debug, Clone)]
pub struct Ns {
    pub name: String,
    /// Its address on the veth link.
    pub addr: String,
    /// Its end of the veth link.
    pub dev: String,
}

impl Ns {
    /// `program` run inside this namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run a shell command inside the namespace; panics when it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self
            .cmd("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("running ip netns exec");
        assert!(
            out.status.success(),
            "in {}: {script}: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The namespace's `resolv.conf` (seen as `/etc/resolv.conf` inside it).
    pub fn resolv_conf(&self, text: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("creating /etc/netns/NAME");
        std::fs::write(dir.join("resolv.conf"), text).expect("writing the namespace's resolv.conf");
    }
}

/// Two namespaces joined by a veth pair: `a` (198.18.N.1) and `b` (198.18.N.2), /30.
pub struct Pair {
    pub a: Ns,
    pub b: Ns,
    /// The pair's number among 198.18.0.0/15's /24s.
    subnet: u32,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command (iproute2) is installed");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    /// Create the pair. Names carry the test process id, so parallel tests never collide.
    pub fn new(tag: &str) -> Pair {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        // 198.18.0.0/15 holds 512 /24s; one /30 per pair is plenty.
        let subnet = (id + n * 7) % 250;
        let (a, b) = (format!("wu{id}{tag}{n}a"), format!("wu{id}{tag}{n}b"));
        let (va, vb) = (format!("wv{id}{n}a"), format!("wv{id}{n}b"));
        let pair = Pair {
            a: Ns {
                name: a.clone(),
                addr: format!("198.18.{subnet}.1"),
                dev: va.clone(),
            },
            b: Ns {
                name: b.clone(),
                addr: format!("198.18.{subnet}.2"),
                dev: vb.clone(),
            },
            subnet,
        };
        ip(&["netns", "add", &a]);
        ip(&["netns", "add", &b]);
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        ip(&["link", "set", &va, "netns", &a]);
        ip(&["link", "set", &vb, "netns", &b]);
        for (ns, dev, addr) in [(&a, &va, &pair.a.addr), (&b, &vb, &pair.b.addr)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }
}

impl Pair {
    /// `n` more addresses of `b` (198.19.N.1…n, /32 each), routed from `a` through the
    /// link: distinct hosts for a test that names each by DNS.
    pub fn more_b_addresses(&self, n: u32) -> Vec<String> {
        let addrs: Vec<String> = (1..=n)
            .map(|i| format!("198.19.{}.{i}", self.subnet))
            .collect();
        for addr in &addrs {
            ip(&[
                "-n",
                &self.b.name,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                &self.b.dev,
            ]);
        }
        ip(&[
            "-n",
            &self.a.name,
            "route",
            "add",
            &format!("198.19.{}.0/24", self.subnet),
            "via",
            &self.b.addr,
        ]);
        addrs
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            // Processes still inside would keep the namespace alive; the tests' Procs are
            // dropped (killed) before the pair.
            let _ = Command::new("ip").args(["netns", "del", &ns.name]).status();
            let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&ns.name));
        }
    }
}
