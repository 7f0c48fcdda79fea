//! Hourly buckets folded into daily ones, and retention: every answer the fold can keep
//! stays exactly the same, a `since` inside a folded day counts that whole day, a late
//! batch for a folded day is folded again without doubling; pruning keeps idempotency (a
//! re-sent old batch is still a duplicate) and cuts mid-day by bucket.

use whouses_collector::store::Ingested;
use whouses_wire::Timestamp;

use crate::backend::TestDb;
use crate::common::{
    assert_window_calls, day_start, ingest, ingest_at, report, requests, rows, DAY, HOUR,
};

crate::conformance!(
    folding_hours_into_days_keeps_every_answer,
    pruning_keeps_old_batches_duplicates,
    pruning_cuts_mid_day_by_bucket,
    window_sums_of_a_database_from_before_them,
);

async fn folding_hours_into_days_keeps_every_answer(db: &TestDb) {
    let store = db.open().await;
    // Three UTC days, 40 days ago: day d+i, every 3rd hour, two hosts.
    let d = day_start(40);
    let mut seq = 0;
    for day in 0..3 {
        for hour in (0..24).step_by(3) {
            seq += 1;
            let n = (day * 100 + hour + 1) as u64;
            let r = report(
                "billing",
                "billing-1",
                seq,
                d + day * DAY + hour * HOUR,
                &[("old.internal", n), ("new.internal", 2 * n)],
            );
            ingest(store.as_ref(), r).await.unwrap();
        }
    }
    let mid_day1 = d + DAY + 13 * HOUR;
    // Window calls from one bucket row per edge agree with the bucket sums at every step:
    // in order, folded, after a late batch (stale, summed), recomputed, pruned.
    let windows = |what: &'static str| {
        let store = store.clone();
        async move {
            for since in [
                d - DAY,
                d,
                d + 4 * HOUR,
                d + DAY,
                d + DAY + 5 * HOUR,
                d + DAY + 6 * HOUR,
                mid_day1,
                d + 2 * DAY,
                d + 2 * DAY + 21 * HOUR,
                d + 3 * DAY,
            ] {
                assert_window_calls(store.as_ref(), since, what).await;
            }
        }
    };
    windows("hourly").await;
    let before_all = rows(&store, None).await;
    let before_d1 = rows(&store, Some(d + DAY)).await;
    let before_d2 = rows(&store, Some(d + 2 * DAY)).await;
    let before_mid = rows(&store, Some(mid_day1)).await;
    assert!(requests(&before_mid, "old.internal") < requests(&before_d1, "old.internal"));

    // Fold everything older than 14 days: 3 days × 8 hours × 2 edges, less each edge's
    // newest hour (kept in the edge's own row, never in the hourly table).
    let two_weeks_ago = Timestamp(Timestamp::now().0 - 14 * DAY);
    assert_eq!(store.rollup(two_weeks_ago).await.unwrap(), (3 * 8 - 1) * 2);
    assert_eq!(
        store.rollup(two_weeks_ago).await.unwrap(),
        0,
        "a second fold finds nothing"
    );
    if db.backend == crate::backend::Backend::Postgres {
        // A fold that moved most of the daily rows (here all of them) refreshes the
        // planner's statistics at once: a never-analyzed table has reltuples -1.
        let analyzed = db
            .query_i64("SELECT reltuples::int8 FROM pg_class WHERE oid = 'edge_days'::regclass")
            .await;
        assert_eq!(analyzed, 3 * 2, "edge_days analyzed after the fold");
        // And vacuumed (the pages it wrote are read by index-only scans).
        for table in ["edge_days", "edge_hours"] {
            let vacuums = db
                .query_i64(&format!(
                    "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = '{table}'"
                ))
                .await;
            assert!(vacuums >= 1, "{table} vacuumed after the fold");
        }
    }

    windows("folded").await;
    assert_eq!(rows(&store, None).await, before_all);
    assert_eq!(rows(&store, Some(d + DAY)).await, before_d1);
    assert_eq!(rows(&store, Some(d + 2 * DAY)).await, before_d2);
    // Inside a folded day: the whole day counts (errs towards "still used").
    assert_eq!(rows(&store, Some(mid_day1)).await, before_d1);

    // A late batch for a folded day lands in an hourly bucket; both are summed, and the
    // next fold merges it into the day without doubling.
    seq += 1;
    let late = report(
        "billing",
        "billing-1",
        seq,
        d + DAY + 5 * HOUR,
        &[("old.internal", 1_000)],
    );
    ingest(store.as_ref(), late).await.unwrap();
    windows("a late batch").await;
    let with_late = rows(&store, Some(d + DAY)).await;
    assert_eq!(
        requests(&with_late, "old.internal"),
        requests(&before_d1, "old.internal") + 1_000
    );
    assert_eq!(store.rollup(two_weeks_ago).await.unwrap(), 1);
    windows("the late batch folded, recomputed").await;
    assert_eq!(rows(&store, Some(d + DAY)).await, with_late);
    assert_eq!(
        requests(&rows(&store, None).await, "old.internal"),
        requests(&before_all, "old.internal") + 1_000
    );

    // Retention: a cutoff at the start of day 2 drops days 0 and 1.
    store
        .prune(Timestamp(d + 2 * DAY), Timestamp(0))
        .await
        .unwrap();
    windows("pruned").await;
    let after = rows(&store, Some(d)).await;
    assert_eq!(after, rows(&store, Some(d + 2 * DAY)).await);
    assert_eq!(after, before_d2);
    store.close().await;
}

async fn pruning_keeps_old_batches_duplicates(db: &TestDb) {
    let store = db.open().await;
    let now = Timestamp::now().0;
    let h = (now - 2 * HOUR).div_euclid(HOUR) * HOUR;
    // Batches 1–3 were received 40 days ago, 4–5 now (their counts are recent either way:
    // only the idempotency records are old).
    for seq in 1..=5u64 {
        let received = if seq <= 3 { now - 40 * DAY } else { now };
        let r = report("api", "api-1", seq, h, &[("db.internal", 10)]);
        let out = ingest_at(store.as_ref(), r, Timestamp(received))
            .await
            .unwrap();
        assert_eq!(out, Ingested::Stored { edges: 1 });
    }
    let before = rows(&store, None).await;
    assert_eq!(requests(&before, "db.internal"), 50);
    // The records of 1–3 (older than 30 days) fold into a floor; nothing else goes.
    store
        .prune(Timestamp(now - 400 * DAY), Timestamp(now - 30 * DAY))
        .await
        .unwrap();
    for seq in [1, 2, 3, 4, 5] {
        let r = report("api", "api-1", seq, h, &[("db.internal", 10)]);
        assert_eq!(
            ingest(store.as_ref(), r).await.unwrap(),
            Ingested::Duplicate,
            "seq {seq} after the prune"
        );
    }
    let r = report("api", "api-1", 6, h, &[("db.internal", 10)]);
    assert_eq!(
        ingest(store.as_ref(), r).await.unwrap(),
        Ingested::Stored { edges: 1 }
    );
    assert_eq!(requests(&rows(&store, None).await, "db.internal"), 60);
    // The floor survives another prune with nothing left to fold.
    store
        .prune(Timestamp(now - 400 * DAY), Timestamp(now - 30 * DAY))
        .await
        .unwrap();
    let r = report("api", "api-1", 2, h, &[("db.internal", 10)]);
    assert_eq!(
        ingest(store.as_ref(), r).await.unwrap(),
        Ingested::Duplicate
    );
    store.close().await;
}

async fn pruning_cuts_mid_day_by_bucket(db: &TestDb) {
    let store = db.open().await;
    let d = day_start(20);
    // Edge B: days d-2 and d-1 (folded into days below), then hour 1 of day d.
    let mut seq = 0;
    let mut b = |start: i64, n: u64| {
        seq += 1;
        report("batch", "batch-1", seq, start, &[("b.internal", n)])
    };
    for r in [
        b(d - 2 * DAY + 3 * HOUR, 1),
        b(d - 2 * DAY + 4 * HOUR, 2),
        b(d - DAY + 3 * HOUR, 10),
        b(d - DAY + 5 * HOUR, 20),
        b(d + HOUR, 100),
    ] {
        ingest(store.as_ref(), r).await.unwrap();
    }
    // Edge A: hours 2, 10 and 20 of day d (hourly, not folded).
    for (i, hour) in [2, 10, 20].into_iter().enumerate() {
        let r = report(
            "app",
            "app-1",
            i as u64 + 1,
            d + hour * HOUR,
            &[("a.internal", 1000 * (i as u64 + 1))],
        );
        ingest(store.as_ref(), r).await.unwrap();
    }
    store.rollup(Timestamp(d)).await.unwrap();
    let totals = rows(&store, None).await;

    // A cutoff at noon of day d-1: day d-2 goes, day d-1 stays whole (a day bucket is
    // kept while any of it is inside the retention).
    store
        .prune(Timestamp(d - DAY + 12 * HOUR), Timestamp(0))
        .await
        .unwrap();
    let since = rows(&store, Some(d - 3 * DAY)).await;
    assert_eq!(requests(&since, "b.internal"), 10 + 20 + 100);
    assert_eq!(requests(&since, "a.internal"), 1000 + 2000 + 3000);
    assert_eq!(rows(&store, None).await, totals, "totals are not pruned");

    // A cutoff at noon of day d: hours 2 and 10 of A go, hour 20 (its current bucket)
    // stays; B's last call was before the cutoff, so B goes entirely.
    store
        .prune(Timestamp(d + 12 * HOUR), Timestamp(0))
        .await
        .unwrap();
    let since = rows(&store, Some(d - 3 * DAY)).await;
    assert_eq!(requests(&since, "b.internal"), 0);
    assert_eq!(requests(&since, "a.internal"), 3000);
    let all = rows(&store, None).await;
    assert_eq!(all.len(), 1);
    assert_eq!(requests(&all, "a.internal"), 6000);
    store.close().await;
}

/// A database written before migration 0009 has no `calls_before`: the migration marks
/// every edge with bucket rows stale, `check`'s window calls are summed the long way
/// meanwhile, and the first upkeep recomputes every edge — the same answers throughout.
async fn window_sums_of_a_database_from_before_them(db: &TestDb) {
    let store = db.open().await;
    let d = day_start(3);
    let mut seq = 0;
    // Two days of hourly traffic, in order and late, two callers.
    for hour in (0..48).chain([5, 30]) {
        for svc in ["billing", "ledger"] {
            seq += 1;
            let r = report(
                svc,
                &format!("{svc}-1"),
                seq,
                d + hour * HOUR,
                &[("old.internal", (hour + 1) as u64)],
            );
            ingest(store.as_ref(), r).await.unwrap();
        }
    }
    let sinces = [
        d - DAY,
        d,
        d + 7 * HOUR,
        d + DAY,
        d + DAY + 13 * HOUR,
        d + 2 * DAY,
    ];
    let before: Vec<_> = {
        let mut v = Vec::new();
        for since in sinces {
            v.push(rows(&store, Some(since)).await);
        }
        v
    };
    store.close().await;
    // As an older release left it, then what the migration does.
    db.execute(
        "UPDATE edge_hours SET calls_before = NULL;
         UPDATE edge_days SET calls_before = NULL;
         UPDATE edges SET stale_after = NULL;
         UPDATE edges SET stale_after = -9223372036854775808
         WHERE EXISTS (SELECT 1 FROM edge_hours WHERE edge_id = edges.id)
            OR EXISTS (SELECT 1 FROM edge_days WHERE edge_id = edges.id);",
    )
    .await;
    let stale = "SELECT COUNT(*) FROM edges WHERE stale_after IS NOT NULL";
    assert_eq!(db.query_i64(stale).await, 2);
    let store = db.open().await;
    for since in sinces {
        assert_window_calls(store.as_ref(), since, "upgraded, not yet recomputed").await;
    }
    // The upkeep (no day to fold yet) recomputes every edge.
    store.rollup(Timestamp(0)).await.unwrap();
    assert_eq!(db.query_i64(stale).await, 0);
    assert_eq!(
        db.query_i64("SELECT COUNT(*) FROM edge_hours WHERE calls_before IS NULL")
            .await,
        0
    );
    for (since, want) in sinces.into_iter().zip(before) {
        assert_window_calls(store.as_ref(), since, "recomputed").await;
        assert_eq!(rows(&store, Some(since)).await, want);
    }
    store.close().await;
}
