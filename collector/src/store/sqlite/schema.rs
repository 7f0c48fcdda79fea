//! The SQLite file: opening connections with the right settings, our SQL functions, and
//! the schema migrations (embedded, applied in order, tracked in `PRAGMA user_version`).

use std::path::Path;
use std::time::Duration;

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::{Connection, OpenFlags};
use whouses_wire::MAX_COUNT;

use crate::store::StoreError;

/// The migrations, in order; `user_version` is the number applied.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "initial",
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        "daily buckets",
        include_str!("../../../migrations/sqlite/0002_daily_buckets.sql"),
    ),
    (
        "current bucket",
        include_str!("../../../migrations/sqlite/0003_current_bucket.sql"),
    ),
    (
        "coverage by start",
        include_str!("../../../migrations/sqlite/0004_coverage_by_start.sql"),
    ),
    (
        "observations",
        include_str!("../../../migrations/sqlite/0005_observations.sql"),
    ),
    (
        "inbound",
        include_str!("../../../migrations/sqlite/0006_inbound.sql"),
    ),
    (
        "decommission",
        include_str!("../../../migrations/sqlite/0007_decommission.sql"),
    ),
    (
        "otel series",
        include_str!("../../../migrations/sqlite/0008_otel_series.sql"),
    ),
    (
        "calls before",
        include_str!("../../../migrations/sqlite/0009_calls_before.sql"),
    ),
    (
        "day marks",
        include_str!("../../../migrations/sqlite/0010_day_marks.sql"),
    ),
];

/// How long a connection waits for a lock held by another before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest part of the database file read through a memory mapping.
const MMAP_BYTES: i64 = 1 << 30;

/// Open the writing connection, creating the file, and bring the schema up to date.
pub(super) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers never wait for the writer. FULL: an acknowledged batch survives power
    // loss (the commit's fsync covers the log).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", false)?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    register_functions(&conn)?;
    migrate(&conn)?;
    Ok(conn)
}

/// Open a read-only connection for queries.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    conn.set_prepared_statement_cache_capacity(32);
    register_functions(&conn)?;
    Ok(conn)
}

/// Apply the migrations not yet applied, each in its own transaction.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let mut version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == 0 {
        version = adopt_sqlx_history(conn)?;
    }
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Migrate(format!(
            "the database is at schema version {version}, newer than this collector knows ({known}); run a newer whouses-collector"
        )));
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let n = i as i64 + 1;
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)
            .map_err(|e| StoreError::Migrate(format!("migration {n} ({name}): {e}")))?;
        tx.pragma_update(None, "user_version", n)?;
        tx.commit()?;
        tracing::info!(version = n, name, "Applied a database migration.");
    }
    Ok(())
}

/// Databases made by earlier releases recorded their migrations in sqlx's table; adopt
/// that history instead of re-running it.
fn adopt_sqlx_history(conn: &Connection) -> Result<i64, StoreError> {
    let has_table: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Ok(0);
    }
    let v: Option<i64> = conn.query_row(
        "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
        [],
        |r| r.get(0),
    )?;
    let v = v.unwrap_or(0);
    conn.pragma_update(None, "user_version", v)?;
    Ok(v)
}

/// `sat_sum(x)`: `SUM` that stops at the largest count instead of failing with "integer
/// overflow" (forged batches may claim huge counts; a query must still answer).
struct SatSum;

impl Aggregate<i64, i64> for SatSum {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<i64> {
        Ok(0)
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut i64) -> rusqlite::Result<()> {
        let v: Option<i64> = ctx.get(0)?;
        *acc = acc
            .saturating_add(v.unwrap_or(0).max(0))
            .min(MAX_COUNT as i64);
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, acc: Option<i64>) -> rusqlite::Result<i64> {
        Ok(acc.unwrap_or(0))
    }
}

fn register_functions(conn: &Connection) -> Result<(), StoreError> {
    conn.create_aggregate_function(
        "sat_sum",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        SatSum,
    )?;
    Ok(())
}

/// `a + b` for counters in SQL, stopping at the largest count: `b` is a non-negative
/// count (validated), so `MAX - b` cannot overflow.
macro_rules! sat_add {
    ($a:expr, $b:expr) => {
        concat!(
            "CASE WHEN ",
            $a,
            " > 9223372036854775807 - ",
            $b,
            " THEN 9223372036854775807 ELSE ",
            $a,
            " + ",
            $b,
            " END"
        )
    };
}
pub(super) use sat_add;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_adds_saturate() {
        let conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER); INSERT INTO t VALUES (9223372036854775807), (9223372036854775807), (5);")
            .unwrap();
        let s: i64 = conn
            .query_row("SELECT sat_sum(v) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(s, i64::MAX);
        let a: i64 = conn
            .query_row(
                concat!("SELECT ", sat_add!("?1", "?2")),
                [i64::MAX - 1, 5],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(a, i64::MAX);
        let b: i64 = conn
            .query_row(concat!("SELECT ", sat_add!("?1", "?2")), [40, 2], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(b, 42);
    }

    #[test]
    fn migrations_apply_once_and_refuse_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.db");
        drop(open_writer(&p).unwrap());
        let conn = open_writer(&p).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = open_writer(&p).err().unwrap().to_string();
        assert!(e.contains("newer than this collector"), "{e}");
    }
}
