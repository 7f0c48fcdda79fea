//! The PostgreSQL write path: group commit, set-based.
//!
//! A dispatcher task takes every batch waiting (up to [`MAX_GROUP`] batches or
//! [`MAX_GROUP_EDGES`] edges) and commits the group in one READ COMMITTED transaction on
//! a pooled connection, at most [`WRITERS`] groups at a time; each sender is answered only
//! after the commit. Inside the transaction every step is one statement over the whole
//! group (arrays through `UNNEST`), whatever its size:
//!
//! 1. the group's instances are locked (`FOR UPDATE`, in name order), the new ones
//!    created first (`ON CONFLICT DO NOTHING`): batches of one instance apply one
//!    transaction at a time, whichever replica received them, so the service binding,
//!    the seq floor and the coverage merge see a stable instance;
//! 2. the batches are decided in arrival order: another service's instance → conflict;
//!    below the instance's seq floor or repeated within the group → duplicate;
//! 3. `INSERT INTO seen … ON CONFLICT DO NOTHING RETURNING` decides which batches are new
//!    (a delivery of the same batch committed first by another replica makes this one a
//!    duplicate);
//! 4. instance totals and coverage (the touching intervals read, merged in Rust by
//!    [`merge_interval`], written back), pipelined with step 5;
//! 5. edges: the group's deltas summed per edge and hour (saturating); one `UPDATE …
//!    FROM UNNEST` adds them in place to every edge whose current hour bucket is the
//!    delta's newest hour or later (the steady state); the rest — new edges, edges
//!    starting a new hour — are locked in id order or inserted, their old current bucket
//!    moved to `edge_hours`, and updated; one upsert adds the other hours.
//!
//! A deadlock or serialization failure (replicas, or upkeep, touching the same rows in
//! another order) or a lost connection retries the whole group; the seen records make a
//! retry of an already committed group harmless. A group that fails otherwise is retried
//! one batch at a time, so one bad batch never takes the others down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Transaction;
use whouses_wire::{Report, Timestamp};

use super::pool::{Conn, Pool};
use super::Health;
use crate::store::buckets::{bucket_first_seen, hour_of, touching_span};
use crate::store::{merge_interval, Batch, Ingested, Interval, StoreError};

/// Groups committing at once (each on its own connection): while one waits for its
/// commit to be flushed, the next is being applied.
pub(super) const WRITERS: usize = 2;
/// Most batches in one group.
const MAX_GROUP: usize = 256;
/// Most edges in one group (a group is cut after the batch that crosses it).
const MAX_GROUP_EDGES: usize = 20_000;
/// Batches waiting for a writer before senders wait too (back-pressure on ingest).
const QUEUE: usize = 1024;
/// Tries of a group that hit a deadlock, a serialization failure or a lost connection.
const TRIES: usize = 5;
/// The largest count.
const MAX: i64 = i64::MAX;

pub(super) struct Job {
    pub batch: Batch,
    pub reply: oneshot::Sender<Result<Ingested, StoreError>>,
}

pub(super) enum Msg {
    Ingest(Box<Job>),
    /// Finish the groups queued before this, then stop.
    Close(oneshot::Sender<()>),
}

/// Start the dispatcher.
pub(super) fn spawn(pool: Arc<Pool>, health: Arc<Health>) -> mpsc::Sender<Msg> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(dispatch(rx, pool, health));
    tx
}

async fn dispatch(mut rx: mpsc::Receiver<Msg>, pool: Arc<Pool>, health: Arc<Health>) {
    let writers = Arc::new(Semaphore::new(WRITERS));
    loop {
        // Wait for a free writer first: batches arriving meanwhile join the next group.
        let Ok(permit) = writers.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut group = Vec::new();
        let mut edges = 0;
        let mut closing = None;
        let mut take = |m: Msg, group: &mut Vec<Job>, edges: &mut usize| match m {
            Msg::Ingest(j) => {
                *edges += j.batch.report.edges.len();
                group.push(*j);
                true
            }
            Msg::Close(reply) => {
                closing = Some(reply);
                false
            }
        };
        let mut more = take(first, &mut group, &mut edges);
        while more && group.len() < MAX_GROUP && edges < MAX_GROUP_EDGES {
            match rx.try_recv() {
                Ok(m) => more = take(m, &mut group, &mut edges),
                Err(_) => break,
            }
        }
        if !group.is_empty() {
            tokio::spawn(commit_and_answer(
                pool.clone(),
                health.clone(),
                group,
                permit,
            ));
        } else {
            drop(permit);
        }
        if let Some(reply) = closing {
            // Every writer back: the groups before the close have committed.
            let all = u32::try_from(WRITERS).unwrap_or(u32::MAX);
            let _ = writers.acquire_many(all).await;
            let _ = reply.send(());
            return;
        }
    }
}

async fn commit_and_answer(
    pool: Arc<Pool>,
    health: Arc<Health>,
    group: Vec<Job>,
    _permit: OwnedSemaphorePermit,
) {
    let batches: Vec<&Batch> = group.iter().map(|j| &j.batch).collect();
    let results = match commit(&pool, &batches).await {
        Ok(results) => {
            health.wrote();
            results
        }
        // A failure no retry fixed that is not about the connection or the server's
        // state may be one batch's fault: try them one by one. (With the database down,
        // every batch would only fail again, slowly: answer at once.)
        Err(e)
            if batches.len() > 1
                && !e.retryable()
                && !matches!(e, StoreError::Pool(_) | StoreError::Full(_)) =>
        {
            health.failed(&e);
            tracing::warn!(error = %e, batches = batches.len(), "A group commit failed; committing its batches one at a time.");
            let mut results = Vec::with_capacity(batches.len());
            for b in &batches {
                results.push(match commit(&pool, std::slice::from_ref(b)).await {
                    Ok(mut r) => {
                        health.wrote();
                        r.pop().unwrap_or(Err(StoreError::Pool("no result".into())))
                    }
                    Err(e) => {
                        health.failed(&e);
                        Err(e)
                    }
                });
            }
            results
        }
        Err(e) => {
            health.failed(&e);
            tracing::error!(error = %e, batches = batches.len(), "A group commit failed; its batches are refused (the senders retry).");
            let full = matches!(e, StoreError::Full(_));
            let msg = e.to_string();
            let mut results = vec![Err(e)];
            results.extend((1..batches.len()).map(|_| {
                Err(if full {
                    StoreError::Full(msg.clone())
                } else {
                    StoreError::Postgres {
                        message: msg.clone(),
                        retry: true,
                    }
                })
            }));
            results
        }
    };
    for (job, result) in group.into_iter().zip(results) {
        let _ = job.reply.send(result);
    }
}

/// Commit a group, retrying what a retry can fix.
async fn commit(
    pool: &Pool,
    batches: &[&Batch],
) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut conn = pool.get().await?;
        match apply(&mut conn, batches).await {
            Ok(results) => {
                conn.release();
                return Ok(results);
            }
            Err(e) if tries < TRIES && e.retryable() => {
                tracing::debug!(error = %e, tries, "Retrying a group commit.");
                drop(conn);
                tokio::time::sleep(Duration::from_millis(10 << tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A batch checked and converted for the database.
struct Checked<'a> {
    report: &'a Report,
    received: i64,
    coverage: Option<Interval>,
    seq: i64,
}

/// What the group's batches come to.
enum Verdict {
    Pending,
    Done(Result<Ingested, StoreError>),
}

/// Apply a group in one transaction; per batch: stored, duplicate or refused.
async fn apply(
    conn: &mut Conn,
    batches: &[&Batch],
) -> Result<Vec<Result<Ingested, StoreError>>, StoreError> {
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(batches.len());
    let mut checked: Vec<Option<Checked<'_>>> = Vec::with_capacity(batches.len());
    for b in batches {
        match check(b) {
            Ok(c) => {
                verdicts.push(Verdict::Pending);
                checked.push(Some(c));
            }
            Err(e) => {
                verdicts.push(Verdict::Done(Err(e)));
                checked.push(None);
            }
        }
    }
    let mut first_of: BTreeMap<&str, &Checked<'_>> = BTreeMap::new();
    for c in checked.iter().flatten() {
        first_of.entry(c.report.instance.as_str()).or_insert(c);
    }
    if first_of.is_empty() {
        return Ok(finish(verdicts));
    }
    let sql = Statements::prepare(conn).await?;
    // Issue 14: the group's callee-side data and address claims, when it has any.
    let for_inbound: Vec<(&Report, Option<Interval>)> = checked
        .iter()
        .flatten()
        .map(|c| (c.report, c.coverage))
        .collect();
    let inbound_sql = if super::inbound::wanted(&for_inbound) {
        Some(super::inbound::Statements::prepare(conn).await?)
    } else {
        None
    };
    let tx = conn.client.transaction().await.map_err(StoreError::pg)?;

    // 1. Instances: lock the known ones (in name order); create the new ones (values of
    //    their first batch here) and lock them too.
    let names: Vec<&str> = first_of.keys().copied().collect();
    let mut instances = lock_instances(&tx, &sql, &names).await?;
    let new: Vec<&&Checked<'_>> = first_of
        .iter()
        .filter(|(name, _)| !instances.contains_key(**name))
        .map(|(_, c)| c)
        .collect();
    if !new.is_empty() {
        let new_names: Vec<&str> = new.iter().map(|c| c.report.instance.as_str()).collect();
        let services: Vec<&str> = new.iter().map(|c| c.report.service.as_str()).collect();
        let envs: Vec<&str> = new.iter().map(|c| c.report.environment.as_str()).collect();
        let received: Vec<i64> = new.iter().map(|c| c.received).collect();
        let until: Vec<i64> = new.iter().map(|c| c.report.period_end.0).collect();
        let seqs: Vec<i64> = new.iter().map(|c| c.seq).collect();
        let started: Vec<i64> = new.iter().map(|c| c.report.started_at.0).collect();
        let flush: Vec<i64> = new.iter().map(|c| flush_ms(c.report)).collect();
        tx.execute(
            &sql.new_instances,
            &[
                &new_names, &services, &envs, &received, &until, &seqs, &started, &flush,
            ],
        )
        .await
        .map_err(StoreError::pg)?;
        instances.extend(lock_instances(&tx, &sql, &new_names).await?);
    }
    if instances.len() != names.len() {
        // Retention removed an instance between the insert and the lock: start again.
        return Err(StoreError::Postgres {
            message: "an instance vanished mid-commit (retention)".into(),
            retry: true,
        });
    }

    // 2. Decide each batch in arrival order.
    let mut candidates: HashSet<(&str, i64)> = HashSet::new();
    let mut pending: Vec<usize> = Vec::new();
    for (i, c) in checked.iter().enumerate() {
        let Some(c) = c else { continue };
        let r = c.report;
        let Some(row) = instances.get(r.instance.as_str()) else {
            continue;
        };
        if row.service != r.service || row.environment != r.environment {
            verdicts[i] = Verdict::Done(Err(StoreError::Conflict(format!(
                "instance {:?} reports for service {:?} in environment {:?}, not {:?} in {:?}; give each sidecar its own --instance",
                r.instance, row.service, row.environment, r.service, r.environment
            ))));
        } else if c.seq < row.seq_floor || !candidates.insert((r.instance.as_str(), c.seq)) {
            verdicts[i] = Verdict::Done(Ok(Ingested::Duplicate));
        } else {
            pending.push(i);
        }
    }

    // 3. The seen records decide which deliveries are new.
    let mut stored: Vec<usize> = Vec::with_capacity(pending.len());
    if !pending.is_empty() {
        let names: Vec<&str> = pending
            .iter()
            .filter_map(|&i| checked[i].as_ref().map(|c| c.report.instance.as_str()))
            .collect();
        let seqs: Vec<i64> = pending
            .iter()
            .filter_map(|&i| checked[i].as_ref().map(|c| c.seq))
            .collect();
        let received: Vec<i64> = pending
            .iter()
            .filter_map(|&i| checked[i].as_ref().map(|c| c.received))
            .collect();
        let mut inserted: HashSet<(String, i64)> = HashSet::new();
        for row in tx
            .query(&sql.insert_seen, &[&names, &seqs, &received])
            .await
            .map_err(StoreError::pg)?
        {
            inserted.insert((
                row.try_get(0).map_err(StoreError::pg)?,
                row.try_get(1).map_err(StoreError::pg)?,
            ));
        }
        for &i in &pending {
            let Some(c) = &checked[i] else { continue };
            if inserted.contains(&(c.report.instance.clone(), c.seq)) {
                stored.push(i);
            } else {
                verdicts[i] = Verdict::Done(Ok(Ingested::Duplicate));
            }
        }
    }
    if stored.is_empty() {
        tx.commit().await.map_err(StoreError::pg)?;
        return Ok(finish(verdicts));
    }

    // 4. Instance totals and coverage.
    let mut new_coverage: BTreeMap<&str, Vec<Interval>> = BTreeMap::new();
    for &i in &stored {
        let Some(c) = &checked[i] else { continue };
        let r = c.report;
        if let Some(row) = instances.get_mut(r.instance.as_str()) {
            row.last_report = row.last_report.max(c.received);
            row.observed_until = row.observed_until.max(r.period_end.0);
            row.last_seq = row.last_seq.max(c.seq);
            row.started_at = r.started_at.0;
            row.flush_interval_ms = flush_ms(r);
            row.reports = row.reports.saturating_add(1);
            row.changed = true;
        }
        if let Some(iv) = c.coverage {
            new_coverage
                .entry(r.instance.as_str())
                .or_default()
                .push(iv);
        }
    }
    // 5. Edges.
    let mut deltas = Deltas::default();
    for &i in &stored {
        let Some(c) = &checked[i] else { continue };
        let n = deltas.add(c.report);
        verdicts[i] = Verdict::Done(Ok(Ingested::Stored { edges: n }));
    }
    // Lookups and bypass observations: few, and each applied in arrival order (the
    // latest answer's addresses and name win, as in SQLite).
    for &i in &stored {
        if let Some(c) = &checked[i] {
            observations(&tx, &sql, c.report).await?;
        }
    }
    if let Some(inbound_sql) = &inbound_sql {
        let group: Vec<(&Report, Option<Interval>)> = stored
            .iter()
            .filter_map(|&i| checked[i].as_ref().map(|c| (c.report, c.coverage)))
            .collect();
        super::inbound::store(&tx, inbound_sql, &group).await?;
    }
    // Instances, coverage and edges touch different rows: their statements go out
    // together on the connection (tokio-postgres pipelines them), not one round trip
    // after another.
    tokio::try_join!(
        update_instances(&tx, &sql, &instances),
        async {
            if new_coverage.is_empty() {
                Ok(())
            } else {
                merge_coverage(&tx, &sql, &new_coverage).await
            }
        },
        deltas.apply(&tx, &sql),
    )?;
    tx.commit().await.map_err(StoreError::pg)?;
    Ok(finish(verdicts))
}

/// Store a batch's lookups and bypass observations (totals per key, saturating), one
/// row at a time in the batch's order.
async fn observations(
    tx: &Transaction<'_>,
    sql: &Statements,
    r: &Report,
) -> Result<(), StoreError> {
    let c = |v: u64| i64::try_from(v).unwrap_or(MAX);
    for l in &r.lookups {
        tx.execute(
            &sql.add_lookup,
            &[
                &l.name,
                &r.service,
                &r.environment,
                &c(l.lookups),
                &l.first_seen.0,
                &l.last_seen.0,
                &l.addresses.join(" "),
            ],
        )
        .await
        .map_err(StoreError::pg)?;
    }
    for b in &r.bypass {
        tx.execute(
            &sql.add_bypass,
            &[
                &b.address,
                &i32::from(b.port),
                &r.service,
                &r.environment,
                &b.name,
                &c(b.connections),
                &b.first_seen.0,
                &b.last_seen.0,
            ],
        )
        .await
        .map_err(StoreError::pg)?;
    }
    Ok(())
}

fn finish(verdicts: Vec<Verdict>) -> Vec<Result<Ingested, StoreError>> {
    verdicts
        .into_iter()
        .map(|v| match v {
            Verdict::Done(r) => r,
            // Every batch is decided before a commit; a pending one means a batch whose
            // instance row was missing, which the caller retries.
            Verdict::Pending => Err(StoreError::Pool("the batch was not decided".into())),
        })
        .collect()
}

/// Convert what the database needs and refuse what it cannot store.
fn check(b: &Batch) -> Result<Checked<'_>, StoreError> {
    let r = &b.report;
    let seq = i64::try_from(r.seq)
        .map_err(|_| StoreError::Invalid("seq does not fit a signed 64-bit integer".into()))?;
    // PostgreSQL text cannot hold NUL (the API's validation already refuses it).
    let nul = |s: &str| s.contains('\0');
    if nul(&r.instance)
        || nul(&r.service)
        || nul(&r.environment)
        || r.edges.iter().any(|e| nul(&e.host))
        || r.lookups
            .iter()
            .any(|l| nul(&l.name) || l.addresses.iter().any(|a| nul(a)))
        || r.bypass
            .iter()
            .any(|b| nul(&b.address) || b.name.as_deref().is_some_and(nul))
    {
        return Err(StoreError::Invalid("a name holds a NUL character".into()));
    }
    Ok(Checked {
        report: r,
        received: b.received.0,
        coverage: b.coverage,
        seq,
    })
}

fn flush_ms(r: &Report) -> i64 {
    i64::try_from(r.flush_interval_ms).unwrap_or(MAX)
}

/// Lock these instances' rows (in name order) and read them.
async fn lock_instances(
    tx: &Transaction<'_>,
    sql: &Statements,
    names: &[&str],
) -> Result<HashMap<String, InstanceRow>, StoreError> {
    let mut instances = HashMap::with_capacity(names.len());
    for row in tx
        .query(&sql.lock_instances, &[&names])
        .await
        .map_err(StoreError::pg)?
    {
        let name: String = row.try_get(0).map_err(StoreError::pg)?;
        instances.insert(
            name,
            InstanceRow {
                service: row.try_get(1).map_err(StoreError::pg)?,
                environment: row.try_get(2).map_err(StoreError::pg)?,
                seq_floor: row.try_get(3).map_err(StoreError::pg)?,
                last_report: row.try_get(4).map_err(StoreError::pg)?,
                observed_until: row.try_get(5).map_err(StoreError::pg)?,
                last_seq: row.try_get(6).map_err(StoreError::pg)?,
                started_at: 0,
                flush_interval_ms: 0,
                reports: row.try_get(7).map_err(StoreError::pg)?,
                changed: false,
            },
        );
    }
    Ok(instances)
}

/// A locked instance row and what the group changes in it.
struct InstanceRow {
    service: String,
    environment: String,
    seq_floor: i64,
    last_report: i64,
    observed_until: i64,
    last_seq: i64,
    started_at: i64,
    flush_interval_ms: i64,
    reports: i64,
    changed: bool,
}

async fn update_instances(
    tx: &Transaction<'_>,
    sql: &Statements,
    instances: &HashMap<String, InstanceRow>,
) -> Result<(), StoreError> {
    let changed: Vec<(&String, &InstanceRow)> =
        instances.iter().filter(|(_, r)| r.changed).collect();
    let names: Vec<&str> = changed.iter().map(|(n, _)| n.as_str()).collect();
    let col =
        |f: fn(&InstanceRow) -> i64| -> Vec<i64> { changed.iter().map(|(_, r)| f(r)).collect() };
    tx.execute(
        &sql.update_instances,
        &[
            &names,
            &col(|r| r.last_report),
            &col(|r| r.observed_until),
            &col(|r| r.last_seq),
            &col(|r| r.started_at),
            &col(|r| r.flush_interval_ms),
            &col(|r| r.reports),
        ],
    )
    .await
    .map_err(StoreError::pg)?;
    Ok(())
}

/// Merge each instance's new intervals into its stored ones: the stored intervals that
/// touch the span of the new ones are read, merged with them, and written back.
async fn merge_coverage(
    tx: &Transaction<'_>,
    sql: &Statements,
    new: &BTreeMap<&str, Vec<Interval>>,
) -> Result<(), StoreError> {
    let names: Vec<&str> = new.keys().copied().collect();
    let (lo, hi): (Vec<i64>, Vec<i64>) = new.values().map(|v| touching_span(v)).unzip();
    let mut merged: BTreeMap<String, Vec<Interval>> = BTreeMap::new();
    let (mut old_names, mut old_starts) = (Vec::new(), Vec::new());
    for row in tx
        .query(&sql.touching_coverage, &[&names, &lo, &hi])
        .await
        .map_err(StoreError::pg)?
    {
        let name: String = row.try_get(0).map_err(StoreError::pg)?;
        let start: i64 = row.try_get(1).map_err(StoreError::pg)?;
        let end: i64 = row.try_get(2).map_err(StoreError::pg)?;
        old_names.push(name.clone());
        old_starts.push(start);
        merged.entry(name).or_default().push(Interval {
            start: Timestamp(start),
            end: Timestamp(end),
        });
    }
    for (name, ivs) in new {
        let set = merged.entry((*name).to_string()).or_default();
        for iv in ivs {
            merge_interval(set, *iv);
        }
    }
    if !old_names.is_empty() {
        tx.execute(&sql.delete_coverage, &[&old_names, &old_starts])
            .await
            .map_err(StoreError::pg)?;
    }
    let (mut n, mut s, mut e) = (Vec::new(), Vec::new(), Vec::new());
    for (name, ivs) in &merged {
        for iv in ivs {
            n.push(name.as_str());
            s.push(iv.start.0);
            e.push(iv.end.0);
        }
    }
    tx.execute(&sql.insert_coverage, &[&n, &s, &e])
        .await
        .map_err(StoreError::pg)?;
    Ok(())
}

/// Counts summed, saturating at the largest count, with the first and last call.
#[derive(Debug, Clone, Copy)]
struct Sums {
    requests: i64,
    connections: i64,
    errors: i64,
    bytes_sent: i64,
    bytes_received: i64,
    first_seen: i64,
    last_seen: i64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.requests = self.requests.saturating_add(o.requests);
        self.connections = self.connections.saturating_add(o.connections);
        self.errors = self.errors.saturating_add(o.errors);
        self.bytes_sent = self.bytes_sent.saturating_add(o.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(o.bytes_received);
        self.first_seen = self.first_seen.min(o.first_seen);
        self.last_seen = self.last_seen.max(o.last_seen);
    }
}

type EdgeKey = (String, i32, &'static str, String, String);

/// One edge's deltas in a group: its totals and its hour buckets.
struct EdgeDelta {
    totals: Sums,
    hours: BTreeMap<i64, Sums>,
}

/// The group's deltas per edge.
#[derive(Default)]
struct Deltas {
    edges: BTreeMap<EdgeKey, EdgeDelta>,
}

/// Columns of `edge_hours` rows to upsert.
#[derive(Default)]
struct HourRows {
    ids: Vec<i64>,
    hours: Vec<i64>,
    sums: SumColumns,
}

/// [`Sums`] as columns, for `UNNEST`.
#[derive(Default)]
struct SumColumns {
    requests: Vec<i64>,
    connections: Vec<i64>,
    errors: Vec<i64>,
    bytes_sent: Vec<i64>,
    bytes_received: Vec<i64>,
    first_seen: Vec<i64>,
    last_seen: Vec<i64>,
}

impl SumColumns {
    fn push(&mut self, s: &Sums) {
        self.requests.push(s.requests);
        self.connections.push(s.connections);
        self.errors.push(s.errors);
        self.bytes_sent.push(s.bytes_sent);
        self.bytes_received.push(s.bytes_received);
        self.first_seen.push(s.first_seen);
        self.last_seen.push(s.last_seen);
    }
}

impl Deltas {
    /// Add a report's edges; returns how many it stores (edges with nothing counted are
    /// skipped, as in SQLite).
    fn add(&mut self, r: &Report) -> usize {
        let mut n = 0;
        for e in &r.edges {
            if e.counts.is_zero() {
                continue;
            }
            let c = |v: u64| i64::try_from(v).unwrap_or(MAX);
            let totals = Sums {
                requests: c(e.counts.requests),
                connections: c(e.counts.connections),
                errors: c(e.counts.errors),
                bytes_sent: c(e.counts.bytes_sent),
                bytes_received: c(e.counts.bytes_received),
                first_seen: e.counts.first_seen.0,
                last_seen: e.counts.last_seen.0,
            };
            let bucket = Sums {
                first_seen: bucket_first_seen(e, r).0,
                ..totals
            };
            let key = (
                e.host.clone(),
                i32::from(e.port),
                e.scheme.as_str(),
                r.service.clone(),
                r.environment.clone(),
            );
            let hour = hour_of(e.counts.last_seen);
            match self.edges.get_mut(&key) {
                Some(d) => {
                    d.totals.add(&totals);
                    d.hours
                        .entry(hour)
                        .and_modify(|h| h.add(&bucket))
                        .or_insert(bucket);
                }
                None => {
                    self.edges.insert(
                        key,
                        EdgeDelta {
                            totals,
                            hours: BTreeMap::from([(hour, bucket)]),
                        },
                    );
                }
            }
            n += 1;
        }
        n
    }

    async fn apply(self, tx: &Transaction<'_>, sql: &Statements) -> Result<(), StoreError> {
        if self.edges.is_empty() {
            return Ok(());
        }
        let deltas: Vec<(EdgeKey, EdgeDelta)> = self.edges.into_iter().collect();
        // Existing edges, locked; then the new ones inserted. An insert that loses a race
        // with another transaction inserting the same edge finds it on the next lock.
        let mut found: Vec<Option<(i64, Option<i64>)>> = vec![None; deltas.len()];
        let mut inserted = vec![false; deltas.len()];
        let mut hours = HourRows::default();
        // Most edges: one update in place. `inserted` also marks those done.
        update_in_place(tx, sql, &deltas, &mut inserted, &mut hours).await?;
        for _round in 0..3 {
            let missing: Vec<usize> = (0..deltas.len())
                .filter(|&i| found[i].is_none() && !inserted[i])
                .collect();
            if missing.is_empty() {
                break;
            }
            lock_edges(tx, sql, &deltas, &missing, &mut found).await?;
            let new: Vec<usize> = missing
                .into_iter()
                .filter(|&i| found[i].is_none())
                .collect();
            if !new.is_empty() {
                insert_edges(tx, sql, &deltas, &new, &mut inserted, &mut hours).await?;
            }
        }
        if (0..deltas.len()).any(|i| found[i].is_none() && !inserted[i]) {
            return Err(StoreError::Postgres {
                message: "new edges kept racing with other writers".into(),
                retry: true,
            });
        }

        // Existing edges: totals, and the current hour bucket kept (a late batch), added
        // to (the same hour) or replaced (a newer hour; the old one moves to edge_hours).
        let mut moved: Vec<i64> = Vec::new();
        let mut ids = Vec::new();
        let mut totals = SumColumns::default();
        let mut modes: Vec<i32> = Vec::new();
        let mut cur_hours: Vec<i64> = Vec::new();
        let mut cur = SumColumns::default();
        for (i, (_, d)) in deltas.iter().enumerate() {
            let Some((id, cur_hour)) = found[i] else {
                continue;
            };
            let Some((&newest, newest_sums)) = d.hours.iter().next_back() else {
                continue;
            };
            let mode = match cur_hour {
                Some(c) if c == newest => 1,
                Some(c) if c > newest => 0,
                Some(_) => {
                    moved.push(id);
                    2
                }
                None => 2,
            };
            for (&h, s) in &d.hours {
                if mode == 0 || h != newest {
                    hours.ids.push(id);
                    hours.hours.push(h);
                    hours.sums.push(s);
                }
            }
            ids.push(id);
            totals.push(&d.totals);
            modes.push(mode);
            cur_hours.push(newest);
            cur.push(newest_sums);
        }
        if !moved.is_empty() {
            tx.execute(&sql.move_current, &[&moved])
                .await
                .map_err(StoreError::pg)?;
        }
        if !ids.is_empty() {
            tx.execute(
                &sql.update_edges,
                &[
                    &ids,
                    &totals.requests,
                    &totals.connections,
                    &totals.errors,
                    &totals.bytes_sent,
                    &totals.bytes_received,
                    &totals.first_seen,
                    &totals.last_seen,
                    &modes,
                    &cur_hours,
                    &cur.requests,
                    &cur.connections,
                    &cur.errors,
                    &cur.bytes_sent,
                    &cur.bytes_received,
                    &cur.first_seen,
                    &cur.last_seen,
                ],
            )
            .await
            .map_err(StoreError::pg)?;
        }
        if !hours.ids.is_empty() {
            let s = &hours.sums;
            tx.execute(
                &sql.add_hours,
                &[
                    &hours.ids,
                    &hours.hours,
                    &s.requests,
                    &s.connections,
                    &s.errors,
                    &s.bytes_sent,
                    &s.bytes_received,
                    &s.first_seen,
                    &s.last_seen,
                ],
            )
            .await
            .map_err(StoreError::pg)?;
            // Rows written straight into an older hour: a new row's `calls_before` is not
            // known (NULL) and newer rows miss these calls, until the upkeep recomputes
            // the edge (migration 0009).
            tx.execute(&sql.mark_stale, &[&hours.ids, &hours.hours])
                .await
                .map_err(StoreError::pg)?;
        }
        Ok(())
    }
}

/// Key columns of some edges, for `UNNEST`: host, port, scheme, service, environment.
#[derive(Default)]
struct KeyColumns<'a> {
    hosts: Vec<&'a str>,
    ports: Vec<i32>,
    schemes: Vec<&'static str>,
    services: Vec<&'a str>,
    environments: Vec<&'a str>,
}

fn key_columns<'a>(deltas: &'a [(EdgeKey, EdgeDelta)], which: &[usize]) -> KeyColumns<'a> {
    let mut cols = KeyColumns::default();
    for &i in which {
        let k = &deltas[i].0;
        cols.hosts.push(k.0.as_str());
        cols.ports.push(k.1);
        cols.schemes.push(k.2);
        cols.services.push(k.3.as_str());
        cols.environments.push(k.4.as_str());
    }
    cols
}

/// Lock the existing edges among `which` (in id order); fills their id and current hour.
async fn lock_edges(
    tx: &Transaction<'_>,
    sql: &Statements,
    deltas: &[(EdgeKey, EdgeDelta)],
    which: &[usize],
    found: &mut [Option<(i64, Option<i64>)>],
) -> Result<(), StoreError> {
    let KeyColumns {
        hosts: h,
        ports: p,
        schemes: s,
        services: sv,
        environments: env,
    } = key_columns(deltas, which);
    let pos: Vec<i32> = which
        .iter()
        .map(|&i| i32::try_from(i).unwrap_or(i32::MAX))
        .collect();
    for row in tx
        .query(&sql.lock_edges, &[&h, &p, &s, &sv, &env, &pos])
        .await
        .map_err(StoreError::pg)?
    {
        let at: i32 = row.try_get(0).map_err(StoreError::pg)?;
        let id: i64 = row.try_get(1).map_err(StoreError::pg)?;
        let cur: Option<i64> = row.try_get(2).map_err(StoreError::pg)?;
        if let Some(slot) = usize::try_from(at).ok().and_then(|a| found.get_mut(a)) {
            *slot = Some((id, cur));
        }
    }
    Ok(())
}

/// Everything a statement about some edges needs, as columns for `UNNEST` (parameters
/// `$1`–`$21`): the key, the totals, the newest hour and its bucket, the position.
struct EdgeColumns<'a> {
    key: KeyColumns<'a>,
    totals: SumColumns,
    cur_hours: Vec<i64>,
    cur: SumColumns,
    pos: Vec<i32>,
}

impl EdgeColumns<'_> {
    fn of<'a>(deltas: &'a [(EdgeKey, EdgeDelta)], which: &[usize]) -> EdgeColumns<'a> {
        let mut c = EdgeColumns {
            key: key_columns(deltas, which),
            totals: SumColumns::default(),
            cur_hours: Vec::with_capacity(which.len()),
            cur: SumColumns::default(),
            pos: Vec::with_capacity(which.len()),
        };
        for &i in which {
            let d = &deltas[i].1;
            c.totals.push(&d.totals);
            let (newest, sums) = match d.hours.iter().next_back() {
                Some((&h, s)) => (h, *s),
                None => (hour_of(Timestamp(d.totals.last_seen)), d.totals),
            };
            c.cur_hours.push(newest);
            c.cur.push(&sums);
            c.pos.push(i32::try_from(i).unwrap_or(i32::MAX));
        }
        c
    }

    /// Run `statement` with these columns; its rows are `(position, id, current hour)`.
    async fn run(
        &self,
        tx: &Transaction<'_>,
        statement: &tokio_postgres::Statement,
    ) -> Result<Vec<(usize, i64, Option<i64>)>, StoreError> {
        let (k, t, c) = (&self.key, &self.totals, &self.cur);
        let rows = tx
            .query(
                statement,
                &[
                    &k.hosts,
                    &k.ports,
                    &k.schemes,
                    &k.services,
                    &k.environments,
                    &t.requests,
                    &t.connections,
                    &t.errors,
                    &t.bytes_sent,
                    &t.bytes_received,
                    &t.first_seen,
                    &t.last_seen,
                    &self.cur_hours,
                    &c.requests,
                    &c.connections,
                    &c.errors,
                    &c.bytes_sent,
                    &c.bytes_received,
                    &c.first_seen,
                    &c.last_seen,
                    &self.pos,
                ],
            )
            .await
            .map_err(StoreError::pg)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let at: i32 = row.try_get(0).map_err(StoreError::pg)?;
            let id: i64 = row.try_get(1).map_err(StoreError::pg)?;
            let cur: Option<i64> = row.try_get(2).map_err(StoreError::pg)?;
            if let Ok(at) = usize::try_from(at) {
                out.push((at, id, cur));
            }
        }
        Ok(out)
    }
}

/// The hourly buckets of an edge's delta that do not go to its current bucket: all of
/// them when the edge's current hour is newer (a late batch), else all but the newest.
fn other_hours(d: &EdgeDelta, id: i64, cur_hour: Option<i64>, hours: &mut HourRows) {
    let newest = d.hours.keys().next_back().copied();
    let keep_newest = cur_hour.is_none_or(|c| Some(c) <= newest);
    for (&h, s) in &d.hours {
        if !(keep_newest && Some(h) == newest) {
            hours.ids.push(id);
            hours.hours.push(h);
            hours.sums.push(s);
        }
    }
}

/// The common case, one statement: edges whose current hour is the newest hour of
/// their delta or later are updated in place (totals, and the current bucket when it is
/// the same hour). Marks them done; their other hours join `hours`.
async fn update_in_place(
    tx: &Transaction<'_>,
    sql: &Statements,
    deltas: &[(EdgeKey, EdgeDelta)],
    done: &mut [bool],
    hours: &mut HourRows,
) -> Result<(), StoreError> {
    let all: Vec<usize> = (0..deltas.len()).collect();
    for (i, id, cur) in EdgeColumns::of(deltas, &all)
        .run(tx, &sql.update_in_place)
        .await?
    {
        if let Some((_, d)) = deltas.get(i) {
            done[i] = true;
            other_hours(d, id, cur, hours);
        }
    }
    Ok(())
}

/// Insert new edges (their newest hour as the current bucket); their older hours join
/// `hours`. Edges another transaction inserted first are left for [`lock_edges`].
async fn insert_edges(
    tx: &Transaction<'_>,
    sql: &Statements,
    deltas: &[(EdgeKey, EdgeDelta)],
    which: &[usize],
    inserted: &mut [bool],
    hours: &mut HourRows,
) -> Result<(), StoreError> {
    for (i, id, _) in EdgeColumns::of(deltas, which)
        .run(tx, &sql.insert_edges)
        .await?
    {
        if let Some((_, d)) = deltas.get(i) {
            inserted[i] = true;
            other_hours(d, id, None, hours);
        }
    }
    Ok(())
}

/// The write statements, prepared once per connection.
pub(super) struct Statements {
    new_instances: tokio_postgres::Statement,
    lock_instances: tokio_postgres::Statement,
    insert_seen: tokio_postgres::Statement,
    update_instances: tokio_postgres::Statement,
    touching_coverage: tokio_postgres::Statement,
    delete_coverage: tokio_postgres::Statement,
    insert_coverage: tokio_postgres::Statement,
    update_in_place: tokio_postgres::Statement,
    lock_edges: tokio_postgres::Statement,
    insert_edges: tokio_postgres::Statement,
    move_current: tokio_postgres::Statement,
    update_edges: tokio_postgres::Statement,
    add_hours: tokio_postgres::Statement,
    mark_stale: tokio_postgres::Statement,
    add_lookup: tokio_postgres::Statement,
    add_bypass: tokio_postgres::Statement,
}

/// `ON CONFLICT` clause of a bucket upsert: add the new counts to the bucket's.
macro_rules! add_to_bucket {
    ($table:literal, $key:literal) => {
        concat!(
            " ON CONFLICT (edge_id, ",
            $key,
            ") DO UPDATE SET
               requests = sat_add(",
            $table,
            ".requests, excluded.requests),
               connections = sat_add(",
            $table,
            ".connections, excluded.connections),
               errors = sat_add(",
            $table,
            ".errors, excluded.errors),
               bytes_sent = sat_add(",
            $table,
            ".bytes_sent, excluded.bytes_sent),
               bytes_received = sat_add(",
            $table,
            ".bytes_received, excluded.bytes_received),
               first_seen = LEAST(",
            $table,
            ".first_seen, excluded.first_seen),
               last_seen = GREATEST(",
            $table,
            ".last_seen, excluded.last_seen)"
        )
    };
}
pub(super) use add_to_bucket;

/// `cur_*` column update by mode (0 keep, 1 add, 2 replace).
macro_rules! current {
    ($col:literal, $add:literal) => {
        concat!(
            "cur_",
            $col,
            " = CASE d.mode WHEN 0 THEN e.cur_",
            $col,
            " WHEN 1 THEN ",
            $add,
            "(e.cur_",
            $col,
            ", d.c_",
            $col,
            ") ELSE d.c_",
            $col,
            " END"
        )
    };
}

/// `cur_*` column update of the in-place path: added to when the delta's newest hour is
/// the current one, kept otherwise (a late batch).
macro_rules! same_hour {
    ($col:literal, $add:literal) => {
        concat!(
            "cur_",
            $col,
            " = CASE WHEN e.cur_hour = d.h THEN ",
            $add,
            "(e.cur_",
            $col,
            ", d.c_",
            $col,
            ") ELSE e.cur_",
            $col,
            " END"
        )
    };
}

impl Statements {
    pub(super) async fn prepare(conn: &mut Conn) -> Result<Statements, StoreError> {
        Ok(Statements {
            new_instances: conn
                .prepared(
                    r#"INSERT INTO instances (instance, service, environment, first_report,
                         last_report, observed_until, last_seq, started_at, flush_interval_ms,
                         reports)
                     SELECT i, s, e, r, r, o, q, t, f, 0
                     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                                 $6::int8[], $7::int8[], $8::int8[]) AS n(i, s, e, r, o, q, t, f)
                     ORDER BY i COLLATE "C"
                     ON CONFLICT (instance) DO NOTHING"#,
                )
                .await?,
            lock_instances: conn
                .prepared(
                    "SELECT instance, service, environment, seq_floor, last_report,
                            observed_until, last_seq, reports
                     FROM instances WHERE instance = ANY($1::text[])
                     ORDER BY instance FOR UPDATE",
                )
                .await?,
            insert_seen: conn
                .prepared(
                    "INSERT INTO seen (instance, seq, received)
                     SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[])
                     ON CONFLICT DO NOTHING
                     RETURNING instance, seq",
                )
                .await?,
            update_instances: conn
                .prepared(
                    "UPDATE instances i SET last_report = u.r, observed_until = u.o,
                         last_seq = u.q, started_at = u.t, flush_interval_ms = u.f, reports = u.n
                     FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                                 $6::int8[], $7::int8[]) AS u(i, r, o, q, t, f, n)
                     WHERE i.instance = u.i",
                )
                .await?,
            touching_coverage: conn
                .prepared(
                    r#"SELECT c.instance, c.start, c."end"
                       FROM UNNEST($1::text[], $2::int8[], $3::int8[]) AS w(i, lo, hi)
                       JOIN coverage c ON c.instance = w.i AND c."end" >= w.lo AND c.start <= w.hi"#,
                )
                .await?,
            delete_coverage: conn
                .prepared(
                    "DELETE FROM coverage c USING UNNEST($1::text[], $2::int8[]) AS d(i, s)
                     WHERE c.instance = d.i AND c.start = d.s",
                )
                .await?,
            insert_coverage: conn
                .prepared(
                    r#"INSERT INTO coverage (instance, start, "end")
                       SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[])"#,
                )
                .await?,
            update_in_place: conn
                .prepared(concat!(
                    "UPDATE edges e SET
                         requests = sat_add(e.requests, d.rq),
                         connections = sat_add(e.connections, d.cn),
                         errors = sat_add(e.errors, d.er),
                         bytes_sent = sat_add(e.bytes_sent, d.bs),
                         bytes_received = sat_add(e.bytes_received, d.br),
                         first_seen = LEAST(e.first_seen, d.fs),
                         last_seen = GREATEST(e.last_seen, d.ls), ",
                    same_hour!("requests", "sat_add"),
                    ", ",
                    same_hour!("connections", "sat_add"),
                    ", ",
                    same_hour!("errors", "sat_add"),
                    ", ",
                    same_hour!("bytes_sent", "sat_add"),
                    ", ",
                    same_hour!("bytes_received", "sat_add"),
                    ", ",
                    same_hour!("first_seen", "LEAST"),
                    ", ",
                    same_hour!("last_seen", "GREATEST"),
                    "
                     FROM (SELECT * FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[],
                               $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[],
                               $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[],
                               $15::int8[], $16::int8[], $17::int8[], $18::int8[], $19::int8[],
                               $20::int8[], $21::int4[])
                           AS n(host, port, scheme, service, environment, rq, cn, er, bs, br,
                                fs, ls, h, c_requests, c_connections, c_errors, c_bytes_sent,
                                c_bytes_received, c_first_seen, c_last_seen, pos)
                           ORDER BY pos) d
                     WHERE e.host = d.host AND e.port = d.port AND e.scheme = d.scheme
                       AND e.service = d.service AND e.environment = d.environment
                       AND e.cur_hour >= d.h
                     RETURNING d.pos, e.id, e.cur_hour"
                ))
                .await?,
            lock_edges: conn
                .prepared(
                    "SELECT k.pos, e.id, e.cur_hour
                     FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[],
                                 $6::int4[]) AS k(host, port, scheme, service, environment, pos)
                     JOIN edges e ON e.host = k.host AND e.port = k.port AND e.scheme = k.scheme
                          AND e.service = k.service AND e.environment = k.environment
                     ORDER BY e.id
                     FOR UPDATE OF e",
                )
                .await?,
            insert_edges: conn
                .prepared(
                    "WITH n AS (
                         SELECT * FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[],
                             $5::text[], $6::int8[], $7::int8[], $8::int8[], $9::int8[],
                             $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[],
                             $15::int8[], $16::int8[], $17::int8[], $18::int8[], $19::int8[],
                             $20::int8[], $21::int4[])
                         AS n(host, port, scheme, service, environment, rq, cn, er, bs, br, fs,
                              ls, h, crq, ccn, cer, cbs, cbr, cfs, cls, pos)
                     ), ins AS (
                         INSERT INTO edges (host, port, scheme, service, environment, requests,
                             connections, errors, bytes_sent, bytes_received, first_seen,
                             last_seen, cur_hour, cur_requests, cur_connections, cur_errors,
                             cur_bytes_sent, cur_bytes_received, cur_first_seen, cur_last_seen)
                         SELECT host, port, scheme, service, environment, rq, cn, er, bs, br, fs,
                             ls, h, crq, ccn, cer, cbs, cbr, cfs, cls
                         FROM n ORDER BY pos
                         ON CONFLICT (host, port, scheme, service, environment) DO NOTHING
                         RETURNING id, host, port, scheme, service, environment
                     )
                     SELECT n.pos, ins.id, NULL::int8 FROM ins JOIN n USING (host, port, scheme,
                         service, environment)",
                )
                .await?,
            move_current: conn
                .prepared(concat!(
                    "INSERT INTO edge_hours (edge_id, hour, requests, connections, errors,
                         bytes_sent, bytes_received, first_seen, last_seen, calls_before)
                     SELECT id, cur_hour, cur_requests, cur_connections, cur_errors,
                         cur_bytes_sent, cur_bytes_received, cur_first_seen, cur_last_seen,
                         sat_add(GREATEST(0, requests - cur_requests),
                                 GREATEST(0, connections - cur_connections))
                     FROM edges WHERE id = ANY($1::int8[]) AND cur_hour IS NOT NULL",
                    add_to_bucket!("edge_hours", "hour")
                ))
                .await?,
            update_edges: conn
                .prepared(concat!(
                    "UPDATE edges e SET
                         requests = sat_add(e.requests, d.rq),
                         connections = sat_add(e.connections, d.cn),
                         errors = sat_add(e.errors, d.er),
                         bytes_sent = sat_add(e.bytes_sent, d.bs),
                         bytes_received = sat_add(e.bytes_received, d.br),
                         first_seen = LEAST(e.first_seen, d.fs),
                         last_seen = GREATEST(e.last_seen, d.ls),
                         cur_hour = CASE WHEN d.mode = 2 THEN d.h ELSE e.cur_hour END, ",
                    current!("requests", "sat_add"),
                    ", ",
                    current!("connections", "sat_add"),
                    ", ",
                    current!("errors", "sat_add"),
                    ", ",
                    current!("bytes_sent", "sat_add"),
                    ", ",
                    current!("bytes_received", "sat_add"),
                    ", ",
                    current!("first_seen", "LEAST"),
                    ", ",
                    current!("last_seen", "GREATEST"),
                    "
                     FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                                 $6::int8[], $7::int8[], $8::int8[], $9::int4[], $10::int8[],
                                 $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[],
                                 $16::int8[], $17::int8[])
                          AS d(id, rq, cn, er, bs, br, fs, ls, mode, h, c_requests,
                               c_connections, c_errors, c_bytes_sent, c_bytes_received,
                               c_first_seen, c_last_seen)
                     WHERE e.id = d.id"
                ))
                .await?,
            add_lookup: conn
                .prepared(
                    "INSERT INTO lookups (name, service, environment, lookups, first_seen,
                         last_seen, addresses)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (name, service, environment) DO UPDATE SET
                         lookups = sat_add(lookups.lookups, excluded.lookups),
                         first_seen = LEAST(lookups.first_seen, excluded.first_seen),
                         last_seen = GREATEST(lookups.last_seen, excluded.last_seen),
                         addresses = CASE WHEN excluded.last_seen >= lookups.last_seen
                             AND excluded.addresses <> '' THEN excluded.addresses
                             ELSE lookups.addresses END",
                )
                .await?,
            add_bypass: conn
                .prepared(
                    "INSERT INTO bypass (address, port, service, environment, name,
                         connections, first_seen, last_seen)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (address, port, service, environment) DO UPDATE SET
                         connections = sat_add(bypass.connections, excluded.connections),
                         first_seen = LEAST(bypass.first_seen, excluded.first_seen),
                         last_seen = GREATEST(bypass.last_seen, excluded.last_seen),
                         name = COALESCE(excluded.name, bypass.name)",
                )
                .await?,
            mark_stale: conn
                .prepared(
                    "UPDATE edges e SET stale_after = LEAST(COALESCE(e.stale_after, u.h), u.h)
                     FROM (SELECT id, MIN(h) AS h
                           FROM UNNEST($1::int8[], $2::int8[]) AS x(id, h) GROUP BY id) u
                     WHERE e.id = u.id",
                )
                .await?,
            add_hours: conn
                .prepared(concat!(
                    "INSERT INTO edge_hours (edge_id, hour, requests, connections, errors,
                         bytes_sent, bytes_received, first_seen, last_seen)
                     SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[],
                         $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[])",
                    add_to_bucket!("edge_hours", "hour")
                ))
                .await?,
        })
    }
}
