//! The collector's HTTP API (axum): ingest, the who-uses queries, health and metrics.
//! [`router`] builds the whole app so tests can drive it with `oneshot`, no network.
//!
//! Errors are `{"error": "…"}` with a 4xx/5xx status and never leak internals.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use whouses_wire::{Report, Timestamp};

use crate::metrics::ApiMetrics;
use crate::store::{Ingested, Store};
use crate::targets::{HostPattern, Targets};

pub mod error;
pub use error::ApiError;

/// A clock that tests can replace.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Reports may claim periods ending at most this far in the future (clock skew).
const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub targets: Arc<Targets>,
    pub ingest_tokens: Arc<Vec<String>>,
    pub read_tokens: Arc<Vec<String>>,
    pub max_body_bytes: usize,
    pub metrics: Arc<ApiMetrics>,
    pub clock: Clock,
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
pub fn router(state: AppState) -> Router {
    routes()
        .layer(axum::Extension(state.metrics.clone()))
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
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::export::api::routes())
        .merge(crate::web::routes())
        .fallback(|| async {
            ApiError::NotFound("no such route; see /v1/callers, /v1/check …".into())
        })
        .layer(middleware::from_fn(time_requests))
}

/// Check a bearer token against the configured ones (all of them, in constant time).
pub fn authorize(tokens: &[String], headers: &HeaderMap, what: &str) -> Result<(), ApiError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(format!(
            "missing bearer token: this collector requires a {what} token (Authorization: Bearer …)"
        )));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    let mut ok = subtle::Choice::from(0u8);
    for t in tokens {
        ok |= t.as_bytes().ct_eq(presented.as_bytes());
    }
    if bool::from(ok) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the {what} token is not valid"
        )))
    }
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
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = &s.metrics;
    authorize(&s.ingest_tokens, &headers, "ingest").inspect_err(|e| m.reject(e.reason()))?;
    let too_large = || {
        ApiError::TooLarge(format!(
            "report body larger than {} bytes (--max-body-bytes)",
            s.max_body_bytes
        ))
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > s.max_body_bytes {
            m.reject("too_large");
            return Err(too_large());
        }
    }
    let bytes = axum::body::to_bytes(body, s.max_body_bytes)
        .await
        .map_err(|_| {
            m.reject("too_large");
            too_large()
        })?;
    let report = Report::from_json(&bytes).map_err(|e| {
        m.reject("invalid");
        ApiError::BadRequest(e.to_string())
    })?;
    let now = s.now();
    if report.period_end.0 > now.0 + MAX_CLOCK_SKEW_MS {
        m.reject("invalid");
        return Err(ApiError::BadRequest(format!(
            "invalid field `period_end`: {} is in the future (collector time {now}); check the sidecar's clock",
            report.period_end
        )));
    }
    match s.store.ingest(&report, now).await {
        Ok(Ingested::Stored { edges }) => {
            m.ingested(edges as u64);
            tracing::debug!(instance = %report.instance, seq = report.seq, edges, "Stored a batch.");
            Ok(Json(serde_json::json!({
                "stored": true, "duplicate": false, "instance": report.instance,
                "seq": report.seq, "edges": edges,
            })))
        }
        Ok(Ingested::Duplicate) => {
            m.duplicate();
            tracing::info!(instance = %report.instance, seq = report.seq,
                "Acknowledged a batch stored before (a retry); not counted again.");
            Ok(Json(serde_json::json!({
                "stored": false, "duplicate": true, "instance": report.instance, "seq": report.seq,
            })))
        }
        Err(error) => {
            m.reject("storage");
            tracing::error!(%error, instance = %report.instance, seq = report.seq, "Failed to store a batch.");
            Err(ApiError::Unavailable(
                "could not store the batch; retry".into(),
            ))
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
        return Ok(Some(s.now().saturating_sub(d)));
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
    headers: HeaderMap,
    q: Result<Query<CallersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&s.read_tokens, &headers, "read")?;
    let q = query(q)?;
    let host = required(&q.host, "host", "tis-reference.internal")?;
    let since = parse_since(&s, q.since.as_deref(), "since")?;
    let r = crate::query::callers(&s.store, host, s.patterns(host)?, since, q.environment).await?;
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
struct CalleesQuery {
    service: Option<String>,
    since: Option<String>,
    environment: Option<String>,
}

async fn callees(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<CalleesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&s.read_tokens, &headers, "read")?;
    let q = query(q)?;
    let service = required(&q.service, "service", "billing")?;
    let since = parse_since(&s, q.since.as_deref(), "since")?;
    let r = crate::query::callees(&s.store, service, since, q.environment).await?;
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
struct HostsQuery {
    unused_since: Option<String>,
}

async fn hosts(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<HostsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&s.read_tokens, &headers, "read")?;
    let q = query(q)?;
    let unused_since = parse_since(&s, q.unused_since.as_deref(), "unused_since")?;
    let r = crate::query::hosts(&s.store, unused_since, s.now()).await?;
    Ok(Json(r).into_response())
}

async fn services(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&s.read_tokens, &headers, "read")?;
    Ok(Json(crate::query::services(&s.store).await?).into_response())
}

#[derive(Debug, Deserialize)]
struct CheckQuery {
    host: Option<String>,
    quiet_for: Option<String>,
}

async fn check(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<CheckQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&s.read_tokens, &headers, "read")?;
    let q = query(q)?;
    let host = required(&q.host, "host", "tis-reference.internal")?;
    let quiet = required(&q.quiet_for, "quiet_for", "14d")?;
    let quiet_for: Duration = whouses_wire::parse_duration(quiet)
        .map_err(|e| ApiError::BadRequest(format!("invalid quiet_for {quiet:?}: {e}")))?;
    let r = crate::check::check(
        &s.store,
        host,
        s.patterns(host)?,
        quiet_for.as_millis() as u64,
        s.now(),
    )
    .await?;
    Ok(Json(r).into_response())
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "Database not reachable; not ready.");
            ApiError::Unavailable("database not reachable".into()).into_response()
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
