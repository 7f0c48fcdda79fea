//! Accepting app connections: the `--allow-from` check, the `--max-connections` bound,
//! one hyper HTTP/1.1 connection per socket (head size and head-read-time limits,
//! keep-alive, upgrades for `CONNECT`), and the drain on shutdown.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::stack::{stack, Shared};
use crate::metrics::ProxyMetrics;

pub struct Limits {
    pub allow_from: Vec<IpNet>,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

/// Serve until `shutdown` completes, then stop accepting and let in-flight requests and
/// tunnels finish within the drain timeout.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    limits: Limits,
    metrics: ProxyMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
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
            accepted = listener.accept() => match accepted {
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
        if !allowed(&limits.allow_from, ip) {
            metrics.refused.inc();
            tracing::warn!(client = %peer, "Refused a client outside --allow-from.");
            tokio::spawn(refuse(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        metrics.accepted.inc();
        let svc = TowerToHyperService::new(stack(shared.clone()));
        let conn = http
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let guard = connections.track();
        let open = metrics.open.clone();
        open.inc();
        let mut stop = graceful_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, client = %peer, "Client connection ended with an error.");
            }
            open.dec();
            drop(slot);
            drop(guard);
        });
    }
    drop(listener);

    let in_flight = connections.active() + shared.tunnels.tracker.active();
    tracing::info!(
        connections = connections.active(),
        tunnels = shared.tunnels.tracker.active(),
        timeout = ?limits.drain_timeout,
        "Stopped accepting; draining in-flight requests."
    );
    let drained = tokio::time::timeout(limits.drain_timeout, async {
        let _ = graceful.send(true);
        connections.wait_idle().await;
        shared.tunnels.tracker.wait_idle().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(in_flight, "Drained."),
        Err(_) => tracing::warn!(
            connections = connections.active(),
            tunnels = shared.tunnels.tracker.active(),
            "Drain timeout passed; closing what is left."
        ),
    }
}

fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// A short, final answer to a client outside `--allow-from`.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        "whouses-sidecar: your address is not allowed to use this proxy (see --allow-from)\n";
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
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
