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
//! * Inbound (to come): key = the `Host` name, dial = [`Dial::Addr`] of `--upstream`.

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
}
