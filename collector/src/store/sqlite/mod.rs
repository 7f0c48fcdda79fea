//! The SQLite backend (rusqlite): one file, WAL mode, `synchronous=FULL` so an
//! acknowledged batch survives a crash. Writes go to one writer thread ([`writer`]),
//! which group-commits; reads run in parallel on a small pool of read-only connections
//! ([`read`]), each query on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, Semaphore};
use whouses_wire::api::{BypassRow, EdgeRow, InstanceRow, LookupRow};
use whouses_wire::Timestamp;

use super::WindowCalls;
use super::{AddressClaim, CalleeInstance, InboundFilter, InboundRow};
use super::{Batch, EdgeFilter, Ingested, InstanceCoverage, ObsFilter, Options, Store, StoreError};
use crate::targets::HostPattern;

mod decom;
mod inbound;
mod otel;
mod read;
mod schema;
mod writer;

use writer::Job;

/// Queries running at once (each holds a connection and a blocking thread).
const READERS: usize = 4;

/// What `/readyz` needs to know about writes.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// The last group commit failed for lack of space (or a read-only file).
    cannot_write: AtomicBool,
}

impl Health {
    fn wrote(&self) {
        self.cannot_write.store(false, Ordering::Release);
    }

    fn failed(&self, e: &StoreError) {
        if matches!(e, StoreError::Full(_)) {
            self.cannot_write.store(true, Ordering::Release);
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    readers: Arc<Readers>,
    writer: mpsc::Sender<Job>,
    health: Arc<Health>,
    min_free_bytes: u64,
}

/// Read-only connections, reused across queries.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    /// Run `f` on a reader connection, on a blocking thread.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Pool("the store is closed".into()))?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(c) => c,
            None => schema::open_reader(&self.path)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Pool(format!("a query thread failed: {e}")))?;
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
        result
    }
}

impl SqliteStore {
    pub async fn open(url: &str, options: &Options) -> Result<SqliteStore, StoreError> {
        let path = path_of(url)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Invalid(format!(
                    "cannot create the database directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let health = Arc::new(Health::default());
        let writer = {
            let path = path.clone();
            let health = health.clone();
            tokio::task::spawn_blocking(move || writer::spawn(&path, health))
                .await
                .map_err(|e| StoreError::Pool(format!("opening the database: {e}")))??
        };
        Ok(SqliteStore {
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            }),
            path,
            writer,
            health,
            min_free_bytes: options.min_free_bytes,
        })
    }

    /// Send one job to the writer thread and wait for its answer.
    async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(job(reply))
            .await
            .map_err(|_| StoreError::Pool("the store is closed".into()))?;
        rx.await
            .map_err(|_| StoreError::Pool("the store writer stopped".into()))?
    }
}

/// `sqlite://PATH`, `sqlite:PATH` or `sqlite:///abs/path` → the file; in-memory
/// databases are refused (counts must survive a restart).
fn path_of(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite:")
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_string()))?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() {
        return Err(StoreError::Invalid(format!(
            "{url:?} names no file: use sqlite://PATH"
        )));
    }
    if path.starts_with(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::Invalid(format!(
            "{url:?} is an in-memory database; the collector keeps counts in a file: use sqlite://PATH"
        )));
    }
    Ok(Path::new(path).to_path_buf())
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, batch: Batch) -> Result<Ingested, StoreError> {
        self.ask(|reply| Job::Ingest {
            batch: Box::new(batch),
            reply,
        })
        .await
    }

    async fn edges(&self, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError> {
        let f = f.clone();
        self.readers.run(move |c| read::edges(c, &f)).await
    }

    async fn window_calls(
        &self,
        hosts: &[HostPattern],
        since: Timestamp,
    ) -> Result<Vec<WindowCalls>, StoreError> {
        let hosts = hosts.to_vec();
        self.readers
            .run(move |c| read::window_calls(c, Some(&hosts), since))
            .await
    }

    async fn fleet_window_calls(&self, since: Timestamp) -> Result<Vec<WindowCalls>, StoreError> {
        self.readers
            .run(move |c| read::window_calls(c, None, since))
            .await
    }

    async fn lookups(&self, f: &ObsFilter) -> Result<Vec<LookupRow>, StoreError> {
        let f = f.clone();
        self.readers.run(move |c| read::lookups(c, &f)).await
    }

    async fn bypass(&self, f: &ObsFilter) -> Result<Vec<BypassRow>, StoreError> {
        let f = f.clone();
        self.readers.run(move |c| read::bypass(c, &f)).await
    }

    async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        self.readers.run(read::instances).await
    }

    async fn coverage(
        &self,
        services: &[(String, String)],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError> {
        let services = services.to_vec();
        self.readers
            .run(move |c| read::coverage(c, &services, after))
            .await
    }

    async fn callers_coverage(
        &self,
        hosts: &[HostPattern],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError> {
        let hosts = hosts.to_vec();
        self.readers
            .run(move |c| read::callers_coverage(c, &hosts, after))
            .await
    }

    async fn observed_since(&self) -> Result<Option<Timestamp>, StoreError> {
        self.readers.run(read::observed_since).await
    }

    async fn prune(&self, cutoff: Timestamp, seen_cutoff: Timestamp) -> Result<u64, StoreError> {
        self.ask(|reply| Job::Prune {
            cutoff,
            seen_cutoff,
            reply,
        })
        .await
    }

    /// Fold hourly buckets a day per writer job, so ingest interleaves.
    async fn rollup(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            match self.ask(|reply| Job::Rollup { before, reply }).await? {
                0 => break,
                n => total += n,
            }
        }
        // Then the edges late batches left stale (their rows' `calls_before`).
        let mut repaired = 0u64;
        loop {
            match self.ask(|reply| Job::Repair { reply }).await? {
                0 => break,
                n => repaired = repaired.saturating_add(n),
            }
        }
        super::buckets::log_repaired(repaired);
        Ok(total)
    }

    async fn inbound(&self, f: &InboundFilter) -> Result<Vec<InboundRow>, StoreError> {
        let f = f.clone();
        self.readers.run(move |c| inbound::inbound(c, &f)).await
    }

    async fn address_claims(&self, addresses: &[String]) -> Result<Vec<AddressClaim>, StoreError> {
        let addresses = addresses.to_vec();
        self.readers
            .run(move |c| inbound::address_claims(c, &addresses))
            .await
    }

    async fn callee_instances(&self) -> Result<Vec<CalleeInstance>, StoreError> {
        self.readers.run(inbound::callee_instances).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.readers
            .run(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await?;
        if self.health.cannot_write.load(Ordering::Acquire) {
            return Err(StoreError::Full(
                "the last write failed (disk full or read-only)".into(),
            ));
        }
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(fs) = rustix::fs::statvfs(dir) {
            let free = fs.f_bavail.saturating_mul(fs.f_frsize);
            if free < self.min_free_bytes {
                return Err(StoreError::Full(format!(
                    "{free} bytes free on the database's file system (below --min-free-space {})",
                    self.min_free_bytes
                )));
            }
        }
        Ok(())
    }

    async fn close(&self) {
        // The writer goes last: the last connection to close folds the WAL back into the
        // database file.
        self.readers.permits.close();
        self.readers
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let (reply, rx) = oneshot::channel();
        if self.writer.send(Job::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn decom(&self) -> &dyn super::decom::DecomStore {
        self
    }

    // ---- OTLP ingest (issue 17): store/sqlite/otel.rs ----

    async fn otel_series(
        &self,
        keys: &[String],
    ) -> Result<Vec<super::otel::OtelSeries>, StoreError> {
        otel::series(&self.path, keys).await
    }

    async fn otel_advance(
        &self,
        steps: &[super::otel::OtelAdvance],
    ) -> Result<Vec<bool>, StoreError> {
        otel::advance(&self.path, steps).await
    }

    async fn otel_stored(&self, points: &[(String, i64)]) -> Result<(), StoreError> {
        otel::stored(&self.path, points).await
    }

    async fn otel_export_lease(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        otel::lease(&self.path, holder, now, until).await
    }

    async fn otel_prune(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        otel::prune(&self.path, cutoff.0).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_files_and_memory_is_refused() {
        assert_eq!(
            path_of("sqlite://whouses.db").unwrap(),
            Path::new("whouses.db")
        );
        assert_eq!(
            path_of("sqlite:///var/lib/w.db").unwrap(),
            Path::new("/var/lib/w.db")
        );
        assert_eq!(path_of("sqlite:w.db?mode=rwc").unwrap(), Path::new("w.db"));
        assert!(path_of("sqlite://:memory:").is_err());
        assert!(path_of("sqlite://").is_err());
    }
}
