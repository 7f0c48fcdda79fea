//! `CONNECT host:port`: dial the upstream first (so a closed port is a 502, not a tunnel
//! that dies at once), answer 200, then copy bytes both ways, counted as they pass, until
//! either side closes. TLS is never terminated.

use std::sync::Arc;

use http::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use super::body::CountingIo;
use super::connect::Dialer;
use super::error::ProxyError;
use super::target::Target;
use super::track::Tracker;
use crate::counters::EdgeStats;

pub struct Tunnels {
    pub dialer: Dialer,
    /// Live tunnels, so shutdown can wait for them.
    pub tracker: Tracker,
    /// Shared with the accept loop: a tunnel keeps a connection slot after its HTTP
    /// connection has handed over the socket.
    pub slots: Arc<Semaphore>,
}

impl Tunnels {
    pub async fn open<B>(
        &self,
        req: Request<B>,
        target: &Target,
        stats: Arc<EdgeStats>,
    ) -> Result<Response<()>, ProxyError> {
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            ProxyError::Overloaded("too many open connections (--max-connections)".into())
        })?;
        let upstream = self.dialer.dial(&target.host, target.port).await?;
        let on_upgrade = hyper::upgrade::on(req);
        let guard = self.tracker.track();
        let host = format!("{}:{}", target.host, target.port);
        tokio::spawn(async move {
            let _slot = slot;
            let _guard = guard;
            match on_upgrade.await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    let mut upstream = CountingIo::new(upstream, stats);
                    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                        Ok((sent, received)) => {
                            tracing::debug!(host, sent, received, "Tunnel closed.")
                        }
                        Err(error) => {
                            tracing::debug!(%error, host, "Tunnel ended with an error.")
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, host, "Client left before the tunnel opened.")
                }
            }
        });
        Ok(Response::new(()))
    }
}
