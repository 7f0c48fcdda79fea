//! OTLP ingest's storage (issue 17) on every backend: the `otel_series` rows advance
//! only by compare-and-set (a writer that read a stale row changes nothing), are marked
//! stored, and are pruned; and service-graph points counted through
//! `otel::ingest::ingest` become exact `otel` edges — a repeated export counts once, a
//! counter that went down or a new start time (a restart) counts from zero, and the same
//! export delivered by 8 tasks at once (on PostgreSQL through two stores, as two
//! replicas) is counted once; and one replica at a time holds the OTLP export lease.

use std::sync::Arc;

use whouses_collector::otel::decode::Point;
use whouses_collector::otel::ingest::{ingest, series_key};
use whouses_collector::store::otel::{OtelAdvance, OtelField, OtelSeries};
use whouses_collector::store::{EdgeFilter, Store};
use whouses_wire::{Scheme, Timestamp};

use crate::backend::{Backend, TestDb};

crate::conformance!(
    otel_series_advance_by_compare_and_set,
    otel_points_count_exactly_once,
    one_replica_holds_the_export_lease,
);

async fn one_replica_holds_the_export_lease(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let t = 1_000_000;
    assert!(s.otel_export_lease("a", t, t + 30).await.unwrap());
    assert!(!s.otel_export_lease("b", t + 10, t + 40).await.unwrap());
    // The holder renews; the other still waits.
    assert!(s.otel_export_lease("a", t + 20, t + 50).await.unwrap());
    assert!(!s.otel_export_lease("b", t + 45, t + 75).await.unwrap());
    // Expired (the holder died): taken over, and the old holder is refused.
    assert!(s.otel_export_lease("b", t + 51, t + 81).await.unwrap());
    assert!(!s.otel_export_lease("a", t + 60, t + 90).await.unwrap());
    store.close().await;
}

fn row(key: &str, at: i64, value: u64) -> OtelSeries {
    OtelSeries {
        key: key.into(),
        service: "frontend".into(),
        environment: "prod".into(),
        host: "reference".into(),
        port: 0,
        field: OtelField::Requests,
        prev_at: at - 1000,
        at,
        value,
        delta: value,
        stored: false,
    }
}

async fn otel_series_advance_by_compare_and_set(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let t = Timestamp::now().0;
    let k = "otel:0000000000000001";
    let first = OtelAdvance {
        expect_at: None,
        next: row(k, t, 5),
    };
    assert_eq!(
        s.otel_advance(std::slice::from_ref(&first)).await.unwrap(),
        vec![true]
    );
    // A second creator lost the race.
    assert_eq!(s.otel_advance(&[first]).await.unwrap(), vec![false]);
    // A writer that read an older row changes nothing; one that read this row wins.
    let stale = OtelAdvance {
        expect_at: Some(t - 1),
        next: row(k, t + 1000, 9),
    };
    let fresh = OtelAdvance {
        expect_at: Some(t),
        next: row(k, t + 1000, 8),
    };
    assert_eq!(
        s.otel_advance(&[stale, fresh]).await.unwrap(),
        vec![false, true]
    );
    let got = s
        .otel_series(&[k.to_string(), "otel:none".into()])
        .await
        .unwrap();
    assert_eq!(got, vec![row(k, t + 1000, 8)]);
    // Many series in one call (set-based on PostgreSQL): new ones, a fresh and a stale
    // update, each decided on its own.
    let k2 = "otel:0000000000000002";
    let k3 = "otel:0000000000000003";
    s.otel_advance(&[OtelAdvance {
        expect_at: None,
        next: row(k2, t, 1),
    }])
    .await
    .unwrap();
    let mixed = [
        OtelAdvance {
            expect_at: None,
            next: row(k3, t, 3),
        },
        OtelAdvance {
            expect_at: Some(t),
            next: row(k2, t + 1000, 2),
        },
        OtelAdvance {
            expect_at: Some(t),
            next: row("otel:absent", t + 1000, 2),
        },
        OtelAdvance {
            expect_at: None,
            next: row(k, t, 1),
        },
    ];
    assert_eq!(
        s.otel_advance(&mixed).await.unwrap(),
        vec![true, true, false, false]
    );
    let mut got = s
        .otel_series(&[k2.to_string(), k3.to_string()])
        .await
        .unwrap();
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got, vec![row(k2, t + 1000, 2), row(k3, t, 3)]);
    // Marked stored only for the point it names.
    s.otel_stored(&[(k.to_string(), t)]).await.unwrap();
    assert!(!s.otel_series(&[k.to_string()]).await.unwrap()[0].stored);
    s.otel_stored(&[(k.to_string(), t + 1000)]).await.unwrap();
    assert!(s.otel_series(&[k.to_string()]).await.unwrap()[0].stored);
    // Pruned once unchanged before the cutoff.
    assert_eq!(s.otel_prune(Timestamp(t - 60_000)).await.unwrap(), 0);
    assert_eq!(s.otel_prune(Timestamp(t + 3_600_000)).await.unwrap(), 3);
    assert!(s.otel_series(&[k.to_string()]).await.unwrap().is_empty());
    store.close().await;
}

fn point(start: i64, time: i64, value: u64) -> Point {
    Point {
        identity: format!("traces_service_graph_request_total\u{1}c\u{1}{start}\u{1}client=frontend\u{1}server=reference"),
        field: OtelField::Requests,
        cumulative: true,
        service: "frontend".into(),
        environment: "prod".into(),
        host: "reference".into(),
        port: 0,
        start_ms: start,
        time_ms: time,
        value,
    }
}

async fn otel_total(s: &dyn Store) -> u64 {
    s.edges(&EdgeFilter::default())
        .await
        .unwrap()
        .iter()
        .filter(|e| e.scheme == Scheme::Otel && e.host == "reference")
        .map(|e| e.counts.requests)
        .sum()
}

async fn otel_points_count_exactly_once(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let now = Timestamp::now();
    let t0 = now.0 - 60_000;
    let day = 86_400_000;
    let count = |pts: Vec<Point>| {
        let store = store.clone();
        async move {
            ingest(store.as_ref(), &pts, now, 7 * day, 300_000)
                .await
                .unwrap()
        }
    };
    let o = count(vec![point(t0, t0 + 10_000, 5)]).await;
    assert_eq!((o.points, o.edges), (1, 1));
    assert_eq!(otel_total(s).await, 5);
    // The same export again: nothing.
    let o = count(vec![point(t0, t0 + 10_000, 5)]).await;
    assert_eq!((o.points, o.duplicates), (0, 1));
    assert_eq!(otel_total(s).await, 5);
    // Later points: the differences; an unchanged one is a heartbeat.
    count(vec![point(t0, t0 + 20_000, 8)]).await;
    count(vec![point(t0, t0 + 30_000, 8)]).await;
    assert_eq!(otel_total(s).await, 8);
    // A reset without a new start time: all of it.
    count(vec![point(t0, t0 + 40_000, 2)]).await;
    assert_eq!(otel_total(s).await, 10);
    // A restart (new start time): a new series, counted from zero.
    count(vec![point(t0 + 45_000, t0 + 50_000, 4)]).await;
    assert_eq!(otel_total(s).await, 14);
    // The same next export from 8 tasks at once (two stores on PostgreSQL: replicas).
    let other: Arc<dyn Store> = match db.backend {
        Backend::Postgres => db.open().await,
        Backend::Sqlite => store.clone(),
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let st = if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            ingest(
                st.as_ref(),
                &[point(t0 + 45_000, t0 + 55_000, 10)],
                now,
                7 * day,
                300_000,
            )
            .await
            .unwrap()
        }));
    }
    let mut advanced = 0;
    for t in tasks {
        advanced += t.await.unwrap().points;
    }
    assert_eq!(advanced, 1, "one delivery advanced the series");
    assert_eq!(otel_total(s).await, 20);
    // Each series is an instance of the client, covered while its points arrive.
    let cov = s
        .coverage(&[("frontend".into(), "prod".into())], Timestamp(0))
        .await
        .unwrap();
    assert_eq!(cov.len(), 2, "{cov:?}");
    assert!(cov.iter().all(|c| c.instance.starts_with("otel:")));
    let key = series_key(&point(t0, 0, 0).identity);
    assert!(cov.iter().any(|c| c.instance == key));
    if db.backend == Backend::Postgres {
        other.close().await;
    }
    store.close().await;
}
