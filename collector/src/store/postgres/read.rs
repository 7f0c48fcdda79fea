//! The PostgreSQL read path: the same queries as SQLite's (`store/sqlite/read.rs`), each
//! one round trip (`query_typed`: parameters typed here, no separate prepare) — except
//! `check`'s window statement, prepared once per connection and shape (planning it was
//! 2 ms of a thousand-caller host's `check`): a round trip more the first time, no plan
//! after.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};
use whouses_wire::api::{BypassRow, EdgeRow, InstanceRow, LookupRow};
use whouses_wire::{Counts, Scheme, Timestamp};

use crate::store::buckets::{
    self, canonical_coverage, day_of, escape_like, hour_of, sum_rows, WindowRow, DAY_MS, HOUR_MS,
};
use crate::store::{EdgeFilter, InstanceCoverage, Interval, ObsFilter, StoreError, WindowCalls};
use crate::targets::HostPattern;

use super::pool::Conn;

/// Where edge counts are read from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Totals,
    Current,
    Hours,
    Days,
}

/// Parameters of a statement being built, with their types.
#[derive(Default)]
pub(super) struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
    types: Vec<Type>,
}

impl Params {
    /// Add a parameter; returns its placeholder (`$n`).
    pub(super) fn add<T: ToSql + Sync + Send + 'static>(&mut self, v: T, t: Type) -> String {
        self.values.push(Box::new(v));
        self.types.push(t);
        format!("${}", self.values.len())
    }

    /// The values, in order, for a statement prepared with [`Params::types`].
    pub(super) fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    pub(super) fn types(&self) -> &[Type] {
        &self.types
    }

    pub(super) fn typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.values
            .iter()
            .zip(&self.types)
            .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()))
            .collect()
    }
}

pub(super) async fn edges(c: &Client, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError> {
    let Some(since) = f.since else {
        let rows = query_edges(c, f, &[(Source::Totals, 0)]).await?;
        return Ok(rows.into_iter().map(|(_, r)| r).collect());
    };
    // As in SQLite: a bucket is in exactly one of the edge's current hour, the hourly
    // buckets or the daily ones; sum all three (one statement, three parts), a day bucket
    // counting whole when `since` falls inside it.
    let rows = query_edges(c, f, &since_sources(since)).await?;
    let (mut current, mut hours, mut days) = (Vec::new(), Vec::new(), Vec::new());
    for (part, row) in rows {
        match part {
            0 => current.push(row),
            1 => hours.push(row),
            _ => days.push(row),
        }
    }
    for part in [&mut current, &mut hours, &mut days] {
        part.sort_by(|a, b| buckets::edge_key(a).cmp(&buckets::edge_key(b)));
    }
    Ok(sum_rows(sum_rows(current, hours), days))
}

/// As SQLite's (`store/sqlite/read.rs`): every edge of `hosts` with its calls from
/// `since` on, from its totals and its first bucket rows in the window (one index lookup
/// each, `LATERAL`, skipped for edges quiet since before the window; the first hourly row
/// only when the first daily row is not `since`'s own day; that day's hourly rows before
/// `since` only when it has a daily row and such rows exist at all). One statement: one
/// snapshot.
///
/// The rows come back unsorted ([`buckets::sort_window_calls`]: the server's sort of a
/// thousand wide rows cost more than a tenth of the statement), an edge whose calls
/// could not be told marked [`buckets::STALE`] ([`fill_stale_window_calls`]).
pub(super) async fn window_calls(
    c: &mut Conn,
    hosts: Option<&[HostPattern]>,
    since: Timestamp,
) -> Result<Vec<WindowCalls>, StoreError> {
    let (sql, p) = window_statement(hosts, since);
    // Prepared (`since`'s hour and day are parameters): the same host filter's shape is
    // not planned again.
    let statement = c.prepared_built(sql, p.types()).await?;
    let rows = c
        .client
        .query(&statement, &p.values())
        .await
        .map_err(StoreError::pg)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let get = |i: usize| -> Result<Option<i64>, StoreError> {
            row.try_get::<_, Option<i64>>(i).map_err(StoreError::pg)
        };
        // A bucket row's key and its `calls_before` (NULL: not known).
        let first = |at: usize| -> Result<Option<(i64, Option<u64>)>, StoreError> {
            Ok(match get(at)? {
                Some(k) => Some((k, get(at + 1)?.map(|v| v.max(0) as u64))),
                None => None,
            })
        };
        let edge = edge_row(row, 0)?;
        let w = WindowRow {
            requests: edge.counts.requests,
            connections: edge.counts.connections,
            cur_hour: get(12)?,
            cur_calls: count(row, 13)?,
            stale_after: get(14)?,
            first_day: first(15)?,
            first_hour: first(17)?,
            day_hours_before: get(19)?.map_or(0, |v| v.max(0) as u64),
        };
        let calls = buckets::window_calls(&w, since).unwrap_or(buckets::STALE);
        out.push(WindowCalls { edge, calls });
    }
    Ok(out)
}

/// [`window_calls`]'s statement for `hosts` and `since`, with its parameters.
///
/// The statement is prepared once per connection and shape, so after a few runs
/// PostgreSQL may keep one generic plan for every window: every part of it must be one
/// the planner cannot misjudge without the parameters' values. The guards on whole tables
/// ("any daily row from `since`'s day on", "any hourly row before `since` on its day") are
/// therefore `max`/`min` over an index, one index entry each; as `EXISTS (… WHERE day >=
/// $n)` the generic plan scanned the whole `edge_days` table instead (the planner guesses a
/// third of the rows match, so the first one comes soon): 270 ms per `check` with a
/// window shorter than the daily rows' age (`plans::` in the conformance suite).
pub(super) fn window_statement(
    hosts: Option<&[HostPattern]>,
    since: Timestamp,
) -> (String, Params) {
    let (hour, day) = (hour_of(since), day_of(since));
    let mut p = Params::default();
    let h = p.add(hour, Type::INT8);
    let d = p.add(day, Type::INT8);
    let d24 = p.add(day.saturating_mul(24), Type::INT8);
    let d_ms = p.add(day.saturating_mul(DAY_MS), Type::INT8);
    let h_ms = p.add(hour.saturating_mul(HOUR_MS), Type::INT8);
    let filter = EdgeFilter {
        hosts: hosts.map(<[HostPattern]>::to_vec),
        ..Default::default()
    };
    let cond = conditions(&filter, &mut p);
    // The first daily row: `since`'s own day, when the edge has one (every edge called
    // that day), through the day index (an index-only scan where one day's rows lie
    // together); only an edge without one seeks its next row through the primary key.
    // `LIMIT 1` keeps the probe a lookup per edge: flattened into a join, the planner
    // hashed every row of that day (55,000 in the fleet benchmark) for 1,328 edges.
    let sql = format!(
        "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.requests, e.connections,
                e.errors, e.bytes_sent, e.bytes_received, e.first_seen, e.last_seen,
                e.cur_hour, CASE WHEN e.cur_hour IS NULL THEN 0
                    ELSE sat_add(e.cur_requests, e.cur_connections) END,
                e.stale_after, fd.day, fd.calls_before, fh.hour, fh.calls_before, b.calls
         FROM edges e
         LEFT JOIN LATERAL (SELECT day, calls_before FROM edge_days
                            WHERE day = {d} AND edge_id = e.id AND e.last_seen >= {d_ms}
                            LIMIT 1) fx ON TRUE
         LEFT JOIN LATERAL (SELECT fx.day, fx.calls_before WHERE fx.day IS NOT NULL
                            UNION ALL
                            (SELECT day, calls_before FROM edge_days
                             WHERE edge_id = e.id AND day > {d} AND e.last_seen >= {d_ms}
                               AND fx.day IS NULL
                               AND (SELECT max(day) FROM edge_days) >= {d}
                             ORDER BY day LIMIT 1)) fd ON TRUE
         LEFT JOIN LATERAL (SELECT hour, calls_before FROM edge_hours
                            WHERE edge_id = e.id AND hour >= {h} AND e.last_seen >= {h_ms}
                              AND fd.day IS DISTINCT FROM {d}
                            ORDER BY hour LIMIT 1) fh ON TRUE
         LEFT JOIN LATERAL (SELECT {sum} AS calls FROM edge_hours
                            WHERE edge_id = e.id AND hour >= {d24} AND hour < {h}
                              AND fd.day = {d}
                              AND (SELECT min(hour) FROM edge_hours
                                               WHERE hour >= {d24}) < {h}) b ON TRUE
         WHERE {cond}",
        // Not `sat_sum`: over no rows `SUM` is NULL, which `LEAST` would skip.
        sum = "LEAST(COALESCE(SUM(sat_add(requests, connections)), 0), 9223372036854775807)::int8",
    );
    (sql, p)
}

/// Sum the edges [`window_calls`] marked stale (a late batch) the long way.
pub(super) async fn fill_stale_window_calls(
    c: &Client,
    since: Timestamp,
    out: &mut [WindowCalls],
) -> Result<(), StoreError> {
    let summed = edges(c, &buckets::stale_hosts(out, since)).await?;
    buckets::fill_stale(out, &summed);
    Ok(())
}

/// The filter's conditions on `e` (the edges table), as SQL after `WHERE`.
pub(super) fn conditions(f: &EdgeFilter, p: &mut Params) -> String {
    let mut sql = String::from("TRUE");
    if let Some(hosts) = &f.hosts {
        sql.push_str(" AND (");
        if hosts.is_empty() {
            sql.push_str("FALSE");
        }
        for (i, h) in hosts.iter().enumerate() {
            if i > 0 {
                sql.push_str(" OR ");
            }
            match h {
                HostPattern::Host(h) => {
                    let a = p.add(h.clone(), Type::TEXT);
                    sql.push_str(&format!("e.host = {a}"));
                }
                HostPattern::HostPort(h, port) => {
                    let a = p.add(h.clone(), Type::TEXT);
                    let b = p.add(i32::from(*port), Type::INT4);
                    sql.push_str(&format!("(e.host = {a} AND e.port = {b})"));
                }
                HostPattern::Suffix(s) => {
                    let a = p.add(s.clone(), Type::TEXT);
                    let b = p.add(format!("%.{}", escape_like(s)), Type::TEXT);
                    sql.push_str(&format!("e.host = {a} OR e.host LIKE {b} ESCAPE '\\'"));
                }
            }
        }
        sql.push(')');
    }
    if let Some(s) = &f.service {
        let a = p.add(s.clone(), Type::TEXT);
        sql.push_str(&format!(" AND e.service = {a}"));
    }
    if let Some(env) = &f.environment {
        let a = p.add(env.clone(), Type::TEXT);
        sql.push_str(&format!(" AND e.environment = {a}"));
    }
    sql
}

/// Edge rows of the given sources, each tagged with its position in `sources`.
async fn query_edges(
    c: &Client,
    f: &EdgeFilter,
    sources: &[(Source, i64)],
) -> Result<Vec<(i32, EdgeRow)>, StoreError> {
    let (sql, p) = edges_statement(f, sources);
    let rows = c
        .query_typed(&sql, &p.typed())
        .await
        .map_err(StoreError::pg)?;
    rows.iter()
        .map(|r| Ok((r.try_get(0).map_err(StoreError::pg)?, edge_row(r, 1)?)))
        .collect()
}

/// The sources [`edges`] reads for `since`: the current hour, the hourly and the daily
/// buckets.
pub(super) fn since_sources(since: Timestamp) -> [(Source, i64); 3] {
    let hour = hour_of(since);
    [
        (Source::Current, hour),
        (Source::Hours, hour),
        (Source::Days, day_of(since)),
    ]
}

/// [`query_edges`]'s statement and its parameters.
pub(super) fn edges_statement(f: &EdgeFilter, sources: &[(Source, i64)]) -> (String, Params) {
    let mut p = Params::default();
    let cond = conditions(f, &mut p);
    let parts: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, (source, from))| match source {
            Source::Totals => format!(
                "SELECT {i}::int4, e.service, e.environment, e.host, e.port, e.scheme, e.requests,
                        e.connections, e.errors, e.bytes_sent, e.bytes_received, e.first_seen,
                        e.last_seen
                 FROM edges e WHERE {cond}"
            ),
            Source::Current => {
                let a = p.add(*from, Type::INT8);
                format!(
                    "SELECT {i}::int4, e.service, e.environment, e.host, e.port, e.scheme,
                            e.cur_requests, e.cur_connections, e.cur_errors, e.cur_bytes_sent,
                            e.cur_bytes_received, e.cur_first_seen, e.cur_last_seen
                     FROM edges e WHERE e.cur_hour >= {a} AND {cond}"
                )
            }
            Source::Hours | Source::Days => {
                let (table, column) = match source {
                    Source::Hours => ("edge_hours", "hour"),
                    _ => ("edge_days", "day"),
                };
                let a = p.add(*from, Type::INT8);
                // An edge whose last call came before the first bucket wanted has no
                // bucket from it on: skip it without looking.
                let bucket_ms = if matches!(source, Source::Hours) {
                    HOUR_MS
                } else {
                    DAY_MS
                };
                let b = p.add(from.saturating_mul(bucket_ms), Type::INT8);
                let sums = format!(
                    "{}, {}, {}, {}, {}, MIN(h.first_seen), MAX(h.last_seen)",
                    sat_sum("h.requests"),
                    sat_sum("h.connections"),
                    sat_sum("h.errors"),
                    sat_sum("h.bytes_sent"),
                    sat_sum("h.bytes_received"),
                );
                if f.hosts.is_some() {
                    // Hosts named: each edge's own rows, summed per edge (`LATERAL`: a
                    // short range of the primary key each). As a join grouped afterwards,
                    // the planner could pick a parallel hash plan over the window's rows
                    // of the whole fleet: 390 ms for the busiest host's 90 days on the
                    // fleet benchmark, 15 ms this way (`EXPLAIN ANALYZE`).
                    format!(
                        "SELECT {i}::int4, e.service, e.environment, e.host, e.port, e.scheme,
                                s.*
                         FROM edges e CROSS JOIN LATERAL (
                             SELECT {sums} FROM {table} h
                             WHERE h.edge_id = e.id AND h.{column} >= {a}
                             HAVING COUNT(*) > 0) s
                         WHERE e.last_seen >= {b} AND {cond}"
                    )
                } else {
                    format!(
                        "SELECT {i}::int4, e.service, e.environment, e.host, e.port, e.scheme,
                                {sums}
                         FROM edges e JOIN {table} h ON h.edge_id = e.id
                         WHERE h.{column} >= {a} AND e.last_seen >= {b} AND {cond}
                         GROUP BY e.id"
                    )
                }
            }
        })
        .collect();
    let sql = format!(
        "SELECT * FROM ({}) r ORDER BY 1, 4, 5, 6, 2, 3",
        parts.join(" UNION ALL ")
    );
    (sql, p)
}

/// `SUM` of a counter column, stopping at the largest count (PostgreSQL sums `BIGINT`
/// into `NUMERIC`, so the sum itself cannot overflow).
pub(super) fn sat_sum(column: &str) -> String {
    format!("LEAST(SUM({column}), 9223372036854775807)::int8")
}

/// A stored count as `u64` (never negative).
pub(super) fn count(row: &Row, i: usize) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(i).map_err(StoreError::pg)?;
    Ok(v.max(0) as u64)
}

pub(super) fn edge_row(row: &Row, at: usize) -> Result<EdgeRow, StoreError> {
    let get_s = |i: usize| -> Result<String, StoreError> {
        row.try_get::<_, String>(at + i).map_err(StoreError::pg)
    };
    let port: i32 = row.try_get(at + 3).map_err(StoreError::pg)?;
    Ok(EdgeRow {
        service: get_s(0)?,
        environment: get_s(1)?,
        host: get_s(2)?,
        port: u16::try_from(port).unwrap_or(0),
        // Only the three schemes are ever written; anything else reads as opaque TCP.
        scheme: get_s(4)?.parse().unwrap_or(Scheme::Tcp),
        counts: Counts {
            requests: count(row, at + 5)?,
            connections: count(row, at + 6)?,
            errors: count(row, at + 7)?,
            bytes_sent: count(row, at + 8)?,
            bytes_received: count(row, at + 9)?,
            first_seen: Timestamp(row.try_get(at + 10).map_err(StoreError::pg)?),
            last_seen: Timestamp(row.try_get(at + 11).map_err(StoreError::pg)?),
        },
    })
}

pub(super) async fn instances(c: &Client) -> Result<Vec<InstanceRow>, StoreError> {
    let rows = c
        .query_typed(
            "SELECT instance, service, environment, first_report, last_report, observed_until,
                    last_seq, started_at, flush_interval_ms, reports
             FROM instances ORDER BY service, environment, instance",
            &[],
        )
        .await
        .map_err(StoreError::pg)?;
    rows.iter()
        .map(|row| {
            let t = |i: usize| -> Result<Timestamp, StoreError> {
                Ok(Timestamp(row.try_get(i).map_err(StoreError::pg)?))
            };
            Ok(InstanceRow {
                instance: row.try_get(0).map_err(StoreError::pg)?,
                service: row.try_get(1).map_err(StoreError::pg)?,
                environment: row.try_get(2).map_err(StoreError::pg)?,
                first_report: t(3)?,
                last_report: t(4)?,
                observed_until: t(5)?,
                last_seq: count(row, 6)?,
                started_at: t(7)?,
                flush_interval_ms: count(row, 8)?,
                reports: count(row, 9)?,
            })
        })
        .collect()
}

pub(super) async fn coverage(
    c: &Client,
    services: &[(String, String)],
    after: Timestamp,
) -> Result<Vec<InstanceCoverage>, StoreError> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    // One statement for every service, however many: the pairs travel as two arrays.
    let (names, envs): (Vec<&str>, Vec<&str>) = services
        .iter()
        .map(|(s, e)| (s.as_str(), e.as_str()))
        .unzip();
    let rows = c
        .query_typed(
            &coverage_sql("SELECT * FROM UNNEST($2::text[], $3::text[])"),
            &[
                (&after.0, Type::INT8),
                (&names, Type::TEXT_ARRAY),
                (&envs, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(StoreError::pg)?;
    coverage_rows(&rows)
}

/// [`coverage`] of every service that ever called these hosts, the services found in
/// the same statement (a host with a thousand callers: no second read of its edges, no
/// list of them sent back).
pub(super) async fn callers_coverage(
    c: &Client,
    hosts: &[HostPattern],
    after: Timestamp,
) -> Result<Vec<InstanceCoverage>, StoreError> {
    let mut p = Params::default();
    p.add(after.0, Type::INT8);
    let cond = conditions(
        &EdgeFilter {
            hosts: Some(hosts.to_vec()),
            ..Default::default()
        },
        &mut p,
    );
    let rows = c
        .query_typed(
            &coverage_sql(&format!(
                "SELECT e.service, e.environment FROM edges e WHERE {cond}"
            )),
            &p.typed(),
        )
        .await
        .map_err(StoreError::pg)?;
    coverage_rows(&rows)
}

/// The coverage statement over the `(service, environment)` pairs `wanted` selects (a
/// pair may come more than once: `IN` takes each once); $1 is the time intervals must
/// end at or after. Unsorted: [`canonical_coverage`] orders the rows.
fn coverage_sql(wanted: &str) -> String {
    format!(
        r#"SELECT i.instance, i.service, i.environment, i.flush_interval_ms,
                  i.observed_until, c.start, c."end"
           FROM instances i
           LEFT JOIN coverage c ON c.instance = i.instance AND c."end" >= $1
           WHERE (i.service, i.environment) IN ({wanted})"#
    )
}

/// Gather [`coverage_sql`]'s rows into one entry per instance. The plan hashes one side,
/// so an instance's rows need not come together: each is found by name (borrowed from
/// the row, a copy only for a new instance). Gathering them by sorting every row first
/// was a fifth of the collector's own time in a thousand-caller host's `check`.
fn coverage_rows(rows: &[Row]) -> Result<Vec<InstanceCoverage>, StoreError> {
    let mut out: Vec<InstanceCoverage> = Vec::new();
    let mut at: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let instance: &str = row.try_get(0).map_err(StoreError::pg)?;
        let start: Option<i64> = row.try_get(5).map_err(StoreError::pg)?;
        let iv = match start {
            Some(start) => Some(Interval {
                start: Timestamp(start),
                end: Timestamp(row.try_get(6).map_err(StoreError::pg)?),
            }),
            None => None,
        };
        let i = match at.get(instance) {
            Some(&i) => i,
            None => {
                at.insert(instance, out.len());
                out.push(InstanceCoverage {
                    instance: instance.to_owned(),
                    service: row.try_get(1).map_err(StoreError::pg)?,
                    environment: row.try_get(2).map_err(StoreError::pg)?,
                    flush_interval_ms: count(row, 3)?,
                    observed_until: Timestamp(row.try_get(4).map_err(StoreError::pg)?),
                    intervals: Vec::new(),
                });
                out.len() - 1
            }
        };
        if let (Some(iv), Some(c)) = (iv, out.get_mut(i)) {
            c.intervals.push(iv);
        }
    }
    canonical_coverage(&mut out);
    Ok(out)
}

pub(super) async fn observed_since(c: &Client) -> Result<Option<Timestamp>, StoreError> {
    let row = c
        .query_typed("SELECT MIN(start) FROM coverage", &[])
        .await
        .map_err(StoreError::pg)?;
    let v: Option<i64> = match row.first() {
        Some(r) => r.try_get(0).map_err(StoreError::pg)?,
        None => None,
    };
    Ok(v.map(Timestamp))
}

/// `(… OR …)`: `column` matches one of `patterns` (with `port_column`, a `host:port`
/// pattern also matches the port; without, only the name).
pub(super) fn host_condition(
    column: &str,
    port_column: Option<&str>,
    patterns: &[HostPattern],
    p: &mut Params,
) -> String {
    if patterns.is_empty() {
        return "FALSE".to_string();
    }
    let terms: Vec<String> = patterns
        .iter()
        .map(|pat| match pat {
            HostPattern::Host(h) => format!("{column} = {}", p.add(h.clone(), Type::TEXT)),
            HostPattern::HostPort(h, port) => {
                let a = p.add(h.clone(), Type::TEXT);
                match port_column {
                    Some(pc) => {
                        let b = p.add(i32::from(*port), Type::INT4);
                        format!("({column} = {a} AND {pc} = {b})")
                    }
                    None => format!("{column} = {a}"),
                }
            }
            HostPattern::Suffix(x) => {
                let a = p.add(x.clone(), Type::TEXT);
                let b = p.add(format!("%.{}", escape_like(x)), Type::TEXT);
                format!("{column} = {a} OR {column} LIKE {b} ESCAPE '\\'")
            }
        })
        .collect();
    format!("({})", terms.join(" OR "))
}

/// Lookups of names matching `f`, active since `f.since` (as SQLite's).
pub(super) async fn lookups(c: &Client, f: &ObsFilter) -> Result<Vec<LookupRow>, StoreError> {
    let mut p = Params::default();
    let mut sql = String::from(
        "SELECT service, environment, name, lookups, addresses, first_seen, last_seen
         FROM lookups WHERE TRUE",
    );
    if let Some(since) = f.since {
        sql.push_str(&format!(" AND last_seen >= {}", p.add(since.0, Type::INT8)));
    }
    if let Some(names) = &f.names {
        sql.push_str(" AND ");
        sql.push_str(&host_condition("name", None, names, &mut p));
    }
    sql.push_str(" ORDER BY name, service, environment");
    let rows = c
        .query_typed(&sql, &p.typed())
        .await
        .map_err(StoreError::pg)?;
    rows.iter()
        .map(|row| {
            let addresses: String = row.try_get(4).map_err(StoreError::pg)?;
            Ok(LookupRow {
                service: row.try_get(0).map_err(StoreError::pg)?,
                environment: row.try_get(1).map_err(StoreError::pg)?,
                name: row.try_get(2).map_err(StoreError::pg)?,
                lookups: count(row, 3)?,
                addresses: addresses.split_whitespace().map(String::from).collect(),
                first_seen: Timestamp(row.try_get(5).map_err(StoreError::pg)?),
                last_seen: Timestamp(row.try_get(6).map_err(StoreError::pg)?),
            })
        })
        .collect()
}

/// Bypass observations matching any part of `f` (a name, an address, a service), active
/// since `f.since` (as SQLite's).
pub(super) async fn bypass(c: &Client, f: &ObsFilter) -> Result<Vec<BypassRow>, StoreError> {
    let mut p = Params::default();
    let mut sql = String::from(
        "SELECT service, environment, address, port, name, connections, first_seen, last_seen
         FROM bypass WHERE TRUE",
    );
    if let Some(since) = f.since {
        sql.push_str(&format!(" AND last_seen >= {}", p.add(since.0, Type::INT8)));
    }
    let mut any: Vec<String> = Vec::new();
    if let Some(names) = &f.names {
        any.push(host_condition("name", Some("port"), names, &mut p));
    }
    // Addresses and services as arrays, not one term per value: a host with a thousand
    // callers must not make a statement of thousands of parameters to plan.
    if !f.addresses.is_empty() {
        let a = p.add(f.addresses.clone(), Type::TEXT_ARRAY);
        any.push(format!("address = ANY({a})"));
    }
    if !f.services.is_empty() {
        let (svcs, envs): (Vec<String>, Vec<String>) = f.services.iter().cloned().unzip();
        let a = p.add(svcs, Type::TEXT_ARRAY);
        let b = p.add(envs, Type::TEXT_ARRAY);
        any.push(format!(
            "(service, environment) IN (SELECT * FROM UNNEST({a}::text[], {b}::text[]))"
        ));
    }
    if f.names.is_some() || !f.addresses.is_empty() || !f.services.is_empty() {
        if any.is_empty() {
            any.push("FALSE".into());
        }
        sql.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    sql.push_str(" ORDER BY address, port, service, environment");
    let rows = c
        .query_typed(&sql, &p.typed())
        .await
        .map_err(StoreError::pg)?;
    rows.iter()
        .map(|row| {
            let port: i32 = row.try_get(3).map_err(StoreError::pg)?;
            Ok(BypassRow {
                service: row.try_get(0).map_err(StoreError::pg)?,
                environment: row.try_get(1).map_err(StoreError::pg)?,
                address: row.try_get(2).map_err(StoreError::pg)?,
                port: u16::try_from(port).unwrap_or(0),
                name: row.try_get(4).map_err(StoreError::pg)?,
                connections: count(row, 5)?,
                first_seen: Timestamp(row.try_get(6).map_err(StoreError::pg)?),
                last_seen: Timestamp(row.try_get(7).map_err(StoreError::pg)?),
            })
        })
        .collect()
}
