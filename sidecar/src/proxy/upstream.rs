//! Upstream HTTP/1.1 connections for forwarded requests.
//!
//! An app connection's requests are sequential, so one upstream connection serves them
//! all: each app connection keeps the upstream connection it last used ([`Affinity`]) and
//! reuses it with no shared state on the way. When the app connection closes, its
//! upstream connection goes to a shared idle [`Pool`] (bounded, with an idle timeout) for
//! the next app connection to the same target. Compared with a pool checked for every
//! request this opens exactly as many upstream connections as there are busy app
//! connections, and takes no lock per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::Response;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use whouses_wire::{Scheme, Timestamp};

use super::body::CountingBody;
use super::connect::Dialer;
use super::error::{chain, ProxyError};
use crate::counters::Counters;

pub type Sender = http1::SendRequest<CountingBody<Incoming>>;
type Key = (String, u16);

/// Idle upstream connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 64;
/// Idle upstream connections kept in all.
const MAX_IDLE: usize = 1024;

/// Idle upstream connections, shared by all app connections.
pub struct Pool {
    idle: Mutex<Idle>,
    idle_timeout: Duration,
    dialer: Dialer,
    counters: Arc<Counters>,
    http: http1::Builder,
}

#[derive(Default)]
struct Idle {
    by_target: HashMap<Key, Vec<(Sender, Instant)>>,
    total: usize,
}

impl Idle {
    /// Forget connections that closed or idled out (dropping one closes it).
    fn drop_stale(&mut self, timeout: Duration) {
        for list in self.by_target.values_mut() {
            list.retain(|(s, since)| !s.is_closed() && since.elapsed() < timeout);
        }
        self.by_target.retain(|_, l| !l.is_empty());
        self.total = self.by_target.values().map(Vec::len).sum();
    }
}

impl Pool {
    pub fn new(dialer: Dialer, counters: Arc<Counters>, idle_timeout: Duration) -> Pool {
        let mut http = http1::Builder::new();
        // Response heads as large as the ones we accept from apps.
        http.max_buf_size(1024 * 1024);
        Pool {
            idle: Mutex::new(Idle::default()),
            idle_timeout,
            dialer,
            counters,
            http,
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

    /// A live idle connection to `key`, newest first.
    fn take(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.by_target.get_mut(key)?;
        let before = list.len();
        let mut found = None;
        while let Some((s, since)) = list.pop() {
            if !s.is_closed() && since.elapsed() < self.idle_timeout {
                found = Some(s);
                break;
            }
        }
        let taken = before - list.len();
        if list.is_empty() {
            idle.by_target.remove(key);
        }
        idle.total -= taken;
        found
    }

    /// Keep a connection that can take a request now; drop it otherwise or when full.
    fn put(&self, key: Key, s: Sender) {
        if s.is_closed() || !s.is_ready() {
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
        let list = idle.by_target.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_TARGET {
            return;
        }
        list.push((s, Instant::now()));
        idle.total += 1;
    }

    /// Dial, handshake, and drive a new connection on its own task.
    async fn connect(&self, key: &Key) -> Result<Sender, ProxyError> {
        let stream = self.dialer.dial(&key.0, key.1).await?;
        self.counters
            .edge(&key.0, key.1, Scheme::Http)
            .record_connection(Timestamp::now().as_millis());
        let (sender, conn) = self
            .http
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Upstream {
                target: format!("{}:{}", key.0, key.1),
                reason: chain(&e),
            })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "Upstream connection ended with an error.");
            }
        });
        Ok(sender)
    }
}

/// The upstream connection of one app connection. Dropped with the app connection, it
/// hands its upstream connection to the pool.
pub struct Affinity {
    pool: Arc<Pool>,
    current: Mutex<Option<(Key, Sender)>>,
}

impl Affinity {
    pub fn new(pool: Arc<Pool>) -> Affinity {
        Affinity {
            pool,
            current: Mutex::new(None),
        }
    }

    /// This connection's upstream connection to `key`, or a pooled one. A connection to
    /// another target goes to the pool.
    fn take(&self, key: &Key) -> Option<Sender> {
        let held = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match held {
            Some((k, s)) if &k == key && !s.is_closed() => return Some(s),
            Some((k, s)) => self.pool.put(k, s),
            None => {}
        }
        self.pool.take(key)
    }

    fn keep(&self, key: Key, s: Sender) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match current.take() {
            // Another request of this app connection already parked one (it cannot
            // happen with HTTP/1.1's one request at a time, but never leak it).
            Some((k, old)) => {
                *current = Some((key, s));
                drop(current);
                self.pool.put(k, old);
            }
            None => *current = Some((key, s)),
        }
    }

    /// Send `req` (origin-form, hop-by-hop headers already removed) to `key`. A reused
    /// connection that turns out to be closed before the request was written is retried
    /// once on a new connection.
    pub async fn send(
        &self,
        key: Key,
        mut req: http::Request<CountingBody<Incoming>>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let target = || format!("{}:{}", key.0, key.1);
        let mut reused = self.take(&key);
        loop {
            let (mut sender, was_reused) = match reused.take() {
                Some(s) => (s, true),
                None => (self.pool.connect(&key).await?, false),
            };
            if sender.ready().await.is_err() {
                if was_reused {
                    continue;
                }
                return Err(ProxyError::Upstream {
                    target: target(),
                    reason: "the connection closed before the request was sent".into(),
                });
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.keep(key, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if was_reused => {
                        req = unsent;
                        continue;
                    }
                    _ => {
                        return Err(ProxyError::Upstream {
                            target: target(),
                            reason: chain(e.error()),
                        })
                    }
                },
            }
        }
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let held = self
            .current
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((key, s)) = held {
            self.pool.put(key, s);
        }
    }
}
