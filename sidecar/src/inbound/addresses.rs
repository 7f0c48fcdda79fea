//! The address book's entry of this instance: the addresses it is reachable from, reported
//! in every batch so that the collector can attribute a callee's caller address to the
//! service that held it at the time. `--advertise-address` when given (a shared host whose
//! sidecars each have an address of their own, or a NAT address); otherwise the
//! non-loopback, non-link-local addresses of the network namespace's interfaces, read
//! from `/proc/net/fib_trie` (IPv4) and `/proc/net/if_inet6` (IPv6) at every cut — a pod
//! that gets a new address reports it at the next flush.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use whouses_wire::inbound::MAX_ADDRESSES;

/// Where this instance's addresses come from.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// `--advertise-address`: reported as they are.
    advertised: Vec<IpAddr>,
}

impl Addresses {
    pub fn new(advertised: &[IpAddr]) -> Addresses {
        Addresses {
            advertised: advertised.iter().map(|a| a.to_canonical()).collect(),
        }
    }

    /// The addresses to report now (canonical, sorted, at most [`MAX_ADDRESSES`]).
    pub fn current(&self) -> Vec<String> {
        let mut ips = if self.advertised.is_empty() {
            let v4 = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
            let v6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
            let mut ips: Vec<IpAddr> = local_v4(&v4).into_iter().map(IpAddr::V4).collect();
            ips.extend(local_v6(&v6).into_iter().map(IpAddr::V6));
            ips
        } else {
            self.advertised.clone()
        };
        ips.sort();
        ips.dedup();
        ips.truncate(MAX_ADDRESSES);
        ips.into_iter().map(|ip| ip.to_string()).collect()
    }
}

/// The source addresses outbound connections leave from: the first advertised address
/// of each family that is local (a socket can bind it). An advertised address that is
/// not (a NAT address) is only reported: binding it would fail every connection, and the
/// app must never break.
pub fn local_source(advertised: &[IpAddr]) -> crate::proxy::connect::Source {
    let mut source = crate::proxy::connect::Source::default();
    for ip in advertised.iter().map(|a| a.to_canonical()) {
        if std::net::TcpListener::bind((ip, 0)).is_err() {
            tracing::info!(address = %ip, "An advertised address is not local: reported to the collector, not used as the source of connections.");
            continue;
        }
        match ip {
            IpAddr::V4(v4) if source.v4.is_none() => source.v4 = Some(v4),
            IpAddr::V6(v6) if source.v6.is_none() => source.v6 = Some(v6),
            _ => {}
        }
    }
    source
}

/// The local IPv4 addresses in `/proc/net/fib_trie`: an `|-- ADDR` line followed by a
/// `/32 host LOCAL` line; loopback excluded.
pub fn local_v4(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = last.take() {
                if !a.is_loopback() && !a.is_unspecified() && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// The IPv6 addresses in `/proc/net/if_inet6` (32 hex digits, index, prefix, scope,
/// flags, name) of global scope: not loopback, not link-local.
pub fn local_v6(if_inet6: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in if_inet6.lines() {
        let mut f = line.split_whitespace();
        let (Some(hex), Some(_), Some(_), Some(scope)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if hex.len() != 32 || scope != "00" {
            continue;
        }
        let Ok(v) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let a = Ipv6Addr::from(v);
        if !a.is_loopback() && !a.is_unspecified() && !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 10.42.0.0/24 2 0 2
        +-- 10.42.0.0/30 2 0 2
           |-- 10.42.0.0
              /24 link UNICAST
           |-- 10.42.0.17
              /32 host LOCAL
        |-- 10.42.0.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 10.42.0.17
              /32 host LOCAL
";

    const INET6: &str = "fe8000000000000000fc00fffe000001 04 40 20 80     eth0
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
";

    #[test]
    fn interface_addresses_are_read_without_loopback_or_link_local() {
        assert_eq!(local_v4(FIB), vec![Ipv4Addr::new(10, 42, 0, 17)]);
        assert_eq!(
            local_v6(INET6),
            vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]
        );
        assert!(local_v4("garbage\n|-- nope\n/32 host LOCAL").is_empty());
        assert!(local_v6("short 1 2 00\n").is_empty());
    }

    #[test]
    fn advertised_addresses_win_and_are_canonical() {
        let a = Addresses::new(&[
            "::ffff:10.0.0.5".parse().unwrap(),
            "10.0.0.4".parse().unwrap(),
            "10.0.0.4".parse().unwrap(),
        ]);
        assert_eq!(a.current(), vec!["10.0.0.4", "10.0.0.5"]);
        // This machine's own: whatever they are, none is loopback.
        for ip in Addresses::default().current() {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!ip.is_loopback(), "{ip}");
        }
    }
}
