//! The SQLite backend: one file, WAL mode, `synchronous=FULL` so an acknowledged batch
//! survives a crash. Writes are serialised in-process (SQLite has one writer anyway);
//! reads run in parallel on the pool.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot, Mutex};
use whouses_wire::{Report, Timestamp};

use super::{
    merge_interval, EdgeFilter, EdgeRow, Ingested, InstanceCoverage, InstanceRow, Interval,
    StoreError, CONTINUITY_SLACK_MS,
};
use crate::targets::HostPattern;

const HOUR_MS: i64 = 3_600_000;
/// `seen` entries older than this are folded into a per-instance floor.
const SEEN_KEEP_MS: i64 = 30 * 24 * HOUR_MS;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Most edges per multi-row statement (12 parameters each, well under SQLite's limit).
const ROWS_PER_STATEMENT: usize = 400;
/// Most batches committed together.
const MAX_GROUP: usize = 256;

struct Job {
    report: Report,
    received: Timestamp,
    reply: oneshot::Sender<Result<Ingested, StoreError>>,
}

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    write: Arc<Mutex<()>>,
    ingest_tx: mpsc::Sender<Job>,
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let write = Arc::new(Mutex::new(()));
        let (ingest_tx, rx) = mpsc::channel(1024);
        tokio::spawn(writer(pool.clone(), write.clone(), rx));
        Ok(SqliteStore {
            pool,
            write,
            ingest_tx,
        })
    }

    /// Store one batch. Concurrent batches are group-committed by the writer task: one
    /// transaction (and one fsync) for everything waiting, each batch in a savepoint of
    /// its own so a failing batch never takes the others down. The answer comes only
    /// after the commit.
    pub async fn ingest(&self, r: &Report, received: Timestamp) -> Result<Ingested, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.ingest_tx
            .send(Job {
                report: r.clone(),
                received,
                reply,
            })
            .await
            .map_err(|_| StoreError::Invalid("the store is closed".into()))?;
        rx.await
            .map_err(|_| StoreError::Invalid("the store writer stopped".into()))?
    }

    /// Apply one batch inside the writer's open transaction (a savepoint of its own).
    async fn ingest_one(
        tx: &mut sqlx::SqliteConnection,
        r: &Report,
        received: Timestamp,
    ) -> Result<Ingested, StoreError> {
        let tx = &mut *tx;
        let seq = i64::try_from(r.seq)
            .map_err(|_| StoreError::Invalid("seq does not fit a signed 64-bit integer".into()))?;

        let floor: Option<i64> =
            sqlx::query_scalar("SELECT seq_floor FROM instances WHERE instance = $1")
                .bind(&r.instance)
                .fetch_optional(&mut *tx)
                .await?;
        if floor.is_some_and(|f| seq < f) {
            return Ok(Ingested::Duplicate);
        }
        let inserted = sqlx::query(
            "INSERT INTO seen (instance, seq, received) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&r.instance)
        .bind(seq)
        .bind(received.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(Ingested::Duplicate);
        }

        sqlx::query(
            "INSERT INTO instances (instance, service, environment, first_report, last_report,
                 observed_until, last_seq, started_at, flush_interval_ms, reports)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, 1)
             ON CONFLICT (instance) DO UPDATE SET
                 service = excluded.service,
                 environment = excluded.environment,
                 last_report = MAX(instances.last_report, excluded.last_report),
                 observed_until = MAX(instances.observed_until, excluded.observed_until),
                 last_seq = MAX(instances.last_seq, excluded.last_seq),
                 started_at = excluded.started_at,
                 flush_interval_ms = excluded.flush_interval_ms,
                 reports = instances.reports + 1",
        )
        .bind(&r.instance)
        .bind(&r.service)
        .bind(&r.environment)
        .bind(received.0)
        .bind(r.period_end.0)
        .bind(seq)
        .bind(r.started_at.0)
        .bind(r.flush_interval_ms as i64)
        .execute(&mut *tx)
        .await?;

        // Coverage: merge this batch's period into the instance's intervals.
        let new = Interval {
            start: r.period_start,
            end: r.period_end,
        };
        let rows = sqlx::query(
            r#"SELECT start, "end" FROM coverage WHERE instance = $1 AND "end" >= $2 AND start <= $3"#,
        )
        .bind(&r.instance)
        .bind(new.start.0 - CONTINUITY_SLACK_MS)
        .bind(new.end.0 + CONTINUITY_SLACK_MS)
        .fetch_all(&mut *tx)
        .await?;
        let mut touching: Vec<Interval> = rows
            .iter()
            .map(|row| Interval {
                start: Timestamp(row.get(0)),
                end: Timestamp(row.get(1)),
            })
            .collect();
        for old in &touching {
            sqlx::query("DELETE FROM coverage WHERE instance = $1 AND start = $2")
                .bind(&r.instance)
                .bind(old.start.0)
                .execute(&mut *tx)
                .await?;
        }
        merge_interval(&mut touching, new);
        for iv in touching {
            sqlx::query(r#"INSERT INTO coverage (instance, start, "end") VALUES ($1, $2, $3)"#)
                .bind(&r.instance)
                .bind(iv.start.0)
                .bind(iv.end.0)
                .execute(&mut *tx)
                .await?;
        }

        let live: Vec<&whouses_wire::Edge> = r
            .edges
            .iter()
            .filter(|e| {
                e.requests + e.connections + e.errors > 0 || e.bytes_sent + e.bytes_received > 0
            })
            .collect();
        // Many rows per statement: one round trip per few hundred edges, not two per edge.
        for chunk in live.chunks(ROWS_PER_STATEMENT) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO edges (host, port, scheme, service, environment, requests, connections,
                     errors, bytes_sent, bytes_received, first_seen, last_seen) ",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.host)
                    .push_bind(e.port as i64)
                    .push_bind(e.scheme.as_str())
                    .push_bind(&r.service)
                    .push_bind(&r.environment)
                    .push_bind(e.requests as i64)
                    .push_bind(e.connections as i64)
                    .push_bind(e.errors as i64)
                    .push_bind(e.bytes_sent as i64)
                    .push_bind(e.bytes_received as i64)
                    .push_bind(e.first_seen.0)
                    .push_bind(e.last_seen.0);
            });
            q.push(
                " ON CONFLICT (host, port, scheme, service, environment) DO UPDATE SET
                     requests = edges.requests + excluded.requests,
                     connections = edges.connections + excluded.connections,
                     errors = edges.errors + excluded.errors,
                     bytes_sent = edges.bytes_sent + excluded.bytes_sent,
                     bytes_received = edges.bytes_received + excluded.bytes_received,
                     first_seen = MIN(edges.first_seen, excluded.first_seen),
                     last_seen = MAX(edges.last_seen, excluded.last_seen)",
            );
            q.build().execute(&mut *tx).await?;

            // The delta happened within the batch's period, so its first call in this
            // hour bucket is no earlier than the period start.
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO edge_hours (edge_id, hour, requests, connections, errors, bytes_sent,
                     bytes_received, first_seen, last_seen)
                 SELECT e.id, v.column4, v.column5, v.column6, v.column7, v.column8, v.column9,
                     v.column10, v.column11 FROM (",
            );
            q.push_values(chunk, |mut b, e| {
                b.push_bind(&e.host)
                    .push_bind(e.port as i64)
                    .push_bind(e.scheme.as_str())
                    .push_bind(e.last_seen.0.div_euclid(HOUR_MS))
                    .push_bind(e.requests as i64)
                    .push_bind(e.connections as i64)
                    .push_bind(e.errors as i64)
                    .push_bind(e.bytes_sent as i64)
                    .push_bind(e.bytes_received as i64)
                    .push_bind(e.first_seen.0.max(r.period_start.0).min(e.last_seen.0))
                    .push_bind(e.last_seen.0);
            });
            q.push(") AS v JOIN edges e ON e.host = v.column1 AND e.port = v.column2 AND e.scheme = v.column3 AND e.service = ")
                .push_bind(&r.service)
                .push(" AND e.environment = ")
                .push_bind(&r.environment)
                .push(
                    " WHERE true ON CONFLICT (edge_id, hour) DO UPDATE SET
                     requests = edge_hours.requests + excluded.requests,
                     connections = edge_hours.connections + excluded.connections,
                     errors = edge_hours.errors + excluded.errors,
                     bytes_sent = edge_hours.bytes_sent + excluded.bytes_sent,
                     bytes_received = edge_hours.bytes_received + excluded.bytes_received,
                     first_seen = MIN(edge_hours.first_seen, excluded.first_seen),
                     last_seen = MAX(edge_hours.last_seen, excluded.last_seen)",
                );
            q.build().execute(&mut *tx).await?;
        }
        Ok(Ingested::Stored { edges: live.len() })
    }

    pub async fn edges(&self, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError> {
        let mut q: QueryBuilder<Sqlite> = match f.since {
            None => QueryBuilder::new(
                "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.requests,
                        e.connections, e.errors, e.bytes_sent, e.bytes_received, e.first_seen,
                        e.last_seen
                 FROM edges e WHERE 1 = 1",
            ),
            Some(since) => {
                let mut q = QueryBuilder::new(
                    "SELECT e.service, e.environment, e.host, e.port, e.scheme,
                            SUM(h.requests), SUM(h.connections), SUM(h.errors),
                            SUM(h.bytes_sent), SUM(h.bytes_received), MIN(h.first_seen),
                            MAX(h.last_seen)
                     FROM edges e JOIN edge_hours h ON h.edge_id = e.id
                     WHERE h.hour >= ",
                );
                q.push_bind(since.0.div_euclid(HOUR_MS));
                q
            }
        };
        if let Some(hosts) = &f.hosts {
            q.push(" AND (0 = 1");
            for p in hosts {
                match p {
                    HostPattern::Host(h) => {
                        q.push(" OR e.host = ").push_bind(h.clone());
                    }
                    HostPattern::HostPort(h, port) => {
                        q.push(" OR (e.host = ")
                            .push_bind(h.clone())
                            .push(" AND e.port = ")
                            .push_bind(*port as i64)
                            .push(")");
                    }
                    HostPattern::Suffix(s) => {
                        q.push(" OR e.host = ")
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
        if f.since.is_some() {
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
        let _writer = self.write.lock().await;
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        n += sqlx::query("DELETE FROM edge_hours WHERE hour < $1")
            .bind(cutoff.0.div_euclid(HOUR_MS))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM edges WHERE last_seen < $1")
            .bind(cutoff.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        n += sqlx::query(r#"DELETE FROM coverage WHERE "end" < $1"#)
            .bind(cutoff.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM instances WHERE last_report < $1")
            .bind(cutoff.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // Old idempotency entries become a per-instance floor: a batch older than that
        // is by construction one we already stored.
        let seen_cutoff = cutoff.0.max(Timestamp::now().0 - SEEN_KEEP_MS);
        sqlx::query(
            "UPDATE instances SET seq_floor = MAX(seq_floor,
                 (SELECT MAX(seq) + 1 FROM seen WHERE seen.instance = instances.instance
                  AND seen.received < $1))
             WHERE EXISTS (SELECT 1 FROM seen WHERE seen.instance = instances.instance
                  AND seen.received < $1)",
        )
        .bind(seen_cutoff)
        .execute(&mut *tx)
        .await?;
        n += sqlx::query("DELETE FROM seen WHERE received < $1")
            .bind(seen_cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The single writer: takes every batch waiting, applies each in a savepoint, commits
/// once, then answers them all.
async fn writer(pool: SqlitePool, write: Arc<Mutex<()>>, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let _guard = write.lock().await;
        let results = commit_group(&pool, &jobs).await;
        match results {
            Ok(results) => {
                for (job, result) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(StoreError::Invalid(format!("commit failed: {msg}"))));
                }
            }
        }
    }
}

async fn commit_group(
    pool: &SqlitePool,
    jobs: &[Job],
) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        sqlx::query("SAVEPOINT batch").execute(&mut *tx).await?;
        match SqliteStore::ingest_one(&mut tx, &job.report, job.received).await {
            Ok(done @ Ingested::Stored { .. }) => {
                sqlx::query("RELEASE batch").execute(&mut *tx).await?;
                results.push(Ok(done));
            }
            other => {
                sqlx::query("ROLLBACK TO batch").execute(&mut *tx).await?;
                sqlx::query("RELEASE batch").execute(&mut *tx).await?;
                results.push(other);
            }
        }
    }
    tx.commit().await?;
    Ok(results)
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}
