//! Where an inbound call is counted: one [`EdgeStats`] per `(name, port, scheme, caller
//! address)`, shared by every connection (the same atomics as the outbound counters, so
//! a connection looks its key up once and then only adds).
//!
//! Both dimensions come from outside — the name from the caller's `Host` or SNI, the
//! address from whoever connects — so both are bounded: at most `--max-hosts` distinct
//! names (a new one beyond that is counted under the host `(other)`, port 0), and at most
//! `--max-peers` distinct keys (a new key beyond that is counted under its name with the
//! address `(other)`). Fold keys are at most one per admitted name and scheme, so memory
//! stays bounded under a flood of either; every call is still counted exactly, and the
//! folds are reported (`/stats`, `/metrics`, and the batches' `(other)` entries).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use whouses_wire::{Scheme, OTHER_HOST};

use crate::counters::{EdgeStats, Totals};

/// The key of an inbound count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub host: Arc<str>,
    pub port: u16,
    pub scheme: Scheme,
    /// The caller's address (canonical); `None` for callers folded at `--max-peers`.
    pub peer: Option<IpAddr>,
}

impl PeerKey {
    /// The caller address as it travels: canonical, or `(other)`.
    pub fn address(&self) -> String {
        match self.peer {
            Some(ip) => ip.to_string(),
            None => OTHER_HOST.to_string(),
        }
    }
}

/// Every inbound counter of this sidecar.
#[derive(Debug)]
pub struct Peers {
    map: DashMap<PeerKey, Arc<EdgeStats>>,
    /// Distinct names admitted, by `(host, port, scheme)`.
    names: DashMap<(Arc<str>, u16, Scheme), ()>,
    /// Exact keys admitted (fold keys excluded).
    keys: AtomicUsize,
    max_hosts: usize,
    max_peers: usize,
    /// Keys refused at `--max-peers` (their calls counted under address `(other)`).
    folded_peers: AtomicU64,
    /// Names refused at `--max-hosts` (their calls counted under host `(other)`).
    folded_hosts: AtomicU64,
}

impl Peers {
    pub fn new(max_hosts: usize, max_peers: usize) -> Peers {
        Peers {
            map: DashMap::new(),
            names: DashMap::new(),
            keys: AtomicUsize::new(0),
            max_hosts,
            max_peers,
            folded_peers: AtomicU64::new(0),
            folded_hosts: AtomicU64::new(0),
        }
    }

    /// The counters of a call to `host:port` from `peer`. Keep the returned `Arc` for the
    /// connection rather than look it up per request.
    pub fn edge(&self, host: &str, port: u16, scheme: Scheme, peer: IpAddr) -> Arc<EdgeStats> {
        let peer = peer.to_canonical();
        let mut key = PeerKey {
            host: Arc::from(host),
            port,
            scheme,
            peer: Some(peer),
        };
        if let Some(e) = self.map.get(&key) {
            return e.value().clone();
        }
        if !self.admit_name(&key) {
            self.folded_hosts.fetch_add(1, Relaxed);
            key.host = Arc::from(OTHER_HOST);
            key.port = 0;
            if let Some(e) = self.map.get(&key) {
                return e.value().clone();
            }
        }
        match self.map.entry(key) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(v) => {
                if self.keys.fetch_add(1, Relaxed) < self.max_peers {
                    return v.insert(Arc::new(EdgeStats::default())).value().clone();
                }
                self.keys.fetch_sub(1, Relaxed);
                let mut fold = v.key().clone();
                drop(v);
                self.folded_peers.fetch_add(1, Relaxed);
                fold.peer = None;
                self.map.entry(fold).or_default().value().clone()
            }
        }
    }

    /// Whether the key's name is (now) one of the admitted names.
    fn admit_name(&self, key: &PeerKey) -> bool {
        let name = (key.host.clone(), key.port, key.scheme);
        if self.names.contains_key(&name) {
            return true;
        }
        if self.names.len() >= self.max_hosts {
            return false;
        }
        self.names.insert(name, ());
        true
    }

    /// Cumulative totals of every key, sorted by key.
    pub fn snapshot(&self) -> Vec<(PeerKey, Totals)> {
        let mut v: Vec<(PeerKey, Totals)> = self
            .map
            .iter()
            .map(|e| (e.key().clone(), e.value().snapshot()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Keys tracked now (fold keys included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn folded_peers(&self) -> u64 {
        self.folded_peers.load(Relaxed)
    }

    pub fn folded_hosts(&self) -> u64 {
        self.folded_hosts.load(Relaxed)
    }

    pub fn max_peers(&self) -> usize {
        self.max_peers
    }

    pub fn max_hosts(&self) -> usize {
        self.max_hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_per_name_and_caller() {
        let p = Peers::new(10, 100);
        p.edge("old.internal", 80, Scheme::Http, ip("10.0.0.1"))
            .record_request(5);
        p.edge("old.internal", 80, Scheme::Http, ip("10.0.0.1"))
            .record_request(6);
        p.edge("old.internal", 80, Scheme::Http, ip("10.0.0.2"))
            .record_request(7);
        // An IPv4-mapped IPv6 caller is the IPv4 caller.
        p.edge("old.internal", 80, Scheme::Http, ip("::ffff:10.0.0.2"))
            .record_request(8);
        let s = p.snapshot();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].0.address(), s[0].1.requests), ("10.0.0.1".into(), 2));
        assert_eq!((s[1].0.address(), s[1].1.requests), ("10.0.0.2".into(), 2));
    }

    #[test]
    fn a_flood_of_callers_and_names_stays_bounded_and_exact() {
        let p = Peers::new(3, 50);
        let caller = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let mut calls = 0u64;
        // 20 names called from 5 addresses: 3 names admitted, the rest under (other).
        for name in 0..20 {
            for c in 0..5 {
                p.edge(&format!("h{name}.internal"), 80, Scheme::Http, caller(c))
                    .record_request(1);
                calls += 1;
            }
        }
        assert_eq!(p.folded_hosts(), 17 * 5);
        assert_eq!(p.len(), 3 * 5 + 5);
        // A flood of callers of one name: 50 keys in all, then address (other).
        for c in 5..1_000 {
            p.edge("h0.internal", 80, Scheme::Http, caller(c))
                .record_request(1);
            calls += 1;
        }
        assert_eq!(p.len(), 50 + 1, "at most max_peers keys and a fold key");
        assert_eq!(p.folded_peers(), 1_000 - 5 - 30);
        let s = p.snapshot();
        assert_eq!(s.iter().map(|(_, t)| t.requests).sum::<u64>(), calls);
        // Names beyond --max-hosts are counted under (other), port 0, by caller.
        let other: u64 = s
            .iter()
            .filter(|(k, _)| &*k.host == OTHER_HOST && k.port == 0 && k.peer.is_some())
            .map(|(_, t)| t.requests)
            .sum();
        assert_eq!(other, 17 * 5);
        // Callers beyond --max-peers under their name, address (other).
        let folded = s
            .iter()
            .find(|(k, _)| k.peer.is_none())
            .expect("a fold key");
        assert_eq!(
            (&*folded.0.host, folded.0.address().as_str()),
            ("h0.internal", OTHER_HOST)
        );
        assert_eq!(folded.1.requests, 1_000 - 5 - 30);
    }

    #[test]
    fn counts_exactly_under_contention() {
        let p = Arc::new(Peers::new(100, 1000));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000u32 {
                        let a = IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0001 + (i + t) % 7));
                        p.edge("old.internal", 80, Scheme::Http, a)
                            .record_request(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counting thread");
        }
        let s = p.snapshot();
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().map(|(_, t)| t.requests).sum::<u64>(), 20_000);
    }
}
