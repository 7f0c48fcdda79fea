//! The webhook's HTTPS server: `/mutate` (pod label selected), `/mutate/namespace`
//! (namespace label selected: inject unless the pod opts out), `/healthz`. TLS by rustls; the certificate files are
//! re-read when they change (cert-manager rotates them in place).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::mutate::{self, InjectConfig};

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
        .with_state(AppState {
            inject: Arc::new(inject),
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

async fn answer(s: &AppState, body: Body, namespace: bool) -> Response {
    let bytes = match axum::body::to_bytes(body, s.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(serde_json::json!({"error": format!("review larger than {} bytes", s.max_body_bytes)})),
            )
                .into_response()
        }
    };
    match mutate::review(&bytes, &s.inject, namespace) {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "Rejected a malformed admission review.");
            (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({"error": e.to_string()})),
            )
                .into_response()
        }
    }
}

/// A TLS acceptor built from the files, rebuilt when they change.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    loaded: Option<SystemTime>,
    acceptor: TlsAcceptor,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("cannot open --tls-cert {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("invalid PEM in {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("cannot open --tls-key {}", key.display()))?,
    ))
    .with_context(|| format!("invalid PEM in {}", key.display()))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Tls {
    fn new(cert: PathBuf, key: PathBuf) -> anyhow::Result<Tls> {
        let acceptor = load(&cert, &key)?;
        Ok(Tls {
            loaded: mtime(&cert),
            cert,
            key,
            acceptor,
        })
    }

    fn current(&mut self) -> TlsAcceptor {
        let now = mtime(&self.cert);
        if now != self.loaded {
            match load(&self.cert, &self.key) {
                Ok(a) => {
                    tracing::info!(cert = %self.cert.display(), "Reloaded the TLS certificate.");
                    self.acceptor = a;
                    self.loaded = now;
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "Keeping the previous certificate; the new one does not load.")
                }
            }
        }
        self.acceptor.clone()
    }
}

/// Serve HTTPS on `listener` until `shutdown`.
pub async fn run(
    cfg: WebhookConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut tls = Tls::new(cfg.tls_cert.clone(), cfg.tls_key.clone())?;
    let app = router(cfg.inject.clone(), cfg.max_body_bytes);
    tracing::info!(listen = %listener.local_addr()?, "Injection webhook started.");
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "Failed to accept a connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = tls.current();
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed.");
                    return;
                }
                Err(_) => return,
            };
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
            if let Err(error) = tokio::time::timeout(Duration::from_secs(60), conn)
                .await
                .unwrap_or(Ok(()))
            {
                tracing::debug!(%error, %peer, "Webhook connection ended with an error.");
            }
        });
    }
    tracing::info!("Injection webhook stopped.");
    Ok(())
}
