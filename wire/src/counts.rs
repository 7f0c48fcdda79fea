//! The one count record: what was observed on an edge (requests, connections, errors,
//! bytes both ways, first and last time), and its merge.
//!
//! The same record travels in a sidecar's batch ([`crate::Edge`]), is stored by the
//! collector, and comes back in every answer ([`crate::api`]). Merging saturates: counts
//! come from outside (a forged batch may claim `u64::MAX`), and a sum that does not fit
//! must stick at the maximum rather than wrap or abort the process.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Largest single counter value: fits a signed 64-bit SQL integer.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// Counts of one edge over some period, with the first and last time it was used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub connections: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

impl Counts {
    /// Add `other` to these counts (saturating at [`MAX_COUNT`]) and widen the time range.
    pub fn merge(&mut self, other: &Counts) {
        self.requests = add(self.requests, other.requests);
        self.connections = add(self.connections, other.connections);
        self.errors = add(self.errors, other.errors);
        self.bytes_sent = add(self.bytes_sent, other.bytes_sent);
        self.bytes_received = add(self.bytes_received, other.bytes_received);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
    }

    /// Nothing was counted (the times do not matter).
    pub fn is_zero(&self) -> bool {
        self.requests == 0
            && self.connections == 0
            && self.errors == 0
            && self.bytes_sent == 0
            && self.bytes_received == 0
    }

    /// The five counters with their names, for validation and generic code.
    pub fn fields(&self) -> [(&'static str, u64); 5] {
        [
            ("requests", self.requests),
            ("connections", self.connections),
            ("errors", self.errors),
            ("bytes_sent", self.bytes_sent),
            ("bytes_received", self.bytes_received),
        ]
    }

    /// Calls made: requests for HTTP, connections for tunnels and opaque TCP.
    pub fn calls(&self) -> u64 {
        add(self.requests, self.connections)
    }
}

/// Saturating addition capped at [`MAX_COUNT`].
pub fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_COUNT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(requests: u64, first: i64, last: i64) -> Counts {
        Counts {
            requests,
            connections: 1,
            first_seen: Timestamp(first),
            last_seen: Timestamp(last),
            ..Counts::default()
        }
    }

    #[test]
    fn merge_adds_and_widens() {
        let mut a = c(3, 10, 20);
        a.merge(&c(4, 5, 15));
        assert_eq!(a.requests, 7);
        assert_eq!(a.connections, 2);
        assert_eq!((a.first_seen.0, a.last_seen.0), (5, 20));
    }

    #[test]
    fn merge_saturates_instead_of_overflowing() {
        let mut a = c(MAX_COUNT, 1, 1);
        a.merge(&c(MAX_COUNT, 1, 1));
        assert_eq!(a.requests, MAX_COUNT);
        let mut b = c(u64::MAX, 1, 1);
        b.merge(&c(1, 1, 1));
        assert_eq!(b.requests, MAX_COUNT);
    }

    proptest! {
        #[test]
        fn merge_is_commutative_and_never_exceeds_the_cap(
            a in any::<u64>(), b in any::<u64>(), t1 in 0i64..1_000, t2 in 0i64..1_000
        ) {
            let (x, y) = (c(a, t1, t1 + 5), c(b, t2, t2 + 7));
            let mut xy = x;
            xy.merge(&y);
            let mut yx = y;
            yx.merge(&x);
            prop_assert_eq!(xy, yx);
            prop_assert!(xy.requests <= MAX_COUNT);
            prop_assert_eq!(xy.requests, (a as u128 + b as u128).min(MAX_COUNT as u128) as u64);
        }
    }
}
