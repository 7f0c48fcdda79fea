//! `whouses-collector` and the `whouses` CLI.
//!
//! Module map, in the order a batch and a question meet them:
//!
//! * [`config`] — flags (`WHOUSES_*` env).
//! * [`api`] — the HTTP API: `POST /v1/reports` (ingest) and the queries.
//! * [`store`] — **where a batch is stored**: one narrow interface, SQLite backend.
//! * [`query`] — **where a query is answered**: callers, callees, hosts, services.
//! * [`check`] — the safety gate: unused / in-use / unknown, with evidence.
//! * [`targets`] — host patterns and named targets (`--targets`).
//! * [`export`] — the traffic report (CSV, JSON, Markdown, DOT, HTML) and the SVG graph.
//! * [`web`] — the web page at `/`.
//! * [`cli`] — the `whouses` command.
//! * [`demo`] — `whouses demo`, the whole loop in one process.
//! * [`webhook`] — the Kubernetes sidecar-injection webhook (`whouses-webhook`).
//!
//! [`run`] serves the API on a bound listener until `shutdown`, finishing in-flight
//! commits, and prunes old data by `--retention` in the background.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use whouses_wire::Timestamp;

pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod export;
pub mod metrics;
pub mod query;
pub mod store;
pub mod targets;
pub mod web;
pub mod webhook;

pub use config::Config;

/// Build the application state from a configuration (opens and migrates the database).
pub async fn state(config: &Config) -> anyhow::Result<api::AppState> {
    let store = store::Store::open(&config.db)
        .await
        .with_context(|| format!("cannot open --db {}", config.db))?;
    let targets = match &config.targets {
        Some(p) => targets::Targets::load(p)?,
        None => targets::Targets::default(),
    };
    Ok(api::AppState {
        store,
        targets: Arc::new(targets),
        ingest_tokens: Arc::new(Config::tokens(
            &config.ingest_tokens,
            config.ingest_token_file.as_deref(),
        )?),
        read_tokens: Arc::new(Config::tokens(
            &config.read_tokens,
            config.read_token_file.as_deref(),
        )?),
        max_body_bytes: config.max_body_bytes,
        metrics: Arc::new(metrics::ApiMetrics::new()),
        clock: Arc::new(Timestamp::now),
    })
}

/// Serve on `listener` until `shutdown` completes. Installs no global state.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = state(&config).await?;
    let store = state.store.clone();
    let retention = config.retention.0;
    let pruner = tokio::spawn(upkeep_loop(store.clone(), retention, config.hourly_for.0));
    if state.ingest_tokens.is_empty() {
        tracing::warn!("No --ingest-token: anyone who can reach this port can submit counts.");
    }
    tracing::info!(listen = %listener.local_addr()?, db = %config.db, "Collector started.");
    let app = api::router(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")?;
    // In-flight requests (and their commits) have finished when serve returns.
    pruner.abort();
    store.close().await;
    tracing::info!("Collector stopped.");
    Ok(())
}

/// Hourly upkeep: fold old hourly buckets into daily ones, then apply the retention.
async fn upkeep_loop(store: store::Store, retention: Duration, hourly_for: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        match store.rollup(now.saturating_sub(hourly_for)).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "Folded hourly buckets into daily ones."),
            Err(error) => tracing::warn!(%error, "Failed to fold hourly buckets."),
        }
        let cutoff = now.saturating_sub(retention);
        match store.prune(cutoff).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, %cutoff, "Pruned data older than the retention."),
            Err(error) => tracing::warn!(%error, "Failed to prune old data."),
        }
    }
}
