//! Accepting app connections: the `--allow-from` check, the `--max-connections` bound
//! (a tunnel keeps its connection's slot), a 400 with a reason for a connection that does
//! not start like HTTP (TLS sent to the plain port), one relay task per connection
//! ([`super::relay`]) — or, for a connection iptables redirected here, transparent capture
//! (`crate::capture`) — and the drain on shutdown.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::relay::{self, Relay};
use crate::metrics::ProxyMetrics;

pub struct Limits {
    pub allow_from: Vec<IpNet>,
    /// Also allow the namespace's own addresses (the default `--allow-from`: redirected
    /// connections come from them).
    pub own_addresses: Option<crate::capture::redirect::OwnAddresses>,
    /// Also the time a new connection has to send its first byte.
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Serve until `shutdown` completes, then stop accepting and let in-flight requests and
/// tunnels finish within the drain timeout.
pub async fn serve(
    listener: TcpListener,
    relay: Arc<Relay>,
    slots: Arc<Semaphore>,
    limits: Limits,
    metrics: ProxyMetrics,
    shutdown: impl Future<Output = ()>,
) {
    serve_all(vec![listener], relay, slots, limits, metrics, shutdown).await;
}

/// The next connection on any of `listeners`.
async fn accept_any(
    listeners: &[TcpListener],
) -> std::io::Result<(TcpStream, std::net::SocketAddr)> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                return std::task::Poll::Ready(r);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// [`serve`] on several listeners at once (the proxy port on 127.0.0.1 and on [::1], where
/// ip6tables redirects IPv6), sharing the connection slots and the drain.
pub async fn serve_all(
    listeners: Vec<TcpListener>,
    relay: Arc<Relay>,
    slots: Arc<Semaphore>,
    limits: Limits,
    metrics: ProxyMetrics,
    shutdown: impl Future<Output = ()>,
) {
    // Tells every connection to finish its current request and close.
    let (graceful, graceful_rx) = watch::channel(false);
    let connections = super::track::Tracker::default();
    tokio::pin!(shutdown);

    loop {
        // Hold a slot before accepting: at the limit, new connections wait in the backlog.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = accept_any(&listeners) => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "Failed to accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = peer.ip().to_canonical();
        let own = || {
            limits
                .own_addresses
                .as_ref()
                .is_some_and(|o| o.contains(ip))
        };
        if !allowed(&limits.allow_from, ip) && !own() {
            metrics.refused.inc();
            tracing::warn!(client = %peer, "Refused a client outside --allow-from.");
            tokio::spawn(refuse(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        metrics.accepted.inc();
        let relay = relay.clone();
        let guard = connections.track();
        let open = metrics.open.clone();
        let not_http = metrics.not_http.clone();
        let stop = graceful_rx.clone();
        let first_byte_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            open.inc();
            // Redirected by iptables: transparent capture (`crate::capture`).
            let redirected = relay
                .capture
                .clone()
                .and_then(|c| Some((c, crate::capture::redirect::original_destination(&stream)?)));
            if let Some((capture, dst)) = redirected {
                crate::capture::serve(relay, capture, stream, peer, dst, stop).await;
                open.dec();
                drop(slot);
                drop(guard);
                return;
            }
            // A connection that does not start like an HTTP request gets a 400 with a
            // reason, not hyper's bare one: most often an app whose proxy URL says
            // https:// and which starts TLS with us.
            match sniff(&stream, first_byte_timeout).await {
                Sniff::Http => relay::serve(relay, stream, peer, stop).await,
                Sniff::NotHttp(first) => {
                    not_http.inc();
                    let reason = not_http_reason(first);
                    tracing::debug!(client = %peer, byte = first, "A client connection did not start with an HTTP request.");
                    reply_and_close(stream, "400 Bad Request", &reason).await;
                }
                Sniff::Gone => {}
            }
            open.dec();
            drop(slot);
            drop(guard);
        });
    }
    drop(listeners);

    let in_flight = connections.active();
    tracing::info!(
        connections = in_flight,
        timeout = ?limits.drain_timeout,
        "Stopped accepting; draining in-flight requests and tunnels."
    );
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        let _ = graceful.send(true);
        connections.wait_idle().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(in_flight, "Drained."),
        Err(_) => tracing::warn!(
            connections = connections.active(),
            "Drain timeout passed; closing what is left."
        ),
    }
}

enum Sniff {
    /// The first byte can start a request line (a method token).
    Http,
    /// It cannot; the byte.
    NotHttp(u8),
    /// Closed, or nothing within the header-read timeout.
    Gone,
}

/// Look at the first byte without consuming it.
async fn sniff(stream: &TcpStream, timeout: Duration) -> Sniff {
    let mut first = [0u8; 1];
    match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if is_token_byte(first[0]) => Sniff::Http,
        Ok(Ok(1)) => Sniff::NotHttp(first[0]),
        _ => Sniff::Gone,
    }
}

/// RFC 9110 `tchar`: what a method name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn not_http_reason(first: u8) -> String {
    if first == 0x16 {
        "whouses-sidecar: this port is a plain-HTTP proxy and the client started a TLS \
         handshake. Set the proxy URL to http://, not https:// \
         (HTTPS_PROXY=http://127.0.0.1:PORT): HTTPS still goes through it, as a CONNECT tunnel.\n"
            .to_string()
    } else {
        format!(
            "whouses-sidecar: not an HTTP request (it starts with byte 0x{first:02x}); this port is an HTTP forward proxy.\n"
        )
    }
}

fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// A short, final answer to a client outside `--allow-from`.
async fn refuse(stream: TcpStream) {
    reply_and_close(
        stream,
        "403 Forbidden",
        "whouses-sidecar: your address is not allowed to use this proxy (see --allow-from)\n",
    )
    .await;
}

/// Write one response with a plain-text reason and close, within two seconds.
async fn reply_and_close(mut stream: TcpStream, status: &str, reason: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}",
        reason.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_start_with_a_token_byte_and_tls_does_not() {
        for b in b"GET CONNECT POST" {
            assert!(is_token_byte(*b) || *b == b' ');
        }
        assert!(!is_token_byte(0x16));
        assert!(!is_token_byte(0x00));
        assert!(not_http_reason(0x16).contains("TLS"));
        assert!(not_http_reason(0x00).contains("0x00"));
    }

    #[test]
    fn allow_from_matches_networks() {
        let nets: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert!(allowed(&nets, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&nets, "10.2.3.4".parse().unwrap()));
        assert!(!allowed(&nets, "127.0.0.2".parse().unwrap()));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(allowed(&nets, mapped.to_canonical()));
    }
}
