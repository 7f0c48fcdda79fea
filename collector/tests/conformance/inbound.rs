//! The callee's view and the address book (issue 14), on every backend: inbound calls
//! kept per name, caller address and hour bucket (summed, saturating, idempotent, `since`
//! and host patterns), the callee-side instances and their declared names, address
//! claims merged per instance and kept as history (an address reused by another service
//! later), claims only for a batch's trusted period, and retention.

use whouses_collector::store::{Batch, InboundFilter, Ingested, Interval, Store};
use whouses_collector::targets::HostPattern;
use whouses_collector::{check, query};
use whouses_wire::api::{SeenBy, Verdict};
use whouses_wire::{Counts, InboundEdge, Report, Scheme, Side, Timestamp, MAX_COUNT};

use crate::backend::TestDb;
use crate::common::{report, DAY, HOUR};

crate::conformance!(
    inbound_calls_are_kept_per_name_address_and_hour,
    address_claims_are_merged_and_kept_as_history,
    inbound_counts_saturate_and_retention_prunes,
    callers_check_and_coverage_reconcile_both_sides,
);

fn iv(a: i64, b: i64) -> Interval {
    Interval {
        start: Timestamp(a),
        end: Timestamp(b),
    }
}

/// A callee-side batch of `instance` (service `old`) for `[start, end)` with inbound
/// calls `(host, address, requests, last_seen)` on port 80.
fn callee(
    instance: &str,
    seq: u64,
    start: i64,
    end: i64,
    calls: &[(&str, &str, u64, i64)],
) -> Report {
    let mut r = report("old", instance, seq, start, &[]);
    r.period_end = Timestamp(end);
    r.flush_interval_ms = 10_000;
    r.side = Side::Callee;
    r.inbound_hosts = vec!["old.internal".into()];
    r.inbound = calls
        .iter()
        .map(|&(host, address, requests, last)| InboundEdge {
            host: host.into(),
            port: 80,
            scheme: Scheme::Http,
            address: address.into(),
            counts: Counts {
                requests,
                connections: 1,
                errors: 0,
                bytes_sent: 10 * requests,
                bytes_received: 100 * requests,
                first_seen: Timestamp(start - DAY),
                last_seen: Timestamp(last),
            },
        })
        .collect();
    r
}

async fn put(store: &dyn Store, r: Report, coverage: Option<Interval>) -> Ingested {
    store
        .ingest(Batch {
            report: r,
            received: Timestamp::now(),
            coverage,
        })
        .await
        .unwrap()
}

/// A batch's whole period as its trusted coverage.
fn whole(r: &Report) -> Option<Interval> {
    Some(iv(r.period_start.0, r.period_end.0))
}

async fn inbound_calls_are_kept_per_name_address_and_hour(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let h = (Timestamp::now().0 - 5 * HOUR).div_euclid(HOUR) * HOUR;
    let b1 = callee(
        "old-in-1",
        1,
        h,
        h + HOUR / 2,
        &[
            ("old.internal", "10.0.0.1", 5, h + 60_000),
            ("old.internal", "10.0.0.2", 7, h + 120_000),
            ("new.internal", "10.0.0.1", 1, h + 60_000),
        ],
    );
    assert_eq!(
        put(s, b1.clone(), whole(&b1)).await,
        Ingested::Stored { edges: 0 }
    );
    // The same batch again: acknowledged, not counted twice.
    assert_eq!(put(s, b1.clone(), whole(&b1)).await, Ingested::Duplicate);
    // More calls in the same hour add to its bucket; the next hour is a bucket of its own.
    let b2 = callee(
        "old-in-1",
        2,
        h + HOUR / 2,
        h + 2 * HOUR,
        &[
            ("old.internal", "10.0.0.1", 3, h + HOUR - 60_000),
            ("old.internal", "10.0.0.1", 4, h + HOUR + 60_000),
        ],
    );
    put(s, b2.clone(), whole(&b2)).await;
    let old = vec![HostPattern::Host("old.internal".into())];
    let rows = s
        .inbound(&InboundFilter {
            hosts: Some(old.clone()),
            since: None,
        })
        .await
        .unwrap();
    let got: Vec<(&str, u64, i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.address.as_str(),
                r.counts.requests,
                r.counts.first_seen.0,
                r.counts.last_seen.0,
            )
        })
        .collect();
    // Bucket times: the first call no earlier than its batch's period.
    assert_eq!(
        got,
        vec![
            ("10.0.0.1", 5 + 3, h, h + HOUR - 60_000),
            ("10.0.0.1", 4, h + HOUR / 2, h + HOUR + 60_000),
            ("10.0.0.2", 7, h, h + 120_000),
        ]
    );
    assert!(rows.iter().all(|r| r.service == "old"
        && r.environment == "prod"
        && r.host == "old.internal"
        && r.port == 80
        && r.scheme == Scheme::Http));
    assert_eq!(rows[0].counts.bytes_received, 800);
    // `since`: only buckets with a call since then (whole).
    let recent = s
        .inbound(&InboundFilter {
            hosts: Some(old.clone()),
            since: Some(Timestamp(h + HOUR)),
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].counts.requests, 4);
    // Patterns: host:port and suffixes; all hosts without a filter.
    let by_port = s
        .inbound(&InboundFilter {
            hosts: Some(vec![HostPattern::HostPort("old.internal".into(), 81)]),
            since: None,
        })
        .await
        .unwrap();
    assert!(by_port.is_empty());
    let suffix = s
        .inbound(&InboundFilter {
            hosts: Some(vec![HostPattern::Suffix("internal".into())]),
            since: None,
        })
        .await
        .unwrap();
    assert_eq!(suffix.len(), 4);
    assert_eq!(suffix[0].host, "new.internal");
    assert_eq!(s.inbound(&InboundFilter::default()).await.unwrap().len(), 4);
    // The instance stands on the callee side, for the names it declared.
    let callees = s.callee_instances().await.unwrap();
    assert_eq!(callees.len(), 1);
    assert_eq!(callees[0].instance, "old-in-1");
    assert_eq!(callees[0].service, "old");
    assert_eq!(callees[0].inbound_hosts, vec!["old.internal".to_string()]);
    // A caller-side instance is not one.
    let plain = report("caller", "caller-1", 1, h, &[("old.internal", 1)]);
    put(s, plain.clone(), whole(&plain)).await;
    assert_eq!(s.callee_instances().await.unwrap().len(), 1);
    store.close().await;
}

async fn address_claims_are_merged_and_kept_as_history(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let now = Timestamp::now().0;
    let yesterday = now - DAY;
    // x held 10.0.0.9 yesterday over two continuous batches and a later one after a gap;
    // y holds it today. Both also hold an address of their own.
    let mut seq = 0;
    for (svc, inst, start, end, addrs) in [
        (
            "x",
            "x-1",
            yesterday,
            yesterday + 10_000,
            vec!["10.0.0.9", "fd00::9"],
        ),
        (
            "x",
            "x-1",
            yesterday + 10_000,
            yesterday + 20_000,
            vec!["10.0.0.9"],
        ),
        (
            "x",
            "x-1",
            yesterday + 60_000,
            yesterday + 70_000,
            vec!["10.0.0.9"],
        ),
        (
            "y",
            "y-7",
            now - HOUR,
            now - HOUR + 10_000,
            vec!["10.0.0.9"],
        ),
    ] {
        seq += 1;
        let mut r = report(svc, inst, seq, start, &[]);
        r.period_end = Timestamp(end);
        r.flush_interval_ms = 10_000;
        r.addresses = addrs.into_iter().map(String::from).collect();
        put(s, r.clone(), whole(&r)).await;
    }
    // A batch about a period the collector does not trust (older than --max-backfill)
    // claims nothing.
    let mut old = report("z", "z-1", 1, now - 30 * DAY, &[]);
    old.addresses = vec!["10.0.0.9".into()];
    put(s, old, None).await;
    let claims = s
        .address_claims(&["10.0.0.9".into(), "10.0.0.99".into()])
        .await
        .unwrap();
    let got: Vec<(&str, &str, Interval)> = claims
        .iter()
        .map(|c| (c.instance.as_str(), c.service.as_str(), c.interval))
        .collect();
    assert_eq!(
        got,
        vec![
            ("x-1", "x", iv(yesterday, yesterday + 20_000)),
            ("x-1", "x", iv(yesterday + 60_000, yesterday + 70_000)),
            ("y-7", "y", iv(now - HOUR, now - HOUR + 10_000)),
        ]
    );
    assert!(claims.iter().all(|c| c.address == "10.0.0.9"
        && c.side == Side::Caller
        && c.environment == "prod"
        && c.flush_interval_ms == 10_000));
    let v6 = s.address_claims(&["fd00::9".into()]).await.unwrap();
    assert_eq!(v6.len(), 1);
    assert_eq!(v6[0].interval, iv(yesterday, yesterday + 10_000));
    assert!(s.address_claims(&[]).await.unwrap().is_empty());
    // A callee-side instance's claims say so.
    let mut r = callee("old-in-1", 1, now - HOUR, now - HOUR + 10_000, &[]);
    r.addresses = vec!["10.0.0.50".into()];
    put(s, r.clone(), whole(&r)).await;
    let c = s.address_claims(&["10.0.0.50".into()]).await.unwrap();
    assert_eq!((c[0].service.as_str(), c[0].side), ("old", Side::Callee));
    store.close().await;
}

async fn inbound_counts_saturate_and_retention_prunes(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let h = (Timestamp::now().0 - 3 * HOUR).div_euclid(HOUR) * HOUR;
    for seq in 1..=3 {
        let mut r = callee(
            "big-in",
            seq,
            h,
            h + HOUR,
            &[("old.internal", "10.0.0.1", 1, h + 60_000)],
        );
        r.inbound[0].counts.requests = MAX_COUNT;
        r.inbound[0].counts.bytes_sent = MAX_COUNT;
        put(s, r.clone(), whole(&r)).await;
    }
    let rows = s.inbound(&InboundFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].counts.requests, MAX_COUNT);
    assert_eq!(rows[0].counts.bytes_sent, MAX_COUNT);
    assert_eq!(rows[0].counts.connections, 3);
    // An old bucket and an old claim go with the retention; recent ones stay.
    let long_ago = Timestamp::now().0 - 500 * DAY;
    let mut r = callee(
        "old-in-2",
        1,
        long_ago,
        long_ago + HOUR,
        &[("old.internal", "10.0.0.2", 2, long_ago + 60_000)],
    );
    r.started_at = Timestamp(long_ago - DAY);
    r.addresses = vec!["10.0.0.77".into()];
    put(s, r.clone(), whole(&r)).await;
    assert_eq!(s.inbound(&InboundFilter::default()).await.unwrap().len(), 2);
    assert_eq!(
        s.address_claims(&["10.0.0.77".into()]).await.unwrap().len(),
        1
    );
    let cutoff = Timestamp(Timestamp::now().0 - 400 * DAY);
    assert!(s.prune(cutoff, cutoff).await.unwrap() >= 2);
    let rows = s.inbound(&InboundFilter::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].address, "10.0.0.1");
    assert!(s
        .address_claims(&["10.0.0.77".into()])
        .await
        .unwrap()
        .is_empty());
    store.close().await;
}

async fn callers_check_and_coverage_reconcile_both_sides(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let now = Timestamp::now().0;
    let start = now - 20 * 60_000;
    let end = now - 60_000;
    // a calls through its sidecar (which holds 10.0.0.11) and the callee sees it; c's
    // sidecar holds 10.0.0.13 and reports nothing about old.internal, yet the callee sees
    // calls from there; nobody holds 10.0.0.12.
    let mut a = report("a", "a-1", 1, start, &[("old.internal", 10)]);
    a.period_end = Timestamp(end);
    a.edges[0].port = 80;
    a.edges[0].scheme = Scheme::Http;
    a.edges[0].counts.first_seen = Timestamp(start + 60_000);
    a.edges[0].counts.last_seen = Timestamp(end - 60_000);
    a.addresses = vec!["10.0.0.11".into()];
    put(s, a.clone(), whole(&a)).await;
    let mut c = report("c", "c-1", 1, start, &[]);
    c.period_end = Timestamp(end);
    c.addresses = vec!["10.0.0.13".into()];
    put(s, c.clone(), whole(&c)).await;
    let mut old = callee(
        "old-in-1",
        1,
        start,
        end,
        &[
            ("old.internal", "10.0.0.11", 10, end - 60_000),
            ("old.internal", "10.0.0.12", 3, end - 60_000),
            ("old.internal", "10.0.0.13", 4, end - 60_000),
        ],
    );
    for e in &mut old.inbound {
        e.counts.first_seen = Timestamp(start + 60_000);
    }
    old.addresses = vec!["10.0.0.50".into()];
    put(s, old.clone(), whole(&old)).await;

    let patterns = vec![HostPattern::Host("old.internal".into())];
    let r = query::callers(s, "old.internal", patterns.clone(), None, None)
        .await
        .unwrap();
    let rows: Vec<(&str, SeenBy, u64, bool)> = r
        .callers
        .iter()
        .map(|c| {
            (
                c.service.as_str(),
                c.seen_by,
                c.counts.requests,
                c.around_sidecar,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("a", SeenBy::Both, 10, false),
            ("c", SeenBy::Callee, 4, true)
        ]
    );
    let a_row = &r.callers[0];
    assert_eq!(a_row.caller_counts.unwrap().requests, 10);
    assert_eq!(a_row.callee_counts.unwrap().requests, 10);
    assert_eq!(a_row.addresses, vec!["10.0.0.11"]);
    assert_eq!(r.unattributed.len(), 1);
    assert_eq!(r.unattributed[0].address, "10.0.0.12");
    assert_eq!(r.unattributed[0].counts.requests, 3);
    assert_eq!(r.unattributed[0].hosts, vec!["old.internal:80"]);

    let v = check::check(
        s,
        "old.internal",
        patterns,
        (10 * HOUR) as u64,
        Timestamp(now),
    )
    .await
    .unwrap();
    assert_eq!(v.verdict, Verdict::InUse, "{}", v.reason);
    assert!(
        v.reason
            .contains("c reaches old.internal around its sidecar"),
        "{}",
        v.reason
    );
    assert_eq!(v.disagreements.len(), 1);
    assert_eq!(v.callee_side.len(), 1);
    assert_eq!(v.callee_side[0].instances, vec!["old-in-1"]);
    assert_eq!(v.unattributed.len(), 1);

    let cov = query::coverage(s, None).await.unwrap();
    assert_eq!(cov.hosts.len(), 1);
    let h = &cov.hosts[0];
    assert_eq!(h.host, "old.internal");
    assert_eq!(
        (h.calls, h.attributed_calls),
        (3 + 10 + 3 + 4, 10 + 1 + 4 + 1)
    );
    assert_eq!(h.callers, vec!["a (prod)", "c (prod)"]);
    assert_eq!(h.unattributed[0].address, "10.0.0.12");
    store.close().await;
}
