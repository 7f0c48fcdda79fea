//! Observation coverage: each batch's trusted period merged per instance (continuous
//! periods joined, gaps kept, a late batch bridging a gap), read back by `coverage()`
//! and `observed_since()`; and the `check` verdicts built on that evidence.

use whouses_collector::check;
use whouses_collector::store::{Batch, Interval, Store};
use whouses_collector::targets::HostPattern;
use whouses_wire::api::Verdict;
use whouses_wire::Timestamp;

use crate::backend::TestDb;
use crate::common::{ingest, report, HOUR};

crate::conformance!(
    coverage_merges_intervals_per_instance,
    check_decides_the_same_on_every_backend,
    check_counts_only_the_window_and_the_host,
    check_of_a_host_with_many_callers,
    window_calls_answer_the_same_through_many_statement_shapes,
    callers_coverage_is_the_coverage_of_the_hosts_callers,
);

fn iv(a: i64, b: i64) -> Interval {
    Interval {
        start: Timestamp(a),
        end: Timestamp(b),
    }
}

/// A heartbeat of `instance` covering `[start, end)`.
async fn beat(store: &dyn Store, service: &str, instance: &str, seq: u64, start: i64, end: i64) {
    let mut r = report(service, instance, seq, start, &[]);
    r.period_end = Timestamp(end);
    r.flush_interval_ms = 10_000;
    store
        .ingest(Batch {
            report: r,
            received: Timestamp::now(),
            coverage: Some(iv(start, end)),
        })
        .await
        .unwrap();
}

async fn coverage_merges_intervals_per_instance(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let base = Timestamp::now().0 - 10 * HOUR;
    assert_eq!(s.observed_since().await.unwrap(), None);
    beat(s, "a", "a-1", 1, base, base + 10_000).await;
    beat(s, "a", "a-1", 2, base + 10_000, base + 20_000).await;
    beat(s, "a", "a-1", 4, base + 40_000, base + 50_000).await;
    beat(s, "a", "a-2", 1, base + 5_000, base + 6_000).await;
    // b-1 reports counts only (no trusted period): an instance without intervals.
    store
        .ingest(Batch {
            report: report("b", "b-1", 1, base, &[("x.internal", 1)]),
            received: Timestamp::now(),
            coverage: None,
        })
        .await
        .unwrap();
    let wanted = [
        ("a".to_string(), "prod".to_string()),
        ("b".to_string(), "prod".to_string()),
    ];
    let cov = s.coverage(&wanted, Timestamp(0)).await.unwrap();
    let got: Vec<(&str, Vec<Interval>)> = cov
        .iter()
        .map(|c| (c.instance.as_str(), c.intervals.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "a-1",
                vec![iv(base, base + 20_000), iv(base + 40_000, base + 50_000)]
            ),
            ("a-2", vec![iv(base + 5_000, base + 6_000)]),
            ("b-1", vec![]),
        ]
    );
    assert_eq!(cov[0].flush_interval_ms, 10_000);
    assert_eq!(cov[0].observed_until, Timestamp(base + 50_000));
    assert_eq!(cov[2].service, "b");
    // A late batch (within the continuity slack) bridges the gap.
    beat(s, "a", "a-1", 3, base + 20_500, base + 40_000).await;
    let cov = s.coverage(&wanted[..1], Timestamp(0)).await.unwrap();
    assert_eq!(cov[0].intervals, vec![iv(base, base + 50_000)]);
    // Only intervals ending at or after `after`.
    let cov = s
        .coverage(&wanted[..1], Timestamp(base + 7_000))
        .await
        .unwrap();
    assert_eq!(cov.len(), 2);
    assert_eq!(cov[0].intervals, vec![iv(base, base + 50_000)]);
    assert_eq!(cov[1].intervals, vec![]);
    assert_eq!(s.observed_since().await.unwrap(), Some(Timestamp(base)));
    // Unknown services: nothing.
    let none = s
        .coverage(&[("zzz".into(), "prod".into())], Timestamp(0))
        .await
        .unwrap();
    assert!(none.is_empty());
    store.close().await;
}

async fn check_decides_the_same_on_every_backend(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let now = Timestamp::now().0;
    let start = now - 40 * HOUR;
    // `caller` called old.internal 30 hours ago and kept reporting since (hourly
    // heartbeats): old.internal is unused over the last 10 hours. `busy` calls
    // busy.internal now. `gone` called gone.internal 30 hours ago and went silent.
    let mut seq = 0;
    for h in 0..40 {
        seq += 1;
        let t = start + h * HOUR;
        let mut edges = vec![("busy.internal", 5)];
        if h == 10 {
            edges.push(("old.internal", 3));
        }
        let mut r = report("caller", "caller-1", seq, t, &edges);
        r.started_at = Timestamp(start);
        ingest(s, r).await.unwrap();
        if h <= 10 {
            let mut r = report("gone", "gone-1", seq, t, &[("gone.internal", 1)]);
            r.started_at = Timestamp(start);
            ingest(s, r).await.unwrap();
        }
    }
    let quiet = (10 * HOUR) as u64;
    let verdict = |host: &'static str| async move {
        check::check(
            s,
            host,
            vec![HostPattern::Host(host.into())],
            quiet,
            Timestamp(now),
        )
        .await
        .unwrap()
    };
    assert_eq!(verdict("old.internal").await.verdict, Verdict::Unused);
    let busy = verdict("busy.internal").await;
    assert_eq!(busy.verdict, Verdict::InUse);
    assert_eq!(busy.callers.len(), 1);
    assert_eq!(verdict("gone.internal").await.verdict, Verdict::Unknown);
    assert_eq!(verdict("never.internal").await.verdict, Verdict::Unknown);
    store.close().await;
}

/// `check` gathers exactly its evidence from the store: the calls within the window (not
/// older ones, not to another host), folds and lookups within the window only, and the
/// host's own names only.
async fn check_counts_only_the_window_and_the_host(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    // Hour-aligned, two days back: every bucket below is a whole clock hour.
    let base = Timestamp::now().0.div_euclid(HOUR) * HOUR - 48 * HOUR;
    for h in 0..20 {
        let mut edges = vec![("x.internal", 5)];
        if h == 2 {
            edges.push(("y.internal", 100));
        }
        if h == 3 {
            edges.push((whouses_wire::OTHER_HOST, 7)); // a fold, before the window
        }
        let mut r = report("a", "a-1", h as u64 + 1, base + h * HOUR, &edges);
        if h == 17 {
            // Another service looks another name up within the window.
            r.lookups = vec![whouses_wire::Lookup {
                name: "z.internal".into(),
                lookups: 2,
                addresses: vec!["198.18.0.9".into()],
                first_seen: Timestamp(base + h * HOUR + 1),
                last_seen: Timestamp(base + h * HOUR + 2),
            }];
        }
        ingest(s, r).await.unwrap();
    }
    let now = Timestamp(base + 20 * HOUR);
    let quiet = (5 * HOUR) as u64; // the window: hours 15 to 19
    let x = check::check(
        s,
        "x.internal",
        vec![HostPattern::Host("x.internal".into())],
        quiet,
        now,
    )
    .await
    .unwrap();
    assert_eq!(x.verdict, Verdict::InUse, "{}", x.reason);
    assert_eq!(x.callers.len(), 1);
    // 5 hours × (5 requests + 1 connection): not the 20 hours before, not y.internal.
    assert_eq!(x.callers[0].requests_in_window, 30, "{x:?}");
    assert_eq!(x.callers[0].requests_total, 120);
    assert!(
        x.folded.is_empty(),
        "a fold before the window: {:?}",
        x.folded
    );
    assert!(
        x.lookups.is_empty(),
        "another name's lookup: {:?}",
        x.lookups
    );
    let y = check::check(
        s,
        "y.internal",
        vec![HostPattern::Host("y.internal".into())],
        quiet,
        now,
    )
    .await
    .unwrap();
    assert_eq!(y.verdict, Verdict::Unused, "{}", y.reason);
    assert_eq!(y.evidence[0].requests_in_window, 0);
    store.close().await;
}

/// A host with more callers than SQLite's expression depth (1,000) and parameter
/// budget allow one term each: `check` still answers, on every backend, with every
/// caller's window count and the bypass one of them reported.
async fn check_of_a_host_with_many_callers(db: &TestDb) {
    const CALLERS: u64 = 1_500;
    let store = db.open().await;
    let s = store.as_ref();
    let base = Timestamp::now().0.div_euclid(HOUR) * HOUR - 3 * HOUR;
    for i in 0..CALLERS {
        let service = format!("s-{i:04}");
        let mut r = report(
            &service,
            &format!("{service}-1"),
            1,
            base,
            &[("hub.internal", i + 1)],
        );
        if i == CALLERS - 1 {
            r.bypass = vec![whouses_wire::Bypass {
                address: "198.18.0.50".into(),
                port: 443,
                name: Some("hub.internal".into()),
                connections: 4,
                first_seen: Timestamp(base + 1_000),
                last_seen: Timestamp(base + 2_000),
            }];
        }
        ingest(s, r).await.unwrap();
    }
    let got = check::check(
        s,
        "hub.internal",
        vec![HostPattern::Host("hub.internal".into())],
        (10 * HOUR) as u64,
        Timestamp(base + 3 * HOUR),
    )
    .await
    .unwrap();
    assert_eq!(got.verdict, Verdict::InUse, "{}", got.reason);
    assert_eq!(got.callers.len(), CALLERS as usize);
    // Each caller's window count is its own (requests + 1 connection).
    let mut callers: Vec<_> = got.callers.iter().collect();
    callers.sort_by(|a, b| a.service.cmp(&b.service));
    for (i, c) in callers.iter().enumerate() {
        assert_eq!(c.service, format!("s-{i:04}"));
        assert_eq!(c.requests_in_window, i as u64 + 2, "{c:?}");
    }
    assert_eq!(got.bypass.len(), 1, "{:?}", got.bypass);
    assert_eq!(got.bypass[0].service, format!("s-{:04}", CALLERS - 1));
    store.close().await;
}

/// `window_calls` for 120 host lists, three times over: each list's shape (how many
/// hosts; exact, `host:port` or `*.suffix`) is a statement of its own, more than a
/// PostgreSQL connection keeps prepared (32), so statements are prepared, forgotten and
/// prepared again. Lists of different shapes take as many parameters (k + 1 exact hosts;
/// k - 1 and a `host:port`; k - 1 and `*.internal`, which takes in every host), so a
/// statement used for the wrong text shows. Every answer is exact.
async fn window_calls_answer_the_same_through_many_statement_shapes(db: &TestDb) {
    const HOSTS: usize = 40;
    let store = db.open().await;
    let s = store.as_ref();
    let base = Timestamp::now().0.div_euclid(HOUR) * HOUR - 3 * HOUR;
    let names: Vec<String> = (0..HOSTS).map(|i| format!("h{i:02}.internal")).collect();
    for (i, name) in names.iter().enumerate() {
        let service = format!("s-{i:02}");
        let r = report(
            &service,
            &format!("{service}-1"),
            1,
            base,
            &[(name.as_str(), i as u64 + 1)],
        );
        ingest(s, r).await.unwrap();
    }
    let exact = |n: &String| HostPattern::Host(n.clone());
    // Requests plus the one connection each, in host order.
    let want: Vec<(String, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u64 + 2))
        .collect();
    for round in 0..3 {
        for k in 1..=HOSTS {
            let first_k: Vec<HostPattern> = names[..k].iter().map(exact).collect();
            // The same hosts, the last one as `host:443`; and `*.internal` (every host).
            let mut with_port: Vec<HostPattern> = names[..k - 1].iter().map(exact).collect();
            with_port.push(HostPattern::HostPort(names[k - 1].clone(), 443));
            let mut with_suffix: Vec<HostPattern> = names[..k - 1].iter().map(exact).collect();
            with_suffix.push(HostPattern::Suffix("internal".into()));
            for (hosts, n) in [(first_k, k), (with_port, k), (with_suffix, HOSTS)] {
                let got = s
                    .window_calls(&hosts, Timestamp(base - HOUR))
                    .await
                    .unwrap();
                let calls: Vec<(String, u64)> =
                    got.iter().map(|w| (w.edge.host.clone(), w.calls)).collect();
                assert_eq!(calls, want[..n], "round {round}: {hosts:?}");
            }
        }
    }
    store.close().await;
}

/// `callers_coverage(hosts)` (what `check` reads) is `coverage()` of the services the
/// hosts' edges name: by exact host, `host:port` and `*.suffix`; a service in two
/// environments is two callers; an instance without intervals is still listed; a service
/// that never called the hosts is not; no host, no callers.
async fn callers_coverage_is_the_coverage_of_the_hosts_callers(db: &TestDb) {
    let store = db.open().await;
    let s = store.as_ref();
    let base = Timestamp::now().0.div_euclid(HOUR) * HOUR - 5 * HOUR;
    let calls = |service: &str, env: &str, instance: &str, host: &'static str| {
        let mut r = report(service, instance, 1, base, &[(host, 3)]);
        r.environment = env.into();
        r
    };
    let reports = vec![
        calls("a", "prod", "a-1", "old.internal"),
        calls("a", "prod", "a-2", "old.internal"),
        calls("a", "staging", "a-s", "old.internal"),
        calls("b", "prod", "b-1", "api.old.internal"),
        calls("c", "prod", "c-1", "new.internal"),
    ];
    for r in reports {
        ingest(s, r).await.unwrap();
    }
    // d calls the host but its sidecar never proved a period (counts only).
    store
        .ingest(Batch {
            report: report("d", "d-1", 1, base, &[("old.internal", 1)]),
            received: Timestamp::now(),
            coverage: None,
        })
        .await
        .unwrap();
    // a-1 again, much later: its intervals are two, and `after` drops the first.
    ingest(s, report("a", "a-1", 2, base + 3 * HOUR, &[]))
        .await
        .unwrap();
    let key = |c: &whouses_collector::store::InstanceCoverage| {
        (
            c.instance.clone(),
            c.service.clone(),
            c.environment.clone(),
            c.intervals.clone(),
        )
    };
    for (hosts, after) in [
        (vec![HostPattern::Host("old.internal".into())], Timestamp(0)),
        (
            vec![HostPattern::Host("old.internal".into())],
            Timestamp(base + 2 * HOUR),
        ),
        (
            vec![HostPattern::HostPort("old.internal".into(), 443)],
            Timestamp(0),
        ),
        (
            vec![HostPattern::HostPort("old.internal".into(), 80)],
            Timestamp(0),
        ),
        (
            vec![HostPattern::Suffix("old.internal".into())],
            Timestamp(0),
        ),
        (
            vec![
                HostPattern::Host("new.internal".into()),
                HostPattern::Host("api.old.internal".into()),
            ],
            Timestamp(0),
        ),
        (
            vec![HostPattern::Host("never.internal".into())],
            Timestamp(0),
        ),
        (vec![], Timestamp(0)),
    ] {
        let mut services: Vec<(String, String)> = s
            .edges(&whouses_collector::store::EdgeFilter {
                hosts: Some(hosts.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| (e.service, e.environment))
            .collect();
        services.sort();
        services.dedup();
        let want: Vec<_> = s
            .coverage(&services, after)
            .await
            .unwrap()
            .iter()
            .map(key)
            .collect();
        let got: Vec<_> = s
            .callers_coverage(&hosts, after)
            .await
            .unwrap()
            .iter()
            .map(key)
            .collect();
        assert_eq!(got, want, "{hosts:?} after {after:?}");
    }
    // The expected sets themselves, so the comparison above cannot pass on two empty
    // answers.
    let all = |hosts: Vec<HostPattern>| async move {
        s.callers_coverage(&hosts, Timestamp(0))
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.instance)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        all(vec![HostPattern::Host("old.internal".into())]).await,
        ["a-1", "a-2", "a-s", "d-1"]
    );
    assert_eq!(
        all(vec![HostPattern::Suffix("old.internal".into())]).await,
        ["a-1", "a-2", "a-s", "b-1", "d-1"]
    );
    assert!(all(vec![HostPattern::HostPort("old.internal".into(), 80)])
        .await
        .is_empty());
    let later = s
        .callers_coverage(
            &[HostPattern::Host("old.internal".into())],
            Timestamp(base + 2 * HOUR),
        )
        .await
        .unwrap();
    assert_eq!(later[0].instance, "a-1");
    assert_eq!(
        later[0].intervals,
        vec![iv(base + 3 * HOUR, base + 4 * HOUR)]
    );
    assert!(later[1].intervals.is_empty(), "{:?}", later[1]);
    store.close().await;
}
