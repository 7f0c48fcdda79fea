//! Byte tunnels: after `CONNECT` (the upstream dialed first, so a closed port is a 502,
//! not a tunnel that dies at once) and after a `101 Switching Protocols` (WebSocket).
//! Bytes are copied both ways, counted as they pass, until either side closes. TLS is
//! never terminated.
//!
//! Two ways to copy: through user space (`tokio::io::copy_bidirectional`, the default) or
//! with `splice(2)` through a kernel pipe per direction (`--tunnel-splice`), where the
//! bytes never reach user space; `docs/benchmarks.md` has the measurement that decided
//! the default.

use std::io;
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
        let upstream = upstream.into_inner();
        let (sent, received) = tokio::join!(
            splice_one_way(app, &upstream, &stats, Direction::Sent),
            splice_one_way(&upstream, app, &stats, Direction::Received),
        );
        return Ok((sent?, received?));
    }
    tokio::io::copy_bidirectional(app, &mut upstream).await
}

/// Move bytes from `src` to `dst` through a pipe until `src` closes, then close `dst`'s
/// sending side.
async fn splice_one_way(
    src: &TcpStream,
    dst: &TcpStream,
    stats: &EdgeStats,
    dir: Direction,
) -> io::Result<u64> {
    let (pipe_out, pipe_in) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
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
