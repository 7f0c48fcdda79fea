//! Ingest rules every backend keeps: an instance is bound to its service (a batch
//! claiming it for another is refused with a conflict, the API's 409, and changes
//! nothing); counters saturate at the largest count instead of overflowing, through
//! `edges()` with and without `since` and after a fold; the same batch delivered by 8
//! tasks at once is stored exactly once (on PostgreSQL through two stores on one database,
//! as two replicas); and PostgreSQL's migrations are applied once when replicas start
//! together.

use std::sync::Arc;

use whouses_collector::api::error::ApiError;
use whouses_collector::store::{Ingested, Store, StoreError};
use whouses_wire::{Timestamp, MAX_COUNT};

use crate::backend::{Backend, TestDb};
use crate::common::{day_start, ingest, report, requests, rows, DAY, HOUR};

crate::conformance!(
    lookups_and_bypass_are_kept_per_key,
    an_instance_stays_with_its_service,
    counters_saturate_instead_of_overflowing,
    the_same_batch_from_eight_tasks_is_stored_once,
    many_batches_from_many_tasks_are_each_stored_once,
);

async fn an_instance_stays_with_its_service(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let h = (Timestamp::now().0 - 3 * HOUR).div_euclid(HOUR) * HOUR;
    ingest(s, report("billing", "pod-1", 1, h, &[("db.internal", 5)]))
        .await
        .unwrap();
    // Another service claims the instance: refused, nothing stored.
    let err = ingest(
        s,
        report("intruder", "pod-1", 2, h, &[("db.internal", 1000)]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert!(err.to_string().contains("billing"), "{err}");
    assert_eq!(ApiError::from(err).status().as_u16(), 409);
    // The same service in another environment: refused too.
    let mut r = report("billing", "pod-1", 3, h, &[("db.internal", 1000)]);
    r.environment = "stage".into();
    assert!(matches!(
        ingest(s, r).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    // The refused seq was not used up: the real owner's batch 2 is stored.
    assert_eq!(
        ingest(s, report("billing", "pod-1", 2, h, &[("db.internal", 7)]))
            .await
            .unwrap(),
        Ingested::Stored { edges: 1 }
    );
    let all = rows(&store, None).await;
    assert_eq!(requests(&all, "db.internal"), 12);
    assert!(all.iter().all(|r| r.service == "billing"));
    let instances = s.instances().await.unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].service, "billing");
    assert_eq!(instances[0].reports, 2);
    store.close().await;
}

async fn counters_saturate_instead_of_overflowing(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let d = day_start(40);
    let max = MAX_COUNT;
    // Two batches of the largest count in one hour (the current bucket adds), one in the
    // next hour (the first hour moves to the hourly table), one the hour after (so does
    // the second): every bucket and the totals hit the ceiling.
    for (seq, hour) in [(1, 1), (2, 1), (3, 2), (4, 3)] {
        let mut r = report(
            "big",
            "big-1",
            seq,
            d + hour * HOUR,
            &[("huge.internal", 0)],
        );
        let c = &mut r.edges[0].counts;
        c.requests = max;
        c.connections = max;
        c.errors = max;
        c.bytes_sent = max;
        c.bytes_received = max;
        ingest(s, r).await.unwrap();
    }
    let check = |rows: Vec<whouses_wire::api::EdgeRow>, what: &str| {
        assert_eq!(rows.len(), 1, "{what}");
        let c = &rows[0].counts;
        for (name, v) in c.fields() {
            assert_eq!(v, max, "{what}: {name}");
        }
    };
    check(rows(&store, None).await, "totals");
    check(rows(&store, Some(d)).await, "since, hourly");
    check(
        rows(&store, Some(d + 2 * HOUR)).await,
        "since, current hour",
    );
    store.rollup(Timestamp(d + DAY)).await.unwrap();
    check(rows(&store, Some(d)).await, "since, after the fold");
    check(rows(&store, None).await, "totals, after the fold");
    store.close().await;
}

/// Stores on the database: two on PostgreSQL (two replicas), one on SQLite.
async fn replicas(db: &TestDb) -> Vec<Arc<dyn Store>> {
    match db.backend {
        Backend::Sqlite => vec![db.open().await],
        Backend::Postgres => vec![db.open().await, db.open().await],
    }
}

async fn the_same_batch_from_eight_tasks_is_stored_once(db: &TestDb) {
    let stores = replicas(db).await;
    let h = (Timestamp::now().0 - HOUR).div_euclid(HOUR) * HOUR;
    for seq in 1..=5u64 {
        let batch = report(
            "web",
            "web-1",
            seq,
            h,
            &[("a.internal", 3), ("b.internal", 4)],
        );
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % stores.len()].clone();
                let batch = batch.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    ingest(store.as_ref(), batch).await.unwrap()
                })
            })
            .collect();
        let mut stored = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ingested::Stored { edges } => {
                    assert_eq!(edges, 2);
                    stored += 1;
                }
                Ingested::Duplicate => {}
            }
        }
        assert_eq!(stored, 1, "batch {seq} stored once");
    }
    let all = rows(&stores[0], None).await;
    assert_eq!(requests(&all, "a.internal"), 15);
    assert_eq!(requests(&all, "b.internal"), 20);
    let inst = stores[0].instances().await.unwrap();
    assert_eq!(inst[0].reports, 5);
    for s in stores {
        s.close().await;
    }
}

async fn many_batches_from_many_tasks_are_each_stored_once(db: &TestDb) {
    // 8 tasks each deliver every batch of 6 instances (overlapping edges, new edges
    // appearing mid-stream, two hours), in different orders, all at once.
    let stores = replicas(db).await;
    let h = (Timestamp::now().0 - 2 * HOUR).div_euclid(HOUR) * HOUR;
    let mut batches = Vec::new();
    for inst in 0..6u64 {
        for seq in 1..=10u64 {
            let hour = h + if seq > 5 { HOUR } else { 0 };
            let hosts = [
                format!("shared-{}.internal", seq % 3),
                format!("own-{inst}-{seq}.internal"),
            ];
            let r = report(
                &format!("svc-{}", inst % 3),
                &format!("svc-{inst}"),
                seq,
                hour,
                &[(hosts[0].as_str(), seq), (hosts[1].as_str(), 1)],
            );
            batches.push(r);
        }
    }
    let tasks: Vec<_> = (0..8usize)
        .map(|t| {
            let store = stores[t % stores.len()].clone();
            let mut mine = batches.clone();
            mine.rotate_left(t * 7 % batches.len());
            if t % 2 == 1 {
                mine.reverse();
            }
            tokio::spawn(async move {
                let mut stored = 0;
                for r in mine {
                    if let Ingested::Stored { .. } = ingest(store.as_ref(), r).await.unwrap() {
                        stored += 1;
                    }
                }
                stored
            })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, batches.len());
    let all = rows(&stores[0], None).await;
    let want: u64 = batches
        .iter()
        .flat_map(|r| r.edges.iter().map(|e| e.counts.requests))
        .sum();
    assert_eq!(all.iter().map(|r| r.counts.requests).sum::<u64>(), want);
    let since = rows(&stores[0], Some(h)).await;
    assert_eq!(since, all, "a window over everything sums to the totals");
    for s in stores {
        s.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_migrations_apply_once_when_replicas_start_together() {
    let Some(db) = Backend::Postgres.fresh("migrations").await else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { whouses_collector::store::open(&url).await.unwrap() })
        })
        .collect();
    let mut stores = Vec::new();
    for o in opens {
        stores.push(o.await.unwrap());
    }
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT version, COUNT(*) FROM whouses_migrations GROUP BY version",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        assert_eq!(
            r.get::<_, i64>(1),
            1,
            "version {} applied once",
            r.get::<_, i32>(0)
        );
    }
    for s in &stores {
        s.ready().await.unwrap();
        s.close().await;
    }
    db.remove().await;
}

#[tokio::test]
async fn an_in_memory_sqlite_database_is_refused_with_a_reason() {
    let err = whouses_collector::store::open("sqlite::memory:")
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("in-memory"), "{err}");
}

#[tokio::test]
async fn an_unreachable_postgres_says_where_without_the_password() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://whouses:s3cret-pw@127.0.0.1:{port}/whouses?connect_timeout=2");
    let err = whouses_collector::store::open(&url).await.err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1"), "{msg}");
    assert!(!msg.contains("s3cret-pw"), "{msg}");
}

async fn lookups_and_bypass_are_kept_per_key(db: &TestDb) {
    use whouses_collector::store::ObsFilter;
    use whouses_collector::targets::HostPattern;
    use whouses_wire::report::{Bypass, Lookup};
    let store = db.open().await;
    let s = store.as_ref();
    let h = (Timestamp::now().0 - 3 * HOUR).div_euclid(HOUR) * HOUR;
    let lookup = |name: &str, n: u64, at: i64, addrs: &[&str]| Lookup {
        name: name.into(),
        lookups: n,
        addresses: addrs.iter().map(|a| a.to_string()).collect(),
        first_seen: Timestamp(at),
        last_seen: Timestamp(at + 1_000),
    };
    let bypass = |addr: &str, n: u64, at: i64, name: Option<&str>| Bypass {
        address: addr.into(),
        port: 443,
        name: name.map(String::from),
        connections: n,
        first_seen: Timestamp(at),
        last_seen: Timestamp(at + 1_000),
    };
    let mut r1 = report("app", "app-1", 1, h, &[]);
    r1.lookups = vec![lookup("old.internal", 3, h + 10_000, &["10.0.0.1"])];
    r1.bypass = vec![bypass("10.0.0.9", 2, h + 10_000, None)];
    let mut r2 = report("app", "app-1", 2, h, &[]);
    r2.lookups = vec![
        lookup("old.internal", 4, h + 20_000, &["10.0.0.2"]),
        lookup("new.internal", 1, h + 20_000, &[]),
    ];
    r2.bypass = vec![bypass(
        "10.0.0.9",
        MAX_COUNT,
        h + 20_000,
        Some("old.internal"),
    )];
    // An older answer arriving late does not replace the newer addresses.
    let mut r3 = report("app", "app-1", 3, h, &[]);
    r3.lookups = vec![lookup("old.internal", 1, h + 5_000, &["10.0.0.3"])];
    r3.bypass = vec![bypass("10.0.0.9", 5, h + 5_000, None)];
    for r in [r1, r2.clone(), r3, r2] {
        ingest(s, r).await.unwrap();
    }
    let all = s.lookups(&ObsFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].name, "new.internal");
    let old = &all[1];
    assert_eq!(old.lookups, 8);
    assert_eq!(old.addresses, vec!["10.0.0.2".to_string()]);
    assert_eq!(old.first_seen, Timestamp(h + 5_000));
    assert_eq!(old.last_seen, Timestamp(h + 21_000));
    let named = s
        .lookups(&ObsFilter {
            names: Some(vec![HostPattern::Suffix("internal".into())]),
            since: Some(Timestamp(h + 15_000)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(named.len(), 2);
    let by = s
        .bypass(&ObsFilter {
            names: Some(vec![HostPattern::HostPort("old.internal".into(), 443)]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by.len(), 1);
    assert_eq!(by[0].connections, MAX_COUNT, "saturates");
    assert_eq!(by[0].name.as_deref(), Some("old.internal"));
    let by_addr = s
        .bypass(&ObsFilter {
            addresses: vec!["10.0.0.9".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_addr, by);
    let none = s
        .bypass(&ObsFilter {
            services: vec![("other".into(), "prod".into())],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
    // By the calling service, among many others (one parameter per column, joined by
    // position: a pair must match as a pair).
    let mut services: Vec<(String, String)> = (0..2_000)
        .map(|i| (format!("svc-{i}"), "prod".to_string()))
        .collect();
    services.push((by[0].service.clone(), "staging".into()));
    let wrong_env = s
        .bypass(&ObsFilter {
            services: services.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(wrong_env.is_empty(), "{wrong_env:?}");
    services.push((by[0].service.clone(), by[0].environment.clone()));
    let by_service = s
        .bypass(&ObsFilter {
            services,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_service, by);
    store.close().await;
}
