//! An HTTP/1.1 server loop for a tower service (an axum `Router`), with the limits an
//! outsider must not be able to push past, and an orderly stop.
//!
//! * at most `max_connections` at once: beyond, new connections wait in the kernel's
//!   backlog instead of costing memory here;
//! * a request head must arrive within `header_read_timeout` (slowloris) and fit in
//!   `max_header_bytes`; a TLS handshake within `handshake_timeout`;
//! * on shutdown: stop accepting, let each connection finish its current request, and
//!   give up on what is left after `drain_timeout`.
//!
//! Bodies and handler time are bounded by the service itself (body limits, a timeout
//! layer), since only it knows what a route may take.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};

use crate::tls::ReloadingTls;

/// The server's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// Live connections, so the drain can wait for them.
#[derive(Default)]
struct Live {
    n: AtomicUsize,
    idle: Notify,
}

struct LiveGuard(Arc<Live>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Serve `service` on `listener` (over TLS when `tls` is set) until `shutdown` completes,
/// then drain. Returns when every connection has finished or the drain timed out.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    tls: Option<ReloadingTls>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let live = Arc::new(Live::default());
    let (stop, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "Failed to accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        live.n.fetch_add(1, Ordering::AcqRel);
        let guard = LiveGuard(live.clone());
        let http = http.clone();
        let svc = TowerToHyperService::new(service.clone());
        let mut stop = stop_rx.clone();
        let acceptor = tls.as_ref().map(ReloadingTls::current);
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            let _guard = guard;
            macro_rules! drive {
                ($io:expr) => {{
                    let conn = http.serve_connection(TokioIo::new($io), svc);
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        r = conn.as_mut() => r,
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "Connection ended with an error.");
                    }
                }};
            }
            match acceptor {
                None => drive!(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => drive!(tls),
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed.")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                    }
                }
            }
        });
    }
    drop(listener);
    let open = live.n.load(Ordering::Acquire);
    if open > 0 {
        tracing::info!(connections = open, timeout = ?limits.drain_timeout,
            "Stopped accepting; finishing in-flight requests.");
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        loop {
            let idle = live.idle.notified();
            if live.n.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = live.n.load(Ordering::Acquire),
            "Drain timeout passed; closing what is left."
        );
    }
}
