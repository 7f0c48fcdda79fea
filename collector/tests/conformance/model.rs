//! Property test: a random stream of reports — several instances, services and hosts,
//! out-of-order arrivals and duplicates — stored in a real database gives the same
//! answers as a naive in-memory model, on every backend.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use whouses_collector::query;
use whouses_collector::store::{self, EdgeFilter, Interval};
use whouses_collector::targets::HostPattern;
use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

use crate::backend::{Backend, TestDb};

const INSTANCES: [(&str, &str); 4] = [
    ("svc-a-1", "svc-a"),
    ("svc-a-2", "svc-a"),
    ("svc-b-1", "svc-b"),
    ("svc-c-1", "svc-c"),
];
const HOSTS: [(&str, u16); 4] = [
    ("old.internal", 80),
    ("old.internal", 443),
    ("new.internal", 80),
    ("db.internal", 5432),
];

#[derive(Debug, Clone)]
struct Batch {
    instance: usize,
    seq: u64,
    edges: Vec<(usize, u64, u64)>, // host index, requests, errors
}

fn batch() -> impl Strategy<Value = Batch> {
    (
        0..INSTANCES.len(),
        1u64..12,
        prop::collection::vec((0..HOSTS.len(), 0u64..50, 0u64..5), 0..4),
    )
        .prop_map(|(instance, seq, edges)| Batch {
            instance,
            seq,
            edges,
        })
}

fn to_report(b: &Batch, base: i64) -> Report {
    let (instance, service) = INSTANCES[b.instance];
    // Batches 20 minutes apart: a stream spans several hours, so arrivals out of order
    // land in older hours than an edge's newest one.
    let start = base + b.seq as i64 * PERIOD_MS;
    let mut seen = BTreeSet::new();
    Report {
        version: REPORT_VERSION,
        service: service.into(),
        environment: "prod".into(),
        instance: instance.into(),
        seq: b.seq,
        started_at: Timestamp(base),
        period_start: Timestamp(start),
        period_end: Timestamp(start + PERIOD_MS),
        flush_interval_ms: PERIOD_MS as u64,
        edges: b
            .edges
            .iter()
            .filter(|(h, _, _)| seen.insert(*h)) // one entry per key per batch
            .map(|&(h, requests, errors)| Edge {
                host: HOSTS[h].0.into(),
                port: HOSTS[h].1,
                scheme: match HOSTS[h].1 {
                    443 => Scheme::Https,
                    80 => Scheme::Http,
                    _ => Scheme::Tcp,
                },
                counts: Counts {
                    requests,
                    connections: 1,
                    errors,
                    bytes_sent: 0,
                    bytes_received: requests * 3,
                    first_seen: Timestamp(start + 1),
                    last_seen: Timestamp(start + 9_000),
                },
            })
            .collect(),
        ..Default::default()
    }
}

const PERIOD_MS: i64 = 1_200_000;
const HOUR_MS: i64 = 3_600_000;

/// (service, host, port, hour) -> requests
type HourModel = BTreeMap<(String, String, u16, i64), u64>;

type Model = BTreeMap<(String, String, u16), (u64, u64, u64)>; // (service, host, port) -> (req, err, bytes)

/// One case: the stream into a fresh database of `backend`, then every answer compared.
fn run_case(backend: Backend, batches: &[Batch]) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(db) = backend.fresh("store_matches_a_naive_model").await else {
            return Ok(());
        };
        let base = Timestamp::now().0 - 6 * HOUR_MS;
        let result = check_case(&db, batches, base).await;
        db.remove().await;
        result
    })
}

async fn check_case(db: &TestDb, batches: &[Batch], base: i64) -> Result<(), TestCaseError> {
    let store = db.open().await;
    let store = store.as_ref();
    let mut applied: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut model: Model = BTreeMap::new();
    let mut hours: HourModel = BTreeMap::new();
    // Every batch arrives once in random order, and some arrive again (retries).
    for b in batches.iter().chain(batches.iter().step_by(3)) {
        let r = to_report(b, base);
        let first = applied.insert((b.instance, b.seq));
        let coverage = Some(Interval {
            start: r.period_start,
            end: r.period_end,
        });
        let out = store
            .ingest(store::Batch {
                report: r.clone(),
                received: Timestamp::now(),
                coverage,
            })
            .await
            .unwrap();
        // A batch with the same (instance, seq) but other content is a duplicate too.
        prop_assert_eq!(
            matches!(out, whouses_collector::store::Ingested::Duplicate),
            !first
        );
        if first {
            for e in &r.edges {
                let c = &e.counts;
                if c.is_zero() {
                    continue;
                }
                let m = model
                    .entry((r.service.clone(), e.host.clone(), e.port))
                    .or_default();
                m.0 += c.requests;
                m.1 += c.errors;
                m.2 += c.bytes_received;
                *hours
                    .entry((
                        r.service.clone(),
                        e.host.clone(),
                        e.port,
                        c.last_seen.0.div_euclid(HOUR_MS),
                    ))
                    .or_default() += c.requests;
            }
        }
    }
    // callers of each host:port, and of each host on any port.
    for (host, port) in HOSTS {
        let got = query::callers(
            store,
            host,
            vec![HostPattern::HostPort(host.into(), port)],
            None,
            None,
        )
        .await
        .unwrap();
        let mut want: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for ((svc, h, p), v) in &model {
            if h == host && *p == port {
                let w = want.entry(svc.clone()).or_default();
                w.0 += v.0;
                w.1 += v.1;
            }
        }
        let got: BTreeMap<String, (u64, u64)> = got
            .callers
            .iter()
            .map(|c| (c.service.clone(), (c.counts.requests, c.counts.errors)))
            .collect();
        prop_assert_eq!(got, want);
    }
    let any_port = query::callers(
        store,
        "old.internal",
        vec![HostPattern::Host("old.internal".into())],
        None,
        None,
    )
    .await
    .unwrap();
    let total: u64 = any_port.callers.iter().map(|c| c.counts.requests).sum();
    let want: u64 = model
        .iter()
        .filter(|((_, h, _), _)| h == "old.internal")
        .map(|(_, v)| v.0)
        .sum();
    prop_assert_eq!(total, want);
    // callees of each service.
    for svc in ["svc-a", "svc-b", "svc-c"] {
        let got = query::callees(store, svc, None, None).await.unwrap();
        let got: BTreeMap<(String, u16), (u64, u64)> = got
            .callees
            .iter()
            .map(|c| {
                (
                    (c.host.clone(), c.port),
                    (c.counts.requests, c.counts.bytes_received),
                )
            })
            .collect();
        let want: BTreeMap<(String, u16), (u64, u64)> = model
            .iter()
            .filter(|((s, _, _), _)| s == svc)
            .map(|((_, h, p), v)| ((h.clone(), *p), (v.0, v.2)))
            .collect();
        prop_assert_eq!(got, want);
    }
    // hosts: every host:port of the model, each with its number of callers (a
    // host the store lost, or one it made up, fails the comparison).
    let hosts = query::hosts(store, None, Timestamp::now()).await.unwrap();
    let got: BTreeMap<(String, u16), usize> = hosts
        .hosts
        .iter()
        .map(|h| ((h.host.clone(), h.port), h.callers))
        .collect();
    let mut want: BTreeMap<(String, u16), BTreeSet<&String>> = BTreeMap::new();
    for (s, h, p) in model.keys() {
        want.entry((h.clone(), *p)).or_default().insert(s);
    }
    let want: BTreeMap<(String, u16), usize> =
        want.into_iter().map(|(k, v)| (k, v.len())).collect();
    prop_assert_eq!(got, want);
    // `since` windows see the same totals when they cover everything.
    let all = store
        .edges(&EdgeFilter {
            since: Some(Timestamp(base - 7_200_000)),
            ..Default::default()
        })
        .await
        .unwrap();
    let sum: u64 = all.iter().map(|e| e.counts.requests).sum();
    prop_assert_eq!(sum, model.values().map(|v| v.0).sum::<u64>());
    // …and each hour boundary sees exactly the hours from it on, per edge.
    for hour in base.div_euclid(HOUR_MS)..=(base + 13 * PERIOD_MS).div_euclid(HOUR_MS) {
        let got: BTreeMap<(String, String, u16), u64> = store
            .edges(&EdgeFilter {
                since: Some(Timestamp(hour * HOUR_MS)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| ((e.service, e.host, e.port), e.counts.requests))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut want: BTreeMap<(String, String, u16), u64> = BTreeMap::new();
        for ((svc, h, p, hr), n) in &hours {
            if *hr >= hour && *n > 0 {
                *want.entry((svc.clone(), h.clone(), *p)).or_default() += n;
            }
        }
        prop_assert_eq!(got, want, "since hour {}", hour - base.div_euclid(HOUR_MS));
    }
    // `check`'s window calls (one bucket row per edge) equal the bucket sums at every hour:
    // with out-of-order batches marking edges stale (summed), once the upkeep recomputed
    // them (read from rows), and once every hour is folded into its day.
    let hours_from = base.div_euclid(HOUR_MS) - 1;
    let hours_to = (base + 13 * PERIOD_MS).div_euclid(HOUR_MS) + 1;
    for phase in ["as stored", "recomputed", "folded"] {
        match phase {
            "recomputed" => {
                store.rollup(Timestamp(0)).await.unwrap();
            }
            "folded" => {
                store
                    .rollup(Timestamp(Timestamp::now().0 + 3 * 24 * HOUR_MS))
                    .await
                    .unwrap();
            }
            _ => {}
        }
        for hour in hours_from..=hours_to {
            crate::common::assert_window_calls(store, hour * HOUR_MS, phase).await;
        }
    }
    store.close().await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_matches_a_naive_model(batches in prop::collection::vec(batch(), 1..40)) {
        run_case(Backend::Sqlite, &batches)?;
    }

    #[test]
    fn postgres_store_matches_a_naive_model(batches in prop::collection::vec(batch(), 1..40)) {
        run_case(Backend::Postgres, &batches)?;
    }
}
