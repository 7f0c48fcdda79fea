//! The shipper's decisions on each answer, against a scripted collector in-process: what
//! is split, what is set aside, what is retried — and that every count reaches a stored
//! batch exactly once, or a set-aside one, never both.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use whouses_wire::{Report, Scheme, Timestamp};

use super::client::Verdict;
use super::spool::Spool;
use super::token::Token;
use super::{Core, Settings};
use crate::counters::Counters;
use crate::Identity;

/// What the scripted collector saw: every report with the status it answered.
type Seen = Arc<Mutex<Vec<(Report, u16)>>>;

/// A collector on loopback answering `answer(report, attempts of this seq so far)`.
async fn collector(
    answer: impl Fn(&Report, usize) -> u16 + Send + Sync + 'static,
) -> (reqwest::Url, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = super::reports_url(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let seen: Seen = Arc::default();
    let answer = Arc::new(answer);
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, answer) = (s.clone(), answer.clone());
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (seen, answer) = (seen.clone(), answer.clone());
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let report = Report::from_json(&body).unwrap();
                        let status = {
                            let mut seen = seen.lock().unwrap();
                            let attempts = seen
                                .iter()
                                .filter(|(r, _)| {
                                    r.instance == report.instance && r.seq == report.seq
                                })
                                .count();
                            let status = answer(&report, attempts);
                            seen.push((report, status));
                            status
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from_static(
                            b"{\"error\":\"scripted\"}",
                        )));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (url, seen)
}

fn identity() -> Identity {
    Identity {
        service: "svc".into(),
        environment: "prod".into(),
        instance: "svc-1".into(),
        started_at: Timestamp::now(),
        owner: None,
    }
}

fn core(
    url: reqwest::Url,
    spool: Option<Spool>,
    counters: Arc<Counters>,
    max_batch_bytes: usize,
) -> Core {
    let settings = Settings {
        url,
        token: Token::None,
        flush_interval: Duration::from_secs(1),
        max_batch_bytes,
        client: super::client::build(Duration::from_secs(1), None).unwrap(),
        observers: Default::default(),
    };
    Core::new(
        settings,
        spool,
        identity(),
        counters,
        &mut Registry::default(),
    )
    .unwrap()
}

/// Count one request to each of `hosts`.
fn count(counters: &Counters, hosts: &[String]) {
    for h in hosts {
        counters
            .edge(h, 80, Scheme::Http)
            .record_request(Timestamp::now().0);
    }
}

fn hosts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}.internal")).collect()
}

/// Requests per host over the reports the collector stored (2xx), each `(instance,
/// seq)` once, as the real collector counts them.
fn stored(seen: &Seen) -> HashMap<String, u64> {
    let mut by_seq = HashMap::new();
    for (r, status) in seen.lock().unwrap().iter() {
        if (200..300).contains(status) {
            by_seq.insert((r.instance.clone(), r.seq), r.clone());
        }
    }
    let mut out = HashMap::new();
    for r in by_seq.values() {
        for e in &r.edges {
            *out.entry(e.host.clone()).or_default() += e.counts.requests;
        }
    }
    out
}

fn once_each(hosts: &[String]) -> HashMap<String, u64> {
    hosts.iter().map(|h| (h.clone(), 1)).collect()
}

#[tokio::test]
async fn a_batch_refused_as_too_large_is_split_under_new_seqs_until_it_fits() {
    let (url, seen) = collector(|r, _| if r.edges.len() > 2 { 413 } else { 200 }).await;
    let counters = Arc::new(Counters::new(100));
    let mut core = core(url, None, counters.clone(), 512 * 1024);
    let hs = hosts("split", 8);
    count(&counters, &hs);
    core.cut_batch();
    let original = core.pending[0].report.seq;
    core.send_pending().await.unwrap();
    assert!(core.pending.is_empty());
    assert_eq!(
        stored(&seen),
        once_each(&hs),
        "every count stored exactly once"
    );
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|(r, s)| r.seq != original || *s == 413),
        "the refused seq is never stored"
    );
    let seqs: Vec<u64> = seen.iter().map(|(r, _)| r.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqs rise in send order: {seqs:?}"
    );
    // 8 → 4 + 4 → 2 + 2 + 2 + 2: three splits.
    assert_eq!(super::lock(&core.status).batches_split, 3);
    assert_eq!(super::lock(&core.status).rejected_batches, 0);
}

#[tokio::test]
async fn a_batch_that_may_already_be_stored_is_set_aside_not_split() {
    // A gateway answers 502 (maybe after the collector stored it), then 413.
    let (url, seen) = collector(|r, attempts| match (r.edges.len(), attempts) {
        (0, _) => 200,
        (_, 0) => 502,
        _ => 413,
    })
    .await;
    let counters = Arc::new(Counters::new(100));
    let mut core = core(url, None, counters.clone(), 512 * 1024);
    count(&counters, &hosts("maybe", 4));
    core.cut_batch();
    let err = core.send_pending().await.unwrap_err();
    assert_eq!(err.verdict(), Verdict::Retry);
    assert!(core.pending[0].maybe_stored);
    core.send_pending().await.unwrap();
    assert!(core.pending.is_empty());
    assert_eq!(core.rejected.len(), 1, "kept in memory without a spool");
    assert!(
        stored(&seen).is_empty(),
        "halves would have counted it twice"
    );
    let status = super::lock(&core.status).clone();
    assert_eq!(status.batches_split, 0);
    assert_eq!(status.rejected_batches, 1);
    let reason = status.last_rejection.clone().unwrap().reason;
    assert!(reason.contains("may have been stored"), "{reason}");
    assert!(!status.health(Timestamp::now()).healthy);
    // The next batch (a heartbeat) ships.
    core.cut_batch();
    core.send_pending().await.unwrap();
}

#[tokio::test]
async fn a_spooled_batch_refused_as_too_large_is_set_aside_in_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 100).unwrap();
    let (url, seen) = collector(|r, _| if r.edges.len() > 1 { 413 } else { 200 }).await;
    // An earlier run's batch: it may have been stored just before that run ended.
    {
        let counters = Arc::new(Counters::new(100));
        let mut earlier = core(url.clone(), None, counters.clone(), 512 * 1024);
        count(&counters, &hosts("earlier", 3));
        earlier.cut_batch();
        spool.write(&earlier.pending[0].report, None).unwrap();
    }
    let counters = Arc::new(Counters::new(100));
    let mut core = core(url, Some(spool), counters.clone(), 512 * 1024);
    assert!(core.pending[0].maybe_stored);
    count(&counters, &hosts("now", 1));
    core.cut_batch();
    core.send_pending().await.unwrap();
    assert_eq!(stored(&seen), once_each(&hosts("now", 1)));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".rejected"), "{names:?}");
}

#[tokio::test]
async fn halves_are_spooled_before_the_parent_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 100).unwrap();
    // Refuse everything larger than one edge; then fail, so the halves stay spooled.
    let (url, _seen) = collector(|r, _| if r.edges.len() > 1 { 413 } else { 503 }).await;
    let counters = Arc::new(Counters::new(100));
    let mut core = core(url, Some(spool), counters.clone(), 512 * 1024);
    count(&counters, &hosts("half", 2));
    core.cut_batch();
    let parent = core.pending[0].report.seq;
    assert!(core.send_pending().await.is_err());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    for n in &names {
        assert!(n.ends_with(&format!("-of-{parent:020}.json")), "{names:?}");
    }
}

#[tokio::test]
async fn a_rejected_batch_does_not_block_the_next_and_a_refused_token_keeps_the_batch() {
    let refuse_token = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first_seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (rt, fs) = (refuse_token.clone(), first_seq.clone());
    let (url, seen) = collector(move |r, _| {
        use std::sync::atomic::Ordering::SeqCst;
        if rt.load(SeqCst) {
            403
        } else if r.seq == fs.load(SeqCst) {
            400
        } else {
            200
        }
    })
    .await;
    let counters = Arc::new(Counters::new(100));
    let mut core = core(url, None, counters.clone(), 512 * 1024);
    count(&counters, &hosts("bad", 1));
    core.cut_batch();
    first_seq.store(
        core.pending[0].report.seq,
        std::sync::atomic::Ordering::SeqCst,
    );
    count(&counters, &hosts("good", 1));
    core.cut_batch();
    core.send_pending().await.unwrap();
    assert_eq!(stored(&seen), once_each(&hosts("good", 1)));
    assert_eq!(core.rejected.len(), 1);

    refuse_token.store(true, std::sync::atomic::Ordering::SeqCst);
    count(&counters, &hosts("later", 1));
    core.cut_batch();
    let err = core.send_pending().await.unwrap_err();
    assert_eq!(err.verdict(), Verdict::Auth);
    assert_eq!(core.pending.len(), 1, "kept for a retry");
    assert!(!core.pending[0].maybe_stored);
    let health = super::lock(&core.status).health(Timestamp::now());
    assert!(health.reason.contains("token"), "{}", health.reason);
    refuse_token.store(false, std::sync::atomic::Ordering::SeqCst);
    core.send_pending().await.unwrap();
    let mut want = once_each(&hosts("good", 1));
    want.extend(once_each(&hosts("later", 1)));
    assert_eq!(stored(&seen), want);
}

#[tokio::test]
async fn cuts_stay_under_max_batch_bytes() {
    let (url, seen) = collector(|_, _| 200).await;
    let counters = Arc::new(Counters::new(1000));
    let mut core = core(url, None, counters.clone(), 16 * 1024);
    let hs = hosts("a-rather-long-upstream-name-to-fill-batches-quickly", 300);
    count(&counters, &hs);
    core.cut_batch();
    while core.more {
        core.cut_batch();
    }
    assert!(core.pending.len() >= 3, "{} batches", core.pending.len());
    for p in &core.pending {
        let size = serde_json::to_vec(&p.report).unwrap().len();
        assert!(size <= 16 * 1024, "seq {}: {size} bytes", p.report.seq);
    }
    core.send_pending().await.unwrap();
    assert_eq!(stored(&seen), once_each(&hs));
}
