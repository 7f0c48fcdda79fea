//! The admin listener: `/healthz` (alive), `/readyz` (serving, with shipping health in the
//! body), `/metrics` (Prometheus text), `/stats` (the counts as JSON).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use whouses_wire::{Scheme, Timestamp};

use crate::counters::Counters;
use crate::shipper::ShippingStatus;
use crate::Identity;

pub struct AdminState {
    pub identity: Identity,
    pub counters: Arc<Counters>,
    pub registry: Registry,
    pub shipping: Option<Arc<Mutex<ShippingStatus>>>,
    /// Set once shutdown begins: `/readyz` turns 503 so no new traffic is sent here.
    pub draining: AtomicBool,
}

#[derive(Serialize)]
struct StatsEdge<'a> {
    host: &'a str,
    port: u16,
    scheme: Scheme,
    requests: u64,
    connections: u64,
    errors: u64,
    bytes_sent: u64,
    bytes_received: u64,
    first_seen: Option<Timestamp>,
    last_seen: Option<Timestamp>,
}

impl AdminState {
    fn shipping(&self) -> Option<ShippingStatus> {
        self.shipping
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    fn stats(&self) -> serde_json::Value {
        let snapshot = self.counters.snapshot();
        let edges: Vec<StatsEdge> = snapshot
            .iter()
            .map(|(k, t)| StatsEdge {
                host: &k.host,
                port: k.port,
                scheme: k.scheme,
                requests: t.requests,
                connections: t.connections,
                errors: t.errors,
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
                first_seen: (t.first_seen != 0).then(|| t.first_seen_ts()),
                last_seen: (t.last_seen != 0).then(|| t.last_seen_ts()),
            })
            .collect();
        serde_json::json!({
            "service": self.identity.service,
            "environment": self.identity.environment,
            "instance": self.identity.instance,
            "started_at": self.identity.started_at,
            "edges": edges,
            "keys": self.counters.len(),
            "max_hosts": self.counters.max_hosts(),
            "folded": self.counters.folded(),
            "shipping": self.shipping(),
        })
    }
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    shutdown: impl Future<Output = ()>,
) {
    let http = hyper::server::conn::http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "Failed to accept an admin connection.");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req)) }
            }),
        );
        tokio::spawn(async move {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), conn).await;
        });
    }
}

fn route(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let draining = state.draining.load(Ordering::Acquire);
            let body = serde_json::json!({
                "ready": !draining,
                "draining": draining,
                "shipping": state.shipping(),
            });
            json(
                if draining {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                },
                &body,
            )
        }
        "/stats" => json(StatusCode::OK, &state.stats()),
        "/metrics" => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
                Ok(()) => Response::builder()
                    .header(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(Full::new(Bytes::from(out)))
                    .unwrap_or_else(|_| {
                        text(StatusCode::INTERNAL_SERVER_ERROR, "encoding\n".into())
                    }),
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n".into(),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /metrics or /stats\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
