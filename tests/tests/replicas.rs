//! Several collector replicas on one PostgreSQL (issue 15), with the real binaries: any
//! replica accepts any batch, a batch delivered to two replicas at the same moment is
//! stored once, a replica killed mid-commit loses nothing, and readiness follows the
//! database. Skipped (saying so) without `WHOUSES_TEST_POSTGRES_URL`.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use whouses_tests::bins::secs;
use whouses_tests::collector::Collector;
use whouses_tests::postgres::{self, Cluster};
use whouses_tests::sidecar::{client, send_through, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;
use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

const HOST: &str = "shared-db.internal";

/// "One Service in front of the replicas": a TCP round-robin. Each connection goes to the
/// next replica that accepts it, and lives at most `cut_after` (a sidecar's keep-alive
/// connection is cut now and then, sometimes mid-request: its next batch goes to the
/// other replica, and an answer lost in the cut makes it send the batch again).
struct RoundRobin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl RoundRobin {
    fn start(backends: Vec<SocketAddr>, cut_after: Duration) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let next = AtomicUsize::new(0);
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                // The next replica that takes the connection (a killed one does not).
                let first = next.fetch_add(1, Ordering::Relaxed);
                let upstream = (0..backends.len()).find_map(|i| {
                    let b = backends[(first + i) % backends.len()];
                    TcpStream::connect_timeout(&b, Duration::from_millis(500)).ok()
                });
                let Some(upstream) = upstream else {
                    continue;
                };
                pipe(client, upstream, cut_after);
            }
        });
        RoundRobin { addr, stop }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copy bytes both ways until either side closes or `cut_after` passes.
fn pipe(a: TcpStream, b: TcpStream, cut_after: Duration) {
    let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    let (a3, b3) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    copy(a, b);
    copy(b2, a2);
    std::thread::spawn(move || {
        std::thread::sleep(cut_after);
        let _ = a3.shutdown(Shutdown::Both);
        let _ = b3.shutdown(Shutdown::Both);
    });
}

fn replica(db: &str) -> Collector {
    Collector::builder().db_url(db).spawn()
}

/// Totals of `host` as a replica answers them.
fn totals(c: &Collector) -> u64 {
    c.requests_to(HOST)
}

#[test]
fn replicas_behind_one_address_count_every_request_once_through_kills() {
    let Some(db) = postgres::database("replicas_count_every_request_once") else {
        return;
    };
    let mut a = replica(&db);
    let b = replica(&db);
    let rr = RoundRobin::start(vec![a.addr, b.addr], Duration::from_millis(700));
    let up = Upstream::start("127.0.0.1");
    let sidecars: Vec<Sidecar> = (0..3)
        .map(|i| {
            Sidecar::builder(&format!("caller-{i}"))
                .collector(&rr.url())
                .args(&["--flush-interval", "200ms", "--environment", "prod"])
                .resolve(HOST, 80, up.addr())
                .spawn()
        })
        .collect();

    // Traffic through every sidecar in rounds while replica A is killed twice.
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let proxies: Vec<String> = sidecars.iter().map(|s| s.proxy_url()).collect();
    let load = {
        let (done, sent) = (done.clone(), sent.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !done.load(Ordering::Relaxed) && t.elapsed() < Duration::from_secs(60) {
                for p in &proxies {
                    let ok = send_through(p, &format!("http://{HOST}/x"), 20, 2);
                    sent.fetch_add(ok, Ordering::Relaxed);
                }
            }
        })
    };
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        a.kill9();
        std::thread::sleep(Duration::from_millis(1000));
        a.restart();
    }
    std::thread::sleep(Duration::from_millis(1500));
    done.store(true, Ordering::Relaxed);
    load.join().unwrap();

    let answered = up.requests();
    assert_eq!(sent.load(Ordering::Relaxed) as u64, answered);
    assert!(answered > 100, "enough traffic: {answered}");
    // Both replicas read the one database: each sees every request, once.
    wait::until_eq("replica A's totals", secs(30), answered, || totals(&a));
    wait::until_eq("replica B's totals", secs(10), answered, || totals(&b));
    // Nothing arrives later to double it.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(totals(&a), answered);
    assert_eq!(totals(&b), answered);
    for s in &sidecars {
        let counted = s.count(HOST, 80, "http", "requests");
        assert_eq!(
            counted,
            a.requests_from(HOST, &s.service),
            "{}: the sidecar's count is the stored count",
            s.service
        );
    }
}

fn batch(instance: usize, seq: u64, now: i64) -> Report {
    Report {
        version: REPORT_VERSION,
        service: format!("replayer-{}", instance % 3),
        environment: "prod".into(),
        instance: format!("replayer-{instance}"),
        seq,
        started_at: Timestamp(now - 3_600_000),
        period_start: Timestamp(now - 20_000 + seq as i64 * 100),
        period_end: Timestamp(now - 10_000 + seq as i64 * 100),
        flush_interval_ms: 10_000,
        edges: vec![Edge {
            host: HOST.into(),
            port: 5432,
            scheme: Scheme::Tcp,
            counts: Counts {
                requests: seq,
                connections: 1,
                errors: 0,
                bytes_sent: 10,
                bytes_received: 20,
                first_seen: Timestamp(now - 15_000),
                last_seen: Timestamp(now - 12_000),
            },
        }],
        ..Default::default()
    }
}

#[test]
fn the_same_batches_sent_to_both_replicas_at_once_are_stored_once() {
    let Some(db) = postgres::database("same_batches_to_both_replicas") else {
        return;
    };
    let a = Arc::new(replica(&db));
    let b = Arc::new(replica(&db));
    let now = Timestamp::now().0;
    let batches: Vec<Report> = (0..8)
        .flat_map(|i| (1..=10).map(move |seq| batch(i, seq, now)))
        .collect();
    let want: u64 = batches.iter().map(|r| r.edges[0].counts.requests).sum();
    // Each batch goes to both replicas at the same moment; then every batch again.
    for round in 0..2 {
        let barrier = Arc::new(Barrier::new(2));
        let senders: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .map(|c| {
                let batches = batches.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    for r in &batches {
                        barrier.wait();
                        let (status, body) = c.post_report(r, None);
                        assert!(status < 300, "round {round}: {status} {body}");
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
    }
    assert_eq!(a.requests_to(HOST), want);
    assert_eq!(b.requests_to(HOST), want);
    // Every instance counted each of its 10 batches once as a report.
    let services = a.get_json("/v1/services");
    let reports: Vec<u64> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap().iter())
        .map(|i| i["reports"].as_u64().unwrap())
        .collect();
    assert_eq!(reports, vec![10; 8], "{services}");
}

#[test]
fn readiness_follows_the_database() {
    let Some(cluster) = Cluster::start("readiness_follows_the_database") else {
        return;
    };
    let c = replica(&cluster.url);
    let ready = || {
        client()
            .get(format!("{}/readyz", c.url()))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    wait::until_eq("ready with the database up", secs(10), 200, ready);
    cluster.pause();
    wait::until_eq("not ready with the database stopped", secs(15), 503, ready);
    // Ingest answers 503 too (the sender keeps its batch and retries).
    let now = Timestamp::now().0;
    let (status, _) = c.post_report(&batch(0, 1, now), None);
    assert_eq!(status, 503);
    cluster.resume();
    wait::until_eq("ready again with the database back", secs(20), 200, ready);
    let (status, body) = c.post_report(&batch(0, 1, now), None);
    assert!(status < 300, "{status} {body}");
    assert_eq!(c.requests_to(HOST), 1);
}
