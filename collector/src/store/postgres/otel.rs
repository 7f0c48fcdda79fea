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
    // Set-based: one INSERT for the new series, one UPDATE for the others (arrays through
    // UNNEST), so an export of thousands of series is two round trips.
    let distinct: std::collections::HashSet<&str> =
        steps.iter().map(|s| s.next.key.as_str()).collect();
    if distinct.len() < steps.len() {
        // Steps on one series apply in order: one statement each.
        return advance_in_order(pool, steps).await;
    }
    let now = updated_now();
    let (mut new, mut old): (Vec<&OtelAdvance>, Vec<&OtelAdvance>) = (Vec::new(), Vec::new());
    for s in steps {
        if s.expect_at.is_none() {
            new.push(s);
        } else {
            old.push(s);
        }
    }
    let col = |v: &[&OtelAdvance], f: &dyn Fn(&OtelSeries) -> i64| -> Vec<i64> {
        v.iter().map(|s| f(&s.next)).collect()
    };
    let keys =
        |v: &[&OtelAdvance]| -> Vec<String> { v.iter().map(|s| s.next.key.clone()).collect() };
    let mut conn = pool.get().await?;
    let tx = conn.client.transaction().await.map_err(StoreError::pg)?;
    let mut applied = std::collections::HashSet::new();
    if !new.is_empty() {
        let text = |f: &dyn Fn(&OtelSeries) -> String| -> Vec<String> {
            new.iter().map(|s| f(&s.next)).collect()
        };
        let ports: Vec<i32> = new.iter().map(|s| i32::from(s.next.port)).collect();
        let stored: Vec<bool> = new.iter().map(|s| s.next.stored).collect();
        let rows = tx
            .query(
                "INSERT INTO otel_series (key, service, environment, host, port, field, prev_at, at, value, delta, stored, updated)
                 SELECT k, sv, en, h, p, f, pa, a, v, d, st, $12
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[],
                             $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bool[])
                      AS n(k, sv, en, h, p, f, pa, a, v, d, st)
                 ON CONFLICT (key) DO NOTHING RETURNING key",
                &[
                    &keys(&new),
                    &text(&|n| n.service.clone()),
                    &text(&|n| n.environment.clone()),
                    &text(&|n| n.host.clone()),
                    &ports,
                    &text(&|n| n.field.as_str().to_string()),
                    &col(&new, &|n| n.prev_at),
                    &col(&new, &|n| n.at),
                    &col(&new, &|n| to_i64(n.value)),
                    &col(&new, &|n| to_i64(n.delta)),
                    &stored,
                    &now,
                ],
            )
            .await
            .map_err(StoreError::pg)?;
        applied.extend(rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()));
    }
    if !old.is_empty() {
        let stored: Vec<bool> = old.iter().map(|s| s.next.stored).collect();
        let expect: Vec<i64> = old
            .iter()
            .map(|s| s.expect_at.unwrap_or(i64::MIN))
            .collect();
        let rows = tx
            .query(
                "UPDATE otel_series s SET prev_at = n.pa, at = n.a, value = n.v, delta = n.d, stored = n.st, updated = $8
                 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bool[], $7::bigint[])
                      AS n(k, pa, a, v, d, st, ex)
                 WHERE s.key = n.k AND s.at = n.ex RETURNING s.key",
                &[
                    &keys(&old),
                    &col(&old, &|n| n.prev_at),
                    &col(&old, &|n| n.at),
                    &col(&old, &|n| to_i64(n.value)),
                    &col(&old, &|n| to_i64(n.delta)),
                    &stored,
                    &expect,
                    &now,
                ],
            )
            .await
            .map_err(StoreError::pg)?;
        applied.extend(rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()));
    }
    tx.commit().await.map_err(StoreError::pg)?;
    conn.release();
    Ok(steps
        .iter()
        .map(|s| applied.contains(&s.next.key))
        .collect())
}

async fn advance_in_order(pool: &Pool, steps: &[OtelAdvance]) -> Result<Vec<bool>, StoreError> {
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
