//! PostgreSQL: the callee's view and the address book (issue 14), as SQLite's
//! (`store/sqlite/inbound.rs`). Inside a group commit the group's inbound deltas are summed
//! per bucket and added in one statement (in key order, so replicas lock rows in the same
//! order), and address claims are merged per `(address, instance)` — the instance rows are
//! locked by then, so claims of one instance never race.

use std::collections::BTreeMap;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};
use whouses_wire::{counts, Counts, Report, Scheme, Side, Timestamp};

use super::pool::Conn;
use super::read::{count, host_condition, Params};
use crate::store::buckets::{first_in_period, hour_of, touching_span};
use crate::store::{
    merge_interval, AddressClaim, CalleeInstance, InboundFilter, InboundRow, Interval, StoreError,
};

/// The write statements, prepared once per connection.
pub(super) struct Statements {
    set_side: tokio_postgres::Statement,
    add_inbound: tokio_postgres::Statement,
    touching: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
}

impl Statements {
    pub(super) async fn prepare(conn: &mut Conn) -> Result<Statements, StoreError> {
        Ok(Statements {
            set_side: conn
                .prepared(
                    "UPDATE instances i SET side = u.s, inbound_hosts = u.h
                     FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(i, s, h)
                     WHERE i.instance = u.i",
                )
                .await?,
            add_inbound: conn
                .prepared(
                    "INSERT INTO inbound (host, port, scheme, service, environment, address,
                         hour, requests, connections, errors, bytes_sent, bytes_received,
                         first_seen, last_seen)
                     SELECT * FROM UNNEST($1::text[], $2::int4[], $3::text[], $4::text[],
                         $5::text[], $6::text[], $7::int8[], $8::int8[], $9::int8[],
                         $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[])
                     ON CONFLICT (host, port, scheme, service, environment, address, hour)
                     DO UPDATE SET
                         requests = sat_add(inbound.requests, excluded.requests),
                         connections = sat_add(inbound.connections, excluded.connections),
                         errors = sat_add(inbound.errors, excluded.errors),
                         bytes_sent = sat_add(inbound.bytes_sent, excluded.bytes_sent),
                         bytes_received = sat_add(inbound.bytes_received, excluded.bytes_received),
                         first_seen = LEAST(inbound.first_seen, excluded.first_seen),
                         last_seen = GREATEST(inbound.last_seen, excluded.last_seen)",
                )
                .await?,
            touching: conn
                .prepared(
                    r#"SELECT a.address, a.instance, a.start, a."end"
                       FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[])
                           AS w(a, i, lo, hi)
                       JOIN addresses a ON a.address = w.a AND a.instance = w.i
                            AND a."end" >= w.lo AND a.start <= w.hi"#,
                )
                .await?,
            delete: conn
                .prepared(
                    "DELETE FROM addresses a
                     USING UNNEST($1::text[], $2::text[], $3::int8[]) AS d(a, i, s)
                     WHERE a.address = d.a AND a.instance = d.i AND a.start = d.s",
                )
                .await?,
            insert: conn
                .prepared(
                    r#"INSERT INTO addresses (address, instance, start, "end")
                       SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[])"#,
                )
                .await?,
        })
    }
}

/// Whether any batch of a group carries something for this module (then the statements
/// are prepared).
pub(super) fn wanted(batches: &[(&Report, Option<Interval>)]) -> bool {
    batches.iter().any(|(r, cov)| {
        r.side != Side::Caller
            || !r.inbound_hosts.is_empty()
            || !r.inbound.is_empty()
            || (cov.is_some() && !r.addresses.is_empty())
    })
}

/// The key of an inbound bucket.
type Key<'a> = (&'a str, u16, &'a str, &'a str, &'a str, &'a str, i64);

/// Store the group's sides, inbound calls and address claims (batches in arrival order,
/// each with its trusted period).
pub(super) async fn store(
    tx: &Transaction<'_>,
    sql: &Statements,
    batches: &[(&Report, Option<Interval>)],
) -> Result<(), StoreError> {
    // Sides and declared names: the latest batch of each instance wins.
    let mut sides: BTreeMap<&str, (&str, String)> = BTreeMap::new();
    for (r, _) in batches {
        if r.side != Side::Caller || !r.inbound_hosts.is_empty() {
            sides.insert(&r.instance, (r.side.as_str(), r.inbound_hosts.join(" ")));
        }
    }
    if !sides.is_empty() {
        let names: Vec<&str> = sides.keys().copied().collect();
        let s: Vec<&str> = sides.values().map(|v| v.0).collect();
        let h: Vec<&str> = sides.values().map(|v| v.1.as_str()).collect();
        tx.execute(&sql.set_side, &[&names, &s, &h])
            .await
            .map_err(StoreError::pg)?;
    }

    // Inbound calls, summed per bucket (saturating), in key order.
    let mut sums: BTreeMap<Key<'_>, Counts> = BTreeMap::new();
    for (r, _) in batches {
        for e in r.inbound.iter().filter(|e| !e.counts.is_zero()) {
            let key = (
                e.host.as_str(),
                e.port,
                e.scheme.as_str(),
                r.service.as_str(),
                r.environment.as_str(),
                e.address.as_str(),
                hour_of(e.counts.last_seen),
            );
            let delta = Counts {
                first_seen: first_in_period(&e.counts, r),
                ..e.counts
            };
            sums.entry(key)
                .and_modify(|c| c.merge(&delta))
                .or_insert(delta);
        }
    }
    if !sums.is_empty() {
        let c = |v: u64| i64::try_from(v.min(counts::MAX_COUNT)).unwrap_or(i64::MAX);
        let col = |f: &dyn Fn(&Key<'_>, &Counts) -> i64| -> Vec<i64> {
            sums.iter().map(|(k, v)| f(k, v)).collect()
        };
        let text = |f: fn(&Key<'_>) -> String| -> Vec<String> { sums.keys().map(f).collect() };
        let ports: Vec<i32> = sums.keys().map(|k| i32::from(k.1)).collect();
        tx.execute(
            &sql.add_inbound,
            &[
                &text(|k| k.0.to_string()),
                &ports,
                &text(|k| k.2.to_string()),
                &text(|k| k.3.to_string()),
                &text(|k| k.4.to_string()),
                &text(|k| k.5.to_string()),
                &col(&|k, _| k.6),
                &col(&|_, v| c(v.requests)),
                &col(&|_, v| c(v.connections)),
                &col(&|_, v| c(v.errors)),
                &col(&|_, v| c(v.bytes_sent)),
                &col(&|_, v| c(v.bytes_received)),
                &col(&|_, v| v.first_seen.0),
                &col(&|_, v| v.last_seen.0),
            ],
        )
        .await
        .map_err(StoreError::pg)?;
    }

    // Address claims: each batch's trusted period, merged per (address, instance).
    let mut new: BTreeMap<(&str, &str), Vec<Interval>> = BTreeMap::new();
    for (r, cov) in batches {
        let Some(period) = cov else { continue };
        for a in &r.addresses {
            new.entry((a.as_str(), r.instance.as_str()))
                .or_default()
                .push(*period);
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    let keys: Vec<(&str, &str)> = new.keys().copied().collect();
    let addrs: Vec<&str> = keys.iter().map(|k| k.0).collect();
    let insts: Vec<&str> = keys.iter().map(|k| k.1).collect();
    let (lo, hi): (Vec<i64>, Vec<i64>) = new.values().map(|v| touching_span(v)).unzip();
    let mut merged: BTreeMap<(String, String), Vec<Interval>> = BTreeMap::new();
    let (mut old_a, mut old_i, mut old_s) = (Vec::new(), Vec::new(), Vec::new());
    for row in tx
        .query(&sql.touching, &[&addrs, &insts, &lo, &hi])
        .await
        .map_err(StoreError::pg)?
    {
        let a: String = row.try_get(0).map_err(StoreError::pg)?;
        let i: String = row.try_get(1).map_err(StoreError::pg)?;
        let start: i64 = row.try_get(2).map_err(StoreError::pg)?;
        let end: i64 = row.try_get(3).map_err(StoreError::pg)?;
        old_a.push(a.clone());
        old_i.push(i.clone());
        old_s.push(start);
        merged.entry((a, i)).or_default().push(Interval {
            start: Timestamp(start),
            end: Timestamp(end),
        });
    }
    for ((a, i), ivs) in &new {
        let set = merged.entry((a.to_string(), i.to_string())).or_default();
        for iv in ivs {
            merge_interval(set, *iv);
        }
    }
    if !old_a.is_empty() {
        tx.execute(&sql.delete, &[&old_a, &old_i, &old_s])
            .await
            .map_err(StoreError::pg)?;
    }
    let (mut a, mut i, mut s, mut e) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((addr, inst), ivs) in &merged {
        for iv in ivs {
            a.push(addr.as_str());
            i.push(inst.as_str());
            s.push(iv.start.0);
            e.push(iv.end.0);
        }
    }
    tx.execute(&sql.insert, &[&a, &i, &s, &e])
        .await
        .map_err(StoreError::pg)?;
    Ok(())
}

/// Retention statements: inbound buckets and address intervals that ended before the
/// cutoff (`$1`).
pub(super) const PRUNE: [&str; 2] = [
    "DELETE FROM inbound WHERE last_seen < $1",
    r#"DELETE FROM addresses WHERE "end" < $1"#,
];

pub(super) async fn inbound(c: &Client, f: &InboundFilter) -> Result<Vec<InboundRow>, StoreError> {
    let mut p = Params::default();
    let mut sql = String::from(
        "SELECT service, environment, host, port, scheme, address, requests, connections,
                errors, bytes_sent, bytes_received, first_seen, last_seen
         FROM inbound WHERE TRUE",
    );
    if let Some(hosts) = &f.hosts {
        sql.push_str(" AND ");
        sql.push_str(&host_condition("host", Some("port"), hosts, &mut p));
    }
    if let Some(since) = f.since {
        sql.push_str(&format!(" AND last_seen >= {}", p.add(since.0, Type::INT8)));
    }
    sql.push_str(" ORDER BY host, port, scheme, service, environment, address, hour");
    let rows = c
        .query_typed(&sql, &p.typed())
        .await
        .map_err(StoreError::pg)?;
    rows.iter()
        .map(|row| {
            let port: i32 = row.try_get(3).map_err(StoreError::pg)?;
            let scheme: String = row.try_get(4).map_err(StoreError::pg)?;
            Ok(InboundRow {
                service: row.try_get(0).map_err(StoreError::pg)?,
                environment: row.try_get(1).map_err(StoreError::pg)?,
                host: row.try_get(2).map_err(StoreError::pg)?,
                port: u16::try_from(port).unwrap_or(0),
                scheme: scheme.parse().unwrap_or(Scheme::Tcp),
                address: row.try_get(5).map_err(StoreError::pg)?,
                counts: Counts {
                    requests: count(row, 6)?,
                    connections: count(row, 7)?,
                    errors: count(row, 8)?,
                    bytes_sent: count(row, 9)?,
                    bytes_received: count(row, 10)?,
                    first_seen: Timestamp(row.try_get(11).map_err(StoreError::pg)?),
                    last_seen: Timestamp(row.try_get(12).map_err(StoreError::pg)?),
                },
            })
        })
        .collect()
}

pub(super) async fn address_claims(
    c: &Client,
    addresses: &[String],
) -> Result<Vec<AddressClaim>, StoreError> {
    if addresses.is_empty() {
        return Ok(Vec::new());
    }
    let rows = c
        .query_typed(
            r#"SELECT a.address, a.instance, i.service, i.environment, i.side,
                      i.flush_interval_ms, a.start, a."end"
               FROM addresses a JOIN instances i ON i.instance = a.instance
               WHERE a.address = ANY($1::text[])
               ORDER BY a.address, a.start, a.instance"#,
            &[(&addresses, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(StoreError::pg)?;
    rows.iter()
        .map(|row| {
            let side: String = row.try_get(4).map_err(StoreError::pg)?;
            Ok(AddressClaim {
                address: row.try_get(0).map_err(StoreError::pg)?,
                instance: row.try_get(1).map_err(StoreError::pg)?,
                service: row.try_get(2).map_err(StoreError::pg)?,
                environment: row.try_get(3).map_err(StoreError::pg)?,
                side: Side::parse(&side),
                flush_interval_ms: count(row, 5)?,
                interval: Interval {
                    start: Timestamp(row.try_get(6).map_err(StoreError::pg)?),
                    end: Timestamp(row.try_get(7).map_err(StoreError::pg)?),
                },
            })
        })
        .collect()
}

pub(super) async fn callee_instances(c: &Client) -> Result<Vec<CalleeInstance>, StoreError> {
    let rows = c
        .query_typed(
            "SELECT instance, service, environment, inbound_hosts FROM instances
             WHERE side = 'callee' OR inbound_hosts <> ''
             ORDER BY service, environment, instance",
            &[],
        )
        .await
        .map_err(StoreError::pg)?;
    rows.iter()
        .map(|row| {
            let hosts: String = row.try_get(3).map_err(StoreError::pg)?;
            Ok(CalleeInstance {
                instance: row.try_get(0).map_err(StoreError::pg)?,
                service: row.try_get(1).map_err(StoreError::pg)?,
                environment: row.try_get(2).map_err(StoreError::pg)?,
                inbound_hosts: hosts.split_whitespace().map(String::from).collect(),
            })
        })
        .collect()
}
