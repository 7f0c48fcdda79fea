//! Dialing upstreams: `--resolve` overrides, DNS, a connect timeout, TCP_NODELAY; shared
//! by forwarded requests ([`super::upstream`]) and `CONNECT` tunnels.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::ResolveRule;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host}:{port} resolved to no address")]
    NoAddress { host: String, port: u16 },
    #[error("connecting to {host}:{port} ({addr}) failed: {source}")]
    Connect {
        host: String,
        port: u16,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("connecting to {host}:{port} timed out after {timeout:?}")]
    Timeout {
        host: String,
        port: u16,
        timeout: Duration,
    },
    #[error("request URI has no host")]
    NoHost,
}

/// How upstream addresses are found and dialed; shared by the HTTP pool and CONNECT.
#[derive(Debug, Clone)]
pub struct Dialer {
    overrides: Arc<HashMap<(String, u16), SocketAddr>>,
    timeout: Duration,
    /// The bypass detector, told of every connection dialed (never bypass).
    own: Option<Arc<crate::bypass::Bypass>>,
}

impl Dialer {
    pub fn new(rules: &[ResolveRule], timeout: Duration) -> Dialer {
        let overrides = rules
            .iter()
            .map(|r| ((r.host.clone(), r.port), r.addr))
            .collect();
        Dialer {
            overrides: Arc::new(overrides),
            timeout,
            own: None,
        }
    }

    /// Register every connection dialed with the bypass detector, when it runs.
    pub fn own_connections(mut self, bypass: Option<Arc<crate::bypass::Bypass>>) -> Dialer {
        self.own = bypass;
        self
    }

    fn connected(&self, s: &TcpStream) {
        let _ = s.set_nodelay(true);
        if let (Some(b), Ok(local), Ok(remote)) = (&self.own, s.local_addr(), s.peer_addr()) {
            b.own_connection(local, remote);
        }
    }

    /// Open a TCP connection to `addr`, never re-resolved; `host:port` names it in errors.
    pub async fn dial_addr(
        &self,
        host: &str,
        port: u16,
        addr: SocketAddr,
    ) -> Result<TcpStream, ConnectError> {
        let attempt = async {
            let s = TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Connect {
                    host: host.to_string(),
                    port,
                    addr,
                    source,
                })?;
            self.connected(&s);
            Ok(s)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout {
                host: host.to_string(),
                port,
                timeout: self.timeout,
            }),
        }
    }

    /// Open a TCP connection to `host:port` (already normalised), trying each resolved
    /// address in turn within one overall timeout.
    pub async fn dial(&self, host: &str, port: u16) -> Result<TcpStream, ConnectError> {
        let attempt = async {
            let addrs: Vec<SocketAddr> = match self.overrides.get(&(host.to_string(), port)) {
                Some(a) => vec![*a],
                None => tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|source| ConnectError::Resolve {
                        host: host.to_string(),
                        source,
                    })?
                    .collect(),
            };
            let mut last = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        self.connected(&s);
                        return Ok(s);
                    }
                    Err(source) => {
                        last = Some(ConnectError::Connect {
                            host: host.to_string(),
                            port,
                            addr,
                            source,
                        })
                    }
                }
            }
            Err(last.unwrap_or_else(|| ConnectError::NoAddress {
                host: host.to_string(),
                port,
            }))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout {
                host: host.to_string(),
                port,
                timeout: self.timeout,
            }),
        }
    }
}
