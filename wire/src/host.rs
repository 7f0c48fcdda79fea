//! The upstream a caller dialed: `(host, port, scheme)`, normalised.
//!
//! The host is the *name the caller asked for* (absolute-URI authority, `Host` header,
//! or `CONNECT` target), never an address it resolved to: an old load-balancer name is
//! exactly what must show up. Normalisation: lower-case, no trailing dot, IPv6 literals
//! without brackets, default port filled in from the scheme.
//!
//! IP literals are canonical: every spelling a client library accepts for one address
//! (`127.1`, `0x7f.0.0.1`, `2130706433`, `0:0:0:0:0:0:0:1`) is the same key, written
//! the standard way (`127.0.0.1`, `::1`). The URL standard's IPv4 parser (`url` crate)
//! decides what counts as an IPv4 literal.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest host name accepted (RFC 1035 limit on a full domain name).
pub const MAX_HOST_LEN: usize = 253;

/// How the upstream was reached through the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// An absolute-form HTTP request forwarded by the proxy (one request = one count).
    Http,
    /// A `CONNECT` tunnel to port 443 (TLS is never terminated, so the port is the hint).
    Https,
    /// A `CONNECT` tunnel to any other port.
    Tcp,
    /// Not seen by a sidecar: counted from OpenTelemetry service-graph metrics received
    /// over OTLP (`source: otel`). The host is the graph's `server` (a service name, or
    /// `host:port`); port 0 when the server named none.
    Otel,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tcp => "tcp",
            Scheme::Otel => "otel",
        }
    }

    /// The scheme a `CONNECT` tunnel to `port` is counted under.
    pub fn for_connect_port(port: u16) -> Scheme {
        if port == 443 {
            Scheme::Https
        } else {
            Scheme::Tcp
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, HostError> {
        match s {
            "http" => Ok(Scheme::Http),
            "https" => Ok(Scheme::Https),
            "tcp" => Ok(Scheme::Tcp),
            "otel" => Ok(Scheme::Otel),
            other => Err(HostError::BadScheme(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("empty host")]
    Empty,
    #[error("empty label in host (\"..\" or a leading or doubled trailing dot)")]
    EmptyLabel,
    #[error("host is longer than {MAX_HOST_LEN} characters")]
    TooLong,
    #[error("invalid character {0:?} in host")]
    BadChar(char),
    #[error("invalid port {0:?} (expected 1-65535)")]
    BadPort(String),
    #[error("missing port (expected host:port)")]
    MissingPort,
    #[error("unknown scheme {0:?} (expected http, https, tcp or otel)")]
    BadScheme(String),
    #[error("{0:?} is neither a host name nor a valid IP address")]
    BadIp(String),
}

/// A normalised `host` and `port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parse `host`, `host:port`, `[v6]` or `[v6]:port`, filling in `default_port` when the
    /// port is absent. With `default_port = None` a port is required.
    pub fn parse(authority: &str, default_port: Option<u16>) -> Result<HostPort, HostError> {
        let (host, port) = split_authority(authority)?;
        let port = match port {
            Some(p) => parse_port(p)?,
            None => default_port.ok_or(HostError::MissingPort)?,
        };
        Ok(HostPort {
            host: normalize_host(host)?,
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Split an authority into host and optional port text, handling `[v6]:port`.
/// Any `user@` prefix is dropped (credentials are never part of a key).
pub fn split_authority(authority: &str) -> Result<(&str, Option<&str>), HostError> {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = a.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(HostError::BadChar('['))?;
        return match after {
            "" => Ok((v6, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((v6, Some(p))),
                None => Err(HostError::BadChar(after.chars().next().unwrap_or(']'))),
            },
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h, Some(p))),
        Some(_) => Ok((a, None)), // bare IPv6 without brackets
        None => Ok((a, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, HostError> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(HostError::BadPort(p.to_string())),
        Ok(n) => Ok(n),
    }
}

/// Lower-case, strip one trailing dot, check length and characters; IP literals in their
/// canonical form.
pub fn normalize_host(host: &str) -> Result<String, HostError> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() {
        return Err(HostError::Empty);
    }
    if h.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if h.contains(':') {
        return h
            .parse::<Ipv6Addr>()
            .map(|a| a.to_string())
            .map_err(|_| HostError::BadIp(h.to_string()));
    }
    if h.starts_with('.') || h.ends_with('.') || h.contains("..") {
        return Err(HostError::EmptyLabel);
    }
    let mut out = String::with_capacity(h.len());
    for c in h.chars() {
        match c {
            'a'..='z' | '0'..='9' | '-' | '.' | '_' => out.push(c),
            'A'..='Z' => out.push(c.to_ascii_lowercase()),
            other => return Err(HostError::BadChar(other)),
        }
    }
    if ends_in_a_number(&out) {
        return match url::Host::parse(&out) {
            Ok(url::Host::Ipv4(a)) => Ok(a.to_string()),
            _ => Err(HostError::BadIp(out)),
        };
    }
    Ok(out)
}

/// The URL standard's test for "this host is meant as an IPv4 address": its last label is
/// a decimal number or a `0x` hex number.
fn ends_in_a_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises_names() {
        let hp = HostPort::parse("TIS-Reference.Internal.:8080", Some(80)).unwrap();
        assert_eq!(
            hp,
            HostPort {
                host: "tis-reference.internal".into(),
                port: 8080
            }
        );
        let hp = HostPort::parse("example.com", Some(443)).unwrap();
        assert_eq!(hp.port, 443);
        let hp = HostPort::parse("[::1]:9", None).unwrap();
        assert_eq!(hp.host, "::1");
        assert_eq!(hp.to_string(), "[::1]:9");
        let hp = HostPort::parse("user:pw@Host:81", None).unwrap();
        assert_eq!(hp.to_string(), "host:81");
    }

    #[test]
    fn ip_literals_have_one_spelling() {
        for spelling in [
            "127.0.0.1",
            "127.1",
            "0x7f.0.0.1",
            "0x7F.1",
            "2130706433",
            "0177.0.0.1",
            "127.0.0.1.",
        ] {
            assert_eq!(
                normalize_host(spelling).as_deref(),
                Ok("127.0.0.1"),
                "{spelling}"
            );
        }
        for spelling in ["::1", "0:0:0:0:0:0:0:1", "0000::0001", "::0:1"] {
            assert_eq!(normalize_host(spelling).as_deref(), Ok("::1"), "{spelling}");
        }
        assert_eq!(normalize_host("2001:DB8::A").as_deref(), Ok("2001:db8::a"));
        let hp = HostPort::parse("[0:0::1]:8080", None).unwrap();
        assert_eq!(hp.to_string(), "[::1]:8080");
        assert!(matches!(
            normalize_host("1.2.3.4.5"),
            Err(HostError::BadIp(_))
        ));
        assert!(matches!(
            normalize_host("256.1.1.1"),
            Err(HostError::BadIp(_))
        ));
        assert!(matches!(normalize_host("::g"), Err(HostError::BadIp(_))));
        // Names that merely contain digits stay names.
        assert_eq!(
            normalize_host("web1.internal").as_deref(),
            Ok("web1.internal")
        );
        assert_eq!(
            normalize_host("1.2.3.4.example").as_deref(),
            Ok("1.2.3.4.example")
        );
        assert_eq!(
            normalize_host("0x7f.example").as_deref(),
            Ok("0x7f.example")
        );
    }

    #[test]
    fn rejects_bad_authorities() {
        assert_eq!(HostPort::parse("", Some(80)), Err(HostError::Empty));
        assert_eq!(
            HostPort::parse("a:0", Some(80)),
            Err(HostError::BadPort("0".into()))
        );
        assert_eq!(
            HostPort::parse("a:99999", Some(80)),
            Err(HostError::BadPort("99999".into()))
        );
        assert_eq!(HostPort::parse("a", None), Err(HostError::MissingPort));
        assert!(matches!(
            HostPort::parse("a b:80", None),
            Err(HostError::BadChar(' '))
        ));
        assert_eq!(
            HostPort::parse(&"a".repeat(300), Some(80)),
            Err(HostError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(h in "[A-Za-z0-9.-]{1,40}", p in 1u16..) {
            if let Ok(hp) = HostPort::parse(&format!("{h}:{p}"), None) {
                let again = HostPort::parse(&hp.to_string(), None).unwrap();
                prop_assert_eq!(again, hp);
            }
        }

        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = HostPort::parse(&s, Some(80));
        }

        #[test]
        fn ipv4_spellings_normalise_to_the_address(a in any::<u32>()) {
            let ip = std::net::Ipv4Addr::from(a);
            prop_assert_eq!(normalize_host(&a.to_string()).unwrap(), ip.to_string());
            prop_assert_eq!(normalize_host(&format!("0x{a:x}")).unwrap(), ip.to_string());
            prop_assert_eq!(normalize_host(&ip.to_string()).unwrap(), ip.to_string());
        }
    }
}
