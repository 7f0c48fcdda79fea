//! A small, bounded pool of PostgreSQL connections (tokio-postgres), each with the
//! statements it has prepared: at most [`Pool::max`] connections, a wait for a free one
//! bounded by a timeout, a connection handed back only after a successful use.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Statement};

use super::connect::Connector;
use crate::store::StoreError;

/// How long a query waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection and the statements prepared on it (by their SQL text, which is always
/// one of our constants).
pub(super) struct Conn {
    pub client: Client,
    statements: HashMap<&'static str, Statement>,
    /// Statements whose text is built per query (the shape of a host filter), by text:
    /// at most [`MAX_BUILT`], all forgotten (and closed on the server) past that.
    built: HashMap<String, Statement>,
}

/// How many built statements a connection keeps prepared.
const MAX_BUILT: usize = 32;

impl Conn {
    /// The prepared statement for `sql`, preparing it on first use.
    pub async fn prepared(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await.map_err(StoreError::pg)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    /// The prepared statement for a built `sql` with parameters of `types`, preparing it
    /// on first use: a statement run again is not planned again once the server found a
    /// plan for every parameter value (for a host with a thousand callers, planning was
    /// 2 ms of the window statement's ~15).
    pub async fn prepared_built(
        &mut self,
        sql: String,
        types: &[tokio_postgres::types::Type],
    ) -> Result<Statement, StoreError> {
        if let Some(s) = self.built.get(&sql) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare_typed(&sql, types)
            .await
            .map_err(StoreError::pg)?;
        if self.built.len() >= MAX_BUILT {
            self.built.clear();
        }
        self.built.insert(sql, s.clone());
        Ok(s)
    }
}

pub(super) struct Pool {
    connector: Connector,
    idle: Mutex<Vec<Conn>>,
    permits: std::sync::Arc<Semaphore>,
    max: usize,
}

/// A connection taken from the pool. Handed back with [`Pooled::release`] after a
/// successful use; dropped otherwise (an error may leave it in an unknown state), which
/// closes it and frees its slot.
pub(super) struct Pooled<'a> {
    conn: Conn,
    pool: &'a Pool,
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Pooled<'_> {
    /// Return the connection to the pool for the next query (unless its server went away).
    pub fn release(self) {
        if !self.conn.client.is_closed() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.conn);
        }
    }
}

impl Pool {
    pub fn new(connector: Connector, max: usize) -> Pool {
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            permits: std::sync::Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A connection: an idle one, or a new one.
    pub async fn get(&self) -> Result<Pooled<'_>, StoreError> {
        self.get_within(ACQUIRE_TIMEOUT).await
    }

    /// A connection, waiting at most `wait` for a free slot and for a new connection.
    pub async fn get_within(&self, wait: Duration) -> Result<Pooled<'_>, StoreError> {
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                StoreError::Pool(format!(
                    "no free database connection within {wait:?} (all {} busy)",
                    self.max
                ))
            })?
            .map_err(|_| StoreError::Pool("the store is closed".into()))?;
        let idle = loop {
            let c = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match c {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let conn = match idle {
            Some(c) => c,
            None => {
                let client = tokio::time::timeout(wait, self.connector.connect())
                    .await
                    .map_err(|_| {
                        StoreError::Pool(format!("connecting to the database took over {wait:?}"))
                    })??;
                Conn {
                    client,
                    statements: HashMap::new(),
                    built: HashMap::new(),
                }
            }
        };
        Ok(Pooled {
            conn,
            pool: self,
            _permit: permit,
        })
    }

    /// Refuse new work and drop idle connections.
    pub fn close(&self) {
        self.permits.close();
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
