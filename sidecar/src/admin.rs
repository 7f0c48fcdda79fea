//! The admin listener — `/healthz` (alive, names the instance), `/readyz` (proxy serving
//! and not draining; shipping health in the body), `/shipping` (503 while shipping is
//! unhealthy), `/metrics` (Prometheus text), `/stats` (the counts as JSON) — and the
//! optional probe listener, which serves only `/healthz` and `/readyz`.
//!
//! Readiness never depends on the collector: the kubelet would take the pod out of
//! service (or never start the app, with a native sidecar) when the collector is down,
//! and the app's traffic must not stop for that. Shipping trouble is what `/shipping`
//! (or `/readyz?shipping=strict`) answers 503 to, for an operator's alert.
//!
//! Both listeners are bounded: a few connections at once (a new one evicts the oldest,
//! so a flood of idle connections cannot starve a probe), a small request head read
//! within a few seconds, a deadline per connection, and only GET and HEAD.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use whouses_wire::{Scheme, Timestamp};

use crate::counters::Counters;
use crate::shipper::{ShippingStatus, ShippingView};
use crate::Identity;

/// Connections served at once per listener. A probe, a scrape and an operator's curl
/// need a handful; each costs a task and an 8 KiB buffer, so 32 stay well under 1 MiB.
pub const MAX_CONNECTIONS: usize = 32;
/// Time to send a complete request head; a probe sends it at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest life of one connection (keep-alive included), so none is held forever.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(15);
/// Largest request head buffered: hyper's minimum, far above `GET /readyz`.
pub const MAX_HEAD_BYTES: usize = 8192;

pub struct AdminState {
    pub identity: Identity,
    pub counters: Arc<Counters>,
    pub registry: Registry,
    pub shipping: Option<Arc<Mutex<ShippingStatus>>>,
    /// The DNS forwarder's lookups and the bypass detector's connections, when enabled.
    pub observers: crate::shipper::Observers,
    /// Set once the proxy listener is being served: `/readyz` is 503 before.
    pub serving: AtomicBool,
    /// Set once shutdown begins: `/readyz` turns 503 so no new traffic is sent here.
    pub draining: AtomicBool,
}

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything (`--admin-listen`, loopback by default).
    Admin,
    /// Only `/healthz` and `/readyz`, with no detail (`--probe-listen`, the pod IP).
    Probe,
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
    /// Shipping status and health now; `None` in count-only mode.
    fn shipping(&self) -> Option<ShippingView> {
        self.shipping
            .as_ref()
            .map(|s| crate::shipper::status::lock(s).view(Timestamp::now()))
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
            "lookups": self.observers.names.as_ref().map(|n| {
                n.snapshot()
                    .into_iter()
                    .map(|(name, t)| serde_json::json!({
                        "name": name,
                        "lookups": t.lookups,
                        "addresses": t.addresses,
                        "first_seen": whouses_wire::Timestamp(t.first_seen),
                        "last_seen": whouses_wire::Timestamp(t.last_seen),
                    }))
                    .collect::<Vec<_>>()
            }),
            "lookups_folded": self.observers.names.as_ref().map(|n| n.folded()),
            "bypass": self.observers.bypass.as_ref().map(|b| {
                b.snapshot()
                    .into_iter()
                    .map(|(addr, t)| serde_json::json!({
                        "address": addr.ip().to_string(),
                        "port": addr.port(),
                        "name": t.name,
                        "connections": t.connections,
                        "first_seen": whouses_wire::Timestamp(t.first_seen),
                        "last_seen": whouses_wire::Timestamp(t.last_seen),
                    }))
                    .collect::<Vec<_>>()
            }),
            "bypass_folded": self.observers.bypass.as_ref().map(|b| b.folded()),
            "shipping": self.shipping(),
            // Issue 14: the callee's view and the address book.
            "side": if self.observers.inbound.is_some() { "callee" } else { "caller" },
            "addresses": self.observers.addresses.as_ref().map(|a| a.current()),
            "inbound_hosts": &self.observers.inbound_hosts,
            "inbound": self.observers.inbound.as_ref().map(|p| {
                p.snapshot()
                    .into_iter()
                    .map(|(k, t)| serde_json::json!({
                        "host": &*k.host,
                        "port": k.port,
                        "scheme": k.scheme,
                        "address": k.address(),
                        "requests": t.requests,
                        "connections": t.connections,
                        "errors": t.errors,
                        "bytes_sent": t.bytes_sent,
                        "bytes_received": t.bytes_received,
                        "first_seen": (t.first_seen != 0).then(|| t.first_seen_ts()),
                        "last_seen": (t.last_seen != 0).then(|| t.last_seen_ts()),
                    }))
                    .collect::<Vec<_>>()
            }),
            "inbound_keys": self.observers.inbound.as_ref().map(|p| p.len()),
            "max_peers": self.observers.inbound.as_ref().map(|p| p.max_peers()),
            "inbound_folded_callers": self.observers.inbound.as_ref().map(|p| p.folded_peers()),
            "inbound_folded_names": self.observers.inbound.as_ref().map(|p| p.folded_hosts()),
        })
    }
}

/// The open connections of one listener, oldest first, each with the handle that
/// closes it.
#[derive(Default)]
struct Open {
    next_id: u64,
    conns: BTreeMap<u64, oneshot::Sender<()>>,
}

fn lock_open(m: &Mutex<Open>) -> std::sync::MutexGuard<'_, Open> {
    // A panic while holding this lock cannot corrupt a map of senders.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serve `surface` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AdminState>,
    surface: Surface,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let open = Arc::new(Mutex::new(Open::default()));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "Failed to accept an admin connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (id, evicted) = {
            let mut o = lock_open(&open);
            if o.conns.len() >= MAX_CONNECTIONS {
                // Dropping its sender closes the oldest connection: an idle or slow one
                // makes room for a probe that sends its request at once.
                if let Some((old, _)) = o.conns.pop_first() {
                    tracing::debug!(connection = old, client = %peer, "Admin connections at the limit; closing the oldest.");
                }
            }
            let id = o.next_id;
            o.next_id += 1;
            let (tx, rx) = oneshot::channel();
            o.conns.insert(id, tx);
            (id, rx)
        };
        let state = state.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, surface, &req)) }
            }),
        );
        let open = open.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_DEADLINE, conn) => {}
                _ = evicted => {}
            }
            lock_open(&open).conns.remove(&id);
        });
    }
}

fn route(state: &AdminState, surface: Surface, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match (surface, req.uri().path()) {
        (_, "/healthz") => text(StatusCode::OK, format!("ok {}\n", state.identity.instance)),
        (_, "/readyz") => readyz(state, surface, req.uri().query()),
        (Surface::Admin, "/shipping") => match state.shipping() {
            Some(view) => json(
                if view.health.healthy {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                &serde_json::json!(view),
            ),
            None => json(StatusCode::OK, &count_only()),
        },
        (Surface::Admin, "/stats") => json(StatusCode::OK, &state.stats()),
        (Surface::Admin, "/metrics") => {
            let mut out = String::new();
            match prometheus_client::encoding::text::encode(&mut out, &state.registry) {
                Ok(()) => {
                    let mut r = Response::new(Full::new(Bytes::from(out)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    r
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n".into(),
                ),
            }
        }
        (Surface::Admin, _) => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /shipping, /metrics or /stats\n".into(),
        ),
        (Surface::Probe, _) => text(
            StatusCode::NOT_FOUND,
            "not found; this probe port serves only /healthz and /readyz\n".into(),
        ),
    }
}

fn count_only() -> serde_json::Value {
    serde_json::json!({
        "healthy": true,
        "reason": "count only: no --collector-url, nothing to ship",
    })
}

/// 200 while the proxy serves and is not draining. `?shipping=strict` also requires
/// healthy shipping (for an operator's check, never for the pod's own probe).
fn readyz(state: &AdminState, surface: Surface, query: Option<&str>) -> Response<Full<Bytes>> {
    let serving = state.serving.load(Ordering::Acquire);
    let draining = state.draining.load(Ordering::Acquire);
    let ready = serving && !draining;
    let strict = query
        .unwrap_or("")
        .split('&')
        .any(|kv| kv == "shipping=strict");
    let view = state.shipping();
    let shipping_healthy = view.as_ref().is_none_or(|v| v.health.healthy);
    let shipping = match (surface, view) {
        (Surface::Admin, Some(v)) => serde_json::json!(v),
        (Surface::Admin, None) => count_only(),
        (Surface::Probe, _) => serde_json::json!({ "healthy": shipping_healthy }),
    };
    let body = serde_json::json!({
        "ready": ready,
        "draining": draining,
        "instance": state.identity.instance,
        "shipping": shipping,
    });
    let ok = ready && (!strict || shipping_healthy);
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
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
