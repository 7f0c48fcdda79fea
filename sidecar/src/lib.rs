//! `whouses-sidecar`: a forward proxy that counts, exactly, every call per upstream host,
//! and ships the counts to a whouses collector.
//!
//! Module map, in the order a request meets them:
//!
//! * [`config`] — flags (`WHOUSES_*` env), checked once.
//! * [`proxy`] — accept loop ([`proxy::server`]), the request path of one connection, top
//!   to bottom ([`proxy::relay`]), routing, head parsing, tunnels, dialing.
//! * [`counters`] — **where a request is counted**: sharded atomic counters per key.
//! * [`shipper`] — numbered batches to the collector, retries, spool, final flush.
//! * [`admin`] — `/healthz`, `/readyz`, `/metrics`, `/stats`.
//! * [`metrics`] — Prometheus metrics.
//!
//! [`run`] wires them together and owns the shutdown order: stop accepting → drain
//! in-flight requests and tunnels → final flush → exit.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use whouses_wire::Timestamp;

pub mod admin;
pub mod config;
pub mod counters;
pub mod metrics;
pub mod proxy;
pub mod shipper;

pub use config::Config;

/// Who is calling: the identity every batch carries.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: String,
    pub environment: String,
    pub instance: String,
    pub started_at: Timestamp,
}

/// Run the sidecar on already-bound listeners until `shutdown` completes, then drain and
/// ship a final flush. Installs no global state, so several can run in one process.
pub async fn run(
    config: Config,
    proxy_listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let identity = Identity {
        service: config.service.clone(),
        environment: config.environment.clone(),
        instance: config.instance_id(),
        started_at: Timestamp::now(),
    };
    let counters = Arc::new(counters::Counters::new(config.max_hosts as usize));
    let mut registry = Registry::default();
    let shipper =
        shipper::Shipper::start(&config, identity.clone(), counters.clone(), &mut registry)?;
    let proxy_metrics = metrics::ProxyMetrics::register(&mut registry, counters.clone());

    let pool = Arc::new(proxy::upstream::Pool::new(config.idle_timeout.0));
    pool.sweep_idle();
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let relay = Arc::new(proxy::relay::Relay {
        counters: counters.clone(),
        router: Box::new(proxy::route::ExplicitProxy),
        dialer: proxy::connect::Dialer::new(&config.resolve, config.connect_timeout.0),
        pool,
        max_header_bytes: config.max_header_bytes as usize,
        header_read_timeout: config.header_read_timeout.0,
        tunnel_splice: config.tunnel_splice,
    });

    let admin_state = Arc::new(admin::AdminState {
        identity: identity.clone(),
        counters: counters.clone(),
        registry,
        shipping: shipper.as_ref().map(|s| s.status_handle()),
        draining: AtomicBool::new(false),
    });
    let (admin_stop, mut admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        admin_state.clone(),
        async move {
            let _ = admin_stop_rx.wait_for(|s| *s).await;
        },
    ));

    tracing::info!(
        service = %identity.service,
        environment = %identity.environment,
        instance = %identity.instance,
        listen = %proxy_listener.local_addr()?,
        collector = config.collector_url.as_deref().unwrap_or("none (count only)"),
        "Sidecar started."
    );
    let admin_ref = admin_state.clone();
    proxy::server::serve(
        proxy_listener,
        relay,
        slots,
        proxy::server::Limits {
            allow_from: config.allowed_networks(),
            header_read_timeout: config.header_read_timeout.0,
            drain_timeout: config.drain_timeout.0,
        },
        proxy_metrics,
        async move {
            shutdown.await;
            admin_ref.draining.store(true, Ordering::Release);
        },
    )
    .await;

    if let Some(shipper) = shipper {
        shipper.shutdown(config.final_flush_timeout.0).await;
    }
    let _ = admin_stop.send(true);
    let _ = admin_task.await;
    tracing::info!("Sidecar stopped.");
    Ok(())
}
