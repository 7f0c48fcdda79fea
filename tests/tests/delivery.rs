//! Issue 4: sidecar → collector with nothing lost and nothing doubled, whatever fails.
//! Every test compares the collector's totals with the requests the upstream really
//! answered.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use whouses_tests::bins::secs;
use whouses_tests::collector::{whouses, Collector};
use whouses_tests::sidecar::{send_through, temp_dir, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;

const OLD: &str = "tis-reference.internal";
const NEW: &str = "reference.tis-lb.internal";
const FLUSH: &str = "300ms";

fn sidecar(service: &str, collector: &Collector, up: &Upstream, host: &str) -> Sidecar {
    Sidecar::builder(service)
        .collector(&collector.url())
        .args(&["--flush-interval", FLUSH, "--environment", "prod"])
        .resolve(host, 80, up.addr())
        .spawn()
}

/// The story of PRODUCT.md: six consumers, two repointed to the new name, four not.
#[test]
fn callers_of_the_old_address_are_exactly_the_services_not_repointed() {
    let collector = Collector::spawn();
    let old = Upstream::start("127.0.0.1");
    let new = Upstream::start("127.0.0.1");
    let consumers = [
        ("tis-notification-generator", false, 17),
        ("tis-concerns", false, 5),
        ("tis-bulk-upload", false, 11),
        ("tis-sync", false, 3),
        ("tis-trainee-ui", true, 8),
        ("tis-profile", true, 13),
    ];
    let mut sidecars = Vec::new();
    for (service, repointed, n) in consumers {
        let s = Sidecar::builder(service)
            .collector(&collector.url())
            .args(&["--flush-interval", FLUSH, "--environment", "prod"])
            .resolve(OLD, 80, old.addr())
            .resolve(NEW, 80, new.addr())
            .spawn();
        let host = if repointed { NEW } else { OLD };
        let ok = send_through(&s.proxy_url(), &format!("http://{host}/v1/grades"), n, 2);
        assert_eq!(ok, n, "{service}: all calls succeed through the sidecar");
        sidecars.push(s);
    }
    let stale_total: u64 = consumers.iter().filter(|c| !c.1).map(|c| c.2 as u64).sum();
    assert_eq!(old.requests(), stale_total);
    wait::until_eq("old address totals", secs(20), stale_total, || {
        collector.requests_to(OLD)
    });
    wait::until_eq("new address totals", secs(20), new.requests(), || {
        collector.requests_to(NEW)
    });

    let out = whouses(&[
        "--url",
        &collector.url(),
        "--format",
        "json",
        "callers",
        OLD,
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: Vec<(String, u64)> = v["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap().to_string(),
                c["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, u64)> = consumers
        .iter()
        .filter(|c| !c.1)
        .map(|c| (c.0.to_string(), c.2 as u64))
        .collect();
    want.sort();
    assert_eq!(got, want);
    for c in v["callers"].as_array().unwrap() {
        assert_eq!(c["environment"], "prod");
        assert_eq!(c["hosts"], serde_json::json!([format!("{OLD}:80")]));
    }

    // The table names them too, and check says the old address is in use (exit 1).
    let out = whouses(&["--url", &collector.url(), "callers", OLD]);
    let table = String::from_utf8_lossy(&out.stdout);
    for (service, repointed, _) in consumers {
        assert_eq!(
            table.contains(service),
            !repointed,
            "{service} in:\n{table}"
        );
    }
    let out = whouses(&["--url", &collector.url(), "check", OLD, "--quiet-for", "1h"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // /v1/services shows each instance's last report.
    let services = collector.get_json("/v1/services");
    assert_eq!(
        services["services"].as_array().unwrap().len(),
        consumers.len()
    );
    for s in services["services"].as_array().unwrap() {
        assert!(s["instances"][0]["last_report"].is_string(), "{s}");
    }
}

#[test]
fn collector_down_for_a_while_then_back_loses_nothing() {
    let mut collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    let s = sidecar("billing", &collector, &up, OLD);
    let url = format!("http://{OLD}/x");
    assert_eq!(send_through(&s.proxy_url(), &url, 100, 4), 100);
    wait::until_eq("first totals", secs(20), 100, || collector.requests_to(OLD));

    collector.stop();
    assert_eq!(send_through(&s.proxy_url(), &url, 250, 4), 250);
    // Let several flushes fail while the collector is down.
    wait::until("failed shipping attempts", secs(20), || {
        let f = s.stats()["shipping"]["consecutive_failures"].as_u64()?;
        (f >= 2).then_some(())
    });
    assert_eq!(send_through(&s.proxy_url(), &url, 150, 4), 150);
    collector.restart();
    wait::until_eq("totals after the outage", secs(60), 500, || {
        collector.requests_to(OLD)
    });
    assert_eq!(up.requests(), 500);
    // And stays exact: once two more batches are acknowledged, nothing is left to arrive
    // late as a duplicate.
    s.wait_acked(2, secs(20));
    assert_eq!(collector.requests_to(OLD), 500);
}

#[test]
fn collector_killed_mid_ingest_and_restarted_counts_exactly() {
    let mut collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("orders")
        .collector(&collector.url())
        .args(&["--flush-interval", "100ms"])
        .resolve(OLD, 80, up.addr())
        .spawn();
    let proxy = s.proxy_url();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, sent, proxy) = (stop.clone(), sent.clone(), proxy.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(
                    send_through(&proxy, &format!("http://{OLD}/y"), 20, 2),
                    Ordering::Relaxed,
                );
            }
        })
    };
    let acked = |s: &Sidecar| s.shipping()["batches_acked"].as_u64().unwrap_or(0);
    for _ in 0..3 {
        // Kill while batches are arriving every 100 ms: after a few more are stored.
        let before = acked(&s);
        wait::until("batches being stored", secs(20), || {
            (collector.requests_to(OLD) > 0 && acked(&s) >= before + 2).then_some(())
        });
        collector.kill9();
        // Down until the sidecar has seen it fail.
        wait::until("a failed shipping attempt", secs(20), || {
            (s.shipping()["consecutive_failures"].as_u64()? >= 1).then_some(())
        });
        collector.restart();
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let sent = sent.load(Ordering::Relaxed) as u64;
    assert!(sent > 0);
    assert_eq!(up.requests(), sent);
    wait::until_eq(
        "exact totals after kill -9 restarts",
        secs(60),
        sent,
        || collector.requests_to(OLD),
    );
    s.wait_acked(2, secs(30));
    assert_eq!(collector.requests_to(OLD), sent, "no late duplicates");
}

#[test]
fn sidecar_sigterm_ships_a_final_flush() {
    let collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    // A flush interval far beyond the test: only the final flush can deliver.
    let mut s = Sidecar::builder("payroll")
        .collector(&collector.url())
        .args(&["--flush-interval", "1h"])
        .resolve(OLD, 80, up.addr())
        .spawn();
    assert_eq!(
        send_through(&s.proxy_url(), &format!("http://{OLD}/z"), 321, 3),
        321
    );
    assert_eq!(collector.requests_to(OLD), 0);
    s.sigterm();
    assert_eq!(
        s.wait_exit(secs(30)),
        Some(0),
        "sidecar exits 0 after SIGTERM"
    );
    assert_eq!(
        collector.requests_to(OLD),
        321,
        "the final flush arrived before exit"
    );
}

#[test]
fn sidecar_kill9_with_spool_ships_spooled_batches_exactly_once() {
    let (_guard, spool) = temp_dir();
    let mut collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    let mut s = Sidecar::builder("ledger")
        .collector(&collector.url())
        .args(&["--flush-interval", FLUSH])
        .spool(&spool)
        .resolve(OLD, 80, up.addr())
        .spawn();
    let url = format!("http://{OLD}/w");
    assert_eq!(send_through(&s.proxy_url(), &url, 40, 2), 40);
    wait::until_eq("delivered while up", secs(20), 40, || {
        collector.requests_to(OLD)
    });

    // Collector down: batches pile up in the spool.
    collector.stop();
    assert_eq!(send_through(&s.proxy_url(), &url, 60, 2), 60);
    wait::until("the 60 calls cut into spooled batches", secs(20), || {
        let st = s.stats();
        let spooled = std::fs::read_dir(&spool).ok()?.count();
        let cut = st["shipping"]["pending_keys"].as_u64()?;
        (cut >= 1 && spooled >= 2).then_some(())
    });
    // Every call in a cut (and spooled) batch before the kill: the spool holds all 60.
    wait::until_eq("the 60 calls in spooled batches", secs(20), 60, || {
        spooled_requests(&spool, OLD)
    });
    s.kill9();
    let files = std::fs::read_dir(&spool).unwrap().count();
    assert!(files >= 1, "spooled batches survive kill -9");

    collector.restart();
    s.restart();
    wait::until_eq("spooled batches delivered", secs(30), 100, || {
        collector.requests_to(OLD)
    });
    wait::until("spool emptied", secs(20), || {
        (std::fs::read_dir(&spool).ok()?.count() == 0).then_some(())
    });
    s.wait_acked(2, secs(20));
    assert_eq!(collector.requests_to(OLD), 100, "exactly once");
}

/// Requests to `host` in the batches waiting in a spool directory.
fn spooled_requests(spool: &std::path::Path, host: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(spool) else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("batch-") && n.ends_with(".json")
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .flat_map(|r| r["edges"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["host"] == host)
        .filter_map(|e| e["requests"].as_u64())
        .sum()
}

/// Never break the app: a collector that accepts and never answers stalls only the
/// shipper. Every request through the proxy still succeeds and is counted, the pod stays
/// ready (`/readyz` 200), and the trouble shows where an operator looks (`/shipping` 503,
/// `/readyz?shipping=strict` 503). No timing is compared: a proxy that waited on the
/// shipper would fail the requests, not just slow them (each client gives up after 1 s,
/// below the shipper's 2 s request timeout).
#[test]
fn a_hanging_collector_does_not_stop_the_proxy_and_shows_in_shipping_health() {
    let up = Upstream::start("127.0.0.1");
    // A "collector" that accepts connections and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}", hang.local_addr().unwrap());
    let keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hang.incoming().take(50) {
            held.push(c);
        }
    });
    let stuck = Sidecar::builder("stuck")
        .collector(&hang_url)
        .args(&["--flush-interval", "100ms"])
        .resolve(OLD, 80, up.addr())
        .spawn();
    // The shipper is stuck in a request to the collector before the traffic starts.
    wait::until("the shipper to be unhealthy", secs(20), || {
        (stuck.admin_get("/shipping").0 == 503).then_some(())
    });
    let client = reqwest::blocking::Client::builder()
        .proxy(reqwest::Proxy::all(stuck.proxy_url()).unwrap())
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let url = format!("http://{OLD}/t");
    for i in 0..300 {
        let r = client
            .get(&url)
            .send()
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status(), 200, "request {i}");
    }
    assert_eq!(up.requests(), 300);
    assert_eq!(stuck.count(OLD, 80, "http", "requests"), 300);
    let (status, body) = stuck.admin_get("/readyz");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["shipping"]["healthy"], false, "{body}");
    assert!(
        v["shipping"]["reason"]
            .as_str()
            .unwrap()
            .contains("not acknowledged"),
        "{body}"
    );
    assert_eq!(stuck.admin_get("/readyz?shipping=strict").0, 503);
    drop(keep);
}
