//! Where a request goes and under which key it is counted: the one piece that differs
//! between the sidecar's modes. The HTTP/1 relay ([`super::relay`]) asks a [`Router`] once
//! per request head and does the rest the same way for every mode.
//!
//! * [`ExplicitProxy`] (this module, the `HTTP_PROXY` mode): absolute-form
//!   `http://host[:port]/…` and `CONNECT host:port`; the key is the URI's authority, the
//!   upstream is dialed by that name (`--resolve`, DNS), and `Host` is rewritten to it.
//!   Anything else gets a 400 that says what to do instead.
//! * [`super::transparent::Transparent`] (redirected connections, `crate::capture`): key =
//!   the `Host` name with the original destination's port, dial = [`Dial::Addr`] of the
//!   original destination, `Host` kept.
//! * [`InboundRouter`] (inbound mode, issue 14, `crate::inbound`): in front of the
//!   service, one per caller connection; key = the `Host` name (its port, else the port
//!   the caller connected to), dial = [`Dial::Addr`] of `--upstream` (or the original
//!   destination of a redirected connection), `Host` kept.

use std::net::SocketAddr;
use std::ops::Range;

use whouses_wire::{HostPort, Scheme};

use super::error::ProxyError;
use super::head::RequestHead;

/// The key of a request's count: exactly the name the caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-cased, without a trailing dot.
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
}

/// How to reach the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    /// Resolve the target's name (`--resolve` first, then DNS).
    Name,
    /// This address, never re-resolved (transparent and inbound modes).
    Addr(SocketAddr),
}

/// What the relay does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward as HTTP: the request target to send and the `Host` to set, as byte ranges
    /// of the received request target.
    Forward {
        /// The origin-form path and query (`/` is added when it does not start with one).
        path: Range<usize>,
        /// Replace `Host` with this part of the target; `None` keeps the app's.
        host: Option<Range<usize>>,
    },
    /// `CONNECT`: dial, answer 200, relay bytes both ways.
    Tunnel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    pub dial: Dial,
    pub action: Action,
}

/// Decides the [`Route`] of a request from its head; a request that cannot be routed gets
/// the error's status and reason.
pub trait Router: Send + Sync + 'static {
    fn route(&self, head: &RequestHead<'_>) -> Result<Route, ProxyError>;
}

/// The explicit forward proxy (`HTTP_PROXY`/`HTTPS_PROXY` point at the sidecar).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExplicitProxy;

impl Router for ExplicitProxy {
    fn route(&self, head: &RequestHead<'_>) -> Result<Route, ProxyError> {
        if head.is_connect() {
            return connect(head.target);
        }
        absolute_form(head.target)
    }
}

fn connect(authority: &str) -> Result<Route, ProxyError> {
    let hp = HostPort::parse(authority, None)
        .map_err(|e| ProxyError::BadRequest(format!("CONNECT target {authority}: {e}")))?;
    Ok(Route {
        target: Target {
            scheme: Scheme::for_connect_port(hp.port),
            host: hp.host,
            port: hp.port,
        },
        dial: Dial::Name,
        action: Action::Tunnel,
    })
}

/// `http://[user@]host[:port][/path][?query]`.
fn absolute_form(uri: &str) -> Result<Route, ProxyError> {
    let scheme_end = uri.find("://").filter(|&i| {
        i > 0
            && uri[..i]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    let Some(scheme_end) = scheme_end else {
        return Err(ProxyError::BadRequest(
            "this is whouses-sidecar, a forward proxy: send absolute-form requests \
             (GET http://host/path) by setting HTTP_PROXY/HTTPS_PROXY to this address, \
             or CONNECT host:port"
                .into(),
        ));
    };
    let scheme = &uri[..scheme_end];
    if scheme.eq_ignore_ascii_case("https") {
        return Err(ProxyError::BadRequest(
            "https:// URLs go through a CONNECT tunnel (set HTTPS_PROXY to this proxy); \
             the sidecar never terminates TLS"
                .into(),
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(ProxyError::BadRequest(format!(
            "unsupported scheme {:?}: only http:// requests and CONNECT are proxied",
            scheme.to_ascii_lowercase()
        )));
    }
    let start = scheme_end + 3;
    let end = uri[start..]
        .find(['/', '?', '#'])
        .map_or(uri.len(), |i| start + i);
    // Userinfo never reaches the key or `Host`.
    let host_start = uri[start..end].rfind('@').map_or(start, |i| start + i + 1);
    // `host:` has an empty port: the default one (RFC 3986 §3.2.3).
    let host_end = if uri[host_start..end].ends_with(':') {
        end - 1
    } else {
        end
    };
    let authority = &uri[host_start..host_end];
    let hp = HostPort::parse(authority, Some(80)).map_err(|e| {
        ProxyError::BadRequest(format!("request target host {}: {e}", &uri[start..end]))
    })?;
    Ok(Route {
        target: Target {
            host: hp.host,
            port: hp.port,
            scheme: Scheme::Http,
        },
        dial: Dial::Name,
        action: Action::Forward {
            path: end..uri.len(),
            host: Some(host_start..host_end),
        },
    })
}

// Inbound mode (issue 14) -----------------------------------------------------------

/// In front of a service (`--mode inbound`), one per caller connection: every request
/// goes to the service, counted under the name the caller dialed.
#[derive(Debug, Clone)]
pub struct InboundRouter {
    /// Where the service is: `--upstream`, else the connection's original destination.
    pub upstream: SocketAddr,
    /// The address the caller connected to (the original destination of a redirected
    /// connection, else the listener's): its port keys a `Host` without one.
    pub dialed: SocketAddr,
    /// `--inbound-host` (the first): the key when a request names no usable host; else
    /// the address the caller dialed.
    pub fallback_host: Option<String>,
}

impl InboundRouter {
    /// The key when the request names no host.
    fn fallback(&self) -> HostPort {
        HostPort {
            host: self
                .fallback_host
                .clone()
                .unwrap_or_else(|| self.dialed.ip().to_canonical().to_string()),
            port: self.dialed.port(),
        }
    }
}

impl Router for InboundRouter {
    fn route(&self, head: &RequestHead<'_>) -> Result<Route, ProxyError> {
        if head.is_connect() {
            return Err(ProxyError::BadRequest(
                "this is whouses-sidecar in front of a service (inbound mode), not a proxy: \
                 CONNECT is not served here"
                    .into(),
            ));
        }
        let dial = Dial::Addr(self.upstream);
        if !head.target.starts_with('/') && head.target != "*" {
            // Absolute form: its authority is the name (and replaces `Host`).
            let mut route = absolute_form(head.target)?;
            route.dial = dial;
            return Ok(route);
        }
        // The port is the `Host`'s when it has one, else the one the caller connected to.
        let hp = head
            .header("host")
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .and_then(|v| HostPort::parse(v, Some(self.dialed.port())).ok())
            .unwrap_or_else(|| self.fallback());
        Ok(Route {
            target: Target {
                host: hp.host,
                port: hp.port,
                scheme: Scheme::Http,
            },
            dial,
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
    use crate::proxy::head::parse_request;

    fn route(method: &str, uri: &str) -> Result<Route, ProxyError> {
        let raw = format!("{method} {uri} HTTP/1.1\r\n\r\n");
        let mut storage = crate::proxy::head::storage();
        let head = parse_request(raw.as_bytes(), 8192, &mut storage)
            .unwrap()
            .unwrap();
        ExplicitProxy.route(&head)
    }

    fn forward_parts(uri: &str) -> (Target, String, String) {
        let r = route("GET", uri).unwrap();
        let Action::Forward { path, host } = r.action else {
            panic!("not forwarded")
        };
        (
            r.target,
            uri[path].to_string(),
            uri[host.unwrap()].to_string(),
        )
    }

    #[test]
    fn absolute_form_fills_the_default_port_and_normalises() {
        let (t, path, host) = forward_parts("http://Old-LB.Internal./x?y");
        assert_eq!(
            (t.host.as_str(), t.port, t.scheme),
            ("old-lb.internal", 80, Scheme::Http)
        );
        assert_eq!((path.as_str(), host.as_str()), ("/x?y", "Old-LB.Internal."));
        let (t, path, _) = forward_parts("HTTP://10.0.3.7:8080");
        assert_eq!(
            (t.host.as_str(), t.port, path.as_str()),
            ("10.0.3.7", 8080, "")
        );
    }

    #[test]
    fn userinfo_never_reaches_the_key_or_host() {
        let (t, path, host) = forward_parts("http://user:pw@a.example:81/p");
        assert_eq!((t.host.as_str(), t.port), ("a.example", 81));
        assert_eq!((path.as_str(), host.as_str()), ("/p", "a.example:81"));
    }

    #[test]
    fn an_empty_port_is_the_default_port() {
        let (t, _, host) = forward_parts("http://example.com:/");
        assert_eq!(
            (t.host.as_str(), t.port, host.as_str()),
            ("example.com", 80, "example.com")
        );
        let (t, _, host) = forward_parts("http://[::1]:/");
        assert_eq!(
            (t.host.as_str(), t.port, host.as_str()),
            ("::1", 80, "[::1]")
        );
    }

    #[test]
    fn connect_keys_on_the_target() {
        let r = route("CONNECT", "api.example.com:443").unwrap();
        assert_eq!(
            (
                r.target.host.as_str(),
                r.target.port,
                r.target.scheme,
                r.action
            ),
            ("api.example.com", 443, Scheme::Https, Action::Tunnel)
        );
        let r = route("CONNECT", "db.internal:5432").unwrap();
        assert_eq!(r.target.scheme, Scheme::Tcp);
        assert!(route("CONNECT", "db.internal").is_err());
    }

    #[test]
    fn origin_form_gets_a_helpful_error() {
        let e = route("GET", "/index.html").unwrap_err();
        assert!(e.to_string().contains("forward proxy"), "{e}");
        assert_eq!(e.status().0, 400);
        assert!(route("GET", "https://x/")
            .unwrap_err()
            .to_string()
            .contains("CONNECT"));
        assert!(route("GET", "ftp://x/")
            .unwrap_err()
            .to_string()
            .contains("ftp"));
        assert!(route("OPTIONS", "*").is_err());
    }

    fn inbound(raw: &str, router: &InboundRouter) -> Result<Route, ProxyError> {
        let mut storage = crate::proxy::head::storage();
        let head = parse_request(raw.as_bytes(), 8192, &mut storage)
            .unwrap()
            .unwrap();
        router.route(&head)
    }

    #[test]
    fn inbound_keys_on_the_host_the_caller_dialed() {
        let dialed: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let r = InboundRouter {
            upstream: "127.0.0.1:9000".parse().unwrap(),
            dialed,
            fallback_host: None,
        };
        let route = inbound("GET /x HTTP/1.1\r\nHost: Old-LB.internal.\r\n\r\n", &r).unwrap();
        assert_eq!(
            (
                route.target.host.as_str(),
                route.target.port,
                route.target.scheme
            ),
            ("old-lb.internal", 8080, Scheme::Http),
            "no port in Host: the one the caller connected to"
        );
        assert_eq!(route.dial, Dial::Addr("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(
            route.action,
            Action::Forward {
                path: 0..2,
                host: None
            }
        );
        let route = inbound("GET / HTTP/1.1\r\nHost: old-lb.internal:81\r\n\r\n", &r).unwrap();
        assert_eq!(route.target.port, 81);
        // No Host (HTTP/1.0), or one that is no name: the address the caller dialed.
        let route = inbound("GET / HTTP/1.0\r\n\r\n", &r).unwrap();
        assert_eq!(
            (route.target.host.as_str(), route.target.port),
            ("10.0.0.1", 8080)
        );
        let route = inbound("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", &r).unwrap();
        assert_eq!(route.target.host, "10.0.0.1");
        // … or --inbound-host.
        let named = InboundRouter {
            upstream: dialed,
            dialed,
            fallback_host: Some("ref.internal".into()),
        };
        let route = inbound("GET / HTTP/1.0\r\n\r\n", &named).unwrap();
        assert_eq!(route.target.host, "ref.internal");
        // Without --upstream: the original destination.
        assert_eq!(route.dial, Dial::Addr(dialed));
        // Absolute form names the host itself.
        let route = inbound("GET http://abs.internal/p HTTP/1.1\r\nHost: x\r\n\r\n", &r).unwrap();
        assert_eq!(
            (route.target.host.as_str(), route.target.port),
            ("abs.internal", 80)
        );
        assert!(matches!(
            route.action,
            Action::Forward { host: Some(_), .. }
        ));
        // CONNECT is not served.
        let e = inbound("CONNECT a:443 HTTP/1.1\r\n\r\n", &r).unwrap_err();
        assert!(e.to_string().contains("inbound mode"), "{e}");
    }
}
