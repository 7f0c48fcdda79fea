//! Upstream connections for forwarded requests.
//!
//! An app connection's requests are sequential, so one upstream connection serves them
//! all: the relay keeps the upstream connection it last used and reuses it with no
//! shared state on the way. When the app connection closes, its upstream connection goes
//! to this shared idle [`Pool`] (bounded per target and in all, closed after
//! `--idle-timeout`) for the next app connection to the same upstream. Pooled connections
//! hold no buffers: only the socket.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::route::{Dial, Route};

/// Idle upstream connections kept per upstream.
const MAX_IDLE_PER_TARGET: usize = 64;
/// Idle upstream connections kept in all.
const MAX_IDLE: usize = 1024;

/// Which upstream a connection goes to: a name dialed through `--resolve`/DNS, or an
/// address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PoolKey {
    Name(String, u16),
    Addr(SocketAddr),
}

impl PoolKey {
    pub fn of(route: &Route) -> PoolKey {
        match route.dial {
            Dial::Name => PoolKey::Name(route.target.host.clone(), route.target.port),
            Dial::Addr(a) => PoolKey::Addr(a),
        }
    }

    /// Whether a connection to this key serves `route`.
    pub fn is(&self, route: &Route) -> bool {
        match (self, &route.dial) {
            (PoolKey::Name(h, p), Dial::Name) => *p == route.target.port && *h == route.target.host,
            (PoolKey::Addr(a), Dial::Addr(b)) => a == b,
            _ => false,
        }
    }
}

/// Idle upstream connections, shared by all app connections.
pub struct Pool {
    idle: Mutex<Idle>,
    idle_timeout: Duration,
}

#[derive(Default)]
struct Idle {
    by_key: HashMap<PoolKey, Vec<(TcpStream, Instant)>>,
    total: usize,
}

/// Whether an idle connection is still open and quiet: the upstream neither closed it
/// nor sent anything unasked. No system call unless the socket became readable.
pub fn is_usable(s: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Idle {
    /// Forget connections that closed or idled out (dropping one closes it).
    fn drop_stale(&mut self, timeout: Duration) {
        for list in self.by_key.values_mut() {
            list.retain(|(s, since)| since.elapsed() < timeout && is_usable(s));
        }
        self.by_key.retain(|_, l| !l.is_empty());
        self.total = self.by_key.values().map(Vec::len).sum();
    }
}

impl Pool {
    pub fn new(idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(Idle::default()),
            idle_timeout,
        }
    }

    /// Close idle connections past the idle timeout, every half timeout, for as long as
    /// the pool exists.
    pub fn sweep_idle(self: &Arc<Self>) {
        let pool = Arc::downgrade(self);
        let every = (self.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = pool.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.drop_stale(pool.idle_timeout);
            }
        });
    }

    /// A usable idle connection to `key`, newest first.
    pub fn take(&self, key: &PoolKey) -> Option<TcpStream> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.by_key.get_mut(key)?;
        let before = list.len();
        let mut found = None;
        while let Some((s, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && is_usable(&s) {
                found = Some(s);
                break;
            }
        }
        let taken = before - list.len();
        if list.is_empty() {
            idle.by_key.remove(key);
        }
        idle.total = idle.total.saturating_sub(taken);
        found
    }

    /// Keep a connection between two exchanges; drop it when the pool is full.
    pub fn put(&self, key: PoolKey, s: TcpStream) {
        if !is_usable(&s) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.total >= MAX_IDLE {
            // Make room from connections that closed or idled out; else drop this one.
            idle.drop_stale(self.idle_timeout);
            if idle.total >= MAX_IDLE {
                return;
            }
        }
        let list = idle.by_key.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_TARGET {
            return;
        }
        list.push((s, Instant::now()));
        idle.total += 1;
    }
}
