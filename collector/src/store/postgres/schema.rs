//! The PostgreSQL schema migrations: embedded, applied in order, each in its own
//! transaction, recorded in `whouses_migrations`. Replicas starting at once take turns
//! on a session advisory lock, so each migration is applied exactly once.

use tokio_postgres::Client;

use crate::store::StoreError;

/// The migrations, in order, each with its version: the number of its file, shared with
/// SQLite's list (so `0006` is "inbound" on both backends). Every known migration that a
/// database has not recorded is applied, in order — whatever order parallel branches
/// added their numbers in.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "observations",
        include_str!("../../../migrations/postgres/0002_observations.sql"),
    ),
    (
        6,
        "inbound",
        include_str!("../../../migrations/postgres/0006_inbound.sql"),
    ),
    (
        7,
        "decommission",
        include_str!("../../../migrations/postgres/0007_decommission.sql"),
    ),
    (
        8,
        "otel series",
        include_str!("../../../migrations/postgres/0008_otel_series.sql"),
    ),
    (
        9,
        "calls before",
        include_str!("../../../migrations/postgres/0009_calls_before.sql"),
    ),
    (
        10,
        "day marks",
        include_str!("../../../migrations/postgres/0010_day_marks.sql"),
    ),
];

/// The advisory lock key migrations are applied under (any constant of our own: "whouses"
/// in ASCII).
const MIGRATION_LOCK: i64 = 0x77_686f_7573_6573;

/// Bring the schema up to date.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    // Session-level: released by the unlock below, or by the server if we die holding it.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| StoreError::Migrate(format!("waiting for the migration lock: {e}")))?;
    let result = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlocked.map_err(|e| StoreError::Migrate(format!("releasing the migration lock: {e}")))?;
    Ok(())
}

async fn apply(client: &mut Client) -> Result<(), StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS whouses_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(|e| StoreError::Migrate(format!("creating whouses_migrations: {e}")))?;
    let applied: Vec<i32> = client
        .query("SELECT version FROM whouses_migrations", &[])
        .await
        .map_err(|e| StoreError::Migrate(format!("reading whouses_migrations: {e}")))?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect();
    if let Some(unknown) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(n, _, _)| n == *v))
    {
        let known = MIGRATIONS.iter().map(|(n, _, _)| *n).max().unwrap_or(0);
        return Err(StoreError::Migrate(format!(
            "the database has schema version {unknown}, which this collector does not know (it knows up to {known}); run a newer whouses-collector"
        )));
    }
    for &(n, name, sql) in MIGRATIONS.iter().filter(|(n, _, _)| !applied.contains(n)) {
        let tx = client
            .transaction()
            .await
            .map_err(|e| StoreError::Migrate(format!("migration {n} ({name}): {e}")))?;
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Migrate(format!("migration {n} ({name}): {}", db_detail(&e)))
        })?;
        tx.execute(
            "INSERT INTO whouses_migrations (version, name) VALUES ($1, $2)",
            &[&n, &name],
        )
        .await
        .map_err(|e| StoreError::Migrate(format!("recording migration {n}: {e}")))?;
        tx.commit()
            .await
            .map_err(|e| StoreError::Migrate(format!("migration {n} ({name}): {e}")))?;
        tracing::info!(version = n, name, "Applied a database migration.");
    }
    Ok(())
}

/// The server's message for a database error (tokio-postgres's `Display` says only "db
/// error").
pub(super) fn db_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
