//! Where a redirected connection was going, and who may be redirected to us.
//!
//! * [`original_destination`] — `SO_ORIGINAL_DST` (IPv4) / `IP6T_SO_ORIGINAL_DST` (IPv6),
//!   read through rustix's safe API: the address the app dialed before iptables sent the
//!   connection to the sidecar. A connection that was not redirected (an explicit proxy
//!   request) has none, or the listener's own address.
//! * [`OwnAddresses`] — the network namespace's own addresses (getifaddrs), which
//!   redirected connections come from: the default `--allow-from` accepts them besides
//!   loopback, and nothing else.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

/// The destination the app dialed, when the connection was redirected to us (`None` for a
/// connection made to the listener itself: an explicit proxy request).
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let dst = match local {
        SocketAddr::V4(_) => SocketAddr::V4(rustix::net::sockopt::ip_original_dst(stream).ok()?),
        SocketAddr::V6(l) if l.ip().to_ipv4_mapped().is_some() => {
            SocketAddr::V4(rustix::net::sockopt::ip_original_dst(stream).ok()?)
        }
        SocketAddr::V6(_) => SocketAddr::V6(rustix::net::sockopt::ipv6_original_dst(stream).ok()?),
    };
    redirected(local, dst)
}

/// `dst` when it is not the listener itself.
fn redirected(local: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
    let same = dst.port() == local.port() && dst.ip().to_canonical() == local.ip().to_canonical();
    (!same).then_some(SocketAddr::new(dst.ip().to_canonical(), dst.port()))
}

/// With `--listen 127.0.0.1:PORT`, also listen on `[::1]:PORT`: ip6tables' REDIRECT sends
/// the app's IPv6 connections there. Best effort (no IPv6, or the port taken: none).
pub async fn ipv6_loopback_twin(listen: SocketAddr) -> Option<tokio::net::TcpListener> {
    if listen.ip() != IpAddr::from([127, 0, 0, 1]) {
        return None;
    }
    let twin = SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), listen.port());
    match tokio::net::TcpListener::bind(twin).await {
        Ok(l) => Some(l),
        Err(error) => {
            tracing::debug!(%error, listen = %twin, "No IPv6 loopback listener; IPv6 connections are not captured.");
            None
        }
    }
}

/// How often the address list may be read again when a peer is not in it (an address
/// added after start, e.g. a late IPv6 address).
const REFRESH: Duration = Duration::from_secs(1);

/// The namespace's own addresses, read at start and again (at most once a second) when a
/// client's address is not among them.
#[derive(Debug)]
pub struct OwnAddresses {
    inner: Mutex<(HashSet<IpAddr>, Instant)>,
}

impl Default for OwnAddresses {
    fn default() -> Self {
        OwnAddresses {
            inner: Mutex::new((read(), Instant::now())),
        }
    }
}

impl OwnAddresses {
    /// Whether `ip` is one of this namespace's addresses.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if inner.0.contains(&ip) {
            return true;
        }
        if inner.1.elapsed() >= REFRESH {
            *inner = (read(), Instant::now());
            return inner.0.contains(&ip);
        }
        false
    }
}

/// Every address of every interface in this namespace.
fn read() -> HashSet<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        tracing::warn!("Cannot list the namespace's addresses; only loopback clients are allowed.");
        return HashSet::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6()
                    .map(|v6| IpAddr::V6(v6.ip()).to_canonical())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_to_the_listener_itself_is_not_redirected() {
        let l: SocketAddr = "127.0.0.1:15001".parse().unwrap();
        assert_eq!(redirected(l, l), None);
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:15001".parse().unwrap();
        assert_eq!(redirected(mapped, l), None);
        let dst: SocketAddr = "198.18.0.2:8080".parse().unwrap();
        assert_eq!(redirected(l, dst), Some(dst));
    }

    #[test]
    fn loopback_is_one_of_our_addresses() {
        let own = OwnAddresses::default();
        assert!(own.contains("127.0.0.1".parse().unwrap()));
        assert!(!own.contains("192.0.2.77".parse().unwrap()));
    }
}
