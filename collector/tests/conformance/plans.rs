//! PostgreSQL only: `check`'s reads whatever plan the server picks.
//!
//! * The window statement is prepared once per connection, so after its fifth run
//!   PostgreSQL may plan it once for every window (a generic plan, made without the
//!   parameters' values). That plan must still reach the bucket tables only through their
//!   indexes — a sequential scan of `edge_days` in it made every `check` with a 7-day
//!   window take 270 ms on the fleet benchmark's data — and answer exactly what a plan
//!   made for each window answers.
//! * The coverage statement's rows come back in the plan's order: with hash joins, an
//!   instance's intervals are scattered among the others' and must still be gathered.

use std::sync::Arc;

use whouses_collector::store::postgres::{edges_since_plan, generic_window_plan};
use whouses_collector::store::{EdgeFilter, Store};
use whouses_collector::targets::HostPattern;
use whouses_wire::Timestamp;

use crate::backend::Backend;
use crate::common::{report, DAY, HOUR};

/// A fleet's history, as the upkeep leaves it: 2,000 edges (every seventh to one busy
/// host), daily rows from 60 days ago to 15 days ago, hourly rows after that (for one
/// edge in ten), and the table statistics the planner works from. Returns "now".
async fn fleet_history(db: &crate::backend::TestDb) -> i64 {
    let now = Timestamp::now().0;
    let (today, this_hour) = (now.div_euclid(DAY), now.div_euclid(HOUR));
    db.execute(&format!(
        "INSERT INTO edges (host, port, scheme, service, environment, requests, connections,
                            first_seen, last_seen, stale_after)
         SELECT CASE WHEN i % 7 = 0 THEN 'hub.internal' ELSE 'h' || (i % 97) || '.internal' END,
                443, 'https', 's-' || i, 'prod', 60 * 10 + 14 * 24, 0,
                {first}, {now} - i, -9223372036854775808
         FROM generate_series(1, 2000) i;
         INSERT INTO edge_days (edge_id, day, requests, first_seen, last_seen, calls_before)
         SELECT e.id, d, 10, d * {DAY}, d * {DAY} + 1, (d - {first_day}) * 10
         FROM edges e, generate_series({first_day}::int8, {last_day}) d;
         INSERT INTO edge_hours (edge_id, hour, requests, first_seen, last_seen, calls_before)
         SELECT e.id, h, 1, h * {HOUR}, h * {HOUR} + 1, 460 + (h - {first_hour})
         FROM edges e, generate_series({first_hour}::int8, {this_hour}) h WHERE e.id % 10 = 0;
         ANALYZE;",
        first = (today - 60) * DAY,
        first_day = today - 60,
        last_day = today - 15,
        first_hour = (today - 14) * 24,
    ))
    .await;
    now
}

/// `callers` with `since` (`edges` summed from the buckets) of named hosts sums each
/// edge's own rows — an aggregate per edge inside the loop over the host's edges — never
/// a hash or parallel plan over the window's rows of every host: that took 390 ms for the
/// busiest host's 90 days on the fleet benchmark, 15 ms per edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_sums_of_named_hosts_are_summed_per_edge() {
    let test = "bucket_sums_of_named_hosts_are_summed_per_edge";
    let Some(db) = Backend::Postgres.fresh(test).await else {
        return;
    };
    let store = db.open().await;
    let now = fleet_history(&db).await;
    for hosts in [
        vec![HostPattern::Host("hub.internal".into())],
        vec![HostPattern::HostPort("hub.internal".into(), 443)],
        vec![HostPattern::Suffix("internal".into())],
    ] {
        for ago in [HOUR, DAY, 7 * DAY, 30 * DAY, 90 * DAY] {
            let f = EdgeFilter {
                hosts: Some(hosts.clone()),
                since: Some(Timestamp(now - ago)),
                ..Default::default()
            };
            let plan = edges_since_plan(&db.url, &f).await.unwrap();
            let per_edge = plan
                .lines()
                .any(|l| l.trim_start().starts_with("->  Aggregate"));
            assert!(
                per_edge && !plan.contains("Hash") && !plan.contains("Gather"),
                "{hosts:?}, {ago} ms ago: the buckets are not summed per edge:\n{plan}"
            );
        }
    }
    store.close().await;
    db.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_statements_generic_plan_reads_buckets_through_indexes() {
    let test = "the_window_statements_generic_plan_reads_buckets_through_indexes";
    let Some(db) = Backend::Postgres.fresh(test).await else {
        return;
    };
    let custom = db.open().await; // applies the migrations
    let now = fleet_history(&db).await;
    // Host filters of every shape, and none (the dashboard's whole fleet).
    let shapes = [
        Some(vec![HostPattern::Host("hub.internal".into())]),
        Some(vec![HostPattern::HostPort("hub.internal".into(), 443)]),
        Some(vec![HostPattern::Suffix("internal".into())]),
        Some(vec![
            HostPattern::Host("hub.internal".into()),
            HostPattern::Host("h1.internal".into()),
        ]),
        None,
    ];
    for hosts in &shapes {
        let plan = generic_window_plan(&db.url, hosts.as_deref(), Timestamp(now - 7 * DAY))
            .await
            .unwrap();
        for table in ["edge_days", "edge_hours"] {
            assert!(
                !plan.contains(&format!("Seq Scan on {table}")),
                "{hosts:?}: the generic plan scans all of {table}:\n{plan}"
            );
        }
    }
    // The same answers from generic plans (every connection opened from now on plans
    // that way) as from plans made for each window, seven runs each (past the five after
    // which PostgreSQL may switch on its own).
    db.execute(
        "DO $$ BEGIN
             EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_generic_plan',
                            current_database());
         END $$",
    )
    .await;
    let generic = db.open().await;
    let read = |store: &Arc<dyn Store>, hosts: &Option<Vec<HostPattern>>, since: Timestamp| {
        let (store, hosts) = (store.clone(), hosts.clone());
        async move {
            let v = match &hosts {
                Some(h) => store.window_calls(h, since).await,
                None => store.fleet_window_calls(since).await,
            };
            v.unwrap()
                .iter()
                .map(|w| (w.edge.host.clone(), w.edge.service.clone(), w.calls))
                .collect::<Vec<(String, String, u64)>>()
        }
    };
    for hosts in &shapes {
        for ago in [HOUR, DAY, 7 * DAY, 14 * DAY + 3 * HOUR, 30 * DAY, 90 * DAY] {
            let since = Timestamp(now - ago);
            let want = read(&custom, hosts, since).await;
            assert!(!want.is_empty(), "{hosts:?}");
            for run in 0..7 {
                let got = read(&generic, hosts, since).await;
                assert_eq!(got, want, "{hosts:?}, {ago} ms ago, run {run}");
            }
        }
    }
    custom.close().await;
    generic.close().await;
    db.remove().await;
}

/// The coverage statement's rows, gathered per instance whatever order the plan returns
/// them in: with only hash joins allowed (as PostgreSQL chooses for a host with a
/// thousand callers), an instance's intervals come back scattered among the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coverage_is_gathered_per_instance_from_rows_in_any_order() {
    let test = "coverage_is_gathered_per_instance_from_rows_in_any_order";
    let Some(db) = Backend::Postgres.fresh(test).await else {
        return;
    };
    db.execute(
        "DO $$ BEGIN
             EXECUTE format('ALTER DATABASE %I SET enable_nestloop = off', current_database());
             EXECUTE format('ALTER DATABASE %I SET enable_mergejoin = off', current_database());
         END $$",
    )
    .await;
    let store = db.open().await;
    let s = store.as_ref();
    let base = Timestamp::now().0.div_euclid(HOUR) * HOUR - 30 * HOUR;
    // Three instances of two services, taking turns hour by hour, each skipping every
    // third of its hours: each has several intervals, stored in the order they came.
    let instances = [("a", "a-1"), ("a", "a-2"), ("b", "b-1")];
    let mut want: Vec<(String, Vec<(i64, i64)>)> = Vec::new();
    for (k, (_, instance)) in instances.iter().enumerate() {
        let mut intervals: Vec<(i64, i64)> = Vec::new();
        for h in 0..24_i64 {
            if (h + k as i64) % 3 == 0 {
                continue;
            }
            let start = base + h * HOUR;
            match intervals.last_mut() {
                Some(last) if last.1 == start => last.1 = start + HOUR,
                _ => intervals.push((start, start + HOUR)),
            }
        }
        want.push((instance.to_string(), intervals));
    }
    for h in 0..24_i64 {
        for (k, (service, instance)) in instances.iter().enumerate() {
            if (h + k as i64) % 3 == 0 {
                continue;
            }
            let r = report(
                service,
                instance,
                h as u64 + 1,
                base + h * HOUR,
                &[("old.internal", 1)],
            );
            crate::common::ingest(s, r).await.unwrap();
        }
    }
    let got = s
        .callers_coverage(&[HostPattern::Host("old.internal".into())], Timestamp(0))
        .await
        .unwrap();
    let got: Vec<(String, Vec<(i64, i64)>)> = got
        .iter()
        .map(|c| {
            (
                c.instance.clone(),
                c.intervals.iter().map(|i| (i.start.0, i.end.0)).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);
    // And the rows did come back scattered: the plan hashed.
    let plan = db
        .client()
        .await
        .query(
            r#"EXPLAIN SELECT i.instance, c.start FROM instances i
               LEFT JOIN coverage c ON c.instance = i.instance AND c."end" >= 0
               WHERE (i.service, i.environment) IN (SELECT service, environment FROM edges)"#,
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("Hash"), "{plan}");
    store.close().await;
    db.remove().await;
}
