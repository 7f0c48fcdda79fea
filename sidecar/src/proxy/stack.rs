//! The request path, composed in one place. Read [`stack`] top to bottom: outermost layer
//! first. Every layer is a plain `tower::Service` over `http::Request`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};
use whouses_wire::Timestamp;

use super::body::{CountingBody, Direction};
use super::error::ProxyError;
use super::forward;
use super::target::Target;
use super::tunnel::Tunnels;
use super::upstream::{Affinity, Pool};
use crate::counters::{Counters, EdgeStats};

/// What the app receives: the upstream's streamed body (counted), or a short body of our
/// own (an error reason, or the empty body of a `CONNECT` 200).
pub type ProxyBody = Either<CountingBody<Incoming>, Full<Bytes>>;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Everything the request path shares across connections.
pub struct Shared {
    pub counters: Arc<Counters>,
    /// Idle upstream connections, for app connections that have none of their own.
    pub pool: Arc<Pool>,
    pub tunnels: Tunnels,
}

/// The proxy's request path for one client connection.
pub fn stack(shared: Arc<Shared>) -> Respond<Route<Count<Upstream>>> {
    ServiceBuilder::new()
        // 3. Turn every failure into a response the app can read: a status (400, 502,
        //    503, 504) and a one-line reason. Nothing below ever panics into hyper.
        .layer_fn(Respond)
        // 2. Find the target: the host the caller dialed, normalised into the count's
        //    key; a request we cannot proxy (origin-form, https://, bad host) gets 400.
        .layer_fn(Route)
        // 1. Count: one request per forwarded request, one connection per tunnel, an
        //    error per failure or 5xx, and the body bytes both ways as they stream.
        .layer_fn({
            let counters = shared.counters.clone();
            move |inner| Count {
                inner,
                counters: counters.clone(),
            }
        })
        // 0. Reach the upstream: this app connection's keep-alive upstream connection,
        //    or a CONNECT tunnel.
        .service(Upstream {
            affinity: Arc::new(Affinity::new(shared.pool.clone())),
            shared,
        })
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// Layer 3: failures → responses.
#[derive(Clone)]
pub struct Respond<S>(S);

impl<S> Service<Request<Incoming>> for Respond<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = BoxFuture<Response<ProxyBody>, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let method = req.method().clone();
        let fut = self.0.call(req);
        Box::pin(async move {
            Ok(fut.await.unwrap_or_else(|error| {
                tracing::debug!(%error, %method, status = error.status().as_u16(),
                    "Answered a proxied request with an error.");
                let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
                    "whouses-sidecar: {error}\n"
                )))));
                *resp.status_mut() = error.status();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                resp
            }))
        })
    }
}

/// Layer 2: the target, put into the request's extensions for the layers below.
#[derive(Clone)]
pub struct Route<S>(S);

impl<S> Service<Request<Incoming>> for Route<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture<Response<ProxyBody>, ProxyError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        match Target::of(&req) {
            Ok(target) => {
                req.extensions_mut().insert(target);
                Box::pin(self.0.call(req))
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// Layer 1: counting.
#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> Service<Request<Incoming>> for Count<S>
where
    S: Service<
        Request<CountingBody<Incoming>>,
        Response = Response<Option<Incoming>>,
        Error = ProxyError,
    >,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture<Response<ProxyBody>, ProxyError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let Some(target) = req.extensions().get::<Target>() else {
            return Box::pin(std::future::ready(Err(ProxyError::BadRequest(
                "no target".into(),
            ))));
        };
        let tunnel = target.tunnel;
        let stats = self.counters.edge(&target.host, target.port, target.scheme);
        if !tunnel {
            stats.record_request(now_ms());
        }
        let mut req = req.map(|b| CountingBody::new(b, Some(stats.clone()), Direction::Sent));
        if tunnel {
            // The tunnel counts its bytes on the same key.
            req.extensions_mut().insert(stats.clone());
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => {
                    if tunnel {
                        stats.record_connection(now_ms());
                    } else if resp.status().is_server_error() {
                        stats.record_error(now_ms());
                    }
                    Ok(resp.map(|body| match body {
                        Some(b) => {
                            Either::Left(CountingBody::new(b, Some(stats), Direction::Received))
                        }
                        None => Either::Right(Full::default()),
                    }))
                }
                Err(e) => {
                    if e.is_upstream() {
                        stats.record_error(now_ms());
                    }
                    Err(e)
                }
            }
        })
    }
}

/// Layer 0: the upstream.
#[derive(Clone)]
pub struct Upstream {
    shared: Arc<Shared>,
    /// Shared by the clones of this service for one app connection.
    affinity: Arc<Affinity>,
}

impl Service<Request<CountingBody<Incoming>>> for Upstream {
    type Response = Response<Option<Incoming>>;
    type Error = ProxyError;
    type Future = BoxFuture<Response<Option<Incoming>>, ProxyError>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<CountingBody<Incoming>>) -> Self::Future {
        let shared = self.shared.clone();
        let affinity = self.affinity.clone();
        Box::pin(async move {
            let target = req
                .extensions()
                .get::<Target>()
                .cloned()
                .ok_or_else(|| ProxyError::BadRequest("no target".into()))?;
            if target.tunnel {
                let stats = req
                    .extensions()
                    .get::<Arc<EdgeStats>>()
                    .cloned()
                    .ok_or_else(|| ProxyError::BadRequest("no counters".into()))?;
                let resp = shared.tunnels.open(req, &target, stats).await?;
                Ok(resp.map(|()| None))
            } else {
                let resp = forward::send(&affinity, req, &target).await?;
                Ok(resp.map(Some))
            }
        })
    }
}
