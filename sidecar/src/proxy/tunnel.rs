//! Byte tunnels: after `CONNECT` (the upstream dialed first, so a closed port is a 502,
//! not a tunnel that dies at once) and after a `101 Switching Protocols` (WebSocket).
//! Bytes are copied both ways, counted as they pass, until either side closes. TLS is
//! never terminated.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::body::{count, CountingIo, Direction};
use crate::counters::EdgeStats;

/// Relay until both directions are done. `to_upstream` / `to_app`: bytes already read
/// from one side (sent along with the request head, or after the 101 head) that belong to
/// the tunnel. Returns the bytes relayed each way.
pub async fn run(
    app: &mut TcpStream,
    upstream: TcpStream,
    to_upstream: &[u8],
    to_app: &[u8],
    stats: Arc<EdgeStats>,
) -> std::io::Result<(u64, u64)> {
    let mut upstream = CountingIo::new(upstream, stats.clone());
    if !to_upstream.is_empty() {
        upstream.write_all(to_upstream).await?;
    }
    if !to_app.is_empty() {
        app.write_all(to_app).await?;
        count(&stats, Direction::Received, to_app.len());
    }
    tokio::io::copy_bidirectional(app, &mut upstream).await
}
