//! The SQLite backend: one file, WAL mode, `synchronous=FULL` so an acknowledged batch
//! survives a crash. Writes go to one writer thread ([`super::sqlite_writer`]), which
//! group-commits; reads run in parallel on the sqlx pool.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use whouses_wire::{Report, Timestamp};

use super::sqlite_writer::{self, Job};
use super::{EdgeFilter, EdgeRow, Ingested, InstanceCoverage, InstanceRow, Interval, StoreError};
use crate::targets::HostPattern;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Most services per coverage statement (2 parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 400;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<Job>,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        let name = url.trim_start_matches("sqlite:").trim_start_matches("//");
        if name.starts_with(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Invalid(format!(
                "{url:?} is an in-memory database; the collector keeps counts in a file: use sqlite://PATH"
            )));
        }
        let path = opts.get_filename().to_path_buf();
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let writer = sqlite_writer::spawn(&path)?;
        Ok(SqliteStore { pool, writer })
    }

    /// Store one batch. Concurrent batches are group-committed by the writer thread: one
    /// transaction (and one fsync) for everything waiting, each batch in a savepoint of
    /// its own so a failing batch never takes the others down. The answer comes only
    /// after the commit.
    pub async fn ingest(&self, r: &Report, received: Timestamp) -> Result<Ingested, StoreError> {
        self.ask(|reply| Job::Ingest {
            report: r.clone(),
            received,
            reply,
        })
        .await
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
            .map_err(|_| StoreError::Invalid("the store is closed".into()))?;
        rx.await
            .map_err(|_| StoreError::Invalid("the store writer stopped".into()))?
    }

    pub async fn edges(&self, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError> {
        let Some(since) = f.since else {
            return self.edge_rows(f, Source::Totals).await;
        };
        // A bucket is in exactly one of three places: the edge's current hour (in its own
        // row), the hourly buckets, or — older than --hourly-for — the daily ones. Sum
        // all three. A day bucket counts whole when `since` falls inside it: the answer
        // errs towards "still used", never the other way.
        let hour = since.0.div_euclid(HOUR_MS);
        let current = self.edge_rows(f, Source::Current(hour)).await?;
        let hours = self
            .edge_rows(f, Source::Buckets("edge_hours", "hour", hour))
            .await?;
        let days = self
            .edge_rows(
                f,
                Source::Buckets("edge_days", "day", since.0.div_euclid(DAY_MS)),
            )
            .await?;
        Ok(sum_rows(sum_rows(current, hours), days))
    }

    /// Edge rows of one source, sorted by host, port, scheme, service, environment.
    async fn edge_rows(&self, f: &EdgeFilter, source: Source) -> Result<Vec<EdgeRow>, StoreError> {
        let mut q: QueryBuilder<Sqlite> = match source {
            Source::Totals => QueryBuilder::new(
                "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.requests,
                        e.connections, e.errors, e.bytes_sent, e.bytes_received, e.first_seen,
                        e.last_seen
                 FROM edges e WHERE 1 = 1",
            ),
            Source::Current(from) => {
                let mut q = QueryBuilder::new(
                    "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.cur_requests,
                            e.cur_connections, e.cur_errors, e.cur_bytes_sent,
                            e.cur_bytes_received, e.cur_first_seen, e.cur_last_seen
                     FROM edges e WHERE e.cur_hour >= ",
                );
                q.push_bind(from);
                q
            }
            Source::Buckets(table, column, from) => {
                let mut q = QueryBuilder::new(format!(
                    "SELECT e.service, e.environment, e.host, e.port, e.scheme,
                            SUM(h.requests), SUM(h.connections), SUM(h.errors),
                            SUM(h.bytes_sent), SUM(h.bytes_received), MIN(h.first_seen),
                            MAX(h.last_seen)
                     FROM edges e JOIN {table} h ON h.edge_id = e.id
                     WHERE h.{column} >= "
                ));
                q.push_bind(from);
                q
            }
        };
        if let Some(hosts) = &f.hosts {
            // No constant-false first term (`0 = 1 OR …`): it stops SQLite from using the
            // host index, and every lookup becomes a scan of all edges.
            q.push(" AND (");
            if hosts.is_empty() {
                q.push("0 = 1");
            }
            for (i, p) in hosts.iter().enumerate() {
                if i > 0 {
                    q.push(" OR ");
                }
                match p {
                    HostPattern::Host(h) => {
                        q.push("e.host = ").push_bind(h.clone());
                    }
                    HostPattern::HostPort(h, port) => {
                        q.push("(e.host = ")
                            .push_bind(h.clone())
                            .push(" AND e.port = ")
                            .push_bind(*port as i64)
                            .push(")");
                    }
                    HostPattern::Suffix(s) => {
                        q.push("e.host = ")
                            .push_bind(s.clone())
                            .push(" OR e.host LIKE ")
                            .push_bind(format!("%.{}", escape_like(s)))
                            .push(" ESCAPE '\\'");
                    }
                }
            }
            q.push(")");
        }
        if let Some(s) = &f.service {
            q.push(" AND e.service = ").push_bind(s.clone());
        }
        if let Some(env) = &f.environment {
            q.push(" AND e.environment = ").push_bind(env.clone());
        }
        if matches!(source, Source::Buckets(..)) {
            q.push(" GROUP BY e.id");
        }
        q.push(" ORDER BY e.host, e.port, e.scheme, e.service, e.environment");
        let rows = q.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(|row| EdgeRow {
                service: row.get(0),
                environment: row.get(1),
                host: row.get(2),
                port: row.get::<i64, _>(3) as u16,
                scheme: row.get(4),
                requests: row.get::<i64, _>(5) as u64,
                connections: row.get::<i64, _>(6) as u64,
                errors: row.get::<i64, _>(7) as u64,
                bytes_sent: row.get::<i64, _>(8) as u64,
                bytes_received: row.get::<i64, _>(9) as u64,
                first_seen: Timestamp(row.get(10)),
                last_seen: Timestamp(row.get(11)),
            })
            .collect())
    }

    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT instance, service, environment, first_report, last_report, observed_until,
                    last_seq, started_at, flush_interval_ms, reports
             FROM instances ORDER BY service, environment, instance",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| InstanceRow {
                instance: row.get(0),
                service: row.get(1),
                environment: row.get(2),
                first_report: Timestamp(row.get(3)),
                last_report: Timestamp(row.get(4)),
                observed_until: Timestamp(row.get(5)),
                last_seq: row.get::<i64, _>(6) as u64,
                started_at: Timestamp(row.get(7)),
                flush_interval_ms: row.get::<i64, _>(8) as u64,
                reports: row.get::<i64, _>(9) as u64,
            })
            .collect())
    }

    pub async fn coverage(
        &self,
        services: &[(String, String)],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError> {
        let mut out: Vec<InstanceCoverage> = Vec::new();
        // One statement per few hundred services (not one per service): a popular host
        // has hundreds of callers.
        for chunk in services.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("WITH wanted(service, environment) AS (");
            q.push_values(chunk, |mut b, (svc, env)| {
                b.push_bind(svc).push_bind(env);
            });
            q.push(
                r#") SELECT i.instance, i.service, i.environment, i.flush_interval_ms,
                        i.observed_until, c.start, c."end"
                   FROM wanted w
                   JOIN instances i ON i.service = w.service AND i.environment = w.environment
                   LEFT JOIN coverage c ON c.instance = i.instance AND c."end" >= "#,
            )
            .push_bind(after.0)
            .push(" ORDER BY i.instance, c.start");
            let rows = q.build().fetch_all(&self.pool).await?;
            for row in rows {
                let instance: String = row.get(0);
                let iv = row.get::<Option<i64>, _>(5).map(|start| Interval {
                    start: Timestamp(start),
                    end: Timestamp(row.get(6)),
                });
                match out.last_mut() {
                    Some(c) if c.instance == instance => c.intervals.extend(iv),
                    _ => out.push(InstanceCoverage {
                        instance,
                        service: row.get(1),
                        environment: row.get(2),
                        flush_interval_ms: row.get::<i64, _>(3) as u64,
                        observed_until: Timestamp(row.get(4)),
                        intervals: iv.into_iter().collect(),
                    }),
                }
            }
        }
        Ok(out)
    }

    pub async fn observed_since(&self) -> Result<Option<Timestamp>, StoreError> {
        // The earliest moment any sidecar says it was observing from.
        let v: Option<i64> = sqlx::query_scalar("SELECT MIN(start) FROM coverage")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.map(Timestamp))
    }

    pub async fn prune(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        self.ask(|reply| Job::Prune { cutoff, reply }).await
    }

    /// Fold hourly buckets of every UTC day that ended before `before` into daily ones,
    /// a day per writer job so ingest interleaves. Returns hourly rows folded.
    pub async fn rollup(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            match self.ask(|reply| Job::Rollup { before, reply }).await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
        // The writer goes last: the last connection to close folds the WAL back into the
        // database file.
        let (reply, rx) = oneshot::channel();
        if self.writer.send(Job::Close { reply }).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Where edge counts are read from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The edge's totals over all time.
    Totals,
    /// The edge's current hour bucket, if it is this hour or later.
    Current(i64),
    /// Sums of a bucket table (`table`, its time column) from this bucket on.
    Buckets(&'static str, &'static str, i64),
}

/// Two sorted row lists of the same filter, summed per edge (sorted the same way).
fn sum_rows(a: Vec<EdgeRow>, b: Vec<EdgeRow>) -> Vec<EdgeRow> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut by_key: BTreeMap<(String, u16, String, String, String), EdgeRow> = BTreeMap::new();
    for row in a.into_iter().chain(b) {
        let key = (
            row.host.clone(),
            row.port,
            row.scheme.clone(),
            row.service.clone(),
            row.environment.clone(),
        );
        match by_key.entry(key) {
            Entry::Vacant(v) => {
                v.insert(row);
            }
            Entry::Occupied(mut o) => {
                let t = o.get_mut();
                t.requests += row.requests;
                t.connections += row.connections;
                t.errors += row.errors;
                t.bytes_sent += row.bytes_sent;
                t.bytes_received += row.bytes_received;
                t.first_seen = t.first_seen.min(row.first_seen);
                t.last_seen = t.last_seen.max(row.last_seen);
            }
        }
    }
    by_key.into_values().collect()
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
