//! The transparent mode's [`Router`]: HTTP/1 requests on a connection that iptables
//! redirected to the sidecar. The key is the request's `Host` name (the name the app
//! dialed) with the original destination's port; the request goes, unchanged apart from
//! the relay's hop-by-hop handling, to the original destination address — never
//! re-resolved. A request without a usable `Host` (HTTP/1.0) is counted under the name
//! the app resolved the address from (the DNS forwarder), else the IP literal.

use std::net::SocketAddr;

use whouses_wire::{HostPort, Scheme};

use super::error::ProxyError;
use super::head::RequestHead;
use super::route::{Action, Dial, Route, Router, Target};

/// One redirected connection's router.
#[derive(Debug, Clone)]
pub struct Transparent {
    /// The original destination.
    pub dst: SocketAddr,
    /// The key's host when a request names none: DNS name or IP literal.
    pub fallback: String,
}

impl Router for Transparent {
    fn route(&self, head: &RequestHead<'_>) -> Result<Route, ProxyError> {
        if head.is_connect() {
            return Err(ProxyError::BadRequest(
                "CONNECT after another request on a transparently captured connection; \
                 open a new connection for the tunnel"
                    .into(),
            ));
        }
        let host = head
            .header("host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| HostPort::parse(h.trim(), Some(self.dst.port())).ok())
            .map(|hp| hp.host)
            .unwrap_or_else(|| self.fallback.clone());
        Ok(Route {
            target: Target {
                host,
                port: self.dst.port(),
                scheme: Scheme::Http,
            },
            dial: Dial::Addr(self.dst),
            action: Action::Forward {
                path: 0..head.target.len(),
                host: None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::head::{parse_request, storage};

    fn route(raw: &str) -> Result<Route, ProxyError> {
        let mut st = storage();
        let head = parse_request(raw.as_bytes(), 8192, &mut st)
            .unwrap()
            .unwrap();
        Transparent {
            dst: "198.18.0.2:8080".parse().unwrap(),
            fallback: "old.internal".into(),
        }
        .route(&head)
    }

    #[test]
    fn the_key_is_the_host_name_with_the_original_port() {
        let r = route("GET /a?b HTTP/1.1\r\nHost: Old-LB.Internal.:80\r\n\r\n").unwrap();
        assert_eq!(
            (r.target.host.as_str(), r.target.port, r.target.scheme),
            ("old-lb.internal", 8080, Scheme::Http)
        );
        assert_eq!(r.dial, Dial::Addr("198.18.0.2:8080".parse().unwrap()));
        assert_eq!(
            r.action,
            Action::Forward {
                path: 0..4,
                host: None
            }
        );
    }

    #[test]
    fn without_a_host_the_dns_name_or_ip_names_it() {
        let r = route("GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(r.target.host, "old.internal");
        let r = route("GET / HTTP/1.1\r\nHost: \r\n\r\n").unwrap();
        assert_eq!(r.target.host, "old.internal");
        assert!(route("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
    }
}
