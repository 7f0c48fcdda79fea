//! `POST /v1/otlp/v1/metrics`: OTLP/HTTP metrics (protobuf or JSON, gzip or not) from an
//! OpenTelemetry Collector, Tempo or Beyla. An OTLP exporter configured with the endpoint
//! `http://COLLECTOR/v1/otlp` posts here. Same door as `POST /v1/reports`: the ingest
//! token and its scope (a scoped token may report only for its client services), the
//! body slots and size bound; then [`super::decode`] and [`super::ingest`].
//!
//! Answers as OTLP/HTTP expects: 200 with an empty `ExportMetricsServiceResponse`
//! (protobuf or `{}` JSON, like the request); 400 with a reason naming the bad field
//! and nothing stored; 413; 503 to retry.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::decode::{self, Encoding};
use crate::api::{ApiError, AppState, MAX_CLOCK_SKEW_MS};
use crate::auth::IngestAccess;

/// The path an OTLP/HTTP exporter with endpoint `…/v1/otlp` posts metrics to.
pub const PATH: &str = "/v1/otlp/v1/metrics";
/// How much larger than `--max-body-bytes` a gzip body may inflate.
const INFLATE_FACTOR: usize = 16;
/// The most an inflated body may take, whatever `--max-body-bytes` says.
const MAX_INFLATED: usize = 64 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, post(metrics))
}

async fn metrics(
    State(s): State<AppState>,
    access: IngestAccess,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = &s.metrics;
    let reject = |reason: &'static str| m.reject(reason);
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let encoding = Encoding::from_content_type(header_str(header::CONTENT_TYPE)).map_err(|e| {
        reject("invalid");
        ApiError::BadRequest(e)
    })?;
    let too_large = || {
        ApiError::TooLarge(format!(
            "OTLP body larger than {} bytes (--max-body-bytes); lower the exporter's batch size",
            s.max_body_bytes
        ))
    };
    let _slot =
        match tokio::time::timeout(std::time::Duration::from_secs(10), s.ingest_slots.acquire())
            .await
        {
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
    let limit = s
        .max_body_bytes
        .saturating_mul(INFLATE_FACTOR)
        .min(MAX_INFLATED);
    let raw =
        decode::decompress(&bytes, header_str(header::CONTENT_ENCODING), limit).map_err(|e| {
            reject("invalid");
            ApiError::BadRequest(e)
        })?;
    let decoded = decode::decode(&raw, encoding).map_err(|e| {
        reject("invalid");
        ApiError::BadRequest(e)
    })?;
    let now = s.now();
    for p in &decoded.points {
        access
            .allow(&p.service, &p.environment)
            .inspect_err(|_| reject("out_of_scope"))?;
        if p.time_ms > now.0.saturating_add(MAX_CLOCK_SKEW_MS) {
            reject("invalid");
            return Err(ApiError::BadRequest(format!(
                "invalid field `timeUnixNano`: a point of client {:?} is in the future (collector time {now}); check the exporter's clock",
                p.service
            )));
        }
    }
    let outcome = super::ingest::ingest(
        s.store.as_ref(),
        &decoded.points,
        now,
        s.max_backfill_ms,
        MAX_CLOCK_SKEW_MS,
    )
    .await
    .map_err(|error| {
        let e = ApiError::from(error);
        reject("storage");
        tracing::warn!(error = %e, "Failed to store an OTLP export.");
        e
    })?;
    m.ingested(outcome.edges as u64);
    tracing::debug!(
        points = outcome.points,
        duplicates = outcome.duplicates,
        edges = outcome.edges,
        ignored = decoded.ignored,
        "Stored an OTLP export."
    );
    // An empty ExportMetricsServiceResponse: zero bytes in protobuf, `{}` in JSON.
    Ok(match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Encoding::Json => ([(header::CONTENT_TYPE, "application/json")], "{}").into_response(),
    })
}
