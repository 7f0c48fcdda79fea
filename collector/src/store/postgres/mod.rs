//! The PostgreSQL backend (tokio-postgres), for a fleet past one machine and for several
//! collector replicas on one database. Same tables, same answers as SQLite
//! (`store/sqlite/`); what differs is how writers take turns: several replicas commit at
//! once, so ingest locks the instance rows it touches and lets the `seen` insert decide
//! which delivery of a batch is stored ([`writer`]). Reads run on a bounded pool
//! ([`pool`]), one round trip per query ([`read`]). Migrations are applied by one replica
//! at a time ([`schema`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use whouses_wire::api::{BypassRow, EdgeRow, InstanceRow, LookupRow};
use whouses_wire::Timestamp;

use std::collections::HashMap;

use super::buckets::{self, calls_before, day_of, hour_of, BucketCalls, BucketKind};
use super::WindowCalls;
use super::{AddressClaim, CalleeInstance, InboundFilter, InboundRow};
use super::{Batch, EdgeFilter, Ingested, InstanceCoverage, ObsFilter, Store, StoreError};
use crate::targets::HostPattern;

mod connect;
mod decom;
mod inbound;
mod otel;
mod pool;
mod read;
mod schema;
mod writer;

use pool::Pool;
use writer::{add_to_bucket, Msg};

/// Connections per collector: the writers' plus room for queries and upkeep (and one
/// more for `/readyz`). Several replicas multiply it; see docs/operations.md for sizing
/// `max_connections`.
const POOL_SIZE: usize = 8;
/// `/readyz` answers within this, database down or not.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// The advisory lock one replica holds while it folds or prunes: the others skip.
const UPKEEP_LOCK: i64 = 0x77_686f_7573_6575;
/// Tries of an upkeep step that hit a deadlock with ingest.
const UPKEEP_TRIES: usize = 5;

/// What `/readyz` needs to know about writes.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// The last commit failed because the database cannot write (out of space, read-only).
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

pub struct PostgresStore {
    pool: Arc<Pool>,
    /// A connection of its own for `/readyz`: a probe must not wait behind busy writers
    /// (a collector under load is still ready).
    probe: Pool,
    writer: mpsc::Sender<Msg>,
    health: Arc<Health>,
}

impl StoreError {
    /// A PostgreSQL error, classified: out of space or read-only → [`StoreError::Full`];
    /// a deadlock, a serialization failure or a lost connection may be retried.
    pub(super) fn pg(e: tokio_postgres::Error) -> StoreError {
        if let Some(db) = e.as_db_error() {
            let code = db.code().code();
            let message = format!("{code}: {}", db.message());
            // Class 53: insufficient resources (disk full, out of memory, too many
            // connections); 25006: read-only transaction (a standby, or
            // default_transaction_read_only).
            if code == "53100" || code == "25006" {
                return StoreError::Full(message);
            }
            let retry = matches!(code, "40001" | "40P01" | "55P03" | "57P01" | "57P02");
            return StoreError::Postgres { message, retry };
        }
        use std::error::Error as _;
        let message = match e.source() {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        };
        // No answer from the server: the connection broke (or never was).
        StoreError::Postgres {
            message,
            retry: e.is_closed() || e.source().is_some(),
        }
    }

    /// Whether trying the same thing again may succeed.
    pub(super) fn retryable(&self) -> bool {
        matches!(self, StoreError::Postgres { retry: true, .. })
    }
}

impl PostgresStore {
    /// [`Store::window_calls`] of `hosts` (every host: `None`).
    async fn window_calls_of(
        &self,
        hosts: Option<&[HostPattern]>,
        since: Timestamp,
    ) -> Result<Vec<WindowCalls>, StoreError> {
        let mut conn = self.pool.get().await?;
        let mut out = read::window_calls(&mut conn, hosts, since).await?;
        buckets::sort_window_calls(&mut out);
        if out.iter().any(|w| w.calls == buckets::STALE) {
            read::fill_stale_window_calls(&conn.client, since, &mut out).await?;
        }
        conn.release();
        Ok(out)
    }

    /// Connect, migrate, start the writer.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let connector = connect::Connector::from_url(url)?;
        let shown = connector.shown().to_string();
        let probe = Pool::new(connector.clone(), 1);
        let pool = Arc::new(Pool::new(connector, POOL_SIZE));
        {
            let conn = pool.get().await?;
            let mut client = conn;
            schema::migrate(&mut client.client).await?;
            client.release();
        }
        tracing::debug!(db = %shown, "PostgreSQL store open.");
        let health = Arc::new(Health::default());
        let writer = writer::spawn(pool.clone(), health.clone());
        Ok(PostgresStore {
            pool,
            probe,
            writer,
            health,
        })
    }
}

/// The plan PostgreSQL keeps for `check`'s window statement (`window_calls`; `hosts`
/// `None`: the whole fleet's, `fleet_window_calls`) once it
/// stops planning it per run: the generic plan, which a statement prepared on a
/// connection (as this one is) may run with any window after its fifth run. For the
/// conformance suite, which checks that it reads the bucket tables through their indexes
/// whatever the window. A connection of its own; nothing is written.
#[doc(hidden)]
pub async fn generic_window_plan(
    url: &str,
    hosts: Option<&[HostPattern]>,
    since: Timestamp,
) -> Result<String, StoreError> {
    let client = connect::Connector::from_url(url)?.connect().await?;
    let (sql, p) = read::window_statement(hosts, since);
    let types: Vec<&str> = p.types().iter().map(|t| t.name()).collect();
    // A generic plan does not depend on the values: NULLs of the right types will do.
    let nulls = vec!["NULL"; types.len()].join(", ");
    client
        .batch_execute(&format!(
            "SET plan_cache_mode = force_generic_plan;
             PREPARE whouses_window ({}) AS {sql}",
            types.join(", ")
        ))
        .await
        .map_err(StoreError::pg)?;
    let rows = client
        .query(&format!("EXPLAIN EXECUTE whouses_window ({nulls})"), &[])
        .await
        .map_err(StoreError::pg)?;
    plan_text(&rows)
}

/// An `EXPLAIN`'s rows as one text, a line each.
fn plan_text(rows: &[tokio_postgres::Row]) -> Result<String, StoreError> {
    let mut plan = String::new();
    for row in rows {
        plan.push_str(row.try_get::<_, &str>(0).map_err(StoreError::pg)?);
        plan.push('\n');
    }
    Ok(plan)
}

/// The plan PostgreSQL makes for [`Store::edges`] with `f.since` (the statement
/// `callers --since` runs), with the values of `f`. For the conformance suite, which
/// checks that the buckets of named hosts are summed per edge.
#[doc(hidden)]
pub async fn edges_since_plan(url: &str, f: &EdgeFilter) -> Result<String, StoreError> {
    let client = connect::Connector::from_url(url)?.connect().await?;
    let since = f
        .since
        .ok_or_else(|| StoreError::Invalid("edges_since_plan needs a since".into()))?;
    let (sql, p) = read::edges_statement(f, &read::since_sources(since));
    let rows = client
        .query_typed(&format!("EXPLAIN {sql}"), &p.typed())
        .await
        .map_err(StoreError::pg)?;
    plan_text(&rows)
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn ingest(&self, batch: Batch) -> Result<Ingested, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Msg::Ingest(Box::new(writer::Job { batch, reply })))
            .await
            .map_err(|_| StoreError::Pool("the store is closed".into()))?;
        rx.await
            .map_err(|_| StoreError::Pool("the store writer stopped".into()))?
    }

    async fn edges(&self, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = read::edges(&conn.client, f).await?;
        conn.release();
        Ok(rows)
    }

    async fn window_calls(
        &self,
        hosts: &[HostPattern],
        since: Timestamp,
    ) -> Result<Vec<WindowCalls>, StoreError> {
        self.window_calls_of(Some(hosts), since).await
    }

    async fn fleet_window_calls(&self, since: Timestamp) -> Result<Vec<WindowCalls>, StoreError> {
        self.window_calls_of(None, since).await
    }

    async fn lookups(&self, f: &ObsFilter) -> Result<Vec<LookupRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = read::lookups(&conn.client, f).await?;
        conn.release();
        Ok(rows)
    }

    async fn bypass(&self, f: &ObsFilter) -> Result<Vec<BypassRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = read::bypass(&conn.client, f).await?;
        conn.release();
        Ok(rows)
    }

    async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = read::instances(&conn.client).await?;
        conn.release();
        Ok(rows)
    }

    async fn coverage(
        &self,
        services: &[(String, String)],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = read::coverage(&conn.client, services, after).await?;
        conn.release();
        Ok(rows)
    }

    async fn callers_coverage(
        &self,
        hosts: &[HostPattern],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = read::callers_coverage(&conn.client, hosts, after).await?;
        conn.release();
        Ok(rows)
    }

    async fn observed_since(&self) -> Result<Option<Timestamp>, StoreError> {
        let conn = self.pool.get().await?;
        let t = read::observed_since(&conn.client).await?;
        conn.release();
        Ok(t)
    }

    async fn inbound(&self, f: &InboundFilter) -> Result<Vec<InboundRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = inbound::inbound(&conn.client, f).await?;
        conn.release();
        Ok(rows)
    }

    async fn address_claims(&self, addresses: &[String]) -> Result<Vec<AddressClaim>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = inbound::address_claims(&conn.client, addresses).await?;
        conn.release();
        Ok(rows)
    }

    async fn callee_instances(&self) -> Result<Vec<CalleeInstance>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = inbound::callee_instances(&conn.client).await?;
        conn.release();
        Ok(rows)
    }

    async fn prune(&self, cutoff: Timestamp, seen_cutoff: Timestamp) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let locked: bool = conn
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&UPKEEP_LOCK])
            .await
            .map_err(StoreError::pg)?
            .get(0);
        if !locked {
            tracing::debug!("Another collector is doing the upkeep.");
            conn.release();
            return Ok(0);
        }
        let result = prune(&mut conn, cutoff, seen_cutoff).await;
        // Unlock before handing the connection back (a connection dropped on error
        // releases the lock with the session).
        if result.is_ok() {
            conn.client
                .execute("SELECT pg_advisory_unlock($1)", &[&UPKEEP_LOCK])
                .await
                .map_err(StoreError::pg)?;
            conn.release();
        }
        result
    }

    async fn rollup(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let mut conn = self.pool.get().await?;
            let n = retrying!(rollup_one_day(&mut conn, before).await);
            match n {
                Ok(0) => {
                    // The edges late batches left stale (their rows' `calls_before`).
                    let mut repaired = 0u64;
                    loop {
                        match retrying!(repair_calls_before(&mut conn).await)? {
                            0 => break,
                            n => repaired = repaired.saturating_add(n),
                        }
                    }
                    super::buckets::log_repaired(repaired);
                    // Then, after the last write, statistics and visibility.
                    if total > 0 {
                        analyze_after_fold(&conn, total).await;
                    }
                    conn.release();
                    return Ok(total);
                }
                Ok(n) => {
                    conn.release();
                    total += n;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let check = async {
            let conn = self.probe.get_within(READY_TIMEOUT).await?;
            let row = conn
                .client
                .query_one(
                    "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
                    &[],
                )
                .await
                .map_err(StoreError::pg)?;
            let read_only: bool = row.try_get(0).map_err(StoreError::pg)?;
            conn.release();
            if read_only {
                return Err(StoreError::Full(
                    "the database is read-only (a standby, or default_transaction_read_only)"
                        .into(),
                ));
            }
            Ok(())
        };
        tokio::time::timeout(READY_TIMEOUT, check)
            .await
            .map_err(|_| StoreError::Pool(format!("no answer within {READY_TIMEOUT:?}")))??;
        if self.health.cannot_write.load(Ordering::Acquire) {
            return Err(StoreError::Full(
                "the last write failed (disk full or read-only)".into(),
            ));
        }
        Ok(())
    }

    async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        if self.writer.send(Msg::Close(reply)).await.is_ok() {
            let _ = rx.await;
        }
        self.pool.close();
        self.probe.close();
    }

    fn decom(&self) -> &dyn super::decom::DecomStore {
        self
    }

    // ---- OTLP ingest (issue 17): store/postgres/otel.rs ----

    async fn otel_series(
        &self,
        keys: &[String],
    ) -> Result<Vec<super::otel::OtelSeries>, StoreError> {
        otel::series(&self.pool, keys).await
    }

    async fn otel_advance(
        &self,
        steps: &[super::otel::OtelAdvance],
    ) -> Result<Vec<bool>, StoreError> {
        otel::advance(&self.pool, steps).await
    }

    async fn otel_stored(&self, points: &[(String, i64)]) -> Result<(), StoreError> {
        otel::stored(&self.pool, points).await
    }

    async fn otel_export_lease(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        otel::lease(&self.pool, holder, now, until).await
    }

    async fn otel_prune(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        otel::prune(&self.pool, cutoff.0).await
    }
}

/// Evaluate an upkeep step again while it fails with a retryable error (a deadlock with
/// ingest, a lost connection).
macro_rules! retrying {
    ($step:expr) => {{
        let mut tries = 0;
        loop {
            tries += 1;
            match $step {
                Err(e) if tries < UPKEEP_TRIES && e.retryable() => {
                    tracing::debug!(error = %e, tries, "Retrying an upkeep step.");
                    tokio::time::sleep(Duration::from_millis(20 << tries)).await;
                }
                other => break other,
            }
        }
    }};
}
use retrying;

/// Retention. Each step is its own short transaction (a crash between steps leaves work
/// for the next round, never a wrong answer): first the idempotency records older than
/// `seen_cutoff` become each instance's seq floor (instances locked in name order, as
/// ingest locks them), then old rows are deleted.
async fn prune(
    conn: &mut pool::Conn,
    cutoff: Timestamp,
    seen_cutoff: Timestamp,
) -> Result<u64, StoreError> {
    let seen_cutoff = cutoff.0.max(seen_cutoff.0);
    let mut n = retrying!(fold_seen(conn, seen_cutoff).await)?;
    let steps: [(&str, i64); 7] = [
        (r#"DELETE FROM coverage WHERE "end" < $1"#, cutoff.0),
        ("DELETE FROM lookups WHERE last_seen < $1", cutoff.0),
        ("DELETE FROM bypass WHERE last_seen < $1", cutoff.0),
        ("DELETE FROM instances WHERE last_report < $1", cutoff.0),
        ("DELETE FROM edges WHERE last_seen < $1", cutoff.0),
        ("DELETE FROM edge_hours WHERE hour < $1", hour_of(cutoff)),
        ("DELETE FROM edge_days WHERE day < $1", day_of(cutoff)),
    ];
    for (sql, arg) in steps
        .into_iter()
        .chain(inbound::PRUNE.map(|sql| (sql, cutoff.0)))
    {
        n += retrying!(conn
            .client
            .execute(sql, &[&arg])
            .await
            .map_err(StoreError::pg))?;
    }
    Ok(n)
}

/// Idempotency records received before `seen_cutoff` become their instance's seq floor
/// (a batch below it was stored before), in one transaction.
async fn fold_seen(conn: &mut pool::Conn, seen_cutoff: i64) -> Result<u64, StoreError> {
    let tx = conn.client.transaction().await.map_err(StoreError::pg)?;
    tx.execute(
        "SELECT 1 FROM instances
         WHERE instance IN (SELECT DISTINCT instance FROM seen WHERE received < $1)
         ORDER BY instance FOR UPDATE",
        &[&seen_cutoff],
    )
    .await
    .map_err(StoreError::pg)?;
    tx.execute(
        "UPDATE instances i SET seq_floor = GREATEST(i.seq_floor, s.floor)
         FROM (SELECT instance, MAX(seq) + 1 AS floor FROM seen WHERE received < $1
               GROUP BY instance) s
         WHERE i.instance = s.instance",
        &[&seen_cutoff],
    )
    .await
    .map_err(StoreError::pg)?;
    let n = tx
        .execute("DELETE FROM seen WHERE received < $1", &[&seen_cutoff])
        .await
        .map_err(StoreError::pg)?;
    tx.commit().await.map_err(StoreError::pg)?;
    Ok(n)
}

/// A transaction holding the upkeep lock until it ends; `None` while another collector
/// holds it (that one does the upkeep).
async fn upkeep_transaction(
    conn: &mut pool::Conn,
) -> Result<Option<tokio_postgres::Transaction<'_>>, StoreError> {
    let tx = conn.client.transaction().await.map_err(StoreError::pg)?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&UPKEEP_LOCK])
        .await
        .map_err(StoreError::pg)?
        .get(0);
    Ok(locked.then_some(tx))
}

/// After a fold that moved a large share of the buckets (an upgrade, a backfill, the
/// first upkeep of a loaded database), refresh the planner's statistics of the bucket
/// tables at once, and vacuum them. Until autovacuum gets to it, the planner would still see them as they
/// were — the fleet benchmark's `check` took 2 s instead of 20 ms for the minute after
/// folding 76 days. The hourly fold of one hour stays below the threshold.
async fn analyze_after_fold(conn: &pool::Conn, moved: u64) {
    let rows: f64 = match conn
        .client
        .query_one(
            "SELECT reltuples::float8 FROM pg_class WHERE oid = 'edge_days'::regclass",
            &[],
        )
        .await
    {
        Ok(row) => row.try_get(0).unwrap_or(-1.0),
        Err(error) => {
            tracing::warn!(error = %StoreError::pg(error), "Could not read the bucket tables' statistics.");
            return;
        }
    };
    // -1: never analyzed. Otherwise, as autovacuum's default analyze threshold: a tenth.
    if rows >= 0.0 && (moved as f64) < rows * 0.1 {
        return;
    }
    let started = std::time::Instant::now();
    match conn
        .client
        .batch_execute("ANALYZE edge_days, edge_hours")
        .await
    {
        Ok(()) => tracing::info!(
            moved,
            seconds = started.elapsed().as_secs_f64(),
            "Refreshed the bucket tables' statistics after a large fold."
        ),
        Err(error) => tracing::warn!(
            error = %StoreError::pg(error),
            "Could not refresh the bucket tables' statistics after a large fold; autovacuum will."
        ),
    }
    // And mark their pages all-visible. The rows the fold wrote are read by index-only
    // scans (`check`'s day probes, `callers --since`), which visit the table for every
    // row until a vacuum has: `callers --since 90d` of the fleet benchmark's busiest host
    // took 295 ms instead of 35 until autovacuum got there. VACUUM shares the tables with
    // ingest and reads; it runs without the connection's statement timeout, which is set
    // back after.
    let started = std::time::Instant::now();
    let vacuumed = match conn.client.batch_execute("SET statement_timeout = 0").await {
        Ok(()) => {
            conn.client
                .batch_execute("VACUUM edge_days, edge_hours")
                .await
        }
        Err(e) => Err(e),
    };
    let restored = conn
        .client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            connect::STATEMENT_TIMEOUT_MS
        ))
        .await;
    match vacuumed.and(restored) {
        Ok(()) => tracing::info!(
            moved,
            seconds = started.elapsed().as_secs_f64(),
            "Vacuumed the bucket tables after a large fold."
        ),
        Err(error) => tracing::warn!(
            error = %StoreError::pg(error),
            "Could not vacuum the bucket tables after a large fold; autovacuum will."
        ),
    }
}

/// Fold the hourly buckets of the oldest UTC day that ended before `before` into daily
/// buckets, in one statement: the rows deleted are exactly the rows folded, whatever
/// ingest does meanwhile. Returns the hourly rows folded; 0 when nothing is left (or
/// another collector is folding).
async fn rollup_one_day(conn: &mut pool::Conn, before: Timestamp) -> Result<u64, StoreError> {
    let end_hour = day_of(before) * 24;
    let Some(tx) = upkeep_transaction(conn).await? else {
        return Ok(0);
    };
    let oldest: Option<i64> = tx
        .query_one(
            "SELECT MIN(hour) FROM edge_hours WHERE hour < $1",
            &[&end_hour],
        )
        .await
        .map_err(StoreError::pg)?
        .get(0);
    let Some(oldest) = oldest else {
        return Ok(0);
    };
    let day = oldest.div_euclid(24);
    let (from, to) = (day * 24, day * 24 + 24);
    let sql = format!(
        "WITH moved AS (
             DELETE FROM edge_hours WHERE hour >= $1 AND hour < $2
             RETURNING edge_id, requests, connections, errors, bytes_sent, bytes_received,
                       first_seen, last_seen, calls_before
         ), folded AS (
             INSERT INTO edge_days (edge_id, day, requests, connections, errors, bytes_sent,
                 bytes_received, first_seen, last_seen, calls_before)
             SELECT edge_id, $3, {}, {}, {}, {}, {}, MIN(first_seen), MAX(last_seen),
                 CASE WHEN COUNT(calls_before) = COUNT(*) THEN MIN(calls_before) END
             FROM moved GROUP BY edge_id
             {}
         )
         SELECT COUNT(*) FROM moved",
        read::sat_sum("requests"),
        read::sat_sum("connections"),
        read::sat_sum("errors"),
        read::sat_sum("bytes_sent"),
        read::sat_sum("bytes_received"),
        add_to_bucket!("edge_days", "day"),
    );
    let folded: i64 = tx
        .query_one(&sql, &[&from, &to, &day])
        .await
        .map_err(StoreError::pg)?
        .get(0);
    tx.commit().await.map_err(StoreError::pg)?;
    Ok(folded.max(0) as u64)
}

/// Most stale edges recomputed per transaction (the upkeep calls again until none is
/// left).
const REPAIR_EDGES: i64 = 500;

/// Recompute the `calls_before` of every bucket row of up to [`REPAIR_EDGES`] edges a late
/// batch left stale, and clear their mark, under the upkeep lock (no fold runs meanwhile)
/// with the edges locked (ingest of them waits; edges ingest holds are left for the next
/// call). Returns the rows written; 0 when none is left (or another collector does the
/// upkeep).
async fn repair_calls_before(conn: &mut pool::Conn) -> Result<u64, StoreError> {
    let Some(tx) = upkeep_transaction(conn).await? else {
        return Ok(0);
    };
    let edges = tx
        .query(
            "SELECT id, sat_add(requests, connections),
                    CASE WHEN cur_hour IS NULL THEN 0
                         ELSE sat_add(cur_requests, cur_connections) END
             FROM edges WHERE stale_after IS NOT NULL
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&REPAIR_EDGES],
        )
        .await
        .map_err(StoreError::pg)?;
    if edges.is_empty() {
        return Ok(0);
    }
    let mut ids: Vec<i64> = Vec::with_capacity(edges.len());
    let mut sums: HashMap<i64, (u64, u64, Vec<BucketCalls>)> = HashMap::new();
    for row in &edges {
        let id: i64 = row.try_get(0).map_err(StoreError::pg)?;
        ids.push(id);
        sums.insert(id, (read::count(row, 1)?, read::count(row, 2)?, Vec::new()));
    }
    for row in tx
        .query(
            "SELECT edge_id, 0::int4, day, sat_add(requests, connections)
             FROM edge_days WHERE edge_id = ANY($1)
             UNION ALL
             SELECT edge_id, 1::int4, hour, sat_add(requests, connections)
             FROM edge_hours WHERE edge_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(StoreError::pg)?
    {
        let id: i64 = row.try_get(0).map_err(StoreError::pg)?;
        let kind: i32 = row.try_get(1).map_err(StoreError::pg)?;
        if let Some(e) = sums.get_mut(&id) {
            e.2.push(BucketCalls {
                kind: if kind == 0 {
                    BucketKind::Day
                } else {
                    BucketKind::Hour
                },
                key: row.try_get(2).map_err(StoreError::pg)?,
                calls: read::count(&row, 3)?,
            });
        }
    }
    // (edge, key, calls_before) columns per table, for UNNEST.
    let mut days: (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
    let mut hours: (Vec<i64>, Vec<i64>, Vec<i64>) = Default::default();
    for (id, (total, current, mut rows)) in sums {
        let before = calls_before(total, current, &mut rows);
        for (r, b) in rows.iter().zip(before) {
            let to = match r.kind {
                BucketKind::Day => &mut days,
                BucketKind::Hour => &mut hours,
            };
            to.0.push(id);
            to.1.push(r.key);
            to.2.push(i64::try_from(b).unwrap_or(i64::MAX));
        }
    }
    let mut written = 0u64;
    for (table, key, cols) in [("edge_days", "day", &days), ("edge_hours", "hour", &hours)] {
        if cols.0.is_empty() {
            continue;
        }
        written += tx
            .execute(
                &format!(
                    "UPDATE {table} t SET calls_before = u.b
                     FROM UNNEST($1::int8[], $2::int8[], $3::int8[]) AS u(id, k, b)
                     WHERE t.edge_id = u.id AND t.{key} = u.k"
                ),
                &[&cols.0, &cols.1, &cols.2],
            )
            .await
            .map_err(StoreError::pg)?;
    }
    tx.execute(
        "UPDATE edges SET stale_after = NULL WHERE id = ANY($1)",
        &[&ids],
    )
    .await
    .map_err(StoreError::pg)?;
    tx.commit().await.map_err(StoreError::pg)?;
    Ok(written.max(ids.len() as u64))
}
