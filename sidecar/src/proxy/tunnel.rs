//! Byte tunnels: after `CONNECT` (the upstream dialed first, so a closed port is a 502,
//! not a tunnel that dies at once) and after a `101 Switching Protocols` (WebSocket).
//! Bytes are copied both ways, counted as they pass, until either side closes. TLS is
//! never terminated.
//!
//! Two ways to copy: with `splice(2)` through a kernel pipe per direction (the default),
//! where the bytes never reach user space — half the CPU for bulk transfers, the same for
//! small TLS exchanges (`docs/benchmarks.md`) — or through user space
//! (`tokio::io::copy_bidirectional`) with `--tunnel-splice false`, and whenever the pipes
//! cannot be had (the file-descriptor limit).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::body::{count, CountingIo, Direction};
use crate::counters::EdgeStats;

/// Bytes moved per `splice` call.
const SPLICE_LEN: usize = 64 * 1024;

/// Relay until both directions are done. `to_upstream` / `to_app`: bytes already read
/// from one side (sent along with the request head, or after the 101 head) that belong to
/// the tunnel. Returns the bytes relayed each way.
pub async fn run(
    app: &mut TcpStream,
    upstream: TcpStream,
    to_upstream: &[u8],
    to_app: &[u8],
    stats: Arc<EdgeStats>,
    splice: bool,
) -> io::Result<(u64, u64)> {
    let mut upstream = CountingIo::new(upstream, stats.clone());
    if !to_upstream.is_empty() {
        upstream.write_all(to_upstream).await?;
    }
    if !to_app.is_empty() {
        app.write_all(to_app).await?;
        count(&stats, Direction::Received, to_app.len());
    }
    if splice {
        match (pipe(), pipe()) {
            (Ok(up_pipe), Ok(down_pipe)) => {
                let upstream = upstream.into_inner();
                // The first error in either direction ends the tunnel (both sockets are
                // dropped), as with the copy through user space.
                return tokio::try_join!(
                    splice_one_way(app, &upstream, up_pipe, &stats, Direction::Sent),
                    splice_one_way(&upstream, app, down_pipe, &stats, Direction::Received),
                );
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::debug!(%error, "No pipe for splice(2); copying through user space.");
            }
        }
    }
    tokio::io::copy_bidirectional(app, &mut upstream).await
}

/// A pipe's read and write ends, non-blocking.
type Pipe = (OwnedFd, OwnedFd);

fn pipe() -> io::Result<Pipe> {
    Ok(rustix::pipe::pipe_with(
        PipeFlags::NONBLOCK | PipeFlags::CLOEXEC,
    )?)
}

/// Move bytes from `src` to `dst` through a pipe until `src` closes, then close `dst`'s
/// sending side.
async fn splice_one_way(
    src: &TcpStream,
    dst: &TcpStream,
    (pipe_out, pipe_in): Pipe,
    stats: &EdgeStats,
    dir: Direction,
) -> io::Result<u64> {
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let mut total: u64 = 0;
    loop {
        // Socket → pipe (the pipe is empty here, so EAGAIN means the socket has nothing).
        let n = loop {
            src.readable().await?;
            match src.try_io(Interest::READABLE, || {
                rustix::pipe::splice(src, None, &pipe_in, None, SPLICE_LEN, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            let _ = rustix::net::shutdown(dst, rustix::net::Shutdown::Write);
            return Ok(total);
        }
        count(stats, dir, n);
        total = total.saturating_add(n as u64);
        // Pipe → socket, until the pipe is empty.
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                rustix::pipe::splice(&pipe_out, None, dst, None, left, flags)
                    .map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => left = left.saturating_sub(m),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
