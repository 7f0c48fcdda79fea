//! SQLite: the callee's view and the address book (issue 14). Writes run inside the
//! writer's per-batch savepoint ([`store`]); reads on a reader connection.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection};
use whouses_wire::{Counts, Report, Scheme, Side, Timestamp};

use super::read::{arg, count, host_condition};
use super::schema::sat_add;
use crate::store::buckets::{first_in_period, hour_of};
use crate::store::{
    merge_interval, AddressClaim, Batch, CalleeInstance, InboundFilter, InboundRow, Interval,
    StoreError, CONTINUITY_SLACK_MS,
};

/// Most addresses per claims statement (well under SQLite's parameter limit).
const ADDRESSES_PER_STATEMENT: usize = 500;

/// Store a batch's side, declared names, inbound calls and address claims (the batch's
/// instance row exists already). An address is claimed only for the batch's trusted
/// period, as coverage is: an old or forged batch cannot re-attribute past calls.
pub(super) fn store(tx: &Connection, batch: &Batch) -> Result<(), StoreError> {
    let r = &batch.report;
    if r.side != Side::Caller || !r.inbound_hosts.is_empty() {
        tx.prepare_cached(
            "UPDATE instances SET side = ?2, inbound_hosts = ?3 WHERE instance = ?1",
        )?
        .execute(params![
            r.instance,
            r.side.as_str(),
            r.inbound_hosts.join(" ")
        ])?;
    }
    if !r.inbound.is_empty() {
        add_inbound(tx, r)?;
    }
    if let Some(period) = batch.coverage {
        for address in &r.addresses {
            claim(tx, address, &r.instance, period)?;
        }
    }
    Ok(())
}

fn add_inbound(tx: &Connection, r: &Report) -> Result<(), StoreError> {
    let mut up = tx.prepare_cached(concat!(
        "INSERT INTO inbound (host, port, scheme, service, environment, address, hour,
             requests, connections, errors, bytes_sent, bytes_received, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (host, port, scheme, service, environment, address, hour) DO UPDATE SET
             requests = ",
        sat_add!("inbound.requests", "excluded.requests"),
        ", connections = ",
        sat_add!("inbound.connections", "excluded.connections"),
        ", errors = ",
        sat_add!("inbound.errors", "excluded.errors"),
        ", bytes_sent = ",
        sat_add!("inbound.bytes_sent", "excluded.bytes_sent"),
        ", bytes_received = ",
        sat_add!("inbound.bytes_received", "excluded.bytes_received"),
        ", first_seen = MIN(inbound.first_seen, excluded.first_seen),
           last_seen = MAX(inbound.last_seen, excluded.last_seen)"
    ))?;
    for e in r.inbound.iter().filter(|e| !e.counts.is_zero()) {
        let c = &e.counts;
        up.execute(params![
            e.host,
            i64::from(e.port),
            e.scheme.as_str(),
            r.service,
            r.environment,
            e.address,
            hour_of(c.last_seen),
            c.requests as i64,
            c.connections as i64,
            c.errors as i64,
            c.bytes_sent as i64,
            c.bytes_received as i64,
            first_in_period(c, r).0,
            c.last_seen.0,
        ])?;
    }
    Ok(())
}

/// Merge `period` into the intervals `instance` held `address`.
fn claim(
    tx: &Connection,
    address: &str,
    instance: &str,
    period: Interval,
) -> Result<(), StoreError> {
    let mut touching: Vec<Interval> = tx
        .prepare_cached(
            r#"SELECT start, "end" FROM addresses
               WHERE address = ?1 AND instance = ?2 AND "end" >= ?3 AND start <= ?4"#,
        )?
        .query_map(
            params![
                address,
                instance,
                period.start.0.saturating_sub(CONTINUITY_SLACK_MS),
                period.end.0.saturating_add(CONTINUITY_SLACK_MS)
            ],
            |row| {
                Ok(Interval {
                    start: Timestamp(row.get(0)?),
                    end: Timestamp(row.get(1)?),
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    {
        let mut delete = tx.prepare_cached(
            "DELETE FROM addresses WHERE address = ?1 AND instance = ?2 AND start = ?3",
        )?;
        for old in &touching {
            delete.execute(params![address, instance, old.start.0])?;
        }
    }
    merge_interval(&mut touching, period);
    let mut insert = tx.prepare_cached(
        r#"INSERT INTO addresses (address, instance, start, "end") VALUES (?1, ?2, ?3, ?4)"#,
    )?;
    for iv in touching {
        insert.execute(params![address, instance, iv.start.0, iv.end.0])?;
    }
    Ok(())
}

/// Retention: inbound buckets and address intervals that ended before `cutoff`.
pub(super) fn prune(tx: &Connection, cutoff: Timestamp) -> Result<u64, StoreError> {
    let mut n = tx.execute(
        "DELETE FROM inbound WHERE last_seen < ?1",
        params![cutoff.0],
    )? as u64;
    n += tx.execute(
        r#"DELETE FROM addresses WHERE "end" < ?1"#,
        params![cutoff.0],
    )? as u64;
    Ok(n)
}

pub(super) fn inbound(c: &Connection, f: &InboundFilter) -> Result<Vec<InboundRow>, StoreError> {
    let mut args = Vec::new();
    let mut sql = String::from(
        "SELECT service, environment, host, port, scheme, address, requests, connections,
                errors, bytes_sent, bytes_received, first_seen, last_seen
         FROM inbound WHERE 1 = 1",
    );
    if let Some(hosts) = &f.hosts {
        sql.push_str(" AND ");
        sql.push_str(&host_condition("host", Some("port"), hosts, &mut args));
    }
    if let Some(since) = f.since {
        sql.push_str(&format!(
            " AND last_seen >= {}",
            arg(&mut args, Value::Integer(since.0))
        ));
    }
    sql.push_str(" ORDER BY host, port, scheme, service, environment, address, hour");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        let scheme: String = row.get(4)?;
        Ok(InboundRow {
            service: row.get(0)?,
            environment: row.get(1)?,
            host: row.get(2)?,
            port: u16::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
            scheme: scheme.parse().unwrap_or(Scheme::Tcp),
            address: row.get(5)?,
            counts: Counts {
                requests: count(row, 6)?,
                connections: count(row, 7)?,
                errors: count(row, 8)?,
                bytes_sent: count(row, 9)?,
                bytes_received: count(row, 10)?,
                first_seen: Timestamp(row.get(11)?),
                last_seen: Timestamp(row.get(12)?),
            },
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn address_claims(
    c: &Connection,
    addresses: &[String],
) -> Result<Vec<AddressClaim>, StoreError> {
    let mut out = Vec::new();
    for chunk in addresses.chunks(ADDRESSES_PER_STATEMENT) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            r#"SELECT a.address, a.instance, i.service, i.environment, i.side,
                      i.flush_interval_ms, a.start, a."end"
               FROM addresses a JOIN instances i ON i.instance = a.instance
               WHERE a.address IN ({})
               ORDER BY a.address, a.start, a.instance"#,
            marks.join(", ")
        );
        let mut stmt = c.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(chunk.iter()), |row| {
            let side: String = row.get(4)?;
            Ok(AddressClaim {
                address: row.get(0)?,
                instance: row.get(1)?,
                service: row.get(2)?,
                environment: row.get(3)?,
                side: Side::parse(&side),
                flush_interval_ms: count(row, 5)?,
                interval: Interval {
                    start: Timestamp(row.get(6)?),
                    end: Timestamp(row.get(7)?),
                },
            })
        })?;
        for r in rows {
            out.push(r?);
        }
    }
    out.sort_by(|a, b| {
        (&a.address, a.interval.start, &a.instance).cmp(&(
            &b.address,
            b.interval.start,
            &b.instance,
        ))
    });
    Ok(out)
}

pub(super) fn callee_instances(c: &Connection) -> Result<Vec<CalleeInstance>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT instance, service, environment, inbound_hosts FROM instances
         WHERE side = 'callee' OR inbound_hosts != ''
         ORDER BY service, environment, instance",
    )?;
    let rows = stmt.query_map([], |row| {
        let hosts: String = row.get(3)?;
        Ok(CalleeInstance {
            instance: row.get(0)?,
            service: row.get(1)?,
            environment: row.get(2)?,
            inbound_hosts: hosts.split_whitespace().map(String::from).collect(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
