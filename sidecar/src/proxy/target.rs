//! Which upstream a request is for: the name the caller dialed, normalised into the key
//! of its count. Absolute-form `http://host[:port]/…` and `CONNECT host:port` are proxied;
//! anything else gets a 400 that says what to do instead.

use http::{Method, Request};
use whouses_wire::{HostPort, Scheme};

use super::error::ProxyError;

/// The upstream of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lower-cased, without a trailing dot: exactly what the caller asked for.
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    /// A `CONNECT` tunnel rather than a forwarded request.
    pub tunnel: bool,
}

impl Target {
    pub fn of<B>(req: &Request<B>) -> Result<Target, ProxyError> {
        if req.method() == Method::CONNECT {
            let authority = req
                .uri()
                .authority()
                .ok_or_else(|| ProxyError::BadRequest("CONNECT needs a host:port target".into()))?;
            let hp = HostPort::parse(authority.as_str(), None)
                .map_err(|e| ProxyError::BadRequest(format!("CONNECT target {authority}: {e}")))?;
            return Ok(Target {
                scheme: Scheme::for_connect_port(hp.port),
                host: hp.host,
                port: hp.port,
                tunnel: true,
            });
        }
        let uri = req.uri();
        match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(authority)) => {
                let hp = HostPort::parse(authority.as_str(), Some(80)).map_err(|e| {
                    ProxyError::BadRequest(format!("request target host {authority}: {e}"))
                })?;
                Ok(Target {
                    host: hp.host,
                    port: hp.port,
                    scheme: Scheme::Http,
                    tunnel: false,
                })
            }
            (Some("https"), _) => Err(ProxyError::BadRequest(
                "https:// URLs go through a CONNECT tunnel (set HTTPS_PROXY to this proxy); \
                 the sidecar never terminates TLS"
                    .into(),
            )),
            (Some(other), _) => Err(ProxyError::BadRequest(format!(
                "unsupported scheme {other:?}: only http:// requests and CONNECT are proxied"
            ))),
            (None, _) => Err(ProxyError::BadRequest(
                "this is whouses-sidecar, a forward proxy: send absolute-form requests \
                 (GET http://host/path) by setting HTTP_PROXY/HTTPS_PROXY to this address, \
                 or CONNECT host:port"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(method: &str, uri: &str) -> Result<Target, ProxyError> {
        Target::of(&Request::builder().method(method).uri(uri).body(()).unwrap())
    }

    #[test]
    fn absolute_form_fills_the_default_port_and_normalises() {
        let t = target("GET", "http://Old-LB.Internal./x?y").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.scheme, t.tunnel),
            ("old-lb.internal", 80, Scheme::Http, false)
        );
        let t = target("POST", "http://10.0.3.7:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.0.3.7", 8080));
    }

    #[test]
    fn connect_keys_on_the_target() {
        let t = target("CONNECT", "api.example.com:443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.scheme, t.tunnel),
            ("api.example.com", 443, Scheme::Https, true)
        );
        let t = target("CONNECT", "db.internal:5432").unwrap();
        assert_eq!(t.scheme, Scheme::Tcp);
    }

    #[test]
    fn origin_form_gets_a_helpful_error() {
        let e = target("GET", "/index.html").unwrap_err();
        assert!(e.to_string().contains("forward proxy"), "{e}");
        assert_eq!(e.status(), 400);
        assert!(target("GET", "https://x/")
            .unwrap_err()
            .to_string()
            .contains("CONNECT"));
    }
}
