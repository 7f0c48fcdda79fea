//! Where a request is counted: one set of atomic counters per
//! `(host, port, scheme)` key, shared by every connection.
//!
//! The hot path is lock-free once a connection holds its key's [`EdgeStats`]: a
//! connection looks the key up once (sharded `DashMap`, no global lock) and then only
//! does relaxed atomic adds. Counters are cumulative since the sidecar started and never
//! reset, so the shipper takes deltas by subtracting what it already cut — the proxy
//! never stops or waits for it.
//!
//! Memory is bounded by `--max-hosts`: once that many distinct keys exist, new keys fold
//! into one `(other)` bucket per scheme, so a flood of random host names cannot grow the
//! map.

use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::Serialize;
use whouses_wire::{Scheme, Timestamp, OTHER_HOST};

/// The key of a count (service and environment are the sidecar's own, so they are not
/// repeated per key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub host: Arc<str>,
    pub port: u16,
    pub scheme: Scheme,
}

impl Key {
    pub fn new(host: &str, port: u16, scheme: Scheme) -> Key {
        Key {
            host: Arc::from(host),
            port,
            scheme,
        }
    }

    pub fn is(&self, host: &str, port: u16, scheme: Scheme) -> bool {
        self.port == port && self.scheme == scheme && &*self.host == host
    }
}

/// Live counters of one key. All updates are relaxed atomics: each counter is exact on
/// its own, and the shipper only needs each counter to be monotonic.
#[derive(Debug, Default)]
pub struct EdgeStats {
    requests: AtomicU64,
    connections: AtomicU64,
    errors: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    /// Unix milliseconds; 0 until the first observation.
    first_seen: AtomicI64,
    last_seen: AtomicI64,
}

impl EdgeStats {
    fn touch(&self, now_ms: i64) {
        // Plain loads first: in the steady state neither bound moves, so no write happens.
        let first = self.first_seen.load(Relaxed);
        if first == 0 {
            if self
                .first_seen
                .compare_exchange(0, now_ms, Relaxed, Relaxed)
                .is_err()
            {
                self.first_seen.fetch_min(now_ms, Relaxed);
            }
        } else if now_ms < first {
            self.first_seen.fetch_min(now_ms, Relaxed);
        }
        if now_ms > self.last_seen.load(Relaxed) {
            self.last_seen.fetch_max(now_ms, Relaxed);
        }
    }

    /// One forwarded HTTP request (counted when its response head is known or it failed).
    pub fn record_request(&self, now_ms: i64) {
        self.requests.fetch_add(1, Relaxed);
        self.touch(now_ms);
    }

    /// One tunnel (CONNECT) or upstream connection opened for the caller.
    pub fn record_connection(&self, now_ms: i64) {
        self.connections.fetch_add(1, Relaxed);
        self.touch(now_ms);
    }

    /// A failed call: upstream refused/unresolvable/timed out, or a status ≥ 500.
    pub fn record_error(&self, now_ms: i64) {
        self.errors.fetch_add(1, Relaxed);
        self.touch(now_ms);
    }

    /// Bytes from the caller towards the upstream.
    pub fn add_bytes_sent(&self, n: u64) {
        if n > 0 {
            self.bytes_sent.fetch_add(n, Relaxed);
        }
    }

    /// Bytes from the upstream back to the caller.
    pub fn add_bytes_received(&self, n: u64) {
        if n > 0 {
            self.bytes_received.fetch_add(n, Relaxed);
        }
    }

    pub fn snapshot(&self) -> Totals {
        Totals {
            requests: self.requests.load(Relaxed),
            connections: self.connections.load(Relaxed),
            errors: self.errors.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            first_seen: self.first_seen.load(Relaxed),
            last_seen: self.last_seen.load(Relaxed),
        }
    }
}

/// A point-in-time copy of one key's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub connections: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: i64,
    pub last_seen: i64,
}

impl Totals {
    /// What was counted between `earlier` and `self` (counters only grow).
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            requests: self.requests.saturating_sub(earlier.requests),
            connections: self.connections.saturating_sub(earlier.connections),
            errors: self.errors.saturating_sub(earlier.errors),
            bytes_sent: self.bytes_sent.saturating_sub(earlier.bytes_sent),
            bytes_received: self.bytes_received.saturating_sub(earlier.bytes_received),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.requests == 0
            && self.connections == 0
            && self.errors == 0
            && self.bytes_sent == 0
            && self.bytes_received == 0
    }

    pub fn first_seen_ts(&self) -> Timestamp {
        Timestamp(self.first_seen)
    }

    pub fn last_seen_ts(&self) -> Timestamp {
        Timestamp(self.last_seen)
    }
}

/// All counters of this sidecar.
#[derive(Debug)]
pub struct Counters {
    map: DashMap<Key, Arc<EdgeStats>>,
    /// Distinct keys admitted (excluding the `(other)` buckets).
    admitted: AtomicUsize,
    max_hosts: usize,
    /// Keys refused by the `--max-hosts` bound (each then counted under `(other)`).
    folded: AtomicU64,
}

impl Counters {
    pub fn new(max_hosts: usize) -> Counters {
        Counters {
            map: DashMap::new(),
            admitted: AtomicUsize::new(0),
            max_hosts,
            folded: AtomicU64::new(0),
        }
    }

    /// The counters of a key, created on first use. Beyond `max_hosts` distinct keys the
    /// key's counts go to the `(other)` bucket of its scheme. Callers should keep the
    /// returned `Arc` for the life of a connection to that key rather than look it up per
    /// request.
    pub fn edge(&self, host: &str, port: u16, scheme: Scheme) -> Arc<EdgeStats> {
        let key = Key::new(host, port, scheme);
        if let Some(e) = self.map.get(&key) {
            return e.value().clone();
        }
        match self.map.entry(key) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(v) => {
                if self.admitted.fetch_add(1, Relaxed) < self.max_hosts {
                    v.insert(Arc::new(EdgeStats::default())).value().clone()
                } else {
                    self.admitted.fetch_sub(1, Relaxed);
                    drop(v);
                    self.folded.fetch_add(1, Relaxed);
                    self.other(scheme)
                }
            }
        }
    }

    fn other(&self, scheme: Scheme) -> Arc<EdgeStats> {
        self.map
            .entry(Key::new(OTHER_HOST, 0, scheme))
            .or_default()
            .value()
            .clone()
    }

    /// Cumulative totals of every key, sorted by key.
    pub fn snapshot(&self) -> Vec<(Key, Totals)> {
        let mut v: Vec<(Key, Totals)> = self
            .map
            .iter()
            .map(|e| (e.key().clone(), e.value().snapshot()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Number of distinct keys currently tracked (including `(other)` buckets).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// How many new keys were folded into `(other)` because of `--max-hosts`.
    pub fn folded(&self) -> u64 {
        self.folded.load(Relaxed)
    }

    pub fn max_hosts(&self) -> usize {
        self.max_hosts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly_under_contention() {
        let c = Arc::new(Counters::new(100));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let host = format!("h{}", (i + t) % 4);
                        let e = c.edge(&host, 80, Scheme::Http);
                        e.record_request(1_000 + i as i64);
                        e.add_bytes_sent(3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("counting thread panicked");
        }
        let snap = c.snapshot();
        assert_eq!(snap.len(), 4);
        let total: u64 = snap.iter().map(|(_, t)| t.requests).sum();
        assert_eq!(total, 80_000);
        assert_eq!(snap.iter().map(|(_, t)| t.bytes_sent).sum::<u64>(), 240_000);
        for (_, t) in &snap {
            assert!((1_000..1_004).contains(&t.first_seen), "{t:?}");
            assert!(t.last_seen >= t.first_seen);
        }
    }

    #[test]
    fn folds_beyond_max_hosts_into_other() {
        let c = Counters::new(3);
        for i in 0..1_000 {
            c.edge(&format!("random-{i}.example"), 443, Scheme::Https)
                .record_connection(5);
        }
        c.edge("plain.example", 80, Scheme::Http).record_request(5);
        // 3 admitted keys + one (other) bucket per scheme seen.
        assert_eq!(c.len(), 5);
        assert_eq!(c.folded(), 998);
        let snap = c.snapshot();
        let total: u64 = snap.iter().map(|(_, t)| t.connections + t.requests).sum();
        assert_eq!(total, 1_001, "nothing lost when folding");
        let other = snap
            .iter()
            .find(|(k, _)| &*k.host == OTHER_HOST && k.scheme == Scheme::Https)
            .expect("an (other) bucket");
        assert_eq!(other.1.connections, 997);
        // An admitted key keeps counting on its own key.
        c.edge("random-0.example", 443, Scheme::Https)
            .record_connection(6);
        assert_eq!(c.len(), 5);
    }

    #[test]
    fn deltas_since_a_cut() {
        let c = Counters::new(10);
        let e = c.edge("a", 80, Scheme::Http);
        e.record_request(10);
        let cut = e.snapshot();
        e.record_request(20);
        e.record_error(20);
        let d = e.snapshot().since(&cut);
        assert_eq!((d.requests, d.errors), (1, 1));
        assert_eq!((d.first_seen, d.last_seen), (10, 20));
        assert!(!d.is_zero());
        assert!(e.snapshot().since(&e.snapshot()).is_zero());
    }
}
