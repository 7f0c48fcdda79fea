//! Small real HTTP upstreams for the end-to-end tests: a hyper server on a loopback
//! address, in its own thread and runtime, that counts the requests it answers, so a test
//! can compare the counts reported through whouses with the requests that really arrived.
//!
//! Routes: `/headers` echoes the request head, `/echo-size` the body size, `/bytes/N`
//! answers N bytes (streamed in 64 KiB chunks), `/slow/MS` answers
//! after MS milliseconds, `/status/CODE` answers with that status, `/close` answers and
//! closes the connection, anything else `ok\n`. It also counts the TCP connections it
//! accepted.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A running upstream; stopped when dropped.
pub struct Upstream {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Start on `ip` (e.g. `127.0.0.3`) with a free port.
    pub fn start(ip: &str) -> Upstream {
        Self::start_on(&format!("{ip}:0"))
    }

    /// Start on an exact address (`127.0.0.1:0` for any free port).
    pub fn start_on(addr: &str) -> Upstream {
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("binding upstream on {addr}: {e}"));
        listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let accepted_count = connections.clone();
        let open = Arc::new(AtomicU64::new(0));
        let open_count = open.clone();
        let (stop, mut stop_rx) = oneshot::channel::<()>();
        let counted = requests.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("building the upstream runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            accepted_count.fetch_add(1, Ordering::SeqCst);
                            let counted = counted.clone();
                            let open = open_count.clone();
                            open.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(async move {
                                let svc = hyper::service::service_fn(move |req| {
                                    let counted = counted.clone();
                                    async move { Ok::<_, Infallible>(answer(req, &counted).await) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                                open.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                    }
                }
            });
        });
        Upstream {
            addr,
            requests,
            connections,
            open,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn answer(req: Request<Incoming>, counted: &AtomicU64) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/headers" {
        // The request head as received, one `name: value` per line.
        let mut out = format!("{} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        counted.fetch_add(1, Ordering::SeqCst);
        return Response::new(Full::new(Bytes::from(out)).boxed());
    }
    if path == "/echo-size" {
        // The number of body bytes received.
        let n = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        counted.fetch_add(1, Ordering::SeqCst);
        return Response::new(Full::new(Bytes::from(format!("{n}\n"))).boxed());
    }
    // Drain the request body so uploads complete before we answer.
    let _ = req.into_body().collect().await;
    counted.fetch_add(1, Ordering::SeqCst);
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    match (
        parts.next(),
        parts.next().and_then(|n| n.parse::<u64>().ok()),
    ) {
        (Some("bytes"), Some(n)) => {
            let chunks = futures_util::stream::unfold(n, |left| async move {
                if left == 0 {
                    return None;
                }
                let len = left.min(64 * 1024);
                let frame = Frame::data(Bytes::from(vec![b'x'; len as usize]));
                Some((Ok::<_, Infallible>(frame), left - len))
            });
            Response::builder()
                .header("content-length", n)
                .body(StreamBody::new(chunks).boxed())
                .expect("static response parts are valid")
        }
        (Some("slow"), Some(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, "slow ok\n")
        }
        (Some("status"), Some(code)) => text(
            StatusCode::from_u16(code as u16).unwrap_or(StatusCode::BAD_REQUEST),
            "status\n",
        ),
        (Some("close"), None) => {
            let mut r = text(StatusCode::OK, "closing\n");
            r.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            r
        }
        _ => text(StatusCode::OK, "ok\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .expect("static response parts are valid")
}
