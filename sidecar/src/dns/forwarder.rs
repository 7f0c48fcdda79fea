//! The DNS forwarder (`--dns-listen`): every query the app sends is forwarded unchanged to
//! the upstream resolver (`--dns-upstream`, else the first `nameserver` of
//! /etc/resolv.conf) and the answer returned unchanged; on the way, the question is
//! counted as a lookup and the answer's addresses are remembered for the asked name
//! ([`super::names`]). UDP and TCP (RFC 1035 §4.2.2 length-prefixed messages).
//!
//! Bounded: queries in flight, TCP connections, message sizes, and time per exchange. A
//! message we cannot parse is still forwarded (we only fail to learn from it).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use whouses_wire::Timestamp;

use super::names::Names;

/// UDP queries forwarded at once; more are dropped (the client's resolver retries).
const MAX_UDP_IN_FLIGHT: usize = 512;
/// TCP client connections at once.
const MAX_TCP_CONNECTIONS: usize = 64;
/// Time for the upstream to answer one query.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);
/// An idle TCP client connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot read {path}: {source}")]
    ResolvConf {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} names no nameserver; give --dns-upstream")]
    NoNameserver(String),
    #[error("the DNS upstream {0} is this forwarder itself (a loop); give --dns-upstream")]
    Loop(SocketAddr),
}

/// The upstream resolver: `--dns-upstream`, else the first `nameserver` in `resolv_conf`.
pub fn upstream(
    flag: Option<SocketAddr>,
    resolv_conf: &str,
    listen: SocketAddr,
) -> Result<SocketAddr, DnsError> {
    let up = match flag {
        Some(a) => a,
        None => {
            let text =
                std::fs::read_to_string(resolv_conf).map_err(|source| DnsError::ResolvConf {
                    path: resolv_conf.to_string(),
                    source,
                })?;
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("nameserver"))
                .filter_map(|rest| rest.trim().parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
                .next()
                .ok_or_else(|| DnsError::NoNameserver(resolv_conf.to_string()))?
        }
    };
    if up == listen {
        return Err(DnsError::Loop(up));
    }
    Ok(up)
}

/// Learn from a query (the name asked) and, later, from its answer.
fn question(msg: &[u8]) -> Option<String> {
    let m = Message::from_vec(msg).ok()?;
    let q = m.queries.first()?;
    whouses_wire::host::normalize_host(&q.name.to_ascii()).ok()
}

fn learn_answer(names: &Names, name: &str, answer: &[u8]) {
    let Ok(m) = Message::from_vec(answer) else {
        return;
    };
    let addrs: Vec<(IpAddr, u32)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => Some((IpAddr::V6(a.0).to_canonical(), r.ttl)),
            _ => None,
        })
        .collect();
    names.answered(name, &addrs, Timestamp::now().as_millis());
}

/// Serve DNS over UDP on `socket` until `shutdown`.
pub async fn serve_udp(
    socket: UdpSocket,
    upstream: SocketAddr,
    names: Arc<Names>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
    let mut buf = vec![0u8; 65_535];
    tokio::pin!(shutdown);
    loop {
        let (n, client) = tokio::select! {
            _ = &mut shutdown => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(error) => {
                    tracing::debug!(%error, "DNS receive failed.");
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%client, "Too many DNS queries in flight; dropped one (the client retries).");
            continue;
        };
        let query = buf[..n].to_vec();
        let (socket, names) = (socket.clone(), names.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let name = question(&query);
            if let Some(name) = &name {
                names.looked_up(name, Timestamp::now().as_millis());
            }
            match exchange_udp(&query, upstream).await {
                Ok(answer) => {
                    let _ = socket.send_to(&answer, client).await;
                    if let Some(name) = &name {
                        learn_answer(&names, name, &answer);
                    }
                }
                Err(error) => tracing::debug!(%error, %upstream, "DNS upstream did not answer."),
            }
        });
    }
}

async fn exchange_udp(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(upstream).await?;
    s.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(EXCHANGE_TIMEOUT, s.recv(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    buf.truncate(n);
    Ok(buf)
}

/// Serve DNS over TCP on `listener` until `shutdown`.
pub async fn serve_tcp(
    listener: TcpListener,
    upstream: SocketAddr,
    names: Arc<Names>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => return,
            s = slots.clone().acquire_owned() => match s { Ok(s) => s, Err(_) => return },
        };
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "Failed to accept a DNS connection.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let names = names.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = tcp_client(stream, upstream, &names).await {
                tracing::debug!(%error, "DNS TCP connection ended.");
            }
        });
    }
}

async fn read_message(s: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let len = match s.read_u16().await {
        Ok(l) => l as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut msg = vec![0u8; len];
    s.read_exact(&mut msg).await?;
    Ok(Some(msg))
}

async fn write_message(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await
}

async fn tcp_client(
    mut client: TcpStream,
    upstream: SocketAddr,
    names: &Names,
) -> std::io::Result<()> {
    let mut up: Option<TcpStream> = None;
    loop {
        let Some(query) = tokio::time::timeout(TCP_IDLE, read_message(&mut client))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle"))??
        else {
            return Ok(());
        };
        let name = question(&query);
        if let Some(name) = &name {
            names.looked_up(name, Timestamp::now().as_millis());
        }
        let answer = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
            if up.is_none() {
                up = Some(TcpStream::connect(upstream).await?);
            }
            let s = up
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no upstream connection"))?;
            write_message(s, &query).await?;
            read_message(s).await?.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "upstream closed")
            })
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        write_message(&mut client, &answer).await?;
        if let Some(name) = &name {
            learn_answer(names, name, &answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_comes_from_the_flag_or_resolv_conf_and_never_loops() {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("resolv.conf");
        std::fs::write(
            &rc,
            "# test\nsearch svc.cluster.local\nnameserver 198.18.0.10\nnameserver 198.18.0.11\n",
        )
        .unwrap();
        let listen: SocketAddr = "127.0.0.1:15053".parse().unwrap();
        let rc = rc.to_str().unwrap();
        assert_eq!(
            upstream(None, rc, listen).unwrap().to_string(),
            "198.18.0.10:53"
        );
        let flag: SocketAddr = "127.0.0.53:53".parse().unwrap();
        assert_eq!(upstream(Some(flag), rc, listen).unwrap(), flag);
        assert!(matches!(
            upstream(Some(listen), rc, listen),
            Err(DnsError::Loop(_))
        ));
        assert!(upstream(None, "/nonexistent/resolv.conf", listen).is_err());
    }
}
