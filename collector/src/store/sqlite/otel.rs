//! The SQLite side of OTLP ingest: the `otel_series` rows (migration 0008), read and
//! advanced by compare-and-set. Each call opens its own short-lived connection on a
//! blocking thread (opening a SQLite connection costs microseconds, and an export is
//! a few calls), so the writer thread and its group commit stay as they are; writes wait
//! for the writer's lock (`busy_timeout`) like any second writer in WAL mode.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::otel::{updated_now, OtelAdvance, OtelField, OtelSeries};
use crate::store::StoreError;

const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

async fn on_thread<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut conn = open(&path)?;
        f(&mut conn)
    })
    .await
    .map_err(|e| StoreError::Pool(format!("an OTLP series thread failed: {e}")))?
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OtelSeries> {
    let field: String = r.get(5)?;
    Ok(OtelSeries {
        key: r.get(0)?,
        service: r.get(1)?,
        environment: r.get(2)?,
        host: r.get(3)?,
        port: u16::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
        field: OtelField::parse(&field).unwrap_or(OtelField::Requests),
        prev_at: r.get(6)?,
        at: r.get(7)?,
        value: u64::try_from(r.get::<_, i64>(8)?).unwrap_or(0),
        delta: u64::try_from(r.get::<_, i64>(9)?).unwrap_or(0),
        stored: r.get(10)?,
    })
}

pub(super) async fn series(path: &Path, keys: &[String]) -> Result<Vec<OtelSeries>, StoreError> {
    let keys = keys.to_vec();
    on_thread(path, move |conn| {
        let mut stmt = conn.prepare_cached(
            "SELECT key, service, environment, host, port, field, prev_at, at, value, delta, stored
             FROM otel_series WHERE key = ?1",
        )?;
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            if let Some(s) = stmt.query_row([k], row).optional()? {
                out.push(s);
            }
        }
        Ok(out)
    })
    .await
}

pub(super) async fn advance(path: &Path, steps: &[OtelAdvance]) -> Result<Vec<bool>, StoreError> {
    let steps = steps.to_vec();
    on_thread(path, move |conn| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = updated_now();
        let mut out = Vec::with_capacity(steps.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO otel_series (key, service, environment, host, port, field, prev_at, at, value, delta, stored, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (key) DO NOTHING",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE otel_series SET prev_at = ?2, at = ?3, value = ?4, delta = ?5, stored = ?6, updated = ?7
                 WHERE key = ?1 AND at = ?8",
            )?;
            for s in &steps {
                let n = &s.next;
                let changed = match s.expect_at {
                    None => insert.execute(params![
                        n.key,
                        n.service,
                        n.environment,
                        n.host,
                        i64::from(n.port),
                        n.field.as_str(),
                        n.prev_at,
                        n.at,
                        to_i64(n.value),
                        to_i64(n.delta),
                        n.stored,
                        now
                    ])?,
                    Some(at) => update.execute(params![
                        n.key,
                        n.prev_at,
                        n.at,
                        to_i64(n.value),
                        to_i64(n.delta),
                        n.stored,
                        now,
                        at
                    ])?,
                };
                out.push(changed == 1);
            }
        }
        tx.commit()?;
        Ok(out)
    })
    .await
}

pub(super) async fn stored(path: &Path, points: &[(String, i64)]) -> Result<(), StoreError> {
    let points = points.to_vec();
    on_thread(path, move |conn| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt =
                tx.prepare_cached("UPDATE otel_series SET stored = 1 WHERE key = ?1 AND at = ?2")?;
            for (k, at) in &points {
                stmt.execute(params![k, at])?;
            }
        }
        tx.commit()?;
        Ok(())
    })
    .await
}

pub(super) async fn prune(path: &Path, cutoff: i64) -> Result<u64, StoreError> {
    on_thread(path, move |conn| {
        let n = conn.execute("DELETE FROM otel_series WHERE updated < ?1", [cutoff])?;
        Ok(n as u64)
    })
    .await
}

pub(super) async fn lease(
    path: &Path,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<bool, StoreError> {
    let holder = holder.to_string();
    on_thread(path, move |conn| {
        let n = conn.execute(
            "INSERT INTO otel_export_lease (name, holder, until) VALUES ('export', ?1, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = ?1, until = ?3
             WHERE otel_export_lease.holder = ?1 OR otel_export_lease.until < ?2",
            params![holder, now, until],
        )?;
        Ok(n == 1)
    })
    .await
}
