//! PostgreSQL's side of the decommission workflow ([`DecomStore`]), as SQLite's
//! (`sqlite/decom.rs`): the same tables and answers. Replicas share them: the notifier's
//! lease row is locked (`FOR UPDATE`) while a replica records alerts, so a replica that
//! lost its lease cannot write behind the new holder's back.

use tokio_postgres::types::Type;
use tokio_postgres::Row;
use whouses_wire::decom::AlertKind;
use whouses_wire::Timestamp;

use super::read::{conditions, count, edge_row, Params};
use super::PostgresStore;
use crate::store::decom::{
    day_range, sort_buckets, too_many_buckets, AlertRow, AlertUpdate, Baseline, BucketRow,
    DecomStore, DeliveryOutcome, DeliveryRow, DeliveryStats, NewDelivery, Recorded, ReportedOwner,
    WatchInsert, WatchRow, NOTIFIER_LEASE,
};
use crate::store::{EdgeFilter, StoreError};

/// A count as PostgreSQL's signed integer (saturating).
fn sql_count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn kind_of(s: &str) -> Result<AlertKind, StoreError> {
    AlertKind::parse(s).ok_or_else(|| StoreError::Invalid(format!("unknown alert kind {s:?}")))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(StoreError::pg)
}

fn watch_row(row: &Row) -> Result<WatchRow, StoreError> {
    let notify: String = get(row, 4)?;
    Ok(WatchRow {
        id: get(row, 0)?,
        host: get(row, 1)?,
        to: get(row, 2)?,
        cutoff: Timestamp(get(row, 3)?),
        notify: notify.lines().map(String::from).collect(),
        note: get(row, 5)?,
        created: Timestamp(get(row, 6)?),
    })
}

#[async_trait::async_trait]
impl DecomStore for PostgresStore {
    async fn buckets(
        &self,
        f: &EdgeFilter,
        from_hour: i64,
        to_hour: i64,
        max_rows: usize,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let mut p = Params::default();
        let cond = conditions(f, &mut p);
        let (from_day, to_day) = day_range(from_hour, to_hour);
        let fh = p.add(from_hour, Type::INT8);
        let th = p.add(to_hour, Type::INT8);
        let fd = p.add(from_day, Type::INT8);
        let td = p.add(to_day, Type::INT8);
        let limit = p.add(sql_count(max_rows as u64).saturating_add(1), Type::INT8);
        let cols = "e.service, e.environment, e.host, e.port, e.scheme";
        let sql = format!(
            "SELECT * FROM (
                 SELECT {cols}, e.cur_requests, e.cur_connections, e.cur_errors,
                        e.cur_bytes_sent, e.cur_bytes_received, e.cur_first_seen,
                        e.cur_last_seen, e.cur_hour AS bucket, FALSE AS daily
                 FROM edges e WHERE e.cur_hour >= {fh} AND e.cur_hour < {th} AND {cond}
                 UNION ALL
                 SELECT {cols}, h.requests, h.connections, h.errors, h.bytes_sent,
                        h.bytes_received, h.first_seen, h.last_seen, h.hour, FALSE
                 FROM edges e JOIN edge_hours h ON h.edge_id = e.id
                 WHERE h.hour >= {fh} AND h.hour < {th} AND {cond}
                 UNION ALL
                 SELECT {cols}, d.requests, d.connections, d.errors, d.bytes_sent,
                        d.bytes_received, d.first_seen, d.last_seen, d.day, TRUE
                 FROM edges e JOIN edge_days d ON d.edge_id = e.id
                 WHERE d.day >= {fd} AND d.day < {td} AND {cond}
             ) r LIMIT {limit}"
        );
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query_typed(&sql, &p.typed())
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        if rows.len() > max_rows {
            return Err(too_many_buckets(max_rows));
        }
        let mut out = rows
            .iter()
            .map(|r| Ok(BucketRow::of(edge_row(r, 0)?, get(r, 12)?, get(r, 13)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        sort_buckets(&mut out);
        Ok(out)
    }

    async fn reported_owners(&self) -> Result<Vec<ReportedOwner>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT service, environment, owner FROM service_owners
                 ORDER BY service, environment",
                &[],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        rows.iter()
            .map(|r| {
                Ok(ReportedOwner {
                    service: get(r, 0)?,
                    environment: get(r, 1)?,
                    owner: get(r, 2)?,
                })
            })
            .collect()
    }

    async fn set_reported_owner(&self, o: ReportedOwner, now: Timestamp) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "INSERT INTO service_owners (service, environment, owner, updated)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (service, environment) DO UPDATE SET owner = EXCLUDED.owner,
                     updated = EXCLUDED.updated",
                &[&o.service, &o.environment, &o.owner, &now.0],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        Ok(())
    }

    async fn watches(&self) -> Result<Vec<WatchRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT id, host, replacement, cutoff, notify, note, created FROM watches
                 ORDER BY id",
                &[],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        rows.iter().map(watch_row).collect()
    }

    async fn add_watch(
        &self,
        w: WatchInsert,
        baselines: Vec<Baseline>,
        max_watches: usize,
    ) -> Result<WatchRow, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.client.transaction().await.map_err(StoreError::pg)?;
        // One adder at a time, so two replicas cannot both add the last watch allowed.
        tx.execute("LOCK TABLE watches IN SHARE ROW EXCLUSIVE MODE", &[])
            .await
            .map_err(StoreError::pg)?;
        let n: i64 = tx
            .query_one("SELECT COUNT(*) FROM watches", &[])
            .await
            .map_err(StoreError::pg)?
            .get(0);
        if usize::try_from(n).unwrap_or(usize::MAX) >= max_watches {
            return Err(StoreError::Invalid(format!(
                "there are {n} watches already, the most this collector keeps (--max-watches {max_watches}); remove one first"
            )));
        }
        let notify = w.notify.join("\n");
        let id: i64 = tx
            .query_one(
                "INSERT INTO watches (host, replacement, cutoff, notify, note, created)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[&w.host, &w.to, &w.cutoff.0, &notify, &w.note, &w.created.0],
            )
            .await
            .map_err(StoreError::pg)?
            .get(0);
        for b in &baselines {
            tx.execute(
                "INSERT INTO watch_alerts (watch_id, kind, service, environment, base)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &id,
                    &AlertKind::FailingCalls.as_str(),
                    &b.service,
                    &b.environment,
                    &sql_count(b.errors),
                ],
            )
            .await
            .map_err(StoreError::pg)?;
        }
        tx.commit().await.map_err(StoreError::pg)?;
        conn.release();
        Ok(WatchRow {
            id,
            host: w.host,
            to: w.to,
            cutoff: w.cutoff,
            notify: w.notify,
            note: w.note,
            created: w.created,
        })
    }

    async fn remove_watch(&self, id: i64) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.client.transaction().await.map_err(StoreError::pg)?;
        let n = tx
            .execute("DELETE FROM watches WHERE id = $1", &[&id])
            .await
            .map_err(StoreError::pg)?;
        for sql in [
            "DELETE FROM watch_alerts WHERE watch_id = $1",
            "DELETE FROM watch_deliveries WHERE watch_id = $1",
        ] {
            tx.execute(sql, &[&id]).await.map_err(StoreError::pg)?;
        }
        tx.commit().await.map_err(StoreError::pg)?;
        conn.release();
        Ok(n > 0)
    }

    async fn alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT watch_id, kind, service, environment, base, fired, notified, mark,
                        calls, errors, first_seen, last_seen, notifications
                 FROM watch_alerts ORDER BY watch_id, kind, service, environment",
                &[],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        rows.iter()
            .map(|r| {
                let kind: String = get(r, 1)?;
                Ok(AlertRow {
                    watch_id: get(r, 0)?,
                    kind: kind_of(&kind)?,
                    service: get(r, 2)?,
                    environment: get(r, 3)?,
                    base: count(r, 4)?,
                    fired: get::<Option<i64>>(r, 5)?.map(Timestamp),
                    notified: get::<Option<i64>>(r, 6)?.map(Timestamp),
                    mark: get(r, 7)?,
                    calls: count(r, 8)?,
                    errors: count(r, 9)?,
                    first_seen: Timestamp(get(r, 10)?),
                    last_seen: Timestamp(get(r, 11)?),
                    notifications: count(r, 12)?,
                })
            })
            .collect()
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let conn = self.pool.get().await?;
        let n = conn
            .client
            .execute(
                "INSERT INTO leases (name, holder, expires) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,
                     expires = EXCLUDED.expires
                 WHERE leases.holder = EXCLUDED.holder OR leases.expires < $4",
                &[&name, &holder, &now.0.saturating_add(ttl_ms), &now.0],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        Ok(n > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        conn.client
            .execute(
                "UPDATE leases SET expires = 0 WHERE name = $1 AND holder = $2",
                &[&name, &holder],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        Ok(())
    }

    async fn record_alerts(
        &self,
        holder: &str,
        now: Timestamp,
        alerts: Vec<(AlertUpdate, Vec<NewDelivery>)>,
        max_pending: usize,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.pool.get().await?;
        let tx = conn.client.transaction().await.map_err(StoreError::pg)?;
        let lease = tx
            .query_opt(
                "SELECT holder, expires FROM leases WHERE name = $1 FOR UPDATE",
                &[&NOTIFIER_LEASE],
            )
            .await
            .map_err(StoreError::pg)?;
        let held = match &lease {
            Some(r) => get::<String>(r, 0)? == holder && get::<i64>(r, 1)? >= now.0,
            None => false,
        };
        if !held {
            return Ok(Recorded {
                lost_lease: true,
                ..Recorded::default()
            });
        }
        let pending: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM watch_deliveries WHERE state = 'pending'",
                &[],
            )
            .await
            .map_err(StoreError::pg)?
            .get(0);
        let mut queued = usize::try_from(pending).unwrap_or(0);
        let mut out = Recorded::default();
        for (a, deliveries) in alerts {
            let exists = tx
                .query_opt(
                    "SELECT 1 FROM watches WHERE id = $1 FOR KEY SHARE",
                    &[&a.watch_id],
                )
                .await
                .map_err(StoreError::pg)?
                .is_some();
            if !exists {
                continue;
            }
            if queued.saturating_add(deliveries.len()) > max_pending {
                out.deferred += 1;
                continue;
            }
            tx.execute(
                "INSERT INTO watch_alerts (watch_id, kind, service, environment, base, fired,
                     notified, mark, calls, errors, first_seen, last_seen, notifications)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (watch_id, kind, service, environment) DO UPDATE SET
                     fired = COALESCE(watch_alerts.fired, EXCLUDED.fired),
                     notified = EXCLUDED.notified, mark = EXCLUDED.mark,
                     calls = EXCLUDED.calls, errors = EXCLUDED.errors,
                     first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
                     notifications = EXCLUDED.notifications",
                &[
                    &a.watch_id,
                    &a.kind.as_str(),
                    &a.service,
                    &a.environment,
                    &sql_count(a.base),
                    &a.fired.map(|t| t.0),
                    &a.notified.map(|t| t.0),
                    &a.mark,
                    &sql_count(a.calls),
                    &sql_count(a.errors),
                    &a.first_seen.0,
                    &a.last_seen.0,
                    &sql_count(a.notifications),
                ],
            )
            .await
            .map_err(StoreError::pg)?;
            for d in &deliveries {
                tx.execute(
                    "INSERT INTO watch_deliveries (watch_id, kind, service, environment, url,
                         body, created, next_attempt)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    &[
                        &a.watch_id,
                        &a.kind.as_str(),
                        &a.service,
                        &a.environment,
                        &d.url,
                        &d.body,
                        &now.0,
                    ],
                )
                .await
                .map_err(StoreError::pg)?;
            }
            queued += deliveries.len();
            out.stored += 1;
        }
        tx.commit().await.map_err(StoreError::pg)?;
        conn.release();
        Ok(out)
    }

    async fn due_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT id, watch_id, kind, service, environment, url, body, created, attempts
                 FROM watch_deliveries WHERE state = 'pending' AND next_attempt <= $1
                 ORDER BY next_attempt, id LIMIT $2",
                &[&now.0, &sql_count(limit as u64)],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        rows.iter()
            .map(|r| {
                let kind: String = get(r, 2)?;
                Ok(DeliveryRow {
                    id: get(r, 0)?,
                    watch_id: get(r, 1)?,
                    kind: kind_of(&kind)?,
                    service: get(r, 3)?,
                    environment: get(r, 4)?,
                    url: get(r, 5)?,
                    body: get(r, 6)?,
                    created: Timestamp(get(r, 7)?),
                    attempts: u32::try_from(get::<i32>(r, 8)?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn finish_delivery(
        &self,
        id: i64,
        now: Timestamp,
        outcome: DeliveryOutcome,
    ) -> Result<(), StoreError> {
        let conn = self.pool.get().await?;
        let r = match outcome {
            DeliveryOutcome::Delivered => {
                conn.client
                    .execute(
                        "UPDATE watch_deliveries SET state = 'delivered', finished = $2,
                             attempts = attempts + 1 WHERE id = $1",
                        &[&id, &now.0],
                    )
                    .await
            }
            DeliveryOutcome::Retry { at, error } => {
                conn.client
                    .execute(
                        "UPDATE watch_deliveries SET next_attempt = $2, last_error = $3,
                             attempts = attempts + 1 WHERE id = $1",
                        &[&id, &at.0, &error],
                    )
                    .await
            }
            DeliveryOutcome::Failed { error } => {
                conn.client
                    .execute(
                        "UPDATE watch_deliveries SET state = 'failed', finished = $2,
                             last_error = $3, attempts = attempts + 1 WHERE id = $1",
                        &[&id, &now.0, &error],
                    )
                    .await
            }
        };
        r.map_err(StoreError::pg)?;
        conn.release();
        Ok(())
    }

    async fn delivery_stats(&self) -> Result<Vec<DeliveryStats>, StoreError> {
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(
                "SELECT d.watch_id,
                        COUNT(*) FILTER (WHERE d.state = 'pending'),
                        COUNT(*) FILTER (WHERE d.state = 'delivered'),
                        COUNT(*) FILTER (WHERE d.state = 'failed'),
                        (SELECT e.last_error FROM watch_deliveries e
                         WHERE e.watch_id = d.watch_id AND e.last_error IS NOT NULL
                         ORDER BY e.id DESC LIMIT 1)
                 FROM watch_deliveries d GROUP BY d.watch_id ORDER BY d.watch_id",
                &[],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        rows.iter()
            .map(|r| {
                Ok(DeliveryStats {
                    watch_id: get(r, 0)?,
                    pending: count(r, 1)?,
                    delivered: count(r, 2)?,
                    failed: count(r, 3)?,
                    last_error: get(r, 4)?,
                })
            })
            .collect()
    }

    async fn prune_deliveries(&self, before: Timestamp) -> Result<u64, StoreError> {
        let conn = self.pool.get().await?;
        let n = conn
            .client
            .execute(
                "DELETE FROM watch_deliveries WHERE state <> 'pending' AND finished < $1",
                &[&before.0],
            )
            .await
            .map_err(StoreError::pg)?;
        conn.release();
        Ok(n)
    }
}
