//! The collector's HTTP API (axum): ingest, the who-uses queries, health and metrics.
//! [`router`] builds the whole app so tests can drive it with `oneshot`, no network.
//!
//! Errors are `{"error": "…"}` with a 4xx/5xx status and never leak internals.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use whouses_wire::{Report, Timestamp};

use crate::auth::{IngestAccess, ReadAccess, Tokens};
use crate::metrics::ApiMetrics;
use crate::store::{buckets, Batch, Ingested, Store};
use crate::targets::{HostPattern, Targets};

pub mod decom;
pub mod error;
pub use error::ApiError;

/// A clock that tests can replace.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Reports may claim periods ending at most this far in the future (clock skew).
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// The longest quiet period or `since` window a query may ask for.
const MAX_WINDOW: Duration = Duration::from_secs(100 * 365 * 86_400);
/// Largest refused body read to its end before the 413 is sent.
const MAX_DRAIN_BYTES: u64 = 16 * 1024 * 1024;

/// Read a body to its end, keeping none of it.
async fn drain(body: Body) {
    use http_body_util::BodyExt as _;
    let mut body = body;
    while let Some(Ok(_)) = body.frame().await {}
}

/// How long a report waits for a free ingest slot before it is told to retry.
const INGEST_SLOT_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub targets: Arc<Targets>,
    pub ingest_tokens: Arc<Tokens>,
    pub read_tokens: Arc<Tokens>,
    pub max_body_bytes: usize,
    /// Report bodies being read or stored at once (bounds memory).
    pub ingest_slots: Arc<Semaphore>,
    /// How far back a batch's period is trusted as coverage (`--max-backfill`).
    pub max_backfill_ms: i64,
    pub metrics: Arc<ApiMetrics>,
    pub clock: Clock,
    /// The decommission workflow: owners, watches and alerts (issue 16).
    pub workflow: Arc<crate::workflow::Workflow>,
}

impl AppState {
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The host patterns a `host` query parameter stands for.
    pub fn patterns(&self, host: &str) -> Result<Vec<HostPattern>, ApiError> {
        self.targets.resolve(host).map_err(ApiError::BadRequest)
    }
}

/// Every route of the collector.
/// Every route of the collector; a request (its body included) must be answered within
/// `request_timeout` (408 otherwise), so a slow sender cannot hold a slot forever.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    routes()
        .layer(axum::Extension(state.metrics.clone()))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .with_state(state)
}

/// The routes, for merging more in (export, web page) before `with_state`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/reports", post(ingest))
        .route("/v1/callers", get(callers))
        .route("/v1/callees", get(callees))
        .route("/v1/hosts", get(hosts))
        .route("/v1/services", get(services))
        .route("/v1/check", get(check))
        .route("/v1/coverage", get(coverage))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::export::api::routes())
        .merge(crate::web::routes())
        .merge(decom::routes())
        .merge(crate::watch::api::routes())
        // OTLP ingest (issue 17).
        .merge(crate::otel::api::routes())
        .fallback(|| async {
            ApiError::NotFound("no such route; see /v1/callers, /v1/check …".into())
        })
        .layer(middleware::from_fn(time_requests))
}

async fn time_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let metrics = req.extensions().get::<Arc<ApiMetrics>>().cloned();
    let started = Instant::now();
    let resp = next.run(req).await;
    if let (Some(route), Some(m)) = (route, metrics) {
        m.observe(&route, started.elapsed());
    }
    resp
}

async fn ingest(
    State(s): State<AppState>,
    access: IngestAccess,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = &s.metrics;
    let reject = |reason: &'static str| m.reject(reason);
    let too_large = || {
        ApiError::TooLarge(format!(
            "report body larger than {} bytes (--max-body-bytes); split the batch",
            s.max_body_bytes
        ))
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > s.max_body_bytes as u64 {
            reject("too_large");
            // Read (and drop) a body of sane size before answering, so the sender sees
            // the 413 rather than a connection reset in the middle of its upload.
            if len <= MAX_DRAIN_BYTES {
                drain(body).await;
            }
            return Err(too_large());
        }
    }
    // Bound the memory report bodies can hold: wait for a slot before reading one.
    let _slot = match tokio::time::timeout(INGEST_SLOT_WAIT, s.ingest_slots.acquire()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            reject("busy");
            return Err(ApiError::Unavailable(
                "too many reports in flight; retry".into(),
            ));
        }
    };
    let bytes = axum::body::to_bytes(body, s.max_body_bytes)
        .await
        .map_err(|_| {
            reject("too_large");
            too_large()
        })?;
    let report = Report::from_json(&bytes).map_err(|e| {
        reject("invalid");
        ApiError::BadRequest(e.to_string())
    })?;
    access
        .allow(&report.service, &report.environment)
        .inspect_err(|_| reject("out_of_scope"))?;
    let now = s.now();
    if report.period_end.0 > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
        reject("invalid");
        return Err(ApiError::BadRequest(format!(
            "invalid field `period_end`: {} is in the future (collector time {now}); check the sidecar's clock",
            report.period_end
        )));
    }
    let coverage = buckets::trusted_coverage(&report, now, s.max_backfill_ms, MAX_CLOCK_SKEW_MS);
    if coverage.is_none() {
        tracing::info!(instance = %report.instance, seq = report.seq, period_end = %report.period_end,
            "A batch about a period older than --max-backfill: its counts are stored, its coverage is not.");
    }
    let (instance, seq) = (report.instance.clone(), report.seq);
    let owner = report
        .owner
        .clone()
        .map(|o| (report.service.clone(), report.environment.clone(), o));
    let batch = Batch {
        report,
        received: now,
        coverage,
    };
    match s.store.ingest(batch).await {
        Ok(Ingested::Stored { edges }) => {
            m.ingested(edges as u64);
            if let Some((service, environment, owner)) = owner {
                s.workflow
                    .owners
                    .note_reported(s.store.as_ref(), &service, &environment, &owner, now)
                    .await;
            }
            tracing::debug!(%instance, seq, edges, "Stored a batch.");
            Ok(Json(serde_json::json!({
                "stored": true, "duplicate": false, "instance": instance,
                "seq": seq, "edges": edges,
            })))
        }
        Ok(Ingested::Duplicate) => {
            m.duplicate();
            tracing::info!(%instance, seq,
                "Acknowledged a batch stored before (a retry); not counted again.");
            Ok(Json(serde_json::json!({
                "stored": false, "duplicate": true, "instance": instance, "seq": seq,
            })))
        }
        Err(error) => {
            let e = ApiError::from(error);
            reject(if matches!(e, ApiError::Conflict(_)) {
                "conflict"
            } else {
                "storage"
            });
            tracing::warn!(error = %e, %instance, seq, "Failed to store a batch.");
            Err(e)
        }
    }
}

/// `since=30d` (a duration back from now) or an RFC 3339 time.
pub fn parse_since(
    s: &AppState,
    v: Option<&str>,
    name: &str,
) -> Result<Option<Timestamp>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(d) = whouses_wire::parse_duration(v) {
        return Ok(Some(s.now().saturating_sub(d.min(MAX_WINDOW))));
    }
    Timestamp::parse_rfc3339(v).map(Some).map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid {name} {v:?}: expected a duration (30d, 12h) or an RFC 3339 time"
        ))
    })
}

pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("invalid query: {}", e.body_text())))
}

fn required<'a>(v: &'a Option<String>, name: &str, example: &str) -> Result<&'a str, ApiError> {
    v.as_deref()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "missing query parameter `{name}` (e.g. ?{name}={example})"
            ))
        })
}

#[derive(Debug, Deserialize)]
struct CallersQuery {
    host: Option<String>,
    since: Option<String>,
    environment: Option<String>,
}

async fn callers(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<CallersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let host = required(&q.host, "host", "tis-reference.internal")?;
    let since = parse_since(&s, q.since.as_deref(), "since")?;
    let mut r = crate::query::callers(
        s.store.as_ref(),
        host,
        s.patterns(host)?,
        since,
        q.environment,
    )
    .await?;
    s.workflow
        .owners
        .fill_callers(s.store.as_ref(), &mut r.callers)
        .await?;
    sized_json(&r, r.callers.len().saturating_mul(320).saturating_add(4096))
}

#[derive(Debug, Deserialize)]
struct CalleesQuery {
    service: Option<String>,
    since: Option<String>,
    environment: Option<String>,
}

async fn callees(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<CalleesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let service = required(&q.service, "service", "billing")?;
    let since = parse_since(&s, q.since.as_deref(), "since")?;
    let r = crate::query::callees(s.store.as_ref(), service, since, q.environment).await?;
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
struct HostsQuery {
    unused_since: Option<String>,
}

async fn hosts(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<HostsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let unused_since = parse_since(&s, q.unused_since.as_deref(), "unused_since")?;
    let r = crate::query::hosts(s.store.as_ref(), unused_since, s.now()).await?;
    Ok(Json(r).into_response())
}

async fn services(State(s): State<AppState>, _: ReadAccess) -> Result<Response, ApiError> {
    Ok(Json(crate::query::services(s.store.as_ref()).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct CheckQuery {
    host: Option<String>,
    quiet_for: Option<String>,
}

async fn check(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<CheckQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let host = required(&q.host, "host", "tis-reference.internal")?;
    let quiet = required(&q.quiet_for, "quiet_for", "14d")?;
    let quiet_for: Duration = whouses_wire::parse_duration(quiet)
        .map_err(|e| ApiError::BadRequest(format!("invalid quiet_for {quiet:?}: {e}")))?;
    if quiet_for > MAX_WINDOW || quiet_for.is_zero() {
        return Err(ApiError::BadRequest(format!(
            "invalid quiet_for {quiet:?}: must be more than 0 and at most 100 years"
        )));
    }
    // The owners are read beside the evidence, not after it.
    let (r, owners) = tokio::join!(
        crate::check::check(
            s.store.as_ref(),
            host,
            s.patterns(host)?,
            quiet_for.as_millis() as u64,
            s.now(),
        ),
        s.workflow.owners.map(s.store.as_ref()),
    );
    let mut r = r?;
    owners?.fill_check(&mut r);
    // About 300 bytes per caller row (a host may have a thousand callers, twice).
    let rows = r.callers.len().saturating_add(r.evidence.len());
    sized_json(&r, rows.saturating_mul(320).saturating_add(4096))
}

/// A JSON answer serialized into a buffer sized up front: `Json` starts at 128 bytes and
/// doubles, copying a large answer a dozen times on its way.
fn sized_json<T: serde::Serialize>(v: &T, capacity: usize) -> Result<Response, ApiError> {
    let mut buf = Vec::with_capacity(capacity.min(64 << 20));
    match serde_json::to_writer(&mut buf, v) {
        Ok(()) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            buf,
        )
            .into_response()),
        Err(error) => {
            tracing::error!(%error, "Could not serialize an answer.");
            Err(ApiError::Internal)
        }
    }
}

#[derive(Debug, Deserialize)]
struct CoverageQuery {
    since: Option<String>,
}

/// `GET /v1/coverage[?since=DUR]`: every host with a callee-side (inbound) sidecar, the
/// share of its inbound calls attributed to known callers, and the addresses still to
/// find (issue 14).
async fn coverage(
    State(s): State<AppState>,
    _: ReadAccess,
    q: Result<Query<CoverageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let since = parse_since(&s, q.since.as_deref(), "since")?;
    let r = crate::query::coverage(s.store.as_ref(), since).await?;
    Ok(Json(r).into_response())
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "Database not ready.");
            let why = match error {
                crate::store::StoreError::Full(_) => error.to_string(),
                _ => "database not reachable".to_string(),
            };
            ApiError::Unavailable(format!("not ready: {why}")).into_response()
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    match s.metrics.encode(&mut out) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            out,
        )
            .into_response(),
        Err(_) => ApiError::Internal.into_response(),
    }
}

/// Query parameters as a map, for handlers added by other modules.
pub type Params = HashMap<String, String>;
