//! The SQLite read path: the queries behind every answer, on a read-only connection.

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, Row};
use whouses_wire::api::{BypassRow, EdgeRow, InstanceRow, LookupRow};
use whouses_wire::{Counts, Scheme, Timestamp};

use super::schema::sat_add;
use crate::store::buckets::{
    self, canonical_coverage, day_of, escape_like, hour_of, sum_rows, WindowRow, DAY_MS, HOUR_MS,
};
use crate::store::{EdgeFilter, InstanceCoverage, Interval, ObsFilter, StoreError, WindowCalls};
use crate::targets::HostPattern;

/// Where edge counts are read from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The edge's totals over all time.
    Totals,
    /// The edge's current hour bucket, if it is this hour or later.
    Current(i64),
    /// Sums of a bucket table (`table`, its time column) from this bucket on.
    Buckets(&'static str, &'static str, i64),
}

pub(super) fn edges(c: &Connection, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError> {
    let Some(since) = f.since else {
        return edge_rows(c, f, Source::Totals);
    };
    // A bucket is in exactly one of three places: the edge's current hour (in its own
    // row), the hourly buckets, or — older than --hourly-for — the daily ones. Sum all
    // three. A day bucket counts whole when `since` falls inside it: the answer errs
    // towards "still used", never the other way.
    let hour = hour_of(since);
    let current = edge_rows(c, f, Source::Current(hour))?;
    let hours = edge_rows(c, f, Source::Buckets("edge_hours", "hour", hour))?;
    let days = edge_rows(c, f, Source::Buckets("edge_days", "day", day_of(since)))?;
    Ok(sum_rows(sum_rows(current, hours), days))
}

/// Every edge of `hosts` (all of them: `None`) with its calls from `since` on: the edge's totals minus its first
/// bucket row's `calls_before` in the window — the same numbers `edges` with `since` sums
/// from every bucket. Per edge active in the window: one probe of the day index for its
/// row of `since`'s own day (migration 0010), and only without one a primary-key seek
/// for its next daily row; one seek for its first hourly row unless that daily row is
/// `since`'s own day; and, only when `since` falls inside a day with a daily row and
/// hourly rows of that day before `since` exist at all, one for those. Edges a late batch left stale are summed
/// the long way. One read transaction: every step sees the same data.
pub(super) fn window_calls(
    c: &Connection,
    hosts: Option<&[HostPattern]>,
    since: Timestamp,
) -> Result<Vec<WindowCalls>, StoreError> {
    let (hour, day) = (hour_of(since), day_of(since));
    let tx = c.unchecked_transaction()?;
    let mut args = vec![
        Value::Integer(hour),
        Value::Integer(day),
        Value::Integer(day.saturating_mul(DAY_MS)),
    ];
    let hosts_match = match hosts {
        Some(hosts) => host_condition("e.host", Some("e.port"), hosts, &mut args),
        None => "1 = 1".to_string(),
    };
    // No daily row from `since`'s day on anywhere (nothing folded that recent, or at all
    // yet): one look at the day index, instead of one per edge.
    let any_days: bool = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM edge_days WHERE day >= ?1)")?
        .query_row([day], |r| r.get(0))?;
    // The row of `since`'s own day, when the edge has one (every edge called that day),
    // joined through the day index: one day's rows lie together there, and it carries
    // `calls_before`. Only an edge without one seeks its next row through the primary
    // key, one scattered page per edge; that row comes back as "DAY CALLS_BEFORE" (-1:
    // not known), so one seek gives both.
    let (day_join, first_day) = if any_days {
        (
            "LEFT JOIN edge_days d INDEXED BY edge_days_by_day
                  ON d.day = ?2 AND d.edge_id = e.id AND e.last_seen >= ?3",
            "d.edge_id IS NOT NULL, d.calls_before,
             CASE WHEN d.edge_id IS NULL AND e.last_seen >= ?3 THEN
                 (SELECT day || ' ' || IFNULL(calls_before, -1) FROM edge_days
                  WHERE edge_id = e.id AND day > ?2 ORDER BY day LIMIT 1) END",
        )
    } else {
        // Naming ?2 and ?3 still: the parameters after them are numbered.
        ("", "?2 IS NULL AND ?3 IS NULL, NULL, NULL")
    };
    // The first hourly row is looked up afterwards, only where the first daily row does
    // not settle it.
    let sql = format!(
        "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.requests, e.connections,
                e.errors, e.bytes_sent, e.bytes_received, e.first_seen, e.last_seen,
                e.id, e.cur_hour, {cur_calls}, e.stale_after, {first_day}
         FROM edges e {day_join}
         WHERE {hosts_match}
         ORDER BY e.host, e.port, e.scheme, e.service, e.environment",
        cur_calls = sat_add!("e.cur_requests", "e.cur_connections"),
    );
    let mut rows: Vec<(WindowCalls, i64, WindowRow)> = Vec::new();
    {
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut q = stmt.query(params_from_iter(args))?;
        while let Some(row) = q.next()? {
            let edge = edge_row(row)?;
            let w = WindowRow {
                requests: edge.counts.requests,
                connections: edge.counts.connections,
                cur_hour: row.get(13)?,
                cur_calls: count(row, 14)?,
                stale_after: row.get(15)?,
                first_day: if row.get(16)? {
                    let before: Option<i64> = row.get(17)?;
                    Some((day, before.and_then(|b| u64::try_from(b).ok())))
                } else {
                    first_row(row.get(18)?)
                },
                first_hour: None,
                day_hours_before: 0,
            };
            rows.push((WindowCalls { edge, calls: 0 }, row.get(12)?, w));
        }
    }
    // The first hourly row at or after `since`, for edges active since its hour whose
    // first daily row is not `since`'s own day (that one would come first).
    let since_ms = hour.saturating_mul(HOUR_MS);
    let want_hour: Vec<i64> = rows
        .iter()
        .filter(|(wc, _, w)| {
            wc.edge.counts.last_seen.0 >= since_ms && w.first_day.is_none_or(|(d, _)| d != day)
        })
        .map(|(_, id, _)| *id)
        .collect();
    if !want_hour.is_empty() {
        let ids = serde_json::to_string(&want_hour).unwrap_or_default();
        let mut stmt = tx.prepare_cached(
            "SELECT j.value, (SELECT hour || ' ' || IFNULL(calls_before, -1) FROM edge_hours
                              WHERE edge_id = j.value AND hour >= ?2 ORDER BY hour LIMIT 1)
             FROM json_each(?1) j",
        )?;
        let firsts: std::collections::HashMap<i64, (i64, Option<u64>)> = stmt
            .query_map(rusqlite::params![ids, hour], |r| {
                Ok((r.get::<_, i64>(0)?, first_row(r.get(1)?)))
            })?
            .filter_map(|r| match r {
                Ok((id, Some(f))) => Some(Ok((id, f))),
                Ok((_, None)) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;
        for (_, id, w) in &mut rows {
            w.first_hour = firsts.get(id).copied();
        }
    }
    // `since` inside a day with a daily row: that day's hourly rows before `since` (late
    // ones, or the day is not folded yet) are not in the window.
    let inside: Vec<i64> = rows
        .iter()
        .filter(|(_, _, w)| buckets::needs_day_hours(w, since))
        .map(|(_, id, _)| *id)
        .collect();
    // Usually no hourly row at all lies in that stretch (the day is folded): one look at
    // the hour index says so, instead of one per edge.
    let any_inside = !inside.is_empty()
        && tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM edge_hours WHERE hour >= ?1 AND hour < ?2)",
            )?
            .query_row(rusqlite::params![day.saturating_mul(24), hour], |r| {
                r.get::<_, bool>(0)
            })?;
    if any_inside {
        let ids = serde_json::to_string(&inside).unwrap_or_default();
        let mut stmt = tx.prepare_cached(concat!(
            "SELECT edge_id, sat_sum(",
            sat_add!("requests", "connections"),
            ") FROM edge_hours
             WHERE edge_id IN (SELECT value FROM json_each(?1)) AND hour >= ?2 AND hour < ?3
             GROUP BY edge_id"
        ))?;
        let sums: std::collections::HashMap<i64, u64> = stmt
            .query_map(rusqlite::params![ids, day.saturating_mul(24), hour], |r| {
                Ok((r.get(0)?, count(r, 1)?))
            })?
            .collect::<Result<_, _>>()?;
        for (_, id, w) in &mut rows {
            w.day_hours_before = sums.get(id).copied().unwrap_or(0);
        }
    }
    let mut stale = false;
    let mut out: Vec<WindowCalls> = rows
        .into_iter()
        .map(|(mut wc, _, w)| {
            wc.calls = buckets::window_calls(&w, since).unwrap_or_else(|| {
                stale = true;
                buckets::STALE
            });
            wc
        })
        .collect();
    if stale {
        let summed = edges(&tx, &buckets::stale_hosts(&out, since))?;
        buckets::fill_stale(&mut out, &summed);
    }
    tx.finish()?;
    Ok(out)
}

/// A first bucket row as the window query packs it: "KEY CALLS_BEFORE", -1 when not known.
fn first_row(packed: Option<String>) -> Option<(i64, Option<u64>)> {
    let packed = packed?;
    let (key, before) = packed.split_once(' ')?;
    let before: i64 = before.parse().ok()?;
    Some((key.parse().ok()?, u64::try_from(before).ok()))
}

/// Edge rows of one source, sorted by host, port, scheme, service, environment.
fn edge_rows(c: &Connection, f: &EdgeFilter, source: Source) -> Result<Vec<EdgeRow>, StoreError> {
    let (sql, args) = edge_rows_statement(f, source);
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), edge_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// [`edge_rows`]'s statement and its parameters.
fn edge_rows_statement(f: &EdgeFilter, source: Source) -> (String, Vec<Value>) {
    let mut args: Vec<Value> = Vec::new();
    let mut sql = match source {
        Source::Totals => String::from(
            "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.requests,
                    e.connections, e.errors, e.bytes_sent, e.bytes_received, e.first_seen,
                    e.last_seen
             FROM edges e WHERE 1 = 1",
        ),
        Source::Current(from) => {
            args.push(Value::Integer(from));
            String::from(
                "SELECT e.service, e.environment, e.host, e.port, e.scheme, e.cur_requests,
                        e.cur_connections, e.cur_errors, e.cur_bytes_sent,
                        e.cur_bytes_received, e.cur_first_seen, e.cur_last_seen
                 FROM edges e WHERE e.cur_hour >= ?1",
            )
        }
        Source::Buckets(table, column, from) => {
            args.push(Value::Integer(from));
            let join = bucket_join(f);
            format!(
                "SELECT e.service, e.environment, e.host, e.port, e.scheme,
                        sat_sum(h.requests), sat_sum(h.connections), sat_sum(h.errors),
                        sat_sum(h.bytes_sent), sat_sum(h.bytes_received), MIN(h.first_seen),
                        MAX(h.last_seen)
                 FROM edges e {join} {table} h ON h.edge_id = e.id
                 WHERE h.{column} >= ?1"
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
    if matches!(source, Source::Buckets(..)) {
        sql.push_str(" GROUP BY e.id");
    }
    sql.push_str(" ORDER BY e.host, e.port, e.scheme, e.service, e.environment");
    (sql, args)
}

/// How `edges e` joins a bucket table for `f`. Hosts named: the edges first, then each
/// one's bucket rows (a short range of the primary key), which SQLite's `CROSS JOIN`
/// keeps. For a `*.suffix` (no index serves a `LIKE '%…'`) the planner otherwise started
/// from the bucket table's time index and read every row of the window, the whole
/// fleet's: 1.6 s for a 30-day `callers` of ten hosts on the fleet benchmark's data, 14
/// ms this way. Without hosts, starting from the window's rows is the better plan, and
/// the planner keeps its choice.
pub(super) fn bucket_join(f: &EdgeFilter) -> &'static str {
    if f.hosts.is_some() {
        "CROSS JOIN"
    } else {
        "JOIN"
    }
}

/// Push a parameter; returns its placeholder (`?n`).
pub(super) fn arg(args: &mut Vec<Value>, v: Value) -> String {
    args.push(v);
    format!("?{}", args.len())
}

/// `(… OR …)`: `column` matches one of `patterns` (with `port_column`, a `host:port`
/// pattern also matches the port; without, only the name). Never a constant-false first
/// term (`0 = 1 OR …`): it stops SQLite from using the index, and every lookup becomes a
/// scan.
pub(super) fn host_condition(
    column: &str,
    port_column: Option<&str>,
    patterns: &[HostPattern],
    args: &mut Vec<Value>,
) -> String {
    if patterns.is_empty() {
        return "0 = 1".to_string();
    }
    let terms: Vec<String> = patterns
        .iter()
        .map(|p| match p {
            HostPattern::Host(h) => format!("{column} = {}", arg(args, Value::Text(h.clone()))),
            HostPattern::HostPort(h, port) => {
                let a = arg(args, Value::Text(h.clone()));
                match port_column {
                    Some(pc) => {
                        let b = arg(args, Value::Integer(i64::from(*port)));
                        format!("({column} = {a} AND {pc} = {b})")
                    }
                    None => format!("{column} = {a}"),
                }
            }
            HostPattern::Suffix(s) => {
                let a = arg(args, Value::Text(s.clone()));
                let b = arg(args, Value::Text(format!("%.{}", escape_like(s))));
                format!("{column} = {a} OR {column} LIKE {b} ESCAPE '\\'")
            }
        })
        .collect();
    format!("({})", terms.join(" OR "))
}

/// Lookups of names matching `f`, active since `f.since`.
pub(super) fn lookups(c: &Connection, f: &ObsFilter) -> Result<Vec<LookupRow>, StoreError> {
    let mut args = Vec::new();
    let mut sql = String::from(
        "SELECT service, environment, name, lookups, addresses, first_seen, last_seen
         FROM lookups WHERE 1 = 1",
    );
    if let Some(since) = f.since {
        sql.push_str(&format!(
            " AND last_seen >= {}",
            arg(&mut args, Value::Integer(since.0))
        ));
    }
    if let Some(names) = &f.names {
        sql.push_str(" AND ");
        sql.push_str(&host_condition("name", None, names, &mut args));
    }
    sql.push_str(" ORDER BY name, service, environment");
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        let addresses: String = row.get(4)?;
        Ok(LookupRow {
            service: row.get(0)?,
            environment: row.get(1)?,
            name: row.get(2)?,
            lookups: count(row, 3)?,
            addresses: addresses.split_whitespace().map(String::from).collect(),
            first_seen: Timestamp(row.get(5)?),
            last_seen: Timestamp(row.get(6)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Bypass observations matching any part of `f` (a name, an address, a service), active
/// since `f.since`.
pub(super) fn bypass(c: &Connection, f: &ObsFilter) -> Result<Vec<BypassRow>, StoreError> {
    // Most fleets have no bypass at all: do not build the filter's lists for nothing.
    let any_row: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM bypass)")?
        .query_row([], |r| r.get(0))?;
    if !any_row {
        return Ok(Vec::new());
    }
    let mut args = Vec::new();
    let mut sql = String::from(
        "SELECT service, environment, address, port, name, connections, first_seen, last_seen
         FROM bypass WHERE 1 = 1",
    );
    if let Some(since) = f.since {
        sql.push_str(&format!(
            " AND last_seen >= {}",
            arg(&mut args, Value::Integer(since.0))
        ));
    }
    let mut any: Vec<String> = Vec::new();
    if let Some(names) = &f.names {
        any.push(host_condition("name", Some("port"), names, &mut args));
    }
    // Addresses and services as one JSON parameter each, not one term per value: a host
    // with a thousand callers would make an OR chain deeper than SQLite's expression-tree
    // limit (1,000) and more parameters than it allows.
    if !f.addresses.is_empty() {
        let list = serde_json::to_string(&f.addresses).unwrap_or_default();
        let a = arg(&mut args, Value::Text(list));
        any.push(format!("address IN (SELECT value FROM json_each({a}))"));
    }
    if !f.services.is_empty() {
        let list = serde_json::to_string(&f.services).unwrap_or_default();
        let a = arg(&mut args, Value::Text(list));
        any.push(format!(
            "(service, environment) IN (SELECT value ->> 0, value ->> 1 FROM json_each({a}))"
        ));
    }
    if f.names.is_some() || !f.addresses.is_empty() || !f.services.is_empty() {
        if any.is_empty() {
            any.push("0 = 1".into());
        }
        sql.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    sql.push_str(" ORDER BY address, port, service, environment");
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| {
        Ok(BypassRow {
            service: row.get(0)?,
            environment: row.get(1)?,
            address: row.get(2)?,
            port: u16::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
            name: row.get(4)?,
            connections: count(row, 5)?,
            first_seen: Timestamp(row.get(6)?),
            last_seen: Timestamp(row.get(7)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A stored count as `u64` (never negative; a value SQLite turned into a REAL by an
/// overflow elsewhere reads as the maximum instead of failing the query).
pub(super) fn count(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    match row.get_ref(i)? {
        rusqlite::types::ValueRef::Integer(v) => Ok(v.max(0) as u64),
        rusqlite::types::ValueRef::Real(v) if v > 0.0 => Ok(whouses_wire::MAX_COUNT),
        _ => Ok(0),
    }
}

pub(super) fn edge_row(row: &Row<'_>) -> rusqlite::Result<EdgeRow> {
    let scheme: String = row.get(4)?;
    Ok(EdgeRow {
        service: row.get(0)?,
        environment: row.get(1)?,
        host: row.get(2)?,
        port: u16::try_from(row.get::<_, i64>(3)?).unwrap_or(0),
        // Only the three schemes are ever written; anything else reads as opaque TCP.
        scheme: scheme.parse().unwrap_or(Scheme::Tcp),
        counts: Counts {
            requests: count(row, 5)?,
            connections: count(row, 6)?,
            errors: count(row, 7)?,
            bytes_sent: count(row, 8)?,
            bytes_received: count(row, 9)?,
            first_seen: Timestamp(row.get(10)?),
            last_seen: Timestamp(row.get(11)?),
        },
    })
}

pub(super) fn instances(c: &Connection) -> Result<Vec<InstanceRow>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT instance, service, environment, first_report, last_report, observed_until,
                last_seq, started_at, flush_interval_ms, reports
         FROM instances ORDER BY service, environment, instance",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok(InstanceRow {
            instance: row.get(0)?,
            service: row.get(1)?,
            environment: row.get(2)?,
            first_report: Timestamp(row.get(3)?),
            last_report: Timestamp(row.get(4)?),
            observed_until: Timestamp(row.get(5)?),
            last_seq: count(row, 6)?,
            started_at: Timestamp(row.get(7)?),
            flush_interval_ms: count(row, 8)?,
            reports: count(row, 9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn coverage(
    c: &Connection,
    services: &[(String, String)],
    after: Timestamp,
) -> Result<Vec<InstanceCoverage>, StoreError> {
    if services.is_empty() {
        return Ok(Vec::new());
    }
    // The services as one JSON parameter (one cached statement, whatever their number: a
    // popular host has a thousand callers), an array of pairs: two arrays joined on their
    // position would be a join without an index, quadratic in the callers.
    let wanted = serde_json::to_string(services).unwrap_or_default();
    let mut stmt = c.prepare_cached(&coverage_sql(
        "SELECT value ->> 0, value ->> 1 FROM json_each(?2)",
    ))?;
    let rows = coverage_rows(stmt.query(rusqlite::params![after.0, wanted])?)?;
    Ok(rows)
}

/// [`coverage`] of every service that ever called these hosts, the services found in
/// the same statement (a host with a thousand callers: no second read of its edges, no
/// list of them sent back).
pub(super) fn callers_coverage(
    c: &Connection,
    hosts: &[HostPattern],
    after: Timestamp,
) -> Result<Vec<InstanceCoverage>, StoreError> {
    let mut args = vec![Value::Integer(after.0)];
    let hosts_match = host_condition("e.host", Some("e.port"), hosts, &mut args);
    let mut stmt = c.prepare_cached(&coverage_sql(&format!(
        "SELECT e.service, e.environment FROM edges e WHERE {hosts_match}"
    )))?;
    let rows = coverage_rows(stmt.query(params_from_iter(args))?)?;
    Ok(rows)
}

/// The coverage statement over the `(service, environment)` pairs `wanted` selects (a
/// pair may come more than once: `IN` takes each once, without a sort); ?1 is the time
/// intervals must end at or after. Unsorted: [`canonical_coverage`] orders the rows.
fn coverage_sql(wanted: &str) -> String {
    format!(
        r#"SELECT i.instance, i.service, i.environment, i.flush_interval_ms,
                  i.observed_until, c.start, c."end"
           FROM instances i
           LEFT JOIN coverage c ON c.instance = i.instance AND c."end" >= ?1
           WHERE (i.service, i.environment) IN ({wanted})"#
    )
}

/// Gather [`coverage_sql`]'s rows into one entry per instance.
fn coverage_rows(mut rows: rusqlite::Rows<'_>) -> Result<Vec<InstanceCoverage>, StoreError> {
    let mut out: Vec<InstanceCoverage> = Vec::new();
    while let Some(row) = rows.next()? {
        let iv = match row.get::<_, Option<i64>>(5)? {
            Some(start) => Some(Interval {
                start: Timestamp(start),
                end: Timestamp(row.get(6)?),
            }),
            None => None,
        };
        // An instance's rows come together (the plan walks the instances, then each
        // one's intervals): compare the name in place, copy it once per instance.
        let instance = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        match out.last_mut() {
            Some(c) if c.instance == instance => c.intervals.extend(iv),
            _ => out.push(InstanceCoverage {
                instance: instance.to_owned(),
                service: row.get(1)?,
                environment: row.get(2)?,
                flush_interval_ms: count(row, 3)?,
                observed_until: Timestamp(row.get(4)?),
                intervals: iv.into_iter().collect(),
            }),
        }
    }
    canonical_coverage(&mut out);
    Ok(out)
}

pub(super) fn observed_since(c: &Connection) -> Result<Option<Timestamp>, StoreError> {
    // The earliest moment any sidecar proved it was observing from.
    let v: Option<i64> = c.query_row("SELECT MIN(start) FROM coverage", [], |r| r.get(0))?;
    Ok(v.map(Timestamp))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::sqlite::schema::open_writer;

    /// The tables each loop of `sql`'s plan reads, outermost first (`EXPLAIN QUERY PLAN`
    /// of the SQLite the collector links, on a database without statistics, as the
    /// collector's own are).
    pub(in crate::store::sqlite) fn plan(c: &Connection, sql: &str, args: &[Value]) -> Vec<String> {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows = stmt
            .query_map(params_from_iter(args.iter()), |r| r.get::<_, String>(3))
            .unwrap();
        rows.map(|r| r.unwrap())
            .filter(|d| d.starts_with("SCAN") || d.starts_with("SEARCH"))
            .collect()
    }

    /// The plan's outermost loop reads `edges e`.
    pub(in crate::store::sqlite) fn starts_from_edges(plan: &[String], what: &str) {
        assert!(
            plan.first()
                .is_some_and(|p| p.ends_with(" e") || p.contains(" e USING")),
            "{what}: {plan:?}"
        );
    }

    /// Every host pattern, alone and mixed.
    pub(in crate::store::sqlite) fn host_filters() -> Vec<EdgeFilter> {
        let host = || HostPattern::Host("api.internal".into());
        let suffix = || HostPattern::Suffix("ns-0.svc.cluster.local".into());
        [
            vec![host()],
            vec![HostPattern::HostPort("api.internal".into(), 443)],
            vec![suffix()],
            vec![host(), suffix()],
        ]
        .into_iter()
        .map(|hosts| EdgeFilter {
            hosts: Some(hosts),
            ..Default::default()
        })
        .collect()
    }

    /// With hosts named, bucket sums start from those hosts' edges, whatever the pattern:
    /// from the bucket tables' time index, a `*.suffix` read every row of the window.
    #[test]
    fn bucket_sums_of_named_hosts_start_from_their_edges() {
        let dir = tempfile::tempdir().unwrap();
        let c = open_writer(&dir.path().join("w.db")).unwrap();
        for f in host_filters() {
            for source in [
                Source::Buckets("edge_hours", "hour", 1),
                Source::Buckets("edge_days", "day", 1),
            ] {
                let (sql, args) = edge_rows_statement(&f, source);
                starts_from_edges(&plan(&c, &sql, &args), &format!("{:?} {source:?}", f.hosts));
            }
        }
    }
}
