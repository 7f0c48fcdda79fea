//! The PostgreSQL schema migrations: embedded, applied in order, each in its own
//! transaction, recorded in `whouses_migrations`. Replicas starting at once take turns
//! on a session advisory lock, so each migration is applied exactly once.

use tokio_postgres::Client;

use crate::store::StoreError;

/// The migrations, in order; version = position + 1.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        "observations",
        include_str!("../../../migrations/postgres/0002_observations.sql"),
    ),
    (
        "otel series",
        include_str!("../../../migrations/postgres/0008_otel_series.sql"),
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
    let version: i32 = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM whouses_migrations",
            &[],
        )
        .await
        .map_err(|e| StoreError::Migrate(format!("reading whouses_migrations: {e}")))?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if version > known {
        return Err(StoreError::Migrate(format!(
            "the database is at schema version {version}, newer than this collector knows ({known}); run a newer whouses-collector"
        )));
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let n = i as i32 + 1;
        let tx = client
            .transaction()
            .await
            .map_err(|e| StoreError::Migrate(format!("migration {n} ({name}): {e}")))?;
        tx.batch_execute(sql).await.map_err(|e| {
            StoreError::Migrate(format!("migration {n} ({name}): {}", db_detail(&e)))
        })?;
        tx.execute(
            "INSERT INTO whouses_migrations (version, name) VALUES ($1, $2)",
            &[&n, name],
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
