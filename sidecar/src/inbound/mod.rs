//! Inbound mode (issue 14): the sidecar in front of a service, counting every call *to*
//! it — from callers with a sidecar or without — per name the caller dialed and per
//! caller address, with the same counting, shipping, spooling and exactness as outbound.
//!
//! A connection, top to bottom ([`serve`]):
//!
//! 1. where it goes: `--upstream`, or — redirected by `whouses-sidecar iptables install
//!    --inbound-port` — its original destination ([`iptables::original_dst`]);
//! 2. what it is, from its first byte (`--inbound-protocol auto`): an HTTP request head →
//!    the HTTP/1 relay ([`crate::proxy::relay`], keep-alive and all) with the
//!    [`crate::proxy::route::InboundRouter`] (key = `Host`); a TLS handshake → its
//!    ClientHello's server name ([`sni`]), then a byte tunnel (TLS is never terminated);
//!    anything else, or nothing within [`SNIFF_WAIT`] (a server-speaks-first protocol),
//!    → an opaque byte tunnel keyed by `--inbound-host`; `--inbound-protocol tcp` skips
//!    the sniff;
//! 3. **counted** in [`peers::Peers`] under `(name, port, scheme, caller address)`.
//!
//! Beside it: [`addresses`] (this instance's addresses, reported by every sidecar for the
//! collector's address book) and [`iptables`] (the transparent capture's rules).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use whouses_wire::{Scheme, Timestamp};

use crate::proxy::relay::{self, Relay};
use crate::proxy::route::ConnInfo;
use crate::proxy::tunnel;

pub mod addresses;
pub mod iptables;
pub mod peers;
pub mod sni;

pub use peers::Peers;

/// How long an inbound connection may stay silent before it is taken for a
/// server-speaks-first protocol (and relayed as opaque TCP) in `--inbound-protocol auto`.
pub const SNIFF_WAIT: Duration = Duration::from_secs(1);

/// `--inbound-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Look at the caller's first bytes: HTTP, TLS, or else opaque TCP.
    Auto,
    /// Opaque TCP, without waiting for the caller to speak first.
    Tcp,
}

/// What inbound mode needs beside the relay.
#[derive(Debug)]
pub struct Inbound {
    pub peers: Arc<Peers>,
    /// `--upstream`; `None`: each connection's original destination.
    pub upstream: Option<SocketAddr>,
    /// `--inbound-host`, normalised: the names this service is reached by; the first keys
    /// what names nothing itself (opaque TCP, TLS without SNI).
    pub hosts: Vec<String>,
    pub protocol: Protocol,
    /// Time a TLS caller has to send its ClientHello (`--header-read-timeout`).
    pub hello_timeout: Duration,
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// What the first byte says.
enum First {
    Http,
    Tls,
    Other,
    /// Nothing within the wait: a server-speaks-first protocol.
    Silent,
    Closed,
}

async fn sniff(stream: &TcpStream) -> First {
    let mut b = [0u8; 16];
    match tokio::time::timeout(SNIFF_WAIT, stream.peek(&mut b)).await {
        Err(_) => First::Silent,
        Ok(Ok(n)) => classify(&b[..n]),
        Ok(Err(_)) => First::Closed,
    }
}

/// What a connection's first bytes are: a TLS record, an HTTP/1 request line (an
/// upper-case method and a space), or something else — an HTTP/2 preface (h2c, gRPC)
/// included, which is relayed as opaque bytes.
fn classify(b: &[u8]) -> First {
    const H2: &[u8] = b"PRI * HTTP/2.0";
    if b.is_empty() {
        return First::Closed;
    }
    if b[0] == 0x16 {
        return First::Tls;
    }
    if H2.starts_with(&b[..b.len().min(H2.len())]) {
        return First::Other;
    }
    let method = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
    match b.get(method) {
        Some(b' ') if method > 0 => First::Http,
        // Only capitals so far: the rest of the method is on its way.
        None if method > 0 => First::Http,
        _ => First::Other,
    }
}

/// Serve one caller connection.
pub async fn serve(
    relay: Arc<Relay>,
    inbound: Arc<Inbound>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let dialed = if inbound.upstream.is_some() {
        local
    } else {
        match iptables::original_dst(&stream) {
            Ok(d) if d != local => d,
            Ok(_) | Err(_) => {
                // Not redirected: relaying it to its own destination would loop.
                tracing::warn!(client = %peer, listen = %local,
                    "A connection reached the inbound port without being redirected and there is no --upstream; closing it.");
                return;
            }
        }
    };
    let conn = ConnInfo { peer, dialed };
    let first = match inbound.protocol {
        Protocol::Tcp => First::Silent,
        Protocol::Auto => sniff(&stream).await,
    };
    match first {
        First::Http => relay::serve_conn(relay, stream, conn, stop).await,
        First::Tls => tls(&relay, &inbound, stream, conn).await,
        First::Other | First::Silent => {
            let host = fallback_host(&inbound, &conn);
            opaque(
                &relay,
                &inbound,
                stream,
                conn,
                host,
                Scheme::Tcp,
                Vec::new(),
            )
            .await;
        }
        First::Closed => {}
    }
}

/// The key of a connection that names nothing: `--inbound-host`, else the address the
/// caller dialed.
fn fallback_host(inbound: &Inbound, conn: &ConnInfo) -> String {
    inbound
        .hosts
        .first()
        .cloned()
        .unwrap_or_else(|| conn.dialed.ip().to_canonical().to_string())
}

/// TLS: read the ClientHello (within the hello timeout) for its server name, then relay
/// it and everything after it untouched.
async fn tls(relay: &Relay, inbound: &Inbound, mut stream: TcpStream, conn: ConnInfo) {
    let mut hello = Vec::with_capacity(1024);
    let name = tokio::time::timeout(inbound.hello_timeout, async {
        let mut buf = [0u8; 4096];
        loop {
            match sni::parse(&hello) {
                sni::Hello::Done(name) => return name,
                sni::Hello::NotTls => return None,
                sni::Hello::NeedMore => {}
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => hello.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .flatten();
    if hello.is_empty() {
        return;
    }
    let host = name
        .and_then(|n| whouses_wire::host::normalize_host(&n).ok())
        .unwrap_or_else(|| fallback_host(inbound, &conn));
    opaque(relay, inbound, stream, conn, host, Scheme::Https, hello).await;
}

/// A counted byte tunnel to the service: one connection on the key, bytes both ways; a
/// failed dial is an error on it (the caller's connection is closed: there is no HTTP to
/// answer in).
async fn opaque(
    relay: &Relay,
    inbound: &Inbound,
    mut stream: TcpStream,
    conn: ConnInfo,
    host: String,
    scheme: Scheme,
    early: Vec<u8>,
) {
    let port = conn.dialed.port();
    let stats = inbound.peers.edge(&host, port, scheme, conn.peer.ip());
    stats.record_connection(now_ms());
    let to = inbound.upstream.unwrap_or(conn.dialed);
    let upstream = match relay.dialer.dial_addr(&host, port, to).await {
        Ok(u) => u,
        Err(error) => {
            stats.record_error(now_ms());
            tracing::debug!(%error, client = %conn.peer, host, "Inbound connection: the service could not be reached.");
            return;
        }
    };
    match tunnel::run(
        &mut stream,
        upstream,
        &early,
        &[],
        stats,
        relay.tunnel_splice,
    )
    .await
    {
        Ok((sent, received)) => {
            tracing::debug!(host, port, sent, received, client = %conn.peer, "Inbound tunnel closed.")
        }
        Err(error) => {
            tracing::debug!(%error, host, port, client = %conn.peer, "Inbound tunnel ended with an error.")
        }
    }
}

/// `/metrics` for inbound mode: sums over every inbound key, read at scrape time.
#[derive(Debug)]
pub struct InboundMetrics(pub Arc<Peers>);

impl Collector for InboundMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut t = [0u64; 5];
        for (_, v) in self.0.snapshot() {
            t[0] = t[0].saturating_add(v.requests);
            t[1] = t[1].saturating_add(v.connections);
            t[2] = t[2].saturating_add(v.errors);
            t[3] = t[3].saturating_add(v.bytes_sent);
            t[4] = t[4].saturating_add(v.bytes_received);
        }
        let counters = [
            (
                "whouses_sidecar_inbound_requests",
                "HTTP requests to the service",
                t[0],
            ),
            (
                "whouses_sidecar_inbound_connections",
                "Caller connections to the service (per name called)",
                t[1],
            ),
            (
                "whouses_sidecar_inbound_errors",
                "Failed calls to the service (unreachable, 5xx, broken bodies)",
                t[2],
            ),
            (
                "whouses_sidecar_inbound_bytes_sent",
                "Body and tunnel bytes from callers to the service",
                t[3],
            ),
            (
                "whouses_sidecar_inbound_bytes_received",
                "Body and tunnel bytes from the service to callers",
                t[4],
            ),
            (
                "whouses_sidecar_inbound_folded_callers",
                "New (name, caller address) keys folded into address (other) at --max-peers",
                self.0.folded_peers(),
            ),
            (
                "whouses_sidecar_inbound_folded_names",
                "New names folded into (other) at --max-hosts",
                self.0.folded_hosts(),
            ),
        ];
        for (name, help, value) in counters {
            let c = ConstCounter::new(value);
            let e = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(e)?;
        }
        for (name, help, value) in [
            (
                "whouses_sidecar_inbound_keys",
                "Distinct (name, caller address) keys tracked",
                self.0.len(),
            ),
            (
                "whouses_sidecar_max_peers",
                "The --max-peers bound",
                self.0.max_peers(),
            ),
        ] {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_say_what_a_connection_is() {
        assert!(matches!(classify(b"GET / HTTP/1.1\r\n"), First::Http));
        assert!(matches!(classify(b"OPTIONS"), First::Http));
        assert!(matches!(classify(&[0x16, 0x03, 0x01]), First::Tls));
        // gRPC over cleartext HTTP/2, Redis, PostgreSQL: opaque bytes.
        assert!(matches!(classify(b"PRI * HTTP/2.0\r\n"), First::Other));
        assert!(matches!(classify(b"PRI"), First::Other));
        assert!(matches!(classify(b"*1\r\n$4\r\nPING"), First::Other));
        assert!(matches!(
            classify(&[0, 0, 0, 8, 4, 210, 22, 47]),
            First::Other
        ));
        assert!(matches!(classify(b"get / HTTP/1.1"), First::Other));
        assert!(matches!(classify(b""), First::Closed));
    }
}
