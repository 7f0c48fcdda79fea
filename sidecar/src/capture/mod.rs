//! Transparent outbound capture: the app's outbound TCP is redirected to the sidecar's
//! listener by iptables ([`iptables`], the `whouses-sidecar iptables` subcommand), and
//! each redirected connection is served here:
//!
//! 1. its original destination is read ([`redirect::original_destination`]; a connection
//!    without one is an explicit proxy request and goes to the relay as before);
//! 2. unless its port is in `--opaque-ports` (server-speaks-first protocols), its first
//!    bytes are read, within `--detect-timeout` and [`detect::MAX_DETECT_BYTES`], until
//!    [`detect::detect`] decides;
//! 3. HTTP/1.x goes through the same relay as explicit requests, with a router of the
//!    connection's own ([`crate::proxy::transparent::Transparent`]): every request counted
//!    under its `Host`; TLS (by SNI), HTTP/2 (by `:authority`), a `CONNECT` to a proxy of
//!    the app's own (by its target) and anything else (opaque, by the name the app
//!    resolved the address from through the DNS forwarder, else the IP literal) become one
//!    counted connection, tunnelled unchanged to the original destination (never
//!    re-resolved), the bytes read for detection first.

pub mod detect;
pub mod invariants;
pub mod iptables;
pub mod redirect;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use whouses_wire::{HostPort, Scheme, Timestamp};

use crate::dns::Names;
use crate::proxy::conn::Conn;
use crate::proxy::relay::{self, Relay};
use crate::proxy::transparent::Transparent;
use crate::proxy::tunnel;
use detect::{Detection, Protocol};

/// What transparent capture needs besides the relay.
#[derive(Debug)]
pub struct Capture {
    /// The DNS forwarder's memory, to name what carries no name.
    pub names: Option<Arc<Names>>,
    /// Ports whose connections are opaque at once (the server speaks first).
    pub opaque_ports: HashSet<u16>,
    /// Time the app has to send enough bytes to tell its protocol.
    pub detect_timeout: Duration,
}

impl Capture {
    /// The name the app resolved `ip` from (within TTL + grace), else the IP literal.
    fn name_of(&self, ip: std::net::IpAddr) -> String {
        self.names
            .as_ref()
            .and_then(|n| n.name_of(ip, Timestamp::now().as_millis()))
            .unwrap_or_else(|| ip.to_canonical().to_string())
    }

    /// Read the first bytes until the protocol is decided, the time or bytes run out, or
    /// the app closes its sending side.
    async fn detect(
        &self,
        stream: &mut TcpStream,
        dst: SocketAddr,
        buf: &mut BytesMut,
    ) -> Protocol {
        if self.opaque_ports.contains(&dst.port()) {
            return Protocol::Opaque;
        }
        let deadline = tokio::time::Instant::now() + self.detect_timeout;
        loop {
            if let Detection::Done(p) = detect::detect(buf) {
                return p;
            }
            buf.reserve(if buf.is_empty() { 2048 } else { buf.len() });
            let room = detect::MAX_DETECT_BYTES - buf.len();
            let mut limited = (&mut *stream).take(room as u64);
            match tokio::time::timeout_at(deadline, limited.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, failed or quiet: decide with what we have.
                _ => return detect::undecided(buf),
            }
        }
    }
}

/// Serve one connection that iptables redirected to the sidecar; `dst` is where the app
/// was going.
pub async fn serve(
    relay: Arc<Relay>,
    capture: Arc<Capture>,
    mut stream: TcpStream,
    peer: SocketAddr,
    dst: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    let mut buf = BytesMut::new();
    let protocol = capture.detect(&mut stream, dst, &mut buf).await;
    tracing::debug!(client = %peer, %dst, ?protocol, "Detected a redirected connection's protocol.");
    let (host, port, scheme) = match protocol {
        Protocol::Http1 => {
            let router = Transparent {
                dst,
                fallback: capture.name_of(dst.ip()),
            };
            relay::serve_conn(&relay, Conn::with_buffer(stream, buf), peer, stop, &router).await;
            return;
        }
        Protocol::Connect(target) => match HostPort::parse(&target, None) {
            Ok(hp) => (hp.host, hp.port, Scheme::for_connect_port(hp.port)),
            Err(_) => (capture.name_of(dst.ip()), dst.port(), Scheme::Tcp),
        },
        Protocol::Tls { sni } => (
            sni.unwrap_or_else(|| capture.name_of(dst.ip())),
            dst.port(),
            Scheme::Https,
        ),
        Protocol::H2 { authority } => (
            authority.unwrap_or_else(|| capture.name_of(dst.ip())),
            dst.port(),
            Scheme::Http,
        ),
        Protocol::Opaque => (capture.name_of(dst.ip()), dst.port(), Scheme::Tcp),
    };
    opaque(&relay, stream, &buf, &host, port, scheme, dst).await;
}

/// One counted connection to `dst`, bytes relayed unchanged both ways (`early` first).
async fn opaque(
    relay: &Relay,
    mut app: TcpStream,
    early: &[u8],
    host: &str,
    port: u16,
    scheme: Scheme,
    dst: SocketAddr,
) {
    let stats = relay.counters.edge(host, port, scheme);
    let now = || Timestamp::now().as_millis();
    let upstream = match relay.dialer.dial_addr(host, port, dst).await {
        Ok(s) => s,
        Err(error) => {
            stats.record_error(now());
            tracing::debug!(%error, host, port, "A redirected connection's destination is unreachable.");
            return;
        }
    };
    stats.record_connection(now());
    match tunnel::run(&mut app, upstream, early, &[], stats, relay.tunnel_splice).await {
        Ok((sent, received)) => {
            tracing::debug!(host, port, sent, received, "Captured connection closed.")
        }
        Err(error) => {
            tracing::debug!(%error, host, port, "Captured connection ended with an error.")
        }
    }
}
