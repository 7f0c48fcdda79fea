//! Relaying a body by its framing, counted as it streams: `Content-Length` bytes, a
//! chunked body (relayed as it came, or de-chunked for an HTTP/1.0 app), or everything
//! until the upstream closes. Only the data bytes are counted, never the framing. Nothing
//! is ever buffered whole: at most one read of the source is held.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::chunked::{ChunkError, Decoder};
use super::conn::{write_two, Conn};
use super::head::Framing;
use crate::counters::EdgeStats;

/// Trailer sections larger than this are refused.
const MAX_TRAILERS: usize = 64 * 1024;

/// Which way the bytes flow, seen from the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// App → upstream.
    Sent,
    /// Upstream → app.
    Received,
}

pub fn count(stats: &EdgeStats, dir: Direction, n: usize) {
    match dir {
        Direction::Sent => stats.add_bytes_sent(n as u64),
        Direction::Received => stats.add_bytes_received(n as u64),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the connection closed before the body ended")]
    Truncated,
    #[error("reading the body failed: {0}")]
    Read(io::Error),
    #[error("writing the body failed: {0}")]
    Write(io::Error),
    #[error("{0}")]
    Chunked(#[from] ChunkError),
}

impl BodyError {
    /// The reading side failed (a truncated or malformed body), not the writing side.
    pub fn is_source(&self) -> bool {
        !matches!(self, BodyError::Write(_))
    }
}

/// Where a body stands.
#[derive(Debug, Clone)]
pub struct Body {
    kind: Kind,
    /// Send only the data of a chunked body.
    dechunk: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Length(u64),
    Chunked(Decoder),
    UntilClose,
    Done,
}

/// What a scan of buffered bytes found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Bytes of the source buffer that belong to this body.
    pub consumed: usize,
    /// Data bytes among them (what is counted).
    pub data: usize,
}

impl Body {
    pub fn new(framing: Framing, dechunk: bool) -> Body {
        let kind = match framing {
            Framing::None | Framing::Length(0) => Kind::Done,
            Framing::Length(n) => Kind::Length(n),
            Framing::Chunked => Kind::Chunked(Decoder::new(MAX_TRAILERS)),
            Framing::UntilClose => Kind::UntilClose,
        };
        Body {
            kind,
            dechunk: dechunk && framing == Framing::Chunked,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.kind, Kind::Done)
    }

    /// Take the part of `input` that belongs to this body. When de-chunking, the data is
    /// appended to `out` (and `consumed` bytes of `input` are no longer to be sent);
    /// otherwise `input[..consumed]` is sent as it is.
    pub fn scan(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Scan, ChunkError> {
        let mut s = Scan::default();
        match &mut self.kind {
            Kind::Done => {}
            Kind::UntilClose => {
                s.consumed = input.len();
                s.data = input.len();
            }
            Kind::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                // n ≤ left.
                *left -= n as u64;
                s.consumed = n;
                s.data = n;
                if *left == 0 {
                    self.kind = Kind::Done;
                }
            }
            Kind::Chunked(d) => {
                while s.consumed < input.len() && !d.is_done() {
                    let rest = &input[s.consumed..];
                    let step = d.step(rest)?;
                    if step.data {
                        s.data += step.consumed;
                        if self.dechunk {
                            out.extend_from_slice(&rest[..step.consumed]);
                        }
                    }
                    s.consumed += step.consumed;
                }
                if d.is_done() {
                    self.kind = Kind::Done;
                }
            }
        }
        Ok(s)
    }

    /// The body ends with the connection, and it just closed.
    fn ends_at_close(&mut self) -> bool {
        if matches!(self.kind, Kind::UntilClose) {
            self.kind = Kind::Done;
            true
        } else {
            false
        }
    }
}

/// Relay the rest of `body` from `src` to `dst`, counting data bytes as they pass.
pub async fn relay(
    src: &mut Conn,
    dst: &mut TcpStream,
    body: &mut Body,
    stats: &EdgeStats,
    dir: Direction,
    scratch: &mut Vec<u8>,
) -> Result<(), BodyError> {
    while !body.is_done() {
        if src.buf.is_empty() {
            match src.fill().await {
                Ok(0) if body.ends_at_close() => return Ok(()),
                Ok(0) => return Err(BodyError::Truncated),
                Ok(_) => {}
                Err(e) => return Err(BodyError::Read(e)),
            }
        }
        scratch.clear();
        let s = body.scan(&src.buf, scratch)?;
        count(stats, dir, s.data);
        let out: &[u8] = if body.dechunk {
            scratch
        } else {
            &src.buf[..s.consumed]
        };
        write_two(dst, out, &[]).await.map_err(BodyError::Write)?;
        src.consume(s.consumed);
    }
    Ok(())
}

pin_project! {
    /// The upstream side of a tunnel: reads count as received, writes as sent, as they
    /// happen (a long-lived tunnel shows up in every flush, not only at its end).
    pub struct CountingIo<T> {
        #[pin]
        inner: T,
        stats: Arc<EdgeStats>,
    }
}

impl<T> CountingIo<T> {
    pub fn new(inner: T, stats: Arc<EdgeStats>) -> Self {
        CountingIo { inner, stats }
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead> AsyncRead for CountingIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        ready!(this.inner.poll_read(cx, buf))?;
        count(this.stats, Direction::Received, buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite> AsyncWrite for CountingIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = ready!(this.inner.poll_write(cx, buf))?;
        count(this.stats, Direction::Sent, n);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_bodies_stop_at_their_end() {
        let mut b = Body::new(Framing::Length(5), false);
        let mut out = Vec::new();
        let s = b.scan(b"hel", &mut out).unwrap();
        assert_eq!((s.consumed, s.data, b.is_done()), (3, 3, false));
        let s = b.scan(b"loGET next", &mut out).unwrap();
        assert_eq!((s.consumed, s.data, b.is_done()), (2, 2, true));
    }

    #[test]
    fn chunked_bodies_count_data_only_and_dechunk_on_request() {
        let raw = b"5\r\nhello\r\n0\r\n\r\nrest";
        let mut b = Body::new(Framing::Chunked, false);
        let mut out = Vec::new();
        let s = b.scan(raw, &mut out).unwrap();
        assert_eq!((s.consumed, s.data, b.is_done()), (raw.len() - 4, 5, true));
        assert!(out.is_empty());
        let mut b = Body::new(Framing::Chunked, true);
        b.scan(raw, &mut out).unwrap();
        assert_eq!(out, b"hello");
    }
}
