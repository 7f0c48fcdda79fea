//! `whouses-collector`: receives the sidecars' counts, keeps them, answers "who uses X?".
//!
//! Module map, in the order a batch and a question meet them:
//!
//! * [`config`] — flags (`WHOUSES_*` env), checked as a whole.
//! * [`auth`] — ingest and read tokens (ingest tokens scoped to services), as extractors.
//! * [`api`] — the HTTP API: `POST /v1/reports` (ingest) and the queries.
//! * [`store`] — **where a batch is stored**: one narrow trait; SQLite and PostgreSQL.
//! * [`query`] — **where a query is answered**: callers, callees, hosts, services.
//! * [`check`] — **where a verdict is decided**: unused / in-use / unknown, with evidence.
//! * [`reconcile`] — **where both sides of a call meet**: inbound calls attributed through
//!   the address book, merged with the callers' own counts (issue 14).
//! * [`targets`] — host patterns and named targets (`--targets`).
//! * [`export`] — the traffic report (CSV, JSON, Markdown, DOT, HTML) and the SVG graph.
//! * [`web`] — the web page at `/`.
//! * [`metrics`] — `/metrics`.
//! * [`otel`] — OpenTelemetry: OTLP ingest of service-graph metrics, OTLP export of edges.
//!
//! The decommission workflow (issue 16), state in [`workflow`]:
//!
//! * [`watch`] — watches on hosts being retired, their alerts and notifications
//!   (Alertmanager or a webhook), the notifier that runs in the background.
//! * [`migration`] — callers moving from an old host to a new one, and the checklist.
//! * [`diff`] — what changed between two periods; [`timeline`] — calls per step.
//! * [`owners`] — who owns a service (`--owners`, or the sidecars' `--owner`).
//!
//! [`run`] serves the API on a bound listener until `shutdown`, finishing in-flight
//! commits, and keeps the data tidy (rollup, retention) in the background.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use whouses_plumbing::server::{self, Limits};
use whouses_plumbing::tls::ReloadingTls;
use whouses_wire::Timestamp;

pub mod api;
pub mod auth;
pub mod check;
pub mod config;
pub mod diff;
pub mod export;
pub mod metrics;
pub mod migration;
pub mod otel;
pub mod owners;
pub mod query;
pub mod reconcile;
pub mod store;
pub mod targets;
pub mod timeline;
pub mod watch;
pub mod web;
pub mod workflow;

pub use config::Config;

/// Idempotency records older than this are folded into a per-instance floor.
const SEEN_KEEP: Duration = Duration::from_secs(30 * 86_400);
/// How often old hourly buckets are folded and retention is applied.
const UPKEEP_EVERY: Duration = Duration::from_secs(3600);

/// Check the configuration, then open (and migrate) its database.
async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn store::Store>> {
    config.validate().map_err(anyhow::Error::msg)?;
    let options = store::Options {
        min_free_bytes: config.min_free_space,
    };
    store::open_with(&config.db, &options)
        .await
        .with_context(|| format!("cannot open --db {}", store::redact(&config.db)))
}

/// Build the application state from a configuration (opens and migrates the database).
pub async fn state(config: &Config, clock: api::Clock) -> anyhow::Result<api::AppState> {
    let store = open_store(config).await?;
    let targets = match &config.targets {
        Some(p) => targets::Targets::load(p)?,
        None => targets::Targets::default(),
    };
    let workflow = Arc::new(workflow::Workflow::from_config(config)?);
    let mut metrics = metrics::ApiMetrics::new();
    workflow.live.register(metrics.registry());
    Ok(api::AppState {
        workflow,
        store,
        targets: Arc::new(targets),
        ingest_tokens: Arc::new(config.ingest().map_err(anyhow::Error::msg)?),
        read_tokens: Arc::new(config.read().map_err(anyhow::Error::msg)?),
        max_body_bytes: usize::try_from(config.max_body_bytes).unwrap_or(usize::MAX),
        ingest_slots: Arc::new(tokio::sync::Semaphore::new(
            config.max_concurrent_ingest as usize,
        )),
        max_backfill_ms: i64::try_from(config.max_backfill.0.as_millis()).unwrap_or(i64::MAX),
        metrics: Arc::new(metrics),
        clock,
    })
}

/// Serve on `listener` until `shutdown` completes. Installs no global state.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // TLS files first: a bad certificate is a startup error before anything is created.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(ReloadingTls::new(cert.clone(), key.clone())?),
        _ => None,
    };
    let state = state(&config, Arc::new(Timestamp::now)).await?;
    let store = state.store.clone();
    let upkeep = tokio::spawn(upkeep_loop(
        store.clone(),
        state.clock.clone(),
        config.retention.0,
        config.hourly_for.0,
    ));
    if state.ingest_tokens.is_empty() {
        tracing::warn!("No --ingest-token: anyone who can reach this port can submit counts.");
    }
    if state.read_tokens.is_empty() {
        tracing::warn!("No --read-token: anyone who can reach this port can read every edge.");
    }
    if state.workflow.admin_tokens.is_empty() {
        tracing::warn!("No --admin-token: anyone who can reach this port can add watches, which make the collector send requests to the URLs they name.");
    }
    let (stop_notifier, notifier_stop) = tokio::sync::watch::channel(false);
    let notifier = tokio::spawn(watch::notifier::run(state.clone(), notifier_stop));
    // OTLP export (issue 17): pushes the stored edges until shutdown, then once more.
    let (otlp_stop, otlp_task) = match otel::export::Exporter::new(&config.otlp)? {
        Some(exporter) => {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task =
                tokio::spawn(
                    exporter.run(store.clone(), config.otlp.otlp_interval.0, async {
                        let _ = stopped.await;
                    }),
                );
            (Some(stop), Some(task))
        }
        None => (None, None),
    };
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, db = %store::redact(&config.db), tls = tls.is_some(), "Collector started.");
    whouses_plumbing::listening::announce(&[("api", addr)], &[]);
    let app = api::router(state, config.request_timeout.0);
    let limits = Limits {
        max_connections: config.max_connections as usize,
        header_read_timeout: config.header_read_timeout.0,
        drain_timeout: config.drain_timeout.0,
        ..Limits::default()
    };
    server::serve(listener, app, tls, limits, shutdown).await;
    // In-flight requests (and their commits) have finished when serve returns.
    upkeep.abort();
    let _ = stop_notifier.send(true);
    let _ = notifier.await;
    if let Some(stop) = otlp_stop {
        let _ = stop.send(());
    }
    if let Some(task) = otlp_task {
        let _ = task.await;
    }
    store.close().await;
    tracing::info!("Collector stopped.");
    Ok(())
}

/// Hourly upkeep: fold old hourly buckets into daily ones, then apply the retention.
async fn upkeep_loop(
    store: Arc<dyn store::Store>,
    clock: api::Clock,
    retention: Duration,
    hourly_for: Duration,
) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        upkeep(store.as_ref(), clock(), retention, hourly_for).await;
    }
}

/// `--upkeep-once`: open (and migrate) the database, run one round of upkeep now, close.
/// An error of any step is the command's error (the loop only logs them).
pub async fn upkeep_once(config: &Config) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let started = std::time::Instant::now();
    tracing::info!(db = %store::redact(&config.db), "Upkeep: one round, now.");
    let failed = upkeep(
        store.as_ref(),
        Timestamp::now(),
        config.retention.0,
        config.hourly_for.0,
    )
    .await;
    store.close().await;
    match failed {
        Some(step) => anyhow::bail!("upkeep failed to {step} (see the log above)"),
        None => {
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "Upkeep done.");
            Ok(())
        }
    }
}

/// One round of upkeep at time `now`. Each step runs even when an earlier one failed
/// (logged); returns what the first failure was failing to do.
pub async fn upkeep(
    store: &dyn store::Store,
    now: Timestamp,
    retention: Duration,
    hourly_for: Duration,
) -> Option<&'static str> {
    let mut failed = None;
    match store.rollup(now.saturating_sub(hourly_for)).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, "Folded hourly buckets into daily ones."),
        Err(error) => {
            tracing::warn!(%error, "Failed to fold hourly buckets.");
            failed = failed.or(Some("fold hourly buckets"));
        }
    }
    let cutoff = now.saturating_sub(retention);
    match store.prune(cutoff, now.saturating_sub(SEEN_KEEP)).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, %cutoff, "Pruned data older than the retention."),
        Err(error) => {
            tracing::warn!(%error, "Failed to prune old data.");
            failed = failed.or(Some("prune old data"));
        }
    }
    // OTLP series rows (issue 17) unchanged for the whole retention.
    match store.otel_prune(cutoff).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, "Pruned OTLP series not seen within the retention."),
        Err(error) => {
            tracing::warn!(%error, "Failed to prune OTLP series.");
            failed = failed.or(Some("prune OTLP series"));
        }
    }
    failed
}
