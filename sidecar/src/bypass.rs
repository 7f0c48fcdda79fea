//! The bypass detector (explicit mode, `--bypass-scan-interval`): where no iptables
//! capture is allowed, the sidecar samples the TCP connections of its network namespace
//! (`/proc/net/tcp` and `tcp6`, readable without privileges) and counts established
//! outbound connections that are not its own and not to loopback — connections the app
//! made around the proxy. Each is keyed by remote address and port, and named by the DNS
//! forwarder when the app resolved that address through it.
//!
//! The sidecar's own connections are never bypass: those it holds (by socket inode), and
//! those it dialed (registered by the relay's dialer and the shipper when made, so a
//! short one lingering in TIME_WAIT is still known as ours).
//!
//! What a sampler can miss: a connection opened and closed between two scans; connections
//! of processes in other network namespaces. What it cannot tell apart: a connection the
//! app made around the proxy from one another process in the same namespace made. Both
//! are documented in `docs/operations.md`; either way the collector treats them as
//! evidence of use, never of non-use.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use procfs::net::TcpState;
use serde::Serialize;

use crate::dns::Names;

/// Cumulative connections seen to one remote address (the shipper takes deltas).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BypassTotals {
    pub connections: u64,
    /// Unix milliseconds of the first and latest scan that saw one.
    pub first_seen: i64,
    pub last_seen: i64,
    /// The name the app resolved the address from, when known.
    pub name: Option<String>,
}

/// One TCP connection as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub inode: u64,
}

/// What one scan of the namespace found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Connections that are, or recently were, open: established, opening, or closing
    /// (a closed connection lingers in TIME_WAIT for a minute, so the sampler also sees
    /// short ones the app closed itself).
    pub established: Vec<Conn>,
    /// Ports something listens on (connections to them are inbound).
    pub listening: HashSet<u16>,
}

/// Read the namespace's TCP table.
pub fn scan() -> Result<Scan, procfs::ProcError> {
    let mut out = Scan::default();
    let mut entries = procfs::net::tcp()?;
    // No IPv6 in the namespace is not an error.
    entries.extend(procfs::net::tcp6().unwrap_or_default());
    for e in entries {
        match e.state {
            TcpState::Listen => {
                out.listening.insert(e.local_address.port());
            }
            TcpState::Close => {}
            _ => out.established.push(Conn {
                local: e.local_address,
                remote: e.remote_address,
                inode: e.inode,
            }),
        }
    }
    Ok(out)
}

/// The socket inodes this process holds (its own connections are not bypass).
pub fn own_sockets() -> HashSet<u64> {
    let Ok(me) = procfs::process::Process::myself() else {
        return HashSet::new();
    };
    let Ok(fds) = me.fd() else {
        return HashSet::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            procfs::process::FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect()
}

/// IPv4-mapped addresses as IPv4 (the TCP table and sockets spell them differently).
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Which connections are this process's own: by socket inode while open, and by address
/// pair for a while after (a closed socket lingers in TIME_WAIT with no inode).
#[derive(Debug, Default)]
pub struct Own {
    inodes: HashSet<u64>,
    /// Address pairs of our sockets, with the scan that last saw them open.
    pairs: HashMap<(SocketAddr, SocketAddr), u64>,
    scans: u64,
}

/// Scans an address pair of ours is remembered after its socket is gone (TIME_WAIT lasts
/// 60 s; scans are at least 100 ms apart, so this covers it at the default interval and
/// errs towards "ours" at shorter ones).
const OWN_PAIR_SCANS: u64 = 600;

impl Own {
    /// Update from this scan: `inodes` are the sockets this process holds now.
    pub fn update(&mut self, scan: &Scan, inodes: HashSet<u64>) {
        self.scans += 1;
        for c in &scan.established {
            if c.inode != 0 && inodes.contains(&c.inode) {
                self.pairs.insert((c.local, c.remote), self.scans);
            }
        }
        let now = self.scans;
        self.pairs.retain(|_, seen| now - *seen <= OWN_PAIR_SCANS);
        self.inodes = inodes;
    }

    fn contains(&self, c: &Conn) -> bool {
        (c.inode != 0 && self.inodes.contains(&c.inode))
            || self.pairs.contains_key(&(c.local, c.remote))
    }
}

/// The app's connections around the proxy, out of one scan.
pub fn bypassing<'a>(scan: &'a Scan, own: &'a Own) -> impl Iterator<Item = Conn> + 'a {
    scan.established.iter().copied().filter(move |c| {
        !own.contains(c)
            && !loopback(c.remote.ip())
            && !loopback(c.local.ip())
            && !scan.listening.contains(&c.local.port())
    })
}

/// The detector's state: counts per remote address, and the connections of the last scan
/// (a connection seen again is not counted again).
#[derive(Debug)]
pub struct Bypass {
    inner: Mutex<Inner>,
    max_keys: usize,
    /// Connections the sidecar itself dialed, registered when dialed: a short one can
    /// close and linger in TIME_WAIT (no inode) before any scan saw it open.
    dialed: Mutex<Dialed>,
}

/// Address pairs the sidecar dialed (with when), and remote addresses all of whose
/// connections are the sidecar's (the collector).
#[derive(Debug, Default)]
struct Dialed {
    pairs: HashMap<(SocketAddr, SocketAddr), std::time::Instant>,
    remotes: HashSet<SocketAddr>,
}

/// How long a dialed pair is remembered: TIME_WAIT lasts 60 s.
const DIALED_FOR: std::time::Duration = std::time::Duration::from_secs(120);
/// Most dialed pairs remembered (beyond, a short connection may read as bypass: evidence
/// of use, never of non-use).
const MAX_DIALED: usize = 65_536;

#[derive(Debug, Default)]
struct Inner {
    totals: HashMap<SocketAddr, BypassTotals>,
    previous: HashSet<Conn>,
    /// Connections to remote addresses beyond the bound.
    folded: u64,
}

impl Bypass {
    pub fn new(max_keys: usize) -> Bypass {
        Bypass {
            inner: Mutex::new(Inner::default()),
            max_keys: max_keys.max(1),
            dialed: Mutex::new(Dialed::default()),
        }
    }

    /// A connection the sidecar dialed (`local` → `remote`): never bypass.
    pub fn own_connection(&self, local: SocketAddr, remote: SocketAddr) {
        let mut d = self.dialed.lock().unwrap_or_else(PoisonError::into_inner);
        if d.pairs.len() >= MAX_DIALED {
            d.pairs.retain(|_, at| at.elapsed() < DIALED_FOR);
            if d.pairs.len() >= MAX_DIALED {
                return;
            }
        }
        d.pairs.insert(
            (canonical(local), canonical(remote)),
            std::time::Instant::now(),
        );
    }

    /// A remote address only the sidecar connects to (the collector): never bypass.
    pub fn own_remote(&self, remote: SocketAddr) {
        let mut d = self.dialed.lock().unwrap_or_else(PoisonError::into_inner);
        if d.remotes.len() < 64 {
            d.remotes.insert(canonical(remote));
        }
    }

    /// Whether the sidecar dialed this connection.
    pub fn dialed_by_us(&self, c: &Conn) -> bool {
        let d = self.dialed.lock().unwrap_or_else(PoisonError::into_inner);
        let (local, remote) = (canonical(c.local), canonical(c.remote));
        d.remotes.contains(&remote)
            || d.pairs
                .get(&(local, remote))
                .is_some_and(|at| at.elapsed() < DIALED_FOR)
    }

    /// Count the new bypassing connections of one scan.
    pub fn record(&self, conns: impl Iterator<Item = Conn>, names: Option<&Names>, now_ms: i64) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // A connection is the same one through its states: its inode changes (to 0 in
        // TIME_WAIT), its address pair does not.
        let current: HashSet<Conn> = conns.map(|c| Conn { inode: 0, ..c }).collect();
        for c in current
            .difference(&inner.previous)
            .copied()
            .collect::<Vec<_>>()
        {
            let key = SocketAddr::new(c.remote.ip().to_canonical(), c.remote.port());
            let name = names.and_then(|n| n.name_of(key.ip(), now_ms));
            let full = inner.totals.len() >= self.max_keys;
            match inner.totals.get_mut(&key) {
                Some(t) => {
                    t.connections = t.connections.saturating_add(1);
                    t.last_seen = now_ms;
                    if name.is_some() {
                        t.name = name;
                    }
                }
                None if full => inner.folded = inner.folded.saturating_add(1),
                None => {
                    inner.totals.insert(
                        key,
                        BypassTotals {
                            connections: 1,
                            first_seen: now_ms,
                            last_seen: now_ms,
                            name,
                        },
                    );
                }
            }
        }
        // Connections still open are seen again: keep them fresh in last_seen.
        for c in current
            .intersection(&inner.previous)
            .copied()
            .collect::<Vec<_>>()
        {
            let key = SocketAddr::new(c.remote.ip().to_canonical(), c.remote.port());
            if let Some(t) = inner.totals.get_mut(&key) {
                t.last_seen = now_ms;
            }
        }
        inner.previous = current;
    }

    /// Cumulative totals per remote address, sorted.
    pub fn snapshot(&self) -> Vec<(SocketAddr, BypassTotals)> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<(SocketAddr, BypassTotals)> =
            inner.totals.iter().map(|(k, t)| (*k, t.clone())).collect();
        v.sort_by_key(|a| a.0);
        v
    }

    pub fn folded(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .folded
    }
}

/// Scan every `interval` until `shutdown`.
pub async fn run(
    bypass: Arc<Bypass>,
    names: Option<Arc<Names>>,
    interval: std::time::Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut warned = false;
    let mut own = Own::default();
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let found = tokio::task::spawn_blocking(|| scan().map(|s| (s, own_sockets()))).await;
        match found {
            Ok(Ok((scan, inodes))) => {
                own.update(&scan, inodes);
                let now = whouses_wire::Timestamp::now().as_millis();
                let conns = bypassing(&scan, &own).filter(|c| !bypass.dialed_by_us(c));
                bypass.record(conns, names.as_deref(), now);
            }
            Ok(Err(error)) if !warned => {
                warned = true;
                tracing::warn!(%error, "Cannot read the TCP table; the bypass detector sees nothing.");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(local: &str, remote: &str, inode: u64) -> Conn {
        Conn {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            inode,
        }
    }

    #[test]
    fn only_the_apps_outbound_non_loopback_connections_count() {
        let scan = Scan {
            established: vec![
                conn("198.18.0.1:40000", "198.18.0.2:8080", 1), // the app, around the proxy
                conn("198.18.0.1:40001", "198.18.0.2:8080", 2), // ours (the proxy's upstream)
                conn("127.0.0.1:40002", "127.0.0.1:15001", 3),  // the app to the proxy
                conn("198.18.0.1:8080", "198.18.0.9:50000", 4), // inbound to the app
                conn("[::ffff:198.18.0.1]:40003", "[::ffff:198.18.0.3]:5432", 5),
            ],
            listening: [8080, 15001].into_iter().collect(),
        };
        let mut own = Own::default();
        own.update(&scan, [2].into_iter().collect());
        let got: Vec<u64> = bypassing(&scan, &own).map(|c| c.inode).collect();
        assert_eq!(got, vec![1, 5]);
        // Our connection, closed and lingering in TIME_WAIT without an inode: still ours.
        let later = Scan {
            established: vec![conn("198.18.0.1:40001", "198.18.0.2:8080", 0)],
            listening: scan.listening.clone(),
        };
        own.update(&later, HashSet::new());
        assert_eq!(bypassing(&later, &own).count(), 0);
    }

    #[test]
    fn a_connection_seen_in_several_scans_counts_once_and_is_named() {
        let names = Names::new(10);
        names.answered("old.internal", &[("198.18.0.2".parse().unwrap(), 60)], 0);
        let b = Bypass::new(10);
        let c1 = conn("198.18.0.1:40000", "198.18.0.2:8080", 1);
        let c2 = conn("198.18.0.1:40001", "198.18.0.2:8080", 2);
        b.record([c1].into_iter(), Some(&names), 1_000);
        b.record([c1, c2].into_iter(), Some(&names), 2_000);
        b.record([c2].into_iter(), Some(&names), 3_000);
        let snap = b.snapshot();
        assert_eq!(snap.len(), 1);
        let t = &snap[0].1;
        assert_eq!(t.connections, 2);
        assert_eq!((t.first_seen, t.last_seen), (1_000, 3_000));
        assert_eq!(t.name.as_deref(), Some("old.internal"));
    }

    #[test]
    fn connections_the_sidecar_dialed_are_never_bypass() {
        let b = Bypass::new(10);
        // Closed before any scan saw it open: in TIME_WAIT, no inode.
        let short = conn("198.18.0.1:40000", "198.18.0.2:8080", 0);
        b.own_connection(
            "[::ffff:198.18.0.1]:40000".parse().unwrap(),
            "198.18.0.2:8080".parse().unwrap(),
        );
        assert!(b.dialed_by_us(&short));
        assert!(!b.dialed_by_us(&conn("198.18.0.1:40001", "198.18.0.2:8080", 0)));
        b.own_remote("198.18.0.9:7070".parse().unwrap());
        assert!(b.dialed_by_us(&conn("198.18.0.1:40002", "198.18.0.9:7070", 0)));
    }

    #[test]
    fn remote_keys_are_bounded() {
        let b = Bypass::new(1);
        b.record(
            [
                conn("198.18.0.1:1", "198.18.0.2:80", 1),
                conn("198.18.0.1:2", "198.18.0.3:80", 2),
            ]
            .into_iter(),
            None,
            5,
        );
        assert_eq!(b.snapshot().len(), 1);
        assert_eq!(b.folded(), 1);
    }
}
