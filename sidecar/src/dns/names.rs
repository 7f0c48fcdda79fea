//! What the app's DNS lookups taught us: how often each name was looked up (shipped as
//! `lookups`), and which name the app last resolved each address from (to name opaque and
//! bypassing connections). Bounded by `--max-dns-names`; addresses expire with their TTL
//! plus a grace period.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use whouses_wire::report::MAX_LOOKUP_ADDRESSES;

/// How long past its TTL an address still names a connection (apps cache answers longer
/// than they should, and connections outlive lookups).
pub const GRACE_MS: i64 = 5 * 60 * 1000;
/// Most addresses remembered per name.
const ADDRESSES_PER_NAME: usize = MAX_LOOKUP_ADDRESSES;

/// Cumulative lookups of one name (the shipper takes deltas, as with the counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NameTotals {
    pub lookups: u64,
    /// Unix milliseconds of the first and latest lookup.
    pub first_seen: i64,
    pub last_seen: i64,
    /// The latest answer's addresses.
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Default)]
struct Inner {
    names: HashMap<String, NameTotals>,
    /// address → (name, expires at, in Unix ms).
    by_address: HashMap<IpAddr, (String, i64)>,
    /// Lookups of names beyond the bound (not tracked by name).
    folded: u64,
}

/// The DNS memory of one sidecar. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Names {
    inner: Mutex<Inner>,
    max_names: usize,
}

impl Names {
    pub fn new(max_names: usize) -> Names {
        Names {
            inner: Mutex::new(Inner::default()),
            max_names: max_names.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain maps: a panic elsewhere while holding the lock cannot leave them torn.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One query for `name` (already normalised).
    pub fn looked_up(&self, name: &str, now_ms: i64) {
        let mut inner = self.lock();
        let full = inner.names.len() >= self.max_names;
        match inner.names.get_mut(name) {
            Some(t) => {
                t.lookups = t.lookups.saturating_add(1);
                t.last_seen = t.last_seen.max(now_ms);
            }
            None if full => inner.folded = inner.folded.saturating_add(1),
            None => {
                inner.names.insert(
                    name.to_string(),
                    NameTotals {
                        lookups: 1,
                        first_seen: now_ms,
                        last_seen: now_ms,
                        addresses: Vec::new(),
                    },
                );
            }
        }
    }

    /// An answer for `name`: its addresses, valid for `ttl_secs`.
    pub fn answered(&self, name: &str, addrs: &[(IpAddr, u32)], now_ms: i64) {
        if addrs.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if let Some(t) = inner.names.get_mut(name) {
            t.addresses = addrs
                .iter()
                .map(|(a, _)| *a)
                .take(ADDRESSES_PER_NAME)
                .collect();
        }
        let max_addresses = self.max_names.saturating_mul(ADDRESSES_PER_NAME);
        for (addr, ttl) in addrs.iter().take(ADDRESSES_PER_NAME) {
            let expires = now_ms
                .saturating_add(i64::from(*ttl).saturating_mul(1000))
                .saturating_add(GRACE_MS);
            if inner.by_address.len() >= max_addresses && !inner.by_address.contains_key(addr) {
                // Make room from expired entries; else the newest answer is not remembered.
                inner.by_address.retain(|_, (_, exp)| *exp > now_ms);
                if inner.by_address.len() >= max_addresses {
                    continue;
                }
            }
            inner
                .by_address
                .insert(canonical(*addr), (name.to_string(), expires));
        }
    }

    /// The name the app most recently resolved `addr` from, if still within TTL + grace.
    pub fn name_of(&self, addr: IpAddr, now_ms: i64) -> Option<String> {
        let inner = self.lock();
        let addr = canonical(addr);
        inner
            .by_address
            .get(&addr)
            .filter(|(_, exp)| *exp > now_ms)
            .map(|(n, _)| n.clone())
    }

    /// Cumulative lookups per name, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, NameTotals)> {
        let inner = self.lock();
        let mut v: Vec<(String, NameTotals)> = inner
            .names
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Lookups of names beyond `--max-dns-names`.
    pub fn folded(&self) -> u64 {
        self.lock().folded
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (what /proc and DNS answers use differ).
pub fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_addresses_until_ttl_plus_grace() {
        let n = Names::new(10);
        n.looked_up("db.internal", 1_000);
        n.answered("db.internal", &[(ip("198.18.0.7"), 30)], 1_000);
        assert_eq!(
            n.name_of(ip("198.18.0.7"), 2_000).as_deref(),
            Some("db.internal")
        );
        assert_eq!(
            n.name_of(ip("::ffff:198.18.0.7"), 2_000).as_deref(),
            Some("db.internal"),
            "a mapped address is the same address"
        );
        let expiry = 1_000 + 30_000 + GRACE_MS;
        assert!(n.name_of(ip("198.18.0.7"), expiry - 1).is_some());
        assert!(n.name_of(ip("198.18.0.7"), expiry).is_none());
        // A later answer for another name takes the address over.
        n.answered("other.internal", &[(ip("198.18.0.7"), 30)], 5_000);
        assert_eq!(
            n.name_of(ip("198.18.0.7"), 6_000).as_deref(),
            Some("other.internal")
        );
    }

    #[test]
    fn lookups_are_counted_and_bounded() {
        let n = Names::new(2);
        for name in ["a.internal", "b.internal", "c.internal", "a.internal"] {
            n.looked_up(name, 7);
        }
        let snap = n.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].1.lookups, 2);
        assert_eq!(n.folded(), 1);
    }
}
