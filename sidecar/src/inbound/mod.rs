//! Inbound mode (issue 14): the sidecar in front of a service, counting every call *to*
//! it — from callers with a sidecar or without — per name the caller dialed and per
//! caller address, with the same counting, shipping, spooling and exactness as outbound.
//!
//! A connection, top to bottom ([`serve`]):
//!
//! 1. where it goes: `--upstream`, or — redirected by `whouses-sidecar iptables install
//!    --inbound-ports` — its original destination
//!    ([`crate::capture::redirect::original_destination`], shared with the outbound
//!    transparent capture);
//! 2. what it is, from its first bytes (`--inbound-protocol auto`), by the transparent
//!    capture's detection ([`crate::capture::Capture::detect`]: `--detect-timeout`,
//!    `--opaque-ports`): HTTP/1 → the HTTP/1 relay ([`crate::proxy::relay`], keep-alive
//!    and all) with a per-connection [`crate::proxy::route::InboundRouter`] (key =
//!    `Host`); TLS → keyed by its ClientHello's SNI; HTTP/2 with prior knowledge → keyed
//!    by the first request's `:authority`; each then a byte tunnel (TLS is never
//!    terminated); anything else, or nothing in time (a server-speaks-first protocol) →
//!    an opaque byte tunnel keyed by `--inbound-host`; `--inbound-protocol tcp` skips the
//!    detection;
//! 3. **counted** in [`peers::Peers`] under `(name, port, scheme, caller address)`.
//!
//! Beside it: [`addresses`] (this instance's addresses, reported by every sidecar for the
//! collector's address book).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::net::TcpStream;
use tokio::sync::watch;
use whouses_wire::{Scheme, Timestamp};

use crate::capture::detect;
use crate::proxy::conn::Conn;
use crate::proxy::relay::{self, Relay};
use crate::proxy::route::InboundRouter;
use crate::proxy::tunnel;

pub mod addresses;
pub mod peers;

pub use peers::Peers;

/// `--inbound-protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Look at the caller's first bytes: HTTP, TLS, HTTP/2, or else opaque TCP.
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
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// The two ends of one caller connection.
#[derive(Debug, Clone, Copy)]
struct Ends {
    /// The caller.
    peer: SocketAddr,
    /// Where the caller connected (the original destination, or the listener).
    dialed: SocketAddr,
    /// Where the service is.
    upstream: SocketAddr,
}

/// Serve one caller connection.
pub async fn serve(
    relay: Arc<Relay>,
    inbound: Arc<Inbound>,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let original = crate::capture::redirect::original_destination(&stream);
    // Where the caller connected (its port keys a `Host` without one), and where the
    // service is.
    let (dialed, upstream) = match (inbound.upstream, original) {
        (_, Some(dst)) => (dst, inbound.upstream.unwrap_or(dst)),
        (Some(up), None) => (local, up),
        (None, None) => {
            // Not redirected: relaying it to its own destination would loop.
            tracing::warn!(client = %peer, listen = %local,
                "A connection reached the inbound port without being redirected and there is no --upstream; closing it.");
            return;
        }
    };
    let mut buf = BytesMut::new();
    let protocol = match (inbound.protocol, &relay.capture) {
        (Protocol::Auto, Some(capture)) => capture.detect(&mut stream, dialed, &mut buf).await,
        (Protocol::Tcp, _) | (_, None) => detect::Protocol::Opaque,
    };
    let fallback = || fallback_host(&inbound, dialed);
    let (host, scheme) = match protocol {
        // CONNECT too: the router answers it with a 400 (the service is no proxy).
        detect::Protocol::Http1 | detect::Protocol::Connect(_) => {
            let router = InboundRouter {
                upstream,
                dialed,
                fallback_host: inbound.hosts.first().cloned(),
            };
            relay::serve_conn(&relay, Conn::with_buffer(stream, buf), peer, stop, &router).await;
            return;
        }
        detect::Protocol::Tls { sni } => (sni.unwrap_or_else(fallback), Scheme::Https),
        detect::Protocol::H2 { authority } => (authority.unwrap_or_else(fallback), Scheme::Http),
        detect::Protocol::Opaque => (fallback(), Scheme::Tcp),
    };
    let ends = Ends {
        peer,
        dialed,
        upstream,
    };
    opaque(&relay, &inbound, stream, ends, host, scheme, &buf).await;
}

/// The key of a connection that names nothing: `--inbound-host`, else the address the
/// caller dialed.
fn fallback_host(inbound: &Inbound, dialed: SocketAddr) -> String {
    inbound
        .hosts
        .first()
        .cloned()
        .unwrap_or_else(|| dialed.ip().to_canonical().to_string())
}

/// A counted byte tunnel to the service: one connection on the key, bytes both ways
/// (`early`, read by detection, first); a failed dial is an error on it (the caller's
/// connection is closed: there is no HTTP to answer in).
async fn opaque(
    relay: &Relay,
    inbound: &Inbound,
    mut stream: TcpStream,
    Ends {
        peer,
        dialed,
        upstream,
    }: Ends,
    host: String,
    scheme: Scheme,
    early: &[u8],
) {
    let port = dialed.port();
    let stats = inbound.peers.edge(&host, port, scheme, peer.ip());
    stats.record_connection(now_ms());
    let service = match relay.dialer.dial_addr(&host, port, upstream).await {
        Ok(u) => u,
        Err(error) => {
            stats.record_error(now_ms());
            tracing::debug!(%error, client = %peer, host, "Inbound connection: the service could not be reached.");
            return;
        }
    };
    match tunnel::run(&mut stream, service, early, &[], stats, relay.tunnel_splice).await {
        Ok((sent, received)) => {
            tracing::debug!(host, port, sent, received, client = %peer, "Inbound tunnel closed.")
        }
        Err(error) => {
            tracing::debug!(%error, host, port, client = %peer, "Inbound tunnel ended with an error.")
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
