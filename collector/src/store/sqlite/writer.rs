//! The SQLite write path: one OS thread that owns the only writing connection.
//!
//! SQLite has one writer at a time anyway; giving it a thread of its own (rusqlite,
//! statements prepared once and cached) removes the per-statement hop to an async
//! driver's worker, which dominated ingest. Readers stay on the sqlx pool (WAL mode lets
//! them run while this thread writes).
//!
//! Group commit: the thread takes every job waiting (up to [`MAX_GROUP`]), applies each
//! batch in a savepoint of its own (a failing batch never takes the others down), commits
//! once — one fsync for the group — and only then answers each job.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};
use whouses_wire::Timestamp;

use super::schema::{self, sat_add};
use super::Health;
use crate::store::buckets::{
    bucket_first_seen, calls_before, day_of, hour_of, BucketCalls, BucketKind,
};
use crate::store::{merge_interval, Batch, Ingested, Interval, StoreError, CONTINUITY_SLACK_MS};
/// Page cache of the writing connection.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// WAL pages between automatic checkpoints (4 KiB pages: 64 MiB).
const WAL_CHECKPOINT_PAGES: i64 = 16 * 1024;
/// Most edges the writer remembers the row id of (about 150 bytes each).
const EDGE_CACHE_ENTRIES: usize = 250_000;
/// Most batches committed together.
const MAX_GROUP: usize = 256;
/// Jobs waiting for the writer before senders wait too (back-pressure on ingest).
const QUEUE: usize = 1024;

/// `ON CONFLICT` clause of a bucket upsert: add the new counts to the bucket's
/// (saturating).
macro_rules! add_to_bucket {
    ($table:literal, $key:literal) => {
        concat!(
            " ON CONFLICT (edge_id, ",
            $key,
            ") DO UPDATE SET requests = ",
            sat_add!(concat!($table, ".requests"), "excluded.requests"),
            ", connections = ",
            sat_add!(concat!($table, ".connections"), "excluded.connections"),
            ", errors = ",
            sat_add!(concat!($table, ".errors"), "excluded.errors"),
            ", bytes_sent = ",
            sat_add!(concat!($table, ".bytes_sent"), "excluded.bytes_sent"),
            ", bytes_received = ",
            sat_add!(
                concat!($table, ".bytes_received"),
                "excluded.bytes_received"
            ),
            ", first_seen = MIN(",
            $table,
            ".first_seen, excluded.first_seen), last_seen = MAX(",
            $table,
            ".last_seen, excluded.last_seen)"
        )
    };
}

/// `SET` terms adding a delta to an edge's totals (saturating): `?2`–`?6` the counts,
/// `?7`/`?8` the first and last call (`?1` is the row id).
macro_rules! add_to_totals {
    () => {
        concat!(
            "requests = ",
            sat_add!("requests", "?2"),
            ", connections = ",
            sat_add!("connections", "?3"),
            ", errors = ",
            sat_add!("errors", "?4"),
            ", bytes_sent = ",
            sat_add!("bytes_sent", "?5"),
            ", bytes_received = ",
            sat_add!("bytes_received", "?6"),
            ", first_seen = MIN(first_seen, ?7), last_seen = MAX(last_seen, ?8)"
        )
    };
}

/// `SET` terms adding a delta to an edge's current hour bucket (saturating).
macro_rules! add_to_current {
    () => {
        concat!(
            "cur_requests = ",
            sat_add!("cur_requests", "?2"),
            ", cur_connections = ",
            sat_add!("cur_connections", "?3"),
            ", cur_errors = ",
            sat_add!("cur_errors", "?4"),
            ", cur_bytes_sent = ",
            sat_add!("cur_bytes_sent", "?5"),
            ", cur_bytes_received = ",
            sat_add!("cur_bytes_received", "?6"),
            ", cur_first_seen = MIN(cur_first_seen, ?9), cur_last_seen = MAX(cur_last_seen, ?8)"
        )
    };
}

pub(super) enum Job {
    Ingest {
        batch: Box<Batch>,
        reply: oneshot::Sender<Result<Ingested, StoreError>>,
    },
    Prune {
        cutoff: Timestamp,
        seen_cutoff: Timestamp,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Rollup {
        before: Timestamp,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Recompute some stale edges' `calls_before` (0: none left).
    Repair {
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Finish what is queued before this, close the connection (the last connection to
    /// close checkpoints the WAL into the database file), then stop.
    Close { reply: oneshot::Sender<()> },
    /// Any other write (watches, alerts, notifications, owners: `sqlite/decom.rs`), run
    /// on the writing connection after the group in front of it; it answers for itself.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// Open the writing connection (migrating the schema) and start its thread.
pub(super) fn spawn(path: &Path, health: Arc<Health>) -> Result<mpsc::Sender<Job>, StoreError> {
    let conn = schema::open_writer(path)?;
    // Ingest touches pages all over the edge and bucket indexes: keep them in memory
    // (64 MiB of page cache). Measured in the fleet benchmark (docs/benchmarks.md).
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    // Copy the WAL back into the database every 64 MiB of log rather than every 4 MiB:
    // a page updated by many commits in between is written back once.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(64);
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("whouses-sqlite-writer".into())
        .spawn(move || run(conn, rx, health))
        .map_err(|e| StoreError::Invalid(format!("starting the database writer: {e}")))?;
    Ok(tx)
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, health: Arc<Health>) {
    let mut closing = None;
    let mut cache = EdgeCache::default();
    while let Some(first) = rx.blocking_recv() {
        let mut ingests = Vec::new();
        let mut upkeep = Vec::new();
        let mut take = |j: Job| match j {
            Job::Ingest { batch, reply } => ingests.push((batch, reply)),
            j @ (Job::Prune { .. }
            | Job::Rollup { .. }
            | Job::Repair { .. }
            | Job::Close { .. }
            | Job::Run(_)) => upkeep.push(j),
        };
        take(first);
        for _ in 1..MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => take(j),
                Err(_) => break,
            }
        }
        if !ingests.is_empty() {
            let batches: Vec<&Batch> = ingests.iter().map(|(b, _)| b.as_ref()).collect();
            match commit_group(&mut conn, &batches, &mut cache) {
                Ok(results) => {
                    health.wrote();
                    for ((_, reply), result) in ingests.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    cache.clear();
                    let e = classify(e);
                    health.failed(&e);
                    tracing::error!(error = %e, batches = ingests.len(), "A group commit failed; every batch in it is refused (the senders retry).");
                    let msg = e.to_string();
                    for (_, reply) in ingests {
                        let _ = reply.send(Err(match &e {
                            StoreError::Full(_) => StoreError::Full(msg.clone()),
                            _ => StoreError::Pool(format!("commit failed: {msg}")),
                        }));
                    }
                }
            }
        }
        for job in upkeep {
            match job {
                Job::Prune {
                    cutoff,
                    seen_cutoff,
                    reply,
                } => {
                    cache.clear();
                    let _ = reply.send(prune(&mut conn, cutoff, seen_cutoff));
                }
                Job::Rollup { before, reply } => {
                    let _ = reply.send(rollup_one_day(&mut conn, before));
                }
                Job::Repair { reply } => {
                    let _ = reply.send(repair_calls_before(&mut conn));
                }
                Job::Close { reply } => closing = Some(reply),
                Job::Run(f) => f(&mut conn),
                Job::Ingest { .. } => {}
            }
        }
        if closing.is_some() {
            break;
        }
    }
    if let Err((_, error)) = conn.close() {
        tracing::warn!(%error, "Closing the database writer failed.");
    }
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
}

/// A write error that means "out of space" or "read-only": the database cannot take
/// batches until an operator acts; every other error keeps its kind.
fn classify(e: StoreError) -> StoreError {
    if let StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) = &e {
        use rusqlite::ErrorCode::{DiskFull, ReadOnly, SystemIoFailure};
        if matches!(f.code, DiskFull | ReadOnly | SystemIoFailure) {
            return StoreError::Full(e.to_string());
        }
    }
    e
}

fn commit_group(
    conn: &mut Connection,
    batches: &[&Batch],
    cache: &mut EdgeCache,
) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batches.len());
    for batch in batches {
        tx.execute_batch("SAVEPOINT batch")?;
        match ingest_one(&tx, batch, cache) {
            Ok(done @ Ingested::Stored { .. }) => {
                tx.execute_batch("RELEASE batch")?;
                results.push(Ok(done));
            }
            other => {
                // A duplicate wrote nothing; a failed batch may have written edges that
                // the rollback takes back, so the cache may now be wrong.
                if other.is_err() {
                    cache.clear();
                }
                tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                results.push(other);
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

/// What the writer knows of the edges it wrote: key → (row id, current hour), so a batch
/// of known edges updates rows by id without a lookup by name. Only a shortcut: cleared
/// whenever the database might disagree with it (a batch rolled back, a failed commit,
/// retention) and when it reaches [`EDGE_CACHE_ENTRIES`].
#[derive(Default)]
struct EdgeCache {
    map: HashMap<Box<str>, (i64, Option<i64>)>,
}

impl EdgeCache {
    fn clear(&mut self) {
        self.map.clear();
    }

    fn set(&mut self, key: &str, value: (i64, Option<i64>)) {
        if let Some(v) = self.map.get_mut(key) {
            *v = value;
            return;
        }
        if self.map.len() >= EDGE_CACHE_ENTRIES {
            self.map.clear();
        }
        self.map.insert(key.into(), value);
    }
}

/// The cache key of an edge: its five parts, the free-form ones length-prefixed so no two
/// edges share a key whatever bytes their names hold.
fn edge_key(buf: &mut String, e: &whouses_wire::Edge, service: &str, environment: &str) {
    use std::fmt::Write as _;
    buf.clear();
    let _ = write!(
        buf,
        "{}:{}|{}|{}|{}:{}|{}",
        e.host.len(),
        e.host,
        e.port,
        e.scheme.as_str(),
        service.len(),
        service,
        environment
    );
}

/// One edge's counts from a batch.
struct Delta {
    requests: i64,
    connections: i64,
    errors: i64,
    bytes_sent: i64,
    bytes_received: i64,
    first_seen: i64,
    last_seen: i64,
    /// First call within this hour's bucket (not before the batch's period).
    bucket_first_seen: i64,
}

impl Delta {
    /// Parameters `?1`–`?8` of [`add_to_totals`]: the row id, then the delta.
    fn totals(&self, id: i64) -> [i64; 8] {
        [
            id,
            self.requests,
            self.connections,
            self.errors,
            self.bytes_sent,
            self.bytes_received,
            self.first_seen,
            self.last_seen,
        ]
    }
}

/// Apply one batch inside the open transaction.
fn ingest_one(
    tx: &Connection,
    batch: &Batch,
    cache: &mut EdgeCache,
) -> Result<Ingested, StoreError> {
    let r = &batch.report;
    let received = batch.received;
    let seq = i64::try_from(r.seq)
        .map_err(|_| StoreError::Invalid("seq does not fit a signed 64-bit integer".into()))?;

    let known: Option<(i64, String, String)> = tx
        .prepare_cached(
            "SELECT seq_floor, service, environment FROM instances WHERE instance = ?1",
        )?
        .query_row(params![r.instance], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    if let Some((floor, service, environment)) = known {
        // An instance speaks for the service it first reported as: a batch cannot move
        // another service's instance (and its coverage) to a service of its choosing.
        if service != r.service || environment != r.environment {
            return Err(StoreError::Conflict(format!(
                "instance {:?} reports for service {service:?} in environment {environment:?}, not {:?} in {:?}; give each sidecar its own --instance",
                r.instance, r.service, r.environment
            )));
        }
        if seq < floor {
            return Ok(Ingested::Duplicate);
        }
    }
    let inserted = tx
        .prepare_cached(
            "INSERT INTO seen (instance, seq, received) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )?
        .execute(params![r.instance, seq, received.0])?;
    if inserted == 0 {
        return Ok(Ingested::Duplicate);
    }

    tx.prepare_cached(
        "INSERT INTO instances (instance, service, environment, first_report, last_report,
             observed_until, last_seq, started_at, flush_interval_ms, reports)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, 1)
         ON CONFLICT (instance) DO UPDATE SET
             last_report = MAX(instances.last_report, excluded.last_report),
             observed_until = MAX(instances.observed_until, excluded.observed_until),
             last_seq = MAX(instances.last_seq, excluded.last_seq),
             started_at = excluded.started_at,
             flush_interval_ms = excluded.flush_interval_ms,
             reports = instances.reports + 1",
    )?
    .execute(params![
        r.instance,
        r.service,
        r.environment,
        received.0,
        r.period_end.0,
        seq,
        r.started_at.0,
        r.flush_interval_ms as i64,
    ])?;

    // Coverage: merge the trusted part of this batch's period into the instance's
    // intervals.
    if let Some(new) = batch.coverage {
        merge_coverage(tx, &r.instance, new)?;
    }

    let mut find = tx.prepare_cached(
        "SELECT id, cur_hour FROM edges
         WHERE host = ?1 AND port = ?2 AND scheme = ?3 AND service = ?4 AND environment = ?5",
    )?;
    let mut stored = 0;
    let mut key = String::with_capacity(128);
    for e in &r.edges {
        if e.counts.is_zero() {
            continue;
        }
        let hour = hour_of(e.counts.last_seen);
        let d = Delta {
            requests: e.counts.requests as i64,
            connections: e.counts.connections as i64,
            errors: e.counts.errors as i64,
            bytes_sent: e.counts.bytes_sent as i64,
            bytes_received: e.counts.bytes_received as i64,
            first_seen: e.counts.first_seen.0,
            last_seen: e.counts.last_seen.0,
            bucket_first_seen: bucket_first_seen(e, r).0,
        };
        edge_key(&mut key, e, &r.service, &r.environment);
        let cached = cache.map.get(key.as_str()).copied();
        let found: Option<(i64, Option<i64>)> = match cached {
            Some(known) => Some(known),
            None => find
                .query_row(
                    params![
                        e.host,
                        e.port as i64,
                        e.scheme.as_str(),
                        r.service,
                        r.environment
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?,
        };
        let now_known = match found {
            None => {
                tx.prepare_cached(
                    "INSERT INTO edges (host, port, scheme, service, environment, requests,
                         connections, errors, bytes_sent, bytes_received, first_seen, last_seen,
                         cur_hour, cur_requests, cur_connections, cur_errors, cur_bytes_sent,
                         cur_bytes_received, cur_first_seen, cur_last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
                         ?13, ?6, ?7, ?8, ?9, ?10, ?14, ?12)",
                )?
                .execute(params![
                    e.host,
                    e.port as i64,
                    e.scheme.as_str(),
                    r.service,
                    r.environment,
                    d.requests,
                    d.connections,
                    d.errors,
                    d.bytes_sent,
                    d.bytes_received,
                    d.first_seen,
                    d.last_seen,
                    hour,
                    d.bucket_first_seen,
                ])?;
                (tx.last_insert_rowid(), Some(hour))
            }
            // The current hour: one update of the edge's own row.
            Some((id, Some(cur))) if cur == hour => {
                tx.prepare_cached(concat!(
                    "UPDATE edges SET ",
                    add_to_totals!(),
                    ", ",
                    add_to_current!(),
                    " WHERE id = ?1"
                ))?
                .execute(params_from_iter(
                    d.totals(id).into_iter().chain([d.bucket_first_seen]),
                ))?;
                (id, Some(hour))
            }
            // A newer hour: the current bucket moves to edge_hours, this delta becomes it.
            Some((id, cur)) if cur.is_none_or(|c| hour > c) => {
                if cur.is_some() {
                    // Every stored bucket is older than the current one: the calls
                    // before it are the totals but the current bucket (`calls_before`,
                    // migration 0009), read before this delta is added.
                    tx.prepare_cached(concat!(
                        "INSERT INTO edge_hours (edge_id, hour, requests, connections, errors,
                             bytes_sent, bytes_received, first_seen, last_seen, calls_before)
                         SELECT id, cur_hour, cur_requests, cur_connections, cur_errors,
                             cur_bytes_sent, cur_bytes_received, cur_first_seen, cur_last_seen, ",
                        sat_add!(
                            "MAX(0, requests - cur_requests)",
                            "MAX(0, connections - cur_connections)"
                        ),
                        " FROM edges WHERE id = ?1",
                        add_to_bucket!("edge_hours", "hour")
                    ))?
                    .execute(params![id])?;
                }
                tx.prepare_cached(concat!(
                    "UPDATE edges SET ",
                    add_to_totals!(),
                    ",
                         cur_hour = ?10, cur_requests = ?2, cur_connections = ?3,
                         cur_errors = ?4, cur_bytes_sent = ?5, cur_bytes_received = ?6,
                         cur_first_seen = ?9, cur_last_seen = ?8
                     WHERE id = ?1"
                ))?
                .execute(params_from_iter(
                    d.totals(id).into_iter().chain([d.bucket_first_seen, hour]),
                ))?;
                (id, Some(hour))
            }
            // A late batch for an older hour: straight into its hourly bucket. A new row's
            // `calls_before` is unknown (NULL) and every newer row's misses these calls:
            // the edge is marked stale from this hour until the upkeep recomputes it.
            Some((id, cur)) => {
                tx.prepare_cached(concat!(
                    "INSERT INTO edge_hours (edge_id, hour, requests, connections, errors,
                         bytes_sent, bytes_received, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    add_to_bucket!("edge_hours", "hour")
                ))?
                .execute(params![
                    id,
                    hour,
                    d.requests,
                    d.connections,
                    d.errors,
                    d.bytes_sent,
                    d.bytes_received,
                    d.bucket_first_seen,
                    d.last_seen,
                ])?;
                tx.prepare_cached(concat!(
                    "UPDATE edges SET ",
                    add_to_totals!(),
                    ", stale_after = MIN(COALESCE(stale_after, ?9), ?9) WHERE id = ?1"
                ))?
                .execute(params_from_iter(d.totals(id).into_iter().chain([hour])))?;
                (id, cur)
            }
        };
        cache.set(&key, now_known);
        stored += 1;
    }
    observations(tx, r)?;
    super::inbound::store(tx, batch)?;
    Ok(Ingested::Stored { edges: stored })
}

/// Store a batch's lookups and bypass observations (totals per key, saturating).
fn observations(tx: &Connection, r: &whouses_wire::Report) -> Result<(), StoreError> {
    if !r.lookups.is_empty() {
        let mut up = tx.prepare_cached(concat!(
            "INSERT INTO lookups (name, service, environment, lookups, first_seen, last_seen,
                 addresses)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (name, service, environment) DO UPDATE SET lookups = ",
            sat_add!("lookups.lookups", "excluded.lookups"),
            ", first_seen = MIN(lookups.first_seen, excluded.first_seen),
               last_seen = MAX(lookups.last_seen, excluded.last_seen),
               addresses = CASE WHEN excluded.last_seen >= lookups.last_seen
                   AND excluded.addresses != '' THEN excluded.addresses ELSE lookups.addresses END"
        ))?;
        for l in &r.lookups {
            up.execute(params![
                l.name,
                r.service,
                r.environment,
                l.lookups as i64,
                l.first_seen.0,
                l.last_seen.0,
                l.addresses.join(" "),
            ])?;
        }
    }
    if !r.bypass.is_empty() {
        let mut up = tx.prepare_cached(concat!(
            "INSERT INTO bypass (address, port, service, environment, name, connections,
                 first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (address, port, service, environment) DO UPDATE SET connections = ",
            sat_add!("bypass.connections", "excluded.connections"),
            ", first_seen = MIN(bypass.first_seen, excluded.first_seen),
               last_seen = MAX(bypass.last_seen, excluded.last_seen),
               name = COALESCE(excluded.name, bypass.name)"
        ))?;
        for b in &r.bypass {
            up.execute(params![
                b.address,
                i64::from(b.port),
                r.service,
                r.environment,
                b.name,
                b.connections as i64,
                b.first_seen.0,
                b.last_seen.0,
            ])?;
        }
    }
    Ok(())
}

/// Merge `new` into the instance's stored coverage intervals.
fn merge_coverage(tx: &Connection, instance: &str, new: Interval) -> Result<(), StoreError> {
    let mut touching: Vec<Interval> = tx
        .prepare_cached(
            r#"SELECT start, "end" FROM coverage WHERE instance = ?1 AND "end" >= ?2 AND start <= ?3"#,
        )?
        .query_map(
            params![
                instance,
                new.start.0.saturating_sub(CONTINUITY_SLACK_MS),
                new.end.0.saturating_add(CONTINUITY_SLACK_MS)
            ],
            |row| {
                Ok(Interval {
                    start: Timestamp(row.get(0)?),
                    end: Timestamp(row.get(1)?),
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    {
        let mut delete =
            tx.prepare_cached("DELETE FROM coverage WHERE instance = ?1 AND start = ?2")?;
        for old in &touching {
            delete.execute(params![instance, old.start.0])?;
        }
    }
    merge_interval(&mut touching, new);
    {
        let mut insert = tx.prepare_cached(
            r#"INSERT INTO coverage (instance, start, "end") VALUES (?1, ?2, ?3)"#,
        )?;
        for iv in touching {
            insert.execute(params![instance, iv.start.0, iv.end.0])?;
        }
    }

    Ok(())
}

/// Retention: delete what ended before `cutoff`, in one transaction.
fn prune(
    conn: &mut Connection,
    cutoff: Timestamp,
    seen_cutoff: Timestamp,
) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut n = 0u64;
    n += tx.execute(
        "DELETE FROM edge_hours WHERE hour < ?1",
        params![hour_of(cutoff)],
    )? as u64;
    n += tx.execute(
        "DELETE FROM edge_days WHERE day < ?1",
        params![day_of(cutoff)],
    )? as u64;
    n += tx.execute("DELETE FROM edges WHERE last_seen < ?1", params![cutoff.0])? as u64;
    n += tx.execute(
        r#"DELETE FROM coverage WHERE "end" < ?1"#,
        params![cutoff.0],
    )? as u64;
    n += tx.execute(
        "DELETE FROM lookups WHERE last_seen < ?1",
        params![cutoff.0],
    )? as u64;
    n += tx.execute("DELETE FROM bypass WHERE last_seen < ?1", params![cutoff.0])? as u64;
    n += super::inbound::prune(&tx, cutoff)?;
    n += tx.execute(
        "DELETE FROM instances WHERE last_report < ?1",
        params![cutoff.0],
    )? as u64;
    // Old idempotency entries become a per-instance floor: a batch older than that is by
    // construction one we already stored.
    let seen_cutoff = cutoff.0.max(seen_cutoff.0);
    tx.execute(
        "UPDATE instances SET seq_floor = MAX(seq_floor,
             (SELECT MAX(seq) + 1 FROM seen WHERE seen.instance = instances.instance
              AND seen.received < ?1))
         WHERE EXISTS (SELECT 1 FROM seen WHERE seen.instance = instances.instance
              AND seen.received < ?1)",
        params![seen_cutoff],
    )?;
    n += tx.execute("DELETE FROM seen WHERE received < ?1", params![seen_cutoff])? as u64;
    tx.commit()?;
    Ok(n)
}

/// Fold the hourly buckets of the oldest UTC day that ended before `before` into daily
/// buckets (one day per call, so ingest never waits behind a long fold). Returns the
/// hourly rows folded; 0 when nothing is left to fold.
fn rollup_one_day(conn: &mut Connection, before: Timestamp) -> Result<u64, StoreError> {
    let end_day = day_of(before);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let oldest: Option<i64> = tx.query_row(
        "SELECT MIN(hour) FROM edge_hours WHERE hour < ?1",
        params![end_day * 24],
        |row| row.get(0),
    )?;
    let Some(oldest) = oldest else {
        return Ok(0);
    };
    let day = oldest.div_euclid(24);
    let (from, to) = (day * 24, day * 24 + 24);
    tx.execute(
        concat!(
            "INSERT INTO edge_days (edge_id, day, requests, connections, errors, bytes_sent,
             bytes_received, first_seen, last_seen, calls_before)
         SELECT edge_id, ?3, sat_sum(requests), sat_sum(connections), sat_sum(errors),
             sat_sum(bytes_sent), sat_sum(bytes_received), MIN(first_seen), MAX(last_seen),
             CASE WHEN COUNT(calls_before) = COUNT(*) THEN MIN(calls_before) END
         FROM edge_hours WHERE hour >= ?1 AND hour < ?2 GROUP BY edge_id",
            add_to_bucket!("edge_days", "day")
        ),
        params![from, to, day],
    )?;
    let folded = tx.execute(
        "DELETE FROM edge_hours WHERE hour >= ?1 AND hour < ?2",
        params![from, to],
    )?;
    tx.commit()?;
    Ok(folded as u64)
}

/// Most stale edges recomputed per call (one transaction; the upkeep calls again until
/// none is left, so ingest never waits long behind it).
const REPAIR_EDGES: i64 = 500;

/// Recompute the `calls_before` of every bucket row of up to [`REPAIR_EDGES`] edges a late
/// batch left stale, and clear their mark. Returns the rows written (0: none left).
fn repair_calls_before(conn: &mut Connection) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let edges: Vec<(i64, u64, u64)> = {
        let mut stmt = tx.prepare_cached(concat!(
            "SELECT id, ",
            sat_add!("requests", "connections"),
            ", CASE WHEN cur_hour IS NULL THEN 0 ELSE ",
            sat_add!("cur_requests", "cur_connections"),
            " END FROM edges WHERE stale_after IS NOT NULL LIMIT ?1"
        ))?;
        let rows = stmt.query_map(params![REPAIR_EDGES], |r| {
            Ok((
                r.get(0)?,
                super::read::count(r, 1)?,
                super::read::count(r, 2)?,
            ))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut written = 0u64;
    for (id, total, current) in &edges {
        let mut rows: Vec<BucketCalls> = {
            let mut stmt = tx.prepare_cached(concat!(
                "SELECT 0, day, ",
                sat_add!("requests", "connections"),
                " FROM edge_days WHERE edge_id = ?1
                 UNION ALL SELECT 1, hour, ",
                sat_add!("requests", "connections"),
                " FROM edge_hours WHERE edge_id = ?1"
            ))?;
            let rows = stmt.query_map(params![id], |r| {
                Ok(BucketCalls {
                    kind: if r.get::<_, i64>(0)? == 0 {
                        BucketKind::Day
                    } else {
                        BucketKind::Hour
                    },
                    key: r.get(1)?,
                    calls: super::read::count(r, 2)?,
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let before = calls_before(*total, *current, &mut rows);
        let mut day = tx.prepare_cached(
            "UPDATE edge_days SET calls_before = ?3 WHERE edge_id = ?1 AND day = ?2",
        )?;
        let mut hour = tx.prepare_cached(
            "UPDATE edge_hours SET calls_before = ?3 WHERE edge_id = ?1 AND hour = ?2",
        )?;
        for (r, b) in rows.iter().zip(before) {
            let b = i64::try_from(b).unwrap_or(i64::MAX);
            written += match r.kind {
                BucketKind::Day => day.execute(params![id, r.key, b])?,
                BucketKind::Hour => hour.execute(params![id, r.key, b])?,
            } as u64;
        }
        tx.prepare_cached("UPDATE edges SET stale_after = NULL WHERE id = ?1")?
            .execute(params![id])?;
    }
    tx.commit()?;
    // An edge without bucket rows still counts as work done: call again.
    Ok(written.max(edges.len() as u64))
}
