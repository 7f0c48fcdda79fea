//! SQLite's side of the decommission workflow ([`DecomStore`]): bucket rows on the reader
//! pool; watches, alerts, the outbox, leases and owners written on the writer thread
//! (`Job::Run`), each change in one transaction.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use whouses_wire::decom::AlertKind;
use whouses_wire::Timestamp;

use super::read::{arg, bucket_join, count, edge_row, host_condition};
use super::writer::Job;
use super::SqliteStore;
use crate::store::decom::{
    day_range, sort_buckets, too_many_buckets, AlertRow, AlertUpdate, Baseline, BucketRow,
    DecomStore, DeliveryOutcome, DeliveryRow, DeliveryStats, NewDelivery, Recorded, ReportedOwner,
    WatchInsert, WatchRow, NOTIFIER_LEASE,
};
use crate::store::{EdgeFilter, StoreError};

impl SqliteStore {
    /// Run `f` on the writing connection (after the group in front of it) and wait.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.ask(|reply| {
            Job::Run(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
        })
        .await
    }
}

/// Where a bucket row comes from.
#[derive(Debug, Clone, Copy)]
enum Part {
    Current,
    Hours,
    Days,
}

/// One source's bucket rows (at most `limit`).
fn bucket_rows(
    c: &Connection,
    f: &EdgeFilter,
    part: Part,
    from: i64,
    to: i64,
    limit: usize,
) -> Result<Vec<BucketRow>, StoreError> {
    let (sql, args) = bucket_rows_statement(f, part, from, to, limit);
    let daily = matches!(part, Part::Days);
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        Ok(BucketRow::of(edge_row(row)?, row.get(12)?, daily))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// [`bucket_rows`]'s statement and its parameters.
fn bucket_rows_statement(
    f: &EdgeFilter,
    part: Part,
    from: i64,
    to: i64,
    limit: usize,
) -> (String, Vec<Value>) {
    let mut args: Vec<Value> = vec![Value::Integer(from), Value::Integer(to)];
    let mut sql = match part {
        Part::Current => String::from(
            "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.cur_requests,
                    e.cur_connections, e.cur_errors, e.cur_bytes_sent, e.cur_bytes_received,
                    e.cur_first_seen, e.cur_last_seen, e.cur_hour
             FROM edges e WHERE e.cur_hour >= ?1 AND e.cur_hour < ?2",
        ),
        Part::Hours | Part::Days => {
            let (table, column) = match part {
                Part::Hours => ("edge_hours", "hour"),
                _ => ("edge_days", "day"),
            };
            let join = bucket_join(f);
            format!(
                "SELECT e.service, e.environment, e.host, e.port, e.scheme, b.requests,
                        b.connections, b.errors, b.bytes_sent, b.bytes_received, b.first_seen,
                        b.last_seen, b.{column}
                 FROM edges e {join} {table} b ON b.edge_id = e.id
                 WHERE b.{column} >= ?1 AND b.{column} < ?2"
            )
        }
    };
    if let Some(hosts) = &f.hosts {
        sql.push_str(" AND ");
        sql.push_str(&host_condition("e.host", Some("e.port"), hosts, &mut args));
    }
    if let Some(s) = &f.service {
        let a = arg(&mut args, Value::Text(s.clone()));
        sql.push_str(&format!(" AND e.service = {a}"));
    }
    if let Some(env) = &f.environment {
        let a = arg(&mut args, Value::Text(env.clone()));
        sql.push_str(&format!(" AND e.environment = {a}"));
    }
    let a = arg(&mut args, Value::Integer(limit as i64));
    sql.push_str(&format!(" LIMIT {a}"));
    (sql, args)
}

fn kind_of(s: &str) -> rusqlite::Result<AlertKind> {
    AlertKind::parse(s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown alert kind {s:?}").into(),
        )
    })
}

fn watch_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<WatchRow> {
    let notify: String = row.get(4)?;
    Ok(WatchRow {
        id: row.get(0)?,
        host: row.get(1)?,
        to: row.get(2)?,
        cutoff: Timestamp(row.get(3)?),
        notify: notify.lines().map(String::from).collect(),
        note: row.get(5)?,
        created: Timestamp(row.get(6)?),
    })
}

/// The pending notifications (whatever their watch).
fn pending(tx: &Connection) -> Result<usize, StoreError> {
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM watch_deliveries WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

fn upsert_alert(tx: &Connection, a: &AlertUpdate) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO watch_alerts (watch_id, kind, service, environment, base, fired, notified,
             mark, calls, errors, first_seen, last_seen, notifications)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (watch_id, kind, service, environment) DO UPDATE SET
             fired = COALESCE(watch_alerts.fired, excluded.fired),
             notified = excluded.notified, mark = excluded.mark, calls = excluded.calls,
             errors = excluded.errors, first_seen = excluded.first_seen,
             last_seen = excluded.last_seen, notifications = excluded.notifications",
    )?
    .execute(params![
        a.watch_id,
        a.kind.as_str(),
        a.service,
        a.environment,
        sql_count(a.base),
        a.fired.map(|t| t.0),
        a.notified.map(|t| t.0),
        a.mark,
        sql_count(a.calls),
        sql_count(a.errors),
        a.first_seen.0,
        a.last_seen.0,
        sql_count(a.notifications),
    ])?;
    Ok(())
}

/// A count as SQLite's signed integer (saturating).
fn sql_count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl DecomStore for SqliteStore {
    async fn buckets(
        &self,
        f: &EdgeFilter,
        from_hour: i64,
        to_hour: i64,
        max_rows: usize,
    ) -> Result<Vec<BucketRow>, StoreError> {
        let f = f.clone();
        self.readers
            .run(move |c| {
                let limit = max_rows.saturating_add(1);
                let (from_day, to_day) = day_range(from_hour, to_hour);
                let mut rows = bucket_rows(c, &f, Part::Current, from_hour, to_hour, limit)?;
                rows.extend(bucket_rows(c, &f, Part::Hours, from_hour, to_hour, limit)?);
                rows.extend(bucket_rows(c, &f, Part::Days, from_day, to_day, limit)?);
                if rows.len() > max_rows {
                    return Err(too_many_buckets(max_rows));
                }
                sort_buckets(&mut rows);
                Ok(rows)
            })
            .await
    }

    async fn reported_owners(&self) -> Result<Vec<ReportedOwner>, StoreError> {
        self.readers
            .run(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT service, environment, owner FROM service_owners
                     ORDER BY service, environment",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(ReportedOwner {
                        service: r.get(0)?,
                        environment: r.get(1)?,
                        owner: r.get(2)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn set_reported_owner(&self, o: ReportedOwner, now: Timestamp) -> Result<(), StoreError> {
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO service_owners (service, environment, owner, updated)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (service, environment) DO UPDATE SET owner = excluded.owner,
                     updated = excluded.updated",
            )?
            .execute(params![o.service, o.environment, o.owner, now.0])?;
            Ok(())
        })
        .await
    }

    async fn watches(&self) -> Result<Vec<WatchRow>, StoreError> {
        self.readers
            .run(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, host, replacement, cutoff, notify, note, created FROM watches
                     ORDER BY id",
                )?;
                let rows = stmt.query_map([], watch_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn add_watch(
        &self,
        w: WatchInsert,
        baselines: Vec<Baseline>,
        max_watches: usize,
    ) -> Result<WatchRow, StoreError> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n: i64 = tx.query_row("SELECT COUNT(*) FROM watches", [], |r| r.get(0))?;
            if usize::try_from(n).unwrap_or(usize::MAX) >= max_watches {
                return Err(StoreError::Invalid(format!(
                    "there are {n} watches already, the most this collector keeps (--max-watches {max_watches}); remove one first"
                )));
            }
            tx.execute(
                "INSERT INTO watches (host, replacement, cutoff, notify, note, created)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    w.host,
                    w.to,
                    w.cutoff.0,
                    w.notify.join("\n"),
                    w.note,
                    w.created.0
                ],
            )?;
            let id = tx.last_insert_rowid();
            for b in &baselines {
                tx.execute(
                    "INSERT INTO watch_alerts (watch_id, kind, service, environment, base)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        id,
                        AlertKind::FailingCalls.as_str(),
                        b.service,
                        b.environment,
                        sql_count(b.errors)
                    ],
                )?;
            }
            tx.commit()?;
            Ok(WatchRow {
                id,
                host: w.host,
                to: w.to,
                cutoff: w.cutoff,
                notify: w.notify,
                note: w.note,
                created: w.created,
            })
        })
        .await
    }

    async fn remove_watch(&self, id: i64) -> Result<bool, StoreError> {
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM watches WHERE id = ?1", params![id])?;
            tx.execute("DELETE FROM watch_alerts WHERE watch_id = ?1", params![id])?;
            tx.execute(
                "DELETE FROM watch_deliveries WHERE watch_id = ?1",
                params![id],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn alerts(&self) -> Result<Vec<AlertRow>, StoreError> {
        self.readers
            .run(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT watch_id, kind, service, environment, base, fired, notified, mark,
                            calls, errors, first_seen, last_seen, notifications
                     FROM watch_alerts ORDER BY watch_id, kind, service, environment",
                )?;
                let rows = stmt.query_map([], |r| {
                    let kind: String = r.get(1)?;
                    Ok(AlertRow {
                        watch_id: r.get(0)?,
                        kind: kind_of(&kind)?,
                        service: r.get(2)?,
                        environment: r.get(3)?,
                        base: count(r, 4)?,
                        fired: r.get::<_, Option<i64>>(5)?.map(Timestamp),
                        notified: r.get::<_, Option<i64>>(6)?.map(Timestamp),
                        mark: r.get(7)?,
                        calls: count(r, 8)?,
                        errors: count(r, 9)?,
                        first_seen: Timestamp(r.get(10)?),
                        last_seen: Timestamp(r.get(11)?),
                        notifications: count(r, 12)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "INSERT INTO leases (name, holder, expires) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                         expires = excluded.expires
                     WHERE leases.holder = excluded.holder OR leases.expires < ?4",
                )?
                .execute(params![name, holder, now.0.saturating_add(ttl_ms), now.0])?;
            Ok(n > 0)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |c| {
            c.execute(
                "UPDATE leases SET expires = 0 WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )?;
            Ok(())
        })
        .await
    }

    async fn record_alerts(
        &self,
        holder: &str,
        now: Timestamp,
        alerts: Vec<(AlertUpdate, Vec<NewDelivery>)>,
        max_pending: usize,
    ) -> Result<Recorded, StoreError> {
        let holder = holder.to_string();
        self.write(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let lease: Option<(String, i64)> = tx
                .query_row(
                    "SELECT holder, expires FROM leases WHERE name = ?1",
                    params![NOTIFIER_LEASE],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if !lease.is_some_and(|(h, until)| h == holder && until >= now.0) {
                return Ok(Recorded {
                    lost_lease: true,
                    ..Recorded::default()
                });
            }
            let mut queued = pending(&tx)?;
            let mut out = Recorded::default();
            for (alert, deliveries) in alerts {
                let exists: bool = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM watches WHERE id = ?1)")?
                    .query_row(params![alert.watch_id], |r| r.get(0))?;
                if !exists {
                    continue;
                }
                if queued.saturating_add(deliveries.len()) > max_pending {
                    out.deferred += 1;
                    continue;
                }
                upsert_alert(&tx, &alert)?;
                for d in &deliveries {
                    tx.prepare_cached(
                        "INSERT INTO watch_deliveries (watch_id, kind, service, environment, url,
                             body, created, next_attempt)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                    )?
                    .execute(params![
                        alert.watch_id,
                        alert.kind.as_str(),
                        alert.service,
                        alert.environment,
                        d.url,
                        d.body,
                        now.0
                    ])?;
                }
                queued += deliveries.len();
                out.stored += 1;
            }
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    async fn due_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        self.readers
            .run(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, watch_id, kind, service, environment, url, body, created, attempts
                     FROM watch_deliveries WHERE state = 'pending' AND next_attempt <= ?1
                     ORDER BY next_attempt, id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now.0, sql_count(limit as u64)], |r| {
                    let kind: String = r.get(2)?;
                    Ok(DeliveryRow {
                        id: r.get(0)?,
                        watch_id: r.get(1)?,
                        kind: kind_of(&kind)?,
                        service: r.get(3)?,
                        environment: r.get(4)?,
                        url: r.get(5)?,
                        body: r.get(6)?,
                        created: Timestamp(r.get(7)?),
                        attempts: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(u32::MAX),
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn finish_delivery(
        &self,
        id: i64,
        now: Timestamp,
        outcome: DeliveryOutcome,
    ) -> Result<(), StoreError> {
        self.write(move |c| {
            match outcome {
                DeliveryOutcome::Delivered => c.execute(
                    "UPDATE watch_deliveries SET state = 'delivered', finished = ?2,
                         attempts = attempts + 1 WHERE id = ?1",
                    params![id, now.0],
                )?,
                DeliveryOutcome::Retry { at, error } => c.execute(
                    "UPDATE watch_deliveries SET next_attempt = ?2, last_error = ?3,
                         attempts = attempts + 1 WHERE id = ?1",
                    params![id, at.0, error],
                )?,
                DeliveryOutcome::Failed { error } => c.execute(
                    "UPDATE watch_deliveries SET state = 'failed', finished = ?2,
                         last_error = ?3, attempts = attempts + 1 WHERE id = ?1",
                    params![id, now.0, error],
                )?,
            };
            Ok(())
        })
        .await
    }

    async fn delivery_stats(&self) -> Result<Vec<DeliveryStats>, StoreError> {
        self.readers
            .run(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT d.watch_id,
                            SUM(d.state = 'pending'), SUM(d.state = 'delivered'),
                            SUM(d.state = 'failed'),
                            (SELECT e.last_error FROM watch_deliveries e
                             WHERE e.watch_id = d.watch_id AND e.last_error IS NOT NULL
                             ORDER BY e.id DESC LIMIT 1)
                     FROM watch_deliveries d GROUP BY d.watch_id ORDER BY d.watch_id",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(DeliveryStats {
                        watch_id: r.get(0)?,
                        pending: count(r, 1)?,
                        delivered: count(r, 2)?,
                        failed: count(r, 3)?,
                        last_error: r.get(4)?,
                    })
                })?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn prune_deliveries(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM watch_deliveries WHERE state != 'pending' AND finished < ?1",
                params![before.0],
            )?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::read::tests::{host_filters, plan, starts_from_edges};
    use crate::store::sqlite::schema::open_writer;

    /// As `edges`' sums (`read.rs`): the timeline's bucket rows of named hosts start from
    /// those hosts' edges, whatever the pattern.
    #[test]
    fn bucket_rows_of_named_hosts_start_from_their_edges() {
        let dir = tempfile::tempdir().unwrap();
        let c = open_writer(&dir.path().join("w.db")).unwrap();
        for f in host_filters() {
            for part in [Part::Hours, Part::Days] {
                let (sql, args) = bucket_rows_statement(&f, part, 1, 2, 10);
                starts_from_edges(&plan(&c, &sql, &args), &format!("{:?} {part:?}", f.hosts));
            }
        }
    }
}
