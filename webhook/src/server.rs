//! The webhook's HTTPS server: `/mutate` (pod label selected), `/mutate/namespace`
//! (namespace label selected: inject unless the pod opts out), `/healthz`, `/metrics`.
//! TLS by rustls; the certificate files are re-read when they change (cert-manager and
//! Kubernetes Secret volumes rotate them in place). Every review gets one log line.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use whouses_plumbing::server::{serve, Limits};
use whouses_plumbing::tls::ReloadingTls;

use crate::ca::CollectorCa;
use crate::config::InjectConfig;
use crate::metrics::Metrics;
use crate::mutate::{self, Outcome};

/// Mutating admission webhook that adds the whouses sidecar to labelled pods.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "whouses-webhook", version, about)]
pub struct WebhookConfig {
    /// HTTPS listener.
    #[arg(long, env = "WHOUSES_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain presented to the API server.
    #[arg(long, env = "WHOUSES_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(long, env = "WHOUSES_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Largest AdmissionReview accepted.
    #[arg(long, env = "WHOUSES_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub inject: InjectConfig,
}

#[derive(Clone)]
struct AppState {
    inject: Arc<InjectConfig>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
}

#[derive(Debug, Deserialize)]
struct MutateQuery {
    /// Set by the namespace-selector webhook entry.
    namespace: Option<bool>,
}

/// The webhook's routes (testable without TLS).
pub fn router(inject: InjectConfig, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .route("/mutate/namespace", post(mutate_namespace_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_handler))
        .with_state(AppState {
            inject: Arc::new(inject),
            metrics: Arc::new(Metrics::default()),
            max_body_bytes,
        })
}

/// The namespace-selector webhook entry: inject unless the pod opts out.
async fn mutate_namespace_handler(State(s): State<AppState>, body: Body) -> Response {
    answer(&s, body, true).await
}

async fn mutate_handler(
    State(s): State<AppState>,
    q: Result<Query<MutateQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let namespace = q.ok().and_then(|Query(q)| q.namespace).unwrap_or(false);
    answer(&s, body, namespace).await
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn answer(s: &AppState, body: Body, namespace: bool) -> Response {
    let bytes = match axum::body::to_bytes(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            s.metrics.record_malformed();
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(serde_json::json!({"error": format!("review larger than {} bytes", s.max_body_bytes)})),
            )
                .into_response();
        }
    };
    // Read for every review: small, and a rotated CA reaches the next pod.
    let ca = CollectorCa::load(s.inject.collector_ca.as_deref());
    match mutate::review(&bytes, &s.inject, &ca, namespace) {
        Ok(answer) => {
            s.metrics.record(&answer.outcome);
            log(&answer.pod, &answer.outcome);
            Json(answer.review).into_response()
        }
        Err(e) => {
            s.metrics.record_malformed();
            tracing::warn!(error = %e, "Rejected a malformed admission review.");
            (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": e.to_string()})),
            )
                .into_response()
        }
    }
}

/// One line per review: what happened to which pod.
fn log(pod: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Injected {
            service,
            environment,
            warnings,
        } if warnings.is_empty() => {
            tracing::info!(pod, service, environment, "Injected the sidecar.")
        }
        Outcome::Injected {
            service,
            environment,
            warnings,
        } => tracing::warn!(
            pod,
            service,
            environment,
            warnings = %warnings.join("; "),
            "Injected the sidecar, with warnings."
        ),
        Outcome::Skipped { reason, detail } => tracing::warn!(
            pod,
            reason = reason.label(),
            detail,
            "Admitted a pod without the sidecar."
        ),
        Outcome::NotSelected => tracing::debug!(pod, "Pod not selected for injection."),
        Outcome::AlreadyInjected => tracing::debug!(pod, "Pod already injected."),
    }
}

/// Serve HTTPS on `listener` until `shutdown`.
pub async fn run(
    cfg: WebhookConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = ReloadingTls::new(cfg.tls_cert.clone(), cfg.tls_key.clone())?;
    if let CollectorCa::Unavailable(why) = CollectorCa::load(cfg.inject.collector_ca.as_deref()) {
        // Not fatal: the file may appear later (an optional Secret volume); until then
        // pods are admitted without the sidecar, each with a warning.
        tracing::warn!(reason = %why, "The collector CA is not usable yet; pods will not be injected until it is.");
    }
    let app = router(cfg.inject.clone(), cfg.max_body_bytes);
    let addr = listener.local_addr()?;
    tracing::info!(listen = %addr, "Injection webhook started.");
    whouses_plumbing::listening::announce(&[("webhook", addr)], &[]);
    let limits = Limits {
        // The API server is the only client; a few connections are plenty.
        max_connections: 256,
        ..Limits::default()
    };
    serve(listener, app, Some(tls), limits, shutdown).await;
    tracing::info!("Injection webhook stopped.");
    Ok(())
}
