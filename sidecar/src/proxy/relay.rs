//! The request path, in one place: one task per app connection relays its HTTP/1.x
//! exchanges, read top to bottom in [`Session::exchange`]:
//!
//! 1. read the request head (`--header-read-timeout`, `--max-header-bytes`), parse it in
//!    place and check it against smuggling ([`super::head`]);
//! 2. route it: the key of its count and where it goes ([`super::route`], the one piece
//!    that differs between modes);
//! 3. **count it** on the key's [`EdgeStats`] (`crate::counters`);
//! 4. `CONNECT`: dial, `200`, a counted byte tunnel ([`super::tunnel`]); otherwise send the
//!    rewritten head on this app connection's upstream connection ([`super::upstream`]),
//!    then the body by its framing ([`super::body`]), counted as it streams;
//! 5. read the response head — its framing, its status (≥ 500 is an error), whether either
//!    connection stays open — and relay it and its body back, counted; a `101` turns the
//!    connection into a counted tunnel (WebSocket).
//!
//! Failures become a status and a one-line reason for the app (400, 431, 502, 504);
//! nothing on this path panics. Buffers exist only while bytes are in flight: an idle app
//! connection holds none.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use whouses_wire::Timestamp;

use super::body::{self, Body, Direction};
use super::conn::{write_head, Conn};
use super::connect::Dialer;
use super::error::ProxyError;
use super::head::{self, Framing, RequestRewrite, ResponseRewrite};
use super::route::{Action, Dial, Route, Router, Target};
use super::tunnel;
use super::upstream::{is_usable, Pool, PoolKey};
use crate::counters::{Counters, EdgeStats};

/// Response heads from upstreams may be this large.
const MAX_RESPONSE_HEAD: usize = 1024 * 1024;

/// What every app connection shares.
pub struct Relay {
    pub counters: Arc<Counters>,
    pub router: Box<dyn Router>,
    pub dialer: Dialer,
    pub pool: Arc<Pool>,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    /// Tunnels copy with `splice(2)` instead of through user space.
    pub tunnel_splice: bool,
    /// Transparent capture: redirected connections (`crate::capture`); `None` serves
    /// explicit proxy requests only.
    pub capture: Option<Arc<crate::capture::Capture>>,
}

/// Relay one app connection until it closes, fails, or the sidecar drains (`stop`): an
/// idle connection closes at once, a busy one after its current exchange.
pub async fn serve(
    relay: Arc<Relay>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    serve_conn(&relay, Conn::new(stream), peer, stop, relay.router.as_ref()).await;
}

/// [`serve`] with a router of this connection's own (transparent capture: the original
/// destination) and the bytes already read from it (`app.buf`, by protocol detection).
pub async fn serve_conn(
    relay: &Relay,
    app: Conn,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
    router: &dyn Router,
) {
    let mut session = Session {
        relay,
        router,
        app,
        upstream: None,
        scratch: Vec::new(),
        edge: None,
        linger: false,
        peer,
    };
    while let Next::KeepAlive = session.exchange(&mut stop).await {}
    session.close().await;
}

/// Whether the app connection carries on after an exchange.
enum Next {
    KeepAlive,
    Close,
}

/// An upstream connection with its read buffer.
struct Upstream {
    conn: Conn,
    key: PoolKey,
}

/// What the relay keeps of a request head once its bytes are consumed.
struct Request {
    route: Route,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
    /// `HEAD`: the response has no body whatever it says.
    is_head: bool,
    /// HTTP/1.`minor` of the app.
    minor: u8,
}

/// How reading a response head failed.
enum ResponseError {
    /// The upstream closed (or reset) before sending a byte of it: a reused connection
    /// the upstream had just closed, so the request may be retried on a new one.
    Nothing(String),
    Failed(String),
}

/// A response head, parsed and rewritten for the app into `Session::scratch`.
struct Response {
    code: u16,
    framing: Framing,
    /// The upstream connection can carry another request.
    upstream_keep_alive: bool,
    /// The app connection closes after this response.
    close_app: bool,
    dechunk: bool,
}

fn now_ms() -> i64 {
    Timestamp::now().as_millis()
}

/// Resolves when the sidecar starts draining (never, if the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            pending::<()>().await;
        }
    }
}

struct Session<'r> {
    relay: &'r Relay,
    /// Routes this connection's requests (`relay.router`, or the connection's own).
    router: &'r dyn Router,
    app: Conn,
    /// This app connection's upstream connection, between two exchanges (a clean one:
    /// nothing unread, ready for the next request).
    upstream: Option<Upstream>,
    /// The head being written (request, then response).
    scratch: Vec<u8>,
    /// The counters of the key last used: looked up once per key, not per request.
    edge: Option<(Target, Arc<EdgeStats>)>,
    /// After an error answer, read what the app still sends for a moment before closing,
    /// so the answer is not lost to a reset.
    linger: bool,
    peer: SocketAddr,
}

impl Session<'_> {
    /// One exchange: a request and its response (or a tunnel, which ends the connection).
    async fn exchange(&mut self, stop: &mut watch::Receiver<bool>) -> Next {
        // 1–2. The request head, parsed and routed; the head to forward is in `scratch`.
        let req = match self.read_request(stop).await {
            Ok(Some(req)) => req,
            Ok(None) => return Next::Close,
            Err(e) => return self.fail(&e, None, true).await,
        };
        // 3. Count it, on the key of the name the caller dialed.
        let stats = self.stats_for(&req.route.target);
        match req.route.action {
            // 4a. CONNECT: a tunnel is one connection, not a request.
            Action::Tunnel => self.tunnel(&req, stats).await,
            Action::Forward { .. } => {
                stats.record_request(now_ms());
                // 4b–5. Forward it and relay the response.
                let draining = *stop.borrow();
                self.forward(&req, &stats, draining).await
            }
        }
    }

    /// Read until a complete request head is buffered, within the header-read timeout.
    /// `Ok(None)`: the app closed, went quiet, or the sidecar is draining.
    async fn read_request(
        &mut self,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<Option<Request>, ProxyError> {
        let deadline = Instant::now() + self.relay.header_read_timeout;
        loop {
            if self.app.buf.is_empty() {
                if *stop.borrow() {
                    return Ok(None);
                }
                // Idle between requests: hold no buffers.
                self.app.release();
                if let Some(up) = &mut self.upstream {
                    up.conn.release();
                }
                if self.scratch.capacity() > 4096 {
                    self.scratch = Vec::new();
                }
            } else if let Some(req) = self.parse_request()? {
                return Ok(Some(req));
            }
            let idle = self.app.buf.is_empty();
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, self.app.fill()) => r,
                () = stopped(stop), if idle => return Ok(None),
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Ok(None),
                Ok(Ok(_)) => {}
                Err(_) => {
                    if !idle {
                        tracing::debug!(client = %self.peer, "A request head did not arrive within --header-read-timeout; closing.");
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Parse the buffered head; route it and write the head to forward into `scratch`.
    fn parse_request(&mut self) -> Result<Option<Request>, ProxyError> {
        let mut storage = head::storage();
        let Some(head) =
            head::parse_request(&self.app.buf, self.relay.max_header_bytes, &mut storage)?
        else {
            return Ok(None);
        };
        let route = self.router.route(&head)?;
        self.scratch.clear();
        if let Action::Forward { path, host } = &route.action {
            let path = head.target.get(path.clone()).unwrap_or("");
            // A fragment is never sent (RFC 9110 §7.1).
            let path = path.split('#').next().unwrap_or("");
            let rw = RequestRewrite {
                // The explicit proxy's path part is empty or starts with `/` or `?`; a
                // transparent route forwards the target as sent (`*`, absolute-form).
                slash: path.is_empty() || path.starts_with('?'),
                target: path,
                host: host.clone().and_then(|h| head.target.get(h)),
            };
            head::write_request(&mut self.scratch, &head, &rw);
        }
        let req = Request {
            framing: head.framing,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            upgrade: head.upgrade,
            is_head: head.method == "HEAD",
            minor: head.minor,
            route,
        };
        let len = head.len;
        self.app.consume(len);
        Ok(Some(req))
    }

    fn stats_for(&mut self, target: &Target) -> Arc<EdgeStats> {
        if let Some((t, stats)) = &self.edge {
            if t == target {
                return stats.clone();
            }
        }
        let stats = self
            .relay
            .counters
            .edge(&target.host, target.port, target.scheme);
        self.edge = Some((target.clone(), stats.clone()));
        stats
    }

    async fn dial(&self, route: &Route) -> Result<TcpStream, ProxyError> {
        let t = &route.target;
        Ok(match route.dial {
            Dial::Name => self.relay.dialer.dial(&t.host, t.port).await?,
            Dial::Addr(addr) => self.relay.dialer.dial_addr(&t.host, t.port, addr).await?,
        })
    }

    /// 4a. `CONNECT`: dial first (a failure is a 502/504 and an error on the key), answer
    /// 200, then relay bytes both ways until either side closes.
    async fn tunnel(&mut self, req: &Request, stats: Arc<EdgeStats>) -> Next {
        let upstream = match self.dial(&req.route).await {
            Ok(s) => s,
            Err(e) => return self.fail(&e, Some(&stats), true).await,
        };
        stats.record_connection(now_ms());
        if self
            .app
            .stream
            .write_all(b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .is_err()
        {
            return Next::Close;
        }
        let early = std::mem::take(&mut self.app.buf);
        let t = &req.route.target;
        match tunnel::run(
            &mut self.app.stream,
            upstream,
            &early,
            &[],
            stats,
            self.relay.tunnel_splice,
        )
        .await
        {
            Ok((sent, received)) => {
                tracing::debug!(host = %t.host, port = t.port, sent, received, "Tunnel closed.")
            }
            Err(error) => {
                tracing::debug!(%error, host = %t.host, port = t.port, "Tunnel ended with an error.")
            }
        }
        Next::Close
    }

    /// This app connection's upstream connection to the route's upstream, else a pooled
    /// one, else a new one (counted as a connection on the key). `true`: reused.
    async fn upstream_for(
        &mut self,
        route: &Route,
        stats: &EdgeStats,
    ) -> Result<(Upstream, bool), ProxyError> {
        // The connection this app connection already holds, when it goes the same way
        // (compared without building a key: this is every request's path).
        if let Some(up) = self.upstream.take() {
            if up.key.is(route) && is_usable(&up.conn.stream) {
                return Ok((up, true));
            }
            // Another upstream: pooled for another app connection (closed ones are not).
            self.relay.pool.put(up.key, up.conn.stream);
        }
        let key = PoolKey::of(route);
        if let Some(stream) = self.relay.pool.take(&key) {
            return Ok((
                Upstream {
                    conn: Conn::new(stream),
                    key,
                },
                true,
            ));
        }
        let stream = self.dial(route).await?;
        stats.record_connection(now_ms());
        Ok((
            Upstream {
                conn: Conn::new(stream),
                key,
            },
            false,
        ))
    }

    /// 4b–5. Forward a request and relay its response.
    async fn forward(&mut self, req: &Request, stats: &EdgeStats, draining: bool) -> Next {
        let upstream_error = |reason: String| ProxyError::Upstream {
            target: format!("{}:{}", req.route.target.host, req.route.target.port),
            reason,
        };
        let mut body = Body::new(req.framing, false);
        let mut retried = false;
        let (mut up, resp) = loop {
            // 4b. The head, with the start of the body that came with it, in one write.
            let (mut up, reused) = match self.upstream_for(&req.route, stats).await {
                Ok(x) => x,
                Err(e) => return self.fail(&e, Some(stats), true).await,
            };
            let mut scanned = body.clone();
            let scan = match scanned.scan(&self.app.buf, &mut Vec::new()) {
                Ok(s) => s,
                Err(e) => {
                    let e = ProxyError::BadRequest(format!("malformed request body: {e}"));
                    return self.fail(&e, None, true).await;
                }
            };
            // `scratch` keeps the head alone, for a retry.
            let head_len = self.scratch.len();
            let sent = write_head(
                &mut up.conn.stream,
                &mut self.scratch,
                &self.app.buf[..scan.consumed],
            )
            .await;
            self.scratch.truncate(head_len);
            if let Err(e) = sent {
                if reused && !retried {
                    retried = true;
                    continue;
                }
                let e = upstream_error(format!("sending the request failed: {e}"));
                return self.fail(&e, Some(stats), true).await;
            }
            body::count(stats, Direction::Sent, scan.data);
            self.app.consume(scan.consumed);
            body = scanned;

            // 4c. The rest of the body, by its framing; the proxy answers
            //     `Expect: 100-continue` itself once the upstream has the head.
            let continue_100 = req.expect_continue && !body.is_done();
            if continue_100
                && self
                    .app
                    .stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
            {
                return Next::Close;
            }
            if let Err(e) = body::relay(
                &mut self.app,
                &mut up.conn.stream,
                &mut body,
                stats,
                Direction::Sent,
                &mut Vec::new(),
            )
            .await
            {
                return match e {
                    body::BodyError::Chunked(c) => {
                        let e = ProxyError::BadRequest(format!("malformed request body: {c}"));
                        self.fail(&e, None, true).await
                    }
                    // The app left mid-body: nobody to answer.
                    _ if e.is_source() => Next::Close,
                    _ => {
                        let e = upstream_error(format!("sending the request body failed: {e}"));
                        self.fail(&e, Some(stats), true).await
                    }
                };
            }

            // 5. The response head.
            match self.read_response(&mut up, req, draining).await {
                Ok(resp) => break (up, resp),
                // The upstream had closed this reused connection: once more on a new one,
                // when nothing of the body has been consumed since.
                Err(ResponseError::Nothing(_))
                    if reused && !retried && req.framing == Framing::None =>
                {
                    retried = true;
                    continue;
                }
                Err(ResponseError::Nothing(reason) | ResponseError::Failed(reason)) => {
                    let e = upstream_error(reason);
                    return self.fail(&e, Some(stats), true).await;
                }
            }
        };
        if resp.code >= 500 {
            stats.record_error(now_ms());
        }
        if resp.code == 101 {
            // A WebSocket (or other upgrade): the connection is a counted tunnel now.
            if self.app.stream.write_all(&self.scratch).await.is_err() {
                return Next::Close;
            }
            let early = std::mem::take(&mut self.app.buf);
            let late = std::mem::take(&mut up.conn.buf);
            let stats = self.stats_for(&req.route.target);
            if let Err(error) = tunnel::run(
                &mut self.app.stream,
                up.conn.stream,
                &early,
                &late,
                stats,
                self.relay.tunnel_splice,
            )
            .await
            {
                tracing::debug!(%error, "Upgraded connection ended with an error.");
            }
            return Next::Close;
        }

        // 5b. The response body, in the same write as the head when it came with it.
        let mut body = Body::new(resp.framing, resp.dechunk);
        let mut dechunked = Vec::new();
        let scan = match body.scan(&up.conn.buf, &mut dechunked) {
            Ok(s) => s,
            Err(e) => {
                let e = upstream_error(format!("malformed response body: {e}"));
                return self.fail(&e, Some(stats), true).await;
            }
        };
        let start: &[u8] = if resp.dechunk {
            &dechunked
        } else {
            &up.conn.buf[..scan.consumed]
        };
        if write_head(&mut self.app.stream, &mut self.scratch, start)
            .await
            .is_err()
        {
            return Next::Close;
        }
        body::count(stats, Direction::Received, scan.data);
        up.conn.consume(scan.consumed);
        if let Err(e) = body::relay(
            &mut up.conn,
            &mut self.app.stream,
            &mut body,
            stats,
            Direction::Received,
            &mut dechunked,
        )
        .await
        {
            if e.is_source() {
                // The upstream broke off mid-body: a failed call; the app sees the
                // connection close before the body's end.
                stats.record_error(now_ms());
                tracing::debug!(error = %e, host = %req.route.target.host, "Upstream response body failed.");
            }
            return Next::Close;
        }
        // Keep the upstream connection for the next request, if it is clean.
        if resp.upstream_keep_alive && up.conn.buf.is_empty() {
            self.upstream = Some(up);
        }
        if resp.close_app {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// Read the response head (informational responses: `100` dropped, since the proxy
    /// answered the app's `Expect` itself; others relayed), and write the head for the
    /// app into `scratch`.
    async fn read_response(
        &mut self,
        up: &mut Upstream,
        req: &Request,
        draining: bool,
    ) -> Result<Response, ResponseError> {
        loop {
            if !up.conn.buf.is_empty() {
                if let Some((resp, informational)) = self.response_head(up, req, draining)? {
                    if !informational {
                        return Ok(resp);
                    }
                    if resp.code != 100 && req.minor == 1 {
                        // 102, 103: relayed as they come.
                        let _ = self.app.stream.write_all(&self.scratch).await;
                    }
                    continue;
                }
            }
            let nothing_yet = up.conn.buf.is_empty();
            let failed = |reason: String| {
                if nothing_yet {
                    ResponseError::Nothing(reason)
                } else {
                    ResponseError::Failed(reason)
                }
            };
            match up.conn.fill().await {
                Ok(0) => {
                    return Err(failed(
                        "the connection closed before a response arrived".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(failed(format!("reading the response failed: {e}"))),
            }
        }
    }

    /// Parse a buffered response head and write the app's version into `scratch`;
    /// `true`: an informational (1xx, not 101) response, another head follows.
    fn response_head(
        &mut self,
        up: &mut Upstream,
        req: &Request,
        draining: bool,
    ) -> Result<Option<(Response, bool)>, ResponseError> {
        let mut storage = head::storage();
        let parsed =
            head::parse_response(&up.conn.buf, MAX_RESPONSE_HEAD, req.is_head, &mut storage)
                .map_err(|e| ResponseError::Failed(e.to_string()))?;
        let Some(h) = parsed else {
            return Ok(None);
        };
        let informational = (100..200).contains(&h.code) && h.code != 101;
        let upgrade = h.code == 101;
        if upgrade && !req.upgrade {
            return Err(ResponseError::Failed(
                "101 Switching Protocols to a request that asked for no upgrade".into(),
            ));
        }
        let dechunk = h.framing == Framing::Chunked && req.minor == 0;
        let close_app = !req.keep_alive || draining || dechunk || h.framing == Framing::UntilClose;
        let connection = if informational {
            None
        } else if close_app {
            Some("close")
        } else if req.minor == 0 {
            Some("keep-alive")
        } else {
            None
        };
        self.scratch.clear();
        head::write_response(
            &mut self.scratch,
            &h,
            &ResponseRewrite {
                dechunk,
                connection,
                upgrade,
            },
        );
        let resp = Response {
            code: h.code,
            framing: h.framing,
            upstream_keep_alive: h.keep_alive,
            close_app,
            dechunk,
        };
        let len = h.len;
        up.conn.consume(len);
        Ok(Some((resp, informational)))
    }

    /// Answer with the error's status and reason (counting an upstream failure on the
    /// key); `close` the app connection after it.
    async fn fail(&mut self, e: &ProxyError, stats: Option<&EdgeStats>, close: bool) -> Next {
        if let Some(stats) = stats {
            if e.is_upstream() {
                stats.record_error(now_ms());
            }
        }
        let (code, phrase) = e.status();
        tracing::debug!(error = %e, status = code, client = %self.peer, "Answered a proxied request with an error.");
        self.scratch.clear();
        head::write_error(&mut self.scratch, code, phrase, &e.to_string(), close);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            self.app.stream.write_all(&self.scratch),
        )
        .await;
        if close {
            self.linger = true;
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// The app connection ends: its upstream connection goes to the pool; after an error
    /// answer, what the app still sends is read and dropped for a moment (so closing with
    /// unread bytes does not reset the connection before the app reads the answer).
    async fn close(mut self) {
        if let Some(up) = self.upstream.take() {
            self.relay.pool.put(up.key, up.conn.stream);
        }
        let _ = self.app.stream.shutdown().await;
        if self.linger {
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                let mut left: usize = 1 << 20;
                while left > 0 {
                    match self.app.stream.read(&mut sink).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            })
            .await;
        }
    }
}
