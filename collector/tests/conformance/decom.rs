//! The decommission workflow's storage (issue 16) on every backend: bucket rows exactly
//! as sent per hour (and per day once folded), watches with their baselines and bound,
//! the notifier lease, alerts recorded with their notifications only by the lease holder
//! and only within the outbox's bound, deliveries through their states, reported owners.

use whouses_collector::store::decom::{
    AlertRow, Baseline, DeliveryOutcome, NewDelivery, ReportedOwner, WatchInsert, NOTIFIER_LEASE,
};
use whouses_collector::store::EdgeFilter;
use whouses_collector::targets::HostPattern;
use whouses_wire::decom::AlertKind;
use whouses_wire::Timestamp;

use crate::backend::TestDb;
use crate::common::{day_start, ingest, report, DAY, HOUR};

crate::conformance!(
    buckets_hold_what_was_sent_per_hour_then_per_day,
    buckets_are_bounded,
    watches_are_bounded_and_keep_their_baselines,
    only_the_lease_holder_records_alerts_within_the_outbox_bound,
    deliveries_go_through_their_states,
    reported_owners_are_kept_per_service,
);

fn old() -> EdgeFilter {
    EdgeFilter {
        hosts: Some(vec![HostPattern::Host("old.internal".into())]),
        ..Default::default()
    }
}

async fn buckets_hold_what_was_sent_per_hour_then_per_day(db: &TestDb) {
    let store = db.open().await;
    // 20 days ago, hours 3, 4 and 9 (9 twice, from two instances); 2 hours ago (current).
    let d = day_start(20);
    let now_hour = (Timestamp::now().0 - 2 * HOUR).div_euclid(HOUR) * HOUR;
    let sent = [
        ("billing", "billing-1", 1, d + 3 * HOUR, 10),
        ("billing", "billing-1", 2, d + 4 * HOUR, 20),
        ("billing", "billing-1", 3, d + 9 * HOUR, 30),
        ("billing", "billing-2", 1, d + 9 * HOUR, 5),
        ("sync", "sync-1", 1, d + 4 * HOUR, 7),
        ("billing", "billing-1", 4, now_hour, 40),
    ];
    for (svc, inst, seq, hour, n) in sent {
        let r = report(
            svc,
            inst,
            seq,
            hour,
            &[("old.internal", n), ("new.internal", 1)],
        );
        ingest(store.as_ref(), r).await.unwrap();
    }
    let from = (d - DAY).div_euclid(HOUR);
    let to = Timestamp::now().0.div_euclid(HOUR) + 1;
    let rows = store.decom().buckets(&old(), from, to, 100).await.unwrap();
    let got: Vec<(String, i64, bool, u64)> = rows
        .iter()
        .map(|b| (b.service.clone(), b.start.0, b.daily, b.counts.requests))
        .collect();
    assert_eq!(
        got,
        vec![
            ("billing".to_string(), d + 3 * HOUR, false, 10),
            ("billing".to_string(), d + 4 * HOUR, false, 20),
            ("billing".to_string(), d + 9 * HOUR, false, 35),
            ("billing".to_string(), now_hour, false, 40),
            ("sync".to_string(), d + 4 * HOUR, false, 7),
        ],
        "sorted by edge, then start"
    );
    assert!(rows.iter().all(|b| b.host == "old.internal"));
    assert_eq!(
        rows[2].counts.connections, 2,
        "two instances' batches summed"
    );
    // A range picks whole hours: [d+4h, d+9h) holds hour 4 only.
    let part = store
        .decom()
        .buckets(&old(), (d + 4 * HOUR) / HOUR, (d + 9 * HOUR) / HOUR, 100)
        .await
        .unwrap();
    assert_eq!(
        part.iter().map(|b| b.counts.requests).collect::<Vec<_>>(),
        vec![20, 7]
    );
    // Folded into days: one day bucket per edge with the same totals, returned for a
    // range overlapping any hour of the day. (sync's only hour is its edge's newest, kept
    // in the edge's row: never folded.)
    store
        .rollup(Timestamp(Timestamp::now().0 - 14 * DAY))
        .await
        .unwrap();
    let rows = store
        .decom()
        .buckets(&old(), (d + 12 * HOUR) / HOUR, (d + 13 * HOUR) / HOUR, 100)
        .await
        .unwrap();
    let got: Vec<(String, i64, bool, u64)> = rows
        .iter()
        .map(|b| (b.service.clone(), b.start.0, b.daily, b.counts.requests))
        .collect();
    assert_eq!(got, vec![("billing".to_string(), d, true, 65)]);
    let rows = store.decom().buckets(&old(), from, to, 100).await.unwrap();
    let got: Vec<(String, i64, bool, u64)> = rows
        .iter()
        .map(|b| (b.service.clone(), b.start.0, b.daily, b.counts.requests))
        .collect();
    assert_eq!(
        got,
        vec![
            ("billing".to_string(), d, true, 65),
            ("billing".to_string(), now_hour, false, 40),
            ("sync".to_string(), d + 4 * HOUR, false, 7),
        ]
    );
    let mut by_service = EdgeFilter {
        service: Some("sync".into()),
        ..Default::default()
    };
    let rows = store
        .decom()
        .buckets(&by_service, from, to, 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "sync's two hosts");
    by_service.environment = Some("stage".into());
    assert!(store
        .decom()
        .buckets(&by_service, from, to, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn buckets_are_bounded(db: &TestDb) {
    let store = db.open().await;
    let d = day_start(3);
    for h in 0..6 {
        let r = report(
            "a",
            "a-1",
            h as u64 + 1,
            d + h * HOUR,
            &[("old.internal", 1)],
        );
        ingest(store.as_ref(), r).await.unwrap();
    }
    let (from, to) = (d / HOUR, d / HOUR + 24);
    assert_eq!(
        store
            .decom()
            .buckets(&old(), from, to, 6)
            .await
            .unwrap()
            .len(),
        6
    );
    let e = store
        .decom()
        .buckets(&old(), from, to, 5)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 5 buckets"), "{e}");
}

fn watch(host: &str) -> WatchInsert {
    WatchInsert {
        host: host.into(),
        to: Some("new.internal".into()),
        cutoff: Timestamp(1_795_000_000_000),
        notify: vec![
            "http://127.0.0.1:9093/api/v2/alerts".into(),
            "https://hooks.example/x".into(),
        ],
        note: Some("switch-off friday".into()),
        created: Timestamp(1_794_000_000_000),
    }
}

async fn watches_are_bounded_and_keep_their_baselines(db: &TestDb) {
    let store = db.open().await;
    let s = store.decom();
    let base = vec![Baseline {
        service: "billing".into(),
        environment: "prod".into(),
        errors: 41,
    }];
    let a = s.add_watch(watch("old.internal"), base, 2).await.unwrap();
    let b = s.add_watch(watch("*.legacy"), vec![], 2).await.unwrap();
    assert!(b.id > a.id);
    let e = s.add_watch(watch("third"), vec![], 2).await.unwrap_err();
    assert!(e.to_string().contains("--max-watches 2"), "{e}");
    let all = s.watches().await.unwrap();
    assert_eq!(all, vec![a.clone(), b.clone()]);
    assert_eq!(all[0].notify.len(), 2);
    let alerts = s.alerts().await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0].watch_id, alerts[0].kind, alerts[0].base),
        (a.id, AlertKind::FailingCalls, 41)
    );
    assert!(alerts[0].fired.is_none(), "a baseline has not fired");
    assert!(s.remove_watch(a.id).await.unwrap());
    assert!(!s.remove_watch(a.id).await.unwrap());
    assert!(
        s.alerts().await.unwrap().is_empty(),
        "its alerts go with it"
    );
    // Ids are never reused.
    let c = s.add_watch(watch("again"), vec![], 2).await.unwrap();
    assert!(c.id > b.id);
}

fn fired(watch_id: i64, service: &str, now: i64) -> AlertRow {
    AlertRow {
        watch_id,
        kind: AlertKind::TrafficAfterCutoff,
        service: service.into(),
        environment: "prod".into(),
        base: 0,
        fired: Some(Timestamp(now)),
        notified: Some(Timestamp(now)),
        mark: now - 5,
        calls: 12,
        errors: 0,
        first_seen: Timestamp(now - 60_000),
        last_seen: Timestamp(now - 5),
        notifications: 1,
    }
}

fn deliveries(n: usize) -> Vec<NewDelivery> {
    (0..n)
        .map(|i| NewDelivery {
            url: format!("http://receiver-{i}.example/"),
            body: format!("{{\"text\": \"alert {i}\"}}"),
        })
        .collect()
}

async fn only_the_lease_holder_records_alerts_within_the_outbox_bound(db: &TestDb) {
    let store = db.open().await;
    let s = store.decom();
    let w = s
        .add_watch(
            watch("old.internal"),
            vec![Baseline {
                service: "a".into(),
                environment: "prod".into(),
                errors: 3,
            }],
            10,
        )
        .await
        .unwrap();
    let now = 1_795_000_000_000;
    let t = Timestamp(now);
    // One holder at a time; the holder renews; another takes over once it expired.
    assert!(s
        .take_lease(NOTIFIER_LEASE, "one", t, 10_000)
        .await
        .unwrap());
    assert!(!s
        .take_lease(NOTIFIER_LEASE, "two", t, 10_000)
        .await
        .unwrap());
    assert!(s
        .take_lease(NOTIFIER_LEASE, "one", Timestamp(now + 5_000), 10_000)
        .await
        .unwrap());
    assert!(!s
        .take_lease(NOTIFIER_LEASE, "two", Timestamp(now + 14_000), 10_000)
        .await
        .unwrap());

    // Not the holder: nothing is written.
    let r = s
        .record_alerts("two", t, vec![(fired(w.id, "a", now), deliveries(2))], 10)
        .await
        .unwrap();
    assert!(r.lost_lease);
    assert!(s.due_deliveries(t, 10).await.unwrap().is_empty());

    // The holder: the alert's state and its notifications, as far as the outbox allows
    // (3 pending at most: the second alert's two do not fit next to the first's two).
    let r = s
        .record_alerts(
            "one",
            t,
            vec![
                (fired(w.id, "a", now), deliveries(2)),
                (fired(w.id, "b", now), deliveries(2)),
                (fired(w.id + 100, "gone", now), deliveries(1)),
            ],
            3,
        )
        .await
        .unwrap();
    assert_eq!((r.stored, r.deferred, r.lost_lease), (1, 1, false));
    let alerts = s.alerts().await.unwrap();
    let kinds: Vec<(AlertKind, &str, bool)> = alerts
        .iter()
        .map(|a| (a.kind, a.service.as_str(), a.fired.is_some()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (AlertKind::FailingCalls, "a", false),
            (AlertKind::TrafficAfterCutoff, "a", true),
        ],
        "b deferred, the removed watch's alert dropped"
    );
    let due = s.due_deliveries(t, 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(due[0].service, "a");
    assert_eq!(due[0].kind, AlertKind::TrafficAfterCutoff);
    assert_eq!(due[0].body, "{\"text\": \"alert 0\"}");

    // A re-notification keeps when it first fired and the failing-calls baseline.
    let mut again = fired(w.id, "a", now + 1_000);
    again.notifications = 2;
    again.fired = Some(Timestamp(now + 1_000));
    let mut failing = fired(w.id, "a", now + 1_000);
    failing.kind = AlertKind::FailingCalls;
    failing.base = 3;
    failing.mark = 9;
    s.take_lease(NOTIFIER_LEASE, "one", Timestamp(now + 1_000), 10_000)
        .await
        .unwrap();
    let r = s
        .record_alerts(
            "one",
            Timestamp(now + 1_000),
            vec![(again, vec![]), (failing, vec![])],
            3,
        )
        .await
        .unwrap();
    assert_eq!(r.stored, 2);
    let alerts = s.alerts().await.unwrap();
    let traffic = alerts
        .iter()
        .find(|a| a.kind == AlertKind::TrafficAfterCutoff)
        .unwrap();
    assert_eq!(traffic.fired, Some(t), "fired stays the first time");
    assert_eq!(traffic.notified, Some(Timestamp(now + 1_000)));
    assert_eq!(traffic.notifications, 2);
    let f = alerts
        .iter()
        .find(|a| a.kind == AlertKind::FailingCalls)
        .unwrap();
    assert_eq!((f.base, f.mark), (3, 9));

    // Given up: the other holder takes over after expiry; the old one cannot record.
    s.release_lease(NOTIFIER_LEASE, "one").await.unwrap();
    assert!(s
        .take_lease(NOTIFIER_LEASE, "two", Timestamp(now + 2_000), 10_000)
        .await
        .unwrap());
    let r = s
        .record_alerts("one", Timestamp(now + 2_000), vec![], 3)
        .await
        .unwrap();
    assert!(r.lost_lease);
}

async fn deliveries_go_through_their_states(db: &TestDb) {
    let store = db.open().await;
    let s = store.decom();
    let w = s
        .add_watch(watch("old.internal"), vec![], 10)
        .await
        .unwrap();
    let now = 1_795_000_000_000;
    let t = Timestamp(now);
    s.take_lease(NOTIFIER_LEASE, "me", t, 60_000).await.unwrap();
    s.record_alerts("me", t, vec![(fired(w.id, "a", now), deliveries(3))], 100)
        .await
        .unwrap();
    let due = s.due_deliveries(t, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    assert!(due.iter().all(|d| d.attempts == 0 && d.created == t));
    s.finish_delivery(due[0].id, t, DeliveryOutcome::Delivered)
        .await
        .unwrap();
    s.finish_delivery(
        due[1].id,
        t,
        DeliveryOutcome::Retry {
            at: Timestamp(now + 4_000),
            error: "connection refused".into(),
        },
    )
    .await
    .unwrap();
    s.finish_delivery(
        due[2].id,
        t,
        DeliveryOutcome::Failed {
            error: "answered 400".into(),
        },
    )
    .await
    .unwrap();
    assert!(s.due_deliveries(t, 10).await.unwrap().is_empty());
    let later = s.due_deliveries(Timestamp(now + 4_000), 10).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!((later[0].id, later[0].attempts), (due[1].id, 1));
    let stats = s.delivery_stats().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].pending, stats[0].delivered, stats[0].failed),
        (1, 1, 1)
    );
    assert!(stats[0].last_error.is_some());
    // Pruning keeps what is pending and what finished recently.
    assert_eq!(s.prune_deliveries(t).await.unwrap(), 0);
    assert_eq!(s.prune_deliveries(Timestamp(now + 1)).await.unwrap(), 2);
    assert_eq!(s.delivery_stats().await.unwrap()[0].pending, 1);
    // Removing the watch removes its notifications.
    s.remove_watch(w.id).await.unwrap();
    assert!(s.delivery_stats().await.unwrap().is_empty());
}

async fn reported_owners_are_kept_per_service(db: &TestDb) {
    let store = db.open().await;
    let s = store.decom();
    let owner = |service: &str, env: &str, owner: &str| ReportedOwner {
        service: service.into(),
        environment: env.into(),
        owner: owner.into(),
    };
    let t = Timestamp(1_795_000_000_000);
    s.set_reported_owner(owner("billing", "prod", "payments"), t)
        .await
        .unwrap();
    s.set_reported_owner(owner("billing", "stage", "payments-dev"), t)
        .await
        .unwrap();
    s.set_reported_owner(owner("billing", "prod", "money"), t)
        .await
        .unwrap();
    assert_eq!(
        s.reported_owners().await.unwrap(),
        vec![
            owner("billing", "prod", "money"),
            owner("billing", "stage", "payments-dev")
        ]
    );
}
