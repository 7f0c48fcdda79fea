//! The PostgreSQL side of OTLP ingest: the `otel_series` rows (migration 0008), read and
//! advanced by compare-and-set in one transaction, so two replicas receiving the same
//! export (or two exports of one series) at once cannot both count a point: the loser's
//! `UPDATE … WHERE at = expected` changes nothing and it reads the series again.

use tokio_postgres::Row;

use super::pool::Pool;
use crate::store::otel::{updated_now, OtelAdvance, OtelField, OtelSeries};
use crate::store::StoreError;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn row(r: &Row) -> Result<OtelSeries, StoreError> {
    let get_i =
        |i: usize| -> Result<i64, StoreError> { r.try_get::<_, i64>(i).map_err(StoreError::pg) };
    let field: String = r.try_get(5).map_err(StoreError::pg)?;
    Ok(OtelSeries {
        key: r.try_get(0).map_err(StoreError::pg)?,
        service: r.try_get(1).map_err(StoreError::pg)?,
        environment: r.try_get(2).map_err(StoreError::pg)?,
        host: r.try_get(3).map_err(StoreError::pg)?,
        port: u16::try_from(r.try_get::<_, i32>(4).map_err(StoreError::pg)?).unwrap_or(0),
        field: OtelField::parse(&field).unwrap_or(OtelField::Requests),
        prev_at: get_i(6)?,
        at: get_i(7)?,
        value: u64::try_from(get_i(8)?).unwrap_or(0),
        delta: u64::try_from(get_i(9)?).unwrap_or(0),
        stored: r.try_get(10).map_err(StoreError::pg)?,
    })
}

pub(super) async fn series(pool: &Pool, keys: &[String]) -> Result<Vec<OtelSeries>, StoreError> {
    let conn = pool.get().await?;
    let rows = conn
        .client
        .query(
            "SELECT key, service, environment, host, port, field, prev_at, at, value, delta, stored
             FROM otel_series WHERE key = ANY($1)",
            &[&keys],
        )
        .await
        .map_err(StoreError::pg)?;
    conn.release();
    rows.iter().map(row).collect()
}

pub(super) async fn advance(pool: &Pool, steps: &[OtelAdvance]) -> Result<Vec<bool>, StoreError> {
    let mut conn = pool.get().await?;
    let now = updated_now();
    let tx = conn.client.transaction().await.map_err(StoreError::pg)?;
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        let n = &s.next;
        let port = i32::from(n.port);
        let (value, delta) = (to_i64(n.value), to_i64(n.delta));
        let changed = match s.expect_at {
            None => tx
                .execute(
                    "INSERT INTO otel_series (key, service, environment, host, port, field, prev_at, at, value, delta, stored, updated)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (key) DO NOTHING",
                    &[&n.key, &n.service, &n.environment, &n.host, &port, &n.field.as_str(),
                      &n.prev_at, &n.at, &value, &delta, &n.stored, &now],
                )
                .await
                .map_err(StoreError::pg)?,
            Some(at) => tx
                .execute(
                    "UPDATE otel_series SET prev_at = $2, at = $3, value = $4, delta = $5, stored = $6, updated = $7
                     WHERE key = $1 AND at = $8",
                    &[&n.key, &n.prev_at, &n.at, &value, &delta, &n.stored, &now, &at],
                )
                .await
                .map_err(StoreError::pg)?,
        };
        out.push(changed == 1);
    }
    tx.commit().await.map_err(StoreError::pg)?;
    conn.release();
    Ok(out)
}

pub(super) async fn stored(pool: &Pool, points: &[(String, i64)]) -> Result<(), StoreError> {
    let conn = pool.get().await?;
    let keys: Vec<&str> = points.iter().map(|(k, _)| k.as_str()).collect();
    let ats: Vec<i64> = points.iter().map(|(_, a)| *a).collect();
    conn.client
        .execute(
            "UPDATE otel_series s SET stored = TRUE
             FROM UNNEST($1::text[], $2::bigint[]) AS p(key, at)
             WHERE s.key = p.key AND s.at = p.at",
            &[&keys, &ats],
        )
        .await
        .map_err(StoreError::pg)?;
    conn.release();
    Ok(())
}

pub(super) async fn prune(pool: &Pool, cutoff: i64) -> Result<u64, StoreError> {
    let conn = pool.get().await?;
    let n = conn
        .client
        .execute("DELETE FROM otel_series WHERE updated < $1", &[&cutoff])
        .await
        .map_err(StoreError::pg)?;
    conn.release();
    Ok(n)
}

pub(super) async fn lease(
    pool: &Pool,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<bool, StoreError> {
    let conn = pool.get().await?;
    let n = conn
        .client
        .execute(
            "INSERT INTO otel_export_lease (name, holder, until) VALUES ('export', $1, $3)
             ON CONFLICT (name) DO UPDATE SET holder = $1, until = $3
             WHERE otel_export_lease.holder = $1 OR otel_export_lease.until < $2",
            &[&holder, &now, &until],
        )
        .await
        .map_err(StoreError::pg)?;
    conn.release();
    Ok(n == 1)
}
