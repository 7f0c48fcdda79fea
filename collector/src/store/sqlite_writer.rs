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
use std::time::Duration;

use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};
use whouses_wire::{Report, Timestamp};

use super::{merge_interval, Ingested, Interval, StoreError, CONTINUITY_SLACK_MS};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// `seen` entries older than this are folded into a per-instance floor.
const SEEN_KEEP_MS: i64 = 30 * 24 * HOUR_MS;
/// Page cache of the writing connection.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Largest part of the database file read through a memory mapping.
const MMAP_BYTES: i64 = 1 << 30;
/// WAL pages between automatic checkpoints (4 KiB pages: 64 MiB).
const WAL_CHECKPOINT_PAGES: i64 = 16 * 1024;
/// Most edges the writer remembers the row id of (about 150 bytes each).
const EDGE_CACHE_ENTRIES: usize = 250_000;
/// Most batches committed together.
const MAX_GROUP: usize = 256;
/// Jobs waiting for the writer before senders wait too (back-pressure on ingest).
const QUEUE: usize = 1024;

/// `ON CONFLICT` clause of a bucket upsert: add the new counts to the bucket's.
macro_rules! add_to_bucket {
    ($table:literal, $key:literal) => {
        concat!(
            " ON CONFLICT (edge_id, ",
            $key,
            ") DO UPDATE SET
                 requests = ",
            $table,
            ".requests + excluded.requests,
                 connections = ",
            $table,
            ".connections + excluded.connections,
                 errors = ",
            $table,
            ".errors + excluded.errors,
                 bytes_sent = ",
            $table,
            ".bytes_sent + excluded.bytes_sent,
                 bytes_received = ",
            $table,
            ".bytes_received + excluded.bytes_received,
                 first_seen = MIN(",
            $table,
            ".first_seen, excluded.first_seen),
                 last_seen = MAX(",
            $table,
            ".last_seen, excluded.last_seen)"
        )
    };
}

/// `SET` terms adding a delta to an edge's totals: `?2`–`?6` the counts, `?7`/`?8` the
/// first and last call (`?1` is the row id).
macro_rules! add_to_totals {
    () => {
        "requests = requests + ?2, connections = connections + ?3,
         errors = errors + ?4, bytes_sent = bytes_sent + ?5,
         bytes_received = bytes_received + ?6,
         first_seen = MIN(first_seen, ?7), last_seen = MAX(last_seen, ?8)"
    };
}

pub(super) enum Job {
    Ingest {
        report: Report,
        received: Timestamp,
        reply: oneshot::Sender<Result<Ingested, StoreError>>,
    },
    Prune {
        cutoff: Timestamp,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Rollup {
        before: Timestamp,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Finish what is queued before this, close the connection (the last connection to
    /// close checkpoints the WAL into the database file), then stop.
    Close { reply: oneshot::Sender<()> },
}

/// Open the writing connection and start its thread.
pub(super) fn spawn(path: &Path) -> Result<mpsc::Sender<Job>, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // WAL is a property of the file (set when the pool opened it); synchronous is per
    // connection: FULL, so an acknowledged batch survives power loss.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Ingest touches pages all over the edge and bucket indexes: keep them in memory
    // (64 MiB of page cache) and read the file through a mapping rather than a read
    // call per page. Both measured in the fleet benchmark (docs/benchmarks.md).
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    // Copy the WAL back into the database every 64 MiB of log rather than every 4 MiB:
    // a page updated by many commits in between is written back once.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.set_prepared_statement_cache_capacity(64);
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("whouses-sqlite-writer".into())
        .spawn(move || run(conn, rx))
        .map_err(|e| StoreError::Invalid(format!("starting the database writer: {e}")))?;
    Ok(tx)
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>) {
    let mut closing = None;
    let mut cache = EdgeCache::default();
    while let Some(first) = rx.blocking_recv() {
        let mut ingests = Vec::new();
        let mut upkeep = Vec::new();
        let mut take = |j: Job| match j {
            Job::Ingest {
                report,
                received,
                reply,
            } => ingests.push((report, received, reply)),
            j @ (Job::Prune { .. } | Job::Rollup { .. } | Job::Close { .. }) => upkeep.push(j),
        };
        take(first);
        for _ in 1..MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => take(j),
                Err(_) => break,
            }
        }
        if !ingests.is_empty() {
            let batches: Vec<(&Report, Timestamp)> =
                ingests.iter().map(|(r, t, _)| (r, *t)).collect();
            match commit_group(&mut conn, &batches, &mut cache) {
                Ok(results) => {
                    for ((_, _, reply), result) in ingests.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    cache.clear();
                    tracing::error!(error = %e, batches = ingests.len(), "A group commit failed; every batch in it is refused (the senders retry).");
                    let msg = e.to_string();
                    for (_, _, reply) in ingests {
                        let _ =
                            reply.send(Err(StoreError::Invalid(format!("commit failed: {msg}"))));
                    }
                }
            }
        }
        for job in upkeep {
            match job {
                Job::Prune { cutoff, reply } => {
                    cache.clear();
                    let _ = reply.send(prune(&mut conn, cutoff));
                }
                Job::Rollup { before, reply } => {
                    let _ = reply.send(rollup_one_day(&mut conn, before));
                }
                Job::Close { reply } => closing = Some(reply),
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

fn commit_group(
    conn: &mut Connection,
    batches: &[(&Report, Timestamp)],
    cache: &mut EdgeCache,
) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batches.len());
    for (report, received) in batches {
        tx.execute_batch("SAVEPOINT batch")?;
        match ingest_one(&tx, report, *received, cache) {
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
    r: &Report,
    received: Timestamp,
    cache: &mut EdgeCache,
) -> Result<Ingested, StoreError> {
    let seq = i64::try_from(r.seq)
        .map_err(|_| StoreError::Invalid("seq does not fit a signed 64-bit integer".into()))?;

    let floor: Option<i64> = tx
        .prepare_cached("SELECT seq_floor FROM instances WHERE instance = ?1")?
        .query_row(params![r.instance], |row| row.get(0))
        .optional()?;
    if floor.is_some_and(|f| seq < f) {
        return Ok(Ingested::Duplicate);
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
             service = excluded.service,
             environment = excluded.environment,
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

    // Coverage: merge this batch's period into the instance's intervals.
    let new = Interval {
        start: r.period_start,
        end: r.period_end,
    };
    let mut touching: Vec<Interval> = tx
        .prepare_cached(
            r#"SELECT start, "end" FROM coverage WHERE instance = ?1 AND "end" >= ?2 AND start <= ?3"#,
        )?
        .query_map(
            params![
                r.instance,
                new.start.0 - CONTINUITY_SLACK_MS,
                new.end.0 + CONTINUITY_SLACK_MS
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
            delete.execute(params![r.instance, old.start.0])?;
        }
    }
    merge_interval(&mut touching, new);
    {
        let mut insert = tx.prepare_cached(
            r#"INSERT INTO coverage (instance, start, "end") VALUES (?1, ?2, ?3)"#,
        )?;
        for iv in touching {
            insert.execute(params![r.instance, iv.start.0, iv.end.0])?;
        }
    }

    let mut find = tx.prepare_cached(
        "SELECT id, cur_hour FROM edges
         WHERE host = ?1 AND port = ?2 AND scheme = ?3 AND service = ?4 AND environment = ?5",
    )?;
    let mut stored = 0;
    let mut key = String::with_capacity(128);
    for e in &r.edges {
        if e.requests + e.connections + e.errors == 0 && e.bytes_sent + e.bytes_received == 0 {
            continue;
        }
        let hour = e.last_seen.0.div_euclid(HOUR_MS);
        // The delta happened within the batch's period, so its first call in this hour
        // bucket is no earlier than the period start.
        let d = Delta {
            requests: e.requests as i64,
            connections: e.connections as i64,
            errors: e.errors as i64,
            bytes_sent: e.bytes_sent as i64,
            bytes_received: e.bytes_received as i64,
            first_seen: e.first_seen.0,
            last_seen: e.last_seen.0,
            bucket_first_seen: e.first_seen.0.max(r.period_start.0).min(e.last_seen.0),
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
                    ",
                         cur_requests = cur_requests + ?2, cur_connections = cur_connections + ?3,
                         cur_errors = cur_errors + ?4, cur_bytes_sent = cur_bytes_sent + ?5,
                         cur_bytes_received = cur_bytes_received + ?6,
                         cur_first_seen = MIN(cur_first_seen, ?9),
                         cur_last_seen = MAX(cur_last_seen, ?8)
                     WHERE id = ?1"
                ))?
                .execute(params_from_iter(
                    d.totals(id).into_iter().chain([d.bucket_first_seen]),
                ))?;
                (id, Some(hour))
            }
            // A newer hour: the current bucket moves to edge_hours, this delta becomes it.
            Some((id, cur)) if cur.is_none_or(|c| hour > c) => {
                if cur.is_some() {
                    tx.prepare_cached(concat!(
                        "INSERT INTO edge_hours (edge_id, hour, requests, connections, errors,
                             bytes_sent, bytes_received, first_seen, last_seen)
                         SELECT id, cur_hour, cur_requests, cur_connections, cur_errors,
                             cur_bytes_sent, cur_bytes_received, cur_first_seen, cur_last_seen
                         FROM edges WHERE id = ?1",
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
            // A late batch for an older hour: straight into its hourly bucket.
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
                    " WHERE id = ?1"
                ))?
                .execute(params_from_iter(d.totals(id)))?;
                (id, cur)
            }
        };
        cache.set(&key, now_known);
        stored += 1;
    }
    Ok(Ingested::Stored { edges: stored })
}

/// Retention: delete what ended before `cutoff`, in one transaction.
fn prune(conn: &mut Connection, cutoff: Timestamp) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut n = 0u64;
    n += tx.execute(
        "DELETE FROM edge_hours WHERE hour < ?1",
        params![cutoff.0.div_euclid(HOUR_MS)],
    )? as u64;
    n += tx.execute(
        "DELETE FROM edge_days WHERE day < ?1",
        params![cutoff.0.div_euclid(DAY_MS)],
    )? as u64;
    n += tx.execute("DELETE FROM edges WHERE last_seen < ?1", params![cutoff.0])? as u64;
    n += tx.execute(
        r#"DELETE FROM coverage WHERE "end" < ?1"#,
        params![cutoff.0],
    )? as u64;
    n += tx.execute(
        "DELETE FROM instances WHERE last_report < ?1",
        params![cutoff.0],
    )? as u64;
    // Old idempotency entries become a per-instance floor: a batch older than that is by
    // construction one we already stored.
    let seen_cutoff = cutoff.0.max(Timestamp::now().0 - SEEN_KEEP_MS);
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
    let end_day = before.0.div_euclid(DAY_MS);
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
             bytes_received, first_seen, last_seen)
         SELECT edge_id, ?3, SUM(requests), SUM(connections), SUM(errors), SUM(bytes_sent),
             SUM(bytes_received), MIN(first_seen), MAX(last_seen)
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
