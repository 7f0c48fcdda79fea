//! Byte counting on streamed bodies and tunnels: wrappers that add each chunk's length to
//! the key's counters as it passes, so nothing is ever buffered whole.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use whouses_wire::Timestamp;

use crate::counters::EdgeStats;

/// Which way the bytes flow, seen from the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// App → upstream.
    Sent,
    /// Upstream → app.
    Received,
}

fn count(stats: &EdgeStats, dir: Direction, n: usize) {
    match dir {
        Direction::Sent => stats.add_bytes_sent(n as u64),
        Direction::Received => stats.add_bytes_received(n as u64),
    }
}

pin_project! {
    /// A body that counts its data bytes into an edge's counters. A body that fails
    /// mid-stream (upstream reset) counts one error.
    pub struct CountingBody<B> {
        #[pin]
        inner: B,
        stats: Option<Arc<EdgeStats>>,
        dir: Direction,
    }
}

impl<B> CountingBody<B> {
    pub fn new(inner: B, stats: Option<Arc<EdgeStats>>, dir: Direction) -> Self {
        CountingBody { inner, stats, dir }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(stats) = this.stats.as_deref() {
            match &frame {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        count(stats, *this.dir, d.len());
                    }
                }
                Some(Err(_)) if *this.dir == Direction::Received => {
                    stats.record_error(Timestamp::now().as_millis());
                }
                _ => {}
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    /// The upstream side of a CONNECT tunnel: reads count as received, writes as sent,
    /// as they happen (a long-lived tunnel shows up in every flush, not only at its end).
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
