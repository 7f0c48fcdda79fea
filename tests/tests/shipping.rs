//! Issues 12 and 19: the shipper under everything the collector can answer besides 2xx —
//! too large (413), invalid (400), a refused token (401/403) — and a spool that is full,
//! holds leftovers, old formats or another instance's batches; readiness that never
//! stops the app, and shipping health an operator can alert on. Every test compares the
//! collector's totals with the requests actually sent: nothing lost, nothing doubled.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use whouses_tests::bins::{free_addr, secs};
use whouses_tests::collector::Collector;
use whouses_tests::sidecar::{proxied_client, send_through, temp_dir, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;
use whouses_wire::{Edge, Report, Scheme, Timestamp, REPORT_VERSION};

const OLD: &str = "tis-reference.internal";
const SHORT: &str = "a.internal";

/// Send one request to each of `n` distinct keys (`127.0.A.B:1`: nothing listens on
/// port 1, so each fails fast with a 502 and is counted once, with an error). Returns
/// how many requests were made.
fn distinct_keys(s: &Sidecar, n: usize) -> u64 {
    let c = proxied_client(&s.proxy_url());
    let mut made = 0;
    for i in 0..n {
        let url = format!("http://127.0.{}.{}:1/", 1 + i / 250, 1 + i % 250);
        let r = c.get(&url).send().unwrap();
        assert_eq!(r.status(), 502, "{url}");
        made += 1;
    }
    made
}

/// (keys, requests) the collector holds for callees of `service`.
fn callee_totals(c: &Collector, service: &str) -> (usize, u64) {
    let r = c.get(&format!("/v1/callees?service={service}"));
    if !r.status().is_success() {
        return (0, 0);
    }
    let v: Value = r.json().unwrap_or(Value::Null);
    let callees = v["callees"].as_array().cloned().unwrap_or_default();
    let requests = callees.iter().filter_map(|c| c["requests"].as_u64()).sum();
    (callees.len(), requests)
}

fn sidecar_requests_total(s: &Sidecar) -> u64 {
    s.stats()["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["requests"].as_u64())
        .sum()
}

/// Files in `dir` whose names end with `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Requests to `host` in the reports held in `files` (a report, or `{"report": …}`).
fn requests_in(files: &[PathBuf], host: &str) -> u64 {
    files
        .iter()
        .map(|p| read_json(p))
        .map(|v| {
            if v["report"].is_object() {
                v["report"].clone()
            } else {
                v
            }
        })
        .flat_map(|r| r["edges"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["host"] == host)
        .filter_map(|e| e["requests"].as_u64())
        .sum()
}

fn shipping_field(s: &Sidecar, field: &str) -> u64 {
    s.shipping()[field].as_u64().unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Issue 12 item 6: a batch over the collector's body limit used to get 413 forever and
/// block everything behind it. Now the sidecar splits it until it fits.
#[test]
fn a_batch_too_large_for_the_collector_is_split_and_every_count_arrives_once() {
    let collector = Collector::builder()
        .arg("--max-body-bytes")
        .arg("20000")
        .spawn();
    // A batch budget far above the collector's limit: ~600 keys make one ~110 KB batch.
    let s = Sidecar::builder("splitter")
        .collector(&collector.url())
        .args(&["--flush-interval", "1s", "--max-batch-bytes", "1048576"])
        .spawn();
    let sent = distinct_keys(&s, 600);
    assert_eq!(sidecar_requests_total(&s), sent);
    wait::until_eq("every key stored", secs(60), (600, sent), || {
        callee_totals(&collector, "splitter")
    });
    let sh = s.shipping();
    assert!(sh["batches_split"].as_u64().unwrap() >= 2, "{sh}");
    assert_eq!(sh["rejected_batches"], 0, "{sh}");
    assert!(s.metric("whouses_shipper_split_batches_total").unwrap() >= 2.0);
    s.wait_acked(2, secs(20));
    assert_eq!(
        callee_totals(&collector, "splitter"),
        (600, sent),
        "no doubles"
    );
    assert_eq!(s.admin_get("/shipping").0, 200);
}

/// A busy interval is cut into several batches under `--max-batch-bytes`, so a collector
/// with a limit just above it never has to refuse one.
#[test]
fn a_busy_interval_is_cut_into_batches_under_max_batch_bytes() {
    let collector = Collector::builder()
        .arg("--max-body-bytes")
        .arg("17000")
        .spawn();
    let s = Sidecar::builder("cutter")
        .collector(&collector.url())
        .args(&["--flush-interval", "1s", "--max-batch-bytes", "16384"])
        .spawn();
    let sent = distinct_keys(&s, 600);
    wait::until_eq("every key stored", secs(60), (600, sent), || {
        callee_totals(&collector, "cutter")
    });
    let sh = s.shipping();
    assert_eq!(sh["batches_split"], 0, "no batch needed splitting: {sh}");
    assert!(sh["batches_acked"].as_u64().unwrap() >= 7, "{sh}");
    s.wait_acked(2, secs(20));
    assert_eq!(callee_totals(&collector, "cutter"), (600, sent));
}

/// A batch that cannot be split small enough (one edge over the limit) is set aside in
/// the spool as `*.rejected` with its reason, shows in health and metrics, and the
/// batches after it ship.
#[test]
fn a_batch_refused_for_good_is_set_aside_and_later_batches_still_ship() {
    // A host name of 247 characters: one edge of it is larger than a batch with one
    // edge of a short name by ~240 bytes; the collector's limit sits in between.
    let long = [
        "a".repeat(60),
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(60),
    ]
    .join(".")
        + ".xyz";
    let report = |host: &str, n: u64| {
        let t = Timestamp(now_ms() / 1000 * 1000 + 123);
        serde_json::to_vec(&Report {
            version: REPORT_VERSION,
            service: "refused".into(),
            environment: "default".into(),
            instance: "refused-1".into(),
            seq: 1_795_000_000_000_000,
            started_at: t,
            period_start: t,
            period_end: t,
            flush_interval_ms: 300,
            edges: vec![Edge {
                host: host.into(),
                port: 80,
                scheme: Scheme::Http,
                counts: whouses_wire::Counts {
                    requests: n,
                    connections: n,
                    errors: n,
                    bytes_sent: n,
                    bytes_received: n,
                    first_seen: t,
                    last_seen: t,
                },
            }],
            ..Default::default()
        })
        .unwrap()
        .len()
    };
    let (short_size, long_size) = (report(SHORT, 99_999), report(&long, 1));
    assert!(short_size + 200 < long_size, "{short_size} vs {long_size}");
    let limit = (short_size + long_size) / 2;

    let (_guard, spool) = temp_dir();
    let collector = Collector::builder()
        .arg("--max-body-bytes")
        .arg(&limit.to_string())
        .spawn();
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("refused")
        .instance("refused-1")
        .collector(&collector.url())
        .args(&["--flush-interval", "300ms"])
        .spool(&spool)
        .resolve(&long, 80, up.addr())
        .resolve(SHORT, 80, up.addr())
        .spawn();
    assert_eq!(
        send_through(&s.proxy_url(), &format!("http://{long}/x"), 5, 1),
        5
    );
    // Every batch carrying the long name is set aside (one, or two if the five
    // requests straddled a cut).
    wait::until_eq("the long-name counts set aside", secs(30), 5, || {
        requests_in(&files(&spool, ".rejected"), &long)
    });
    let rejected = files(&spool, ".rejected");
    let kept = read_json(&rejected[0]);
    assert!(
        kept["reason"].as_str().unwrap().contains("413"),
        "the reason says why: {kept}"
    );
    assert_eq!(kept["report"]["instance"], "refused-1");
    // The file is written just before the status is updated.
    wait::until_eq(
        "the rejection counted",
        secs(10),
        rejected.len() as u64,
        || shipping_field(&s, "rejected_batches"),
    );
    assert_eq!(
        s.metric("whouses_shipper_rejected_batches_total").unwrap(),
        rejected.len() as f64
    );
    // Shipping is unhealthy and says why; the pod stays ready.
    let (status, body) = s.admin_get("/shipping");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("rejected by the collector"), "{body}");
    assert_eq!(s.admin_get("/readyz").0, 200);
    assert_eq!(s.admin_get("/readyz?shipping=strict").0, 503);

    // Later batches ship, exactly.
    assert_eq!(
        send_through(&s.proxy_url(), &format!("http://{SHORT}/y"), 7, 1),
        7
    );
    wait::until_eq("later counts delivered", secs(30), 7, || {
        collector.requests_to(SHORT)
    });
    s.wait_acked(2, secs(20));
    assert_eq!(collector.requests_to(SHORT), 7);
    assert_eq!(collector.requests_to(&long), 0, "set aside, never counted");
    assert_eq!(s.count(&long, 80, "http", "requests"), 5);
    assert!(files(&spool, ".json").is_empty());
}

fn spooled_report(instance: &str, seq: u64, period_end: i64, requests: u64) -> Report {
    Report {
        version: REPORT_VERSION,
        service: "ledger".into(),
        environment: "default".into(),
        instance: instance.into(),
        seq,
        started_at: Timestamp(period_end - 60_000),
        period_start: Timestamp(period_end - 10_000),
        period_end: Timestamp(period_end),
        flush_interval_ms: 10_000,
        edges: vec![Edge {
            host: OLD.into(),
            port: 80,
            scheme: Scheme::Http,
            counts: whouses_wire::Counts {
                requests,
                connections: requests,
                errors: 0,
                bytes_sent: 0,
                bytes_received: 0,
                first_seen: Timestamp(period_end - 5_000),
                last_seen: Timestamp(period_end - 1_000),
            },
        }],
        ..Default::default()
    }
}

/// Issue 19, the spool: a batch of another instance ships under its own instance; one
/// the collector rejects (a period in the future: 400) and one in an old format are set
/// aside as `*.rejected` with their reasons and do not block; a leftover `.tmp` is
/// deleted, a `.corrupt` file stays and counts toward nothing.
#[test]
fn a_spool_with_leftovers_old_formats_rejections_and_another_instance_ships_the_rest() {
    let (_guard, spool) = temp_dir();
    let write = |name: &str, body: Vec<u8>| std::fs::write(spool.join(name), body).unwrap();
    let now = now_ms();
    write(
        "batch-00000000000000001000.json",
        serde_json::to_vec(&spooled_report("old-pod", 1000, now - 60_000, 7)).unwrap(),
    );
    // An hour in the future: the collector answers 400.
    write(
        "batch-00000000000000001001.json",
        serde_json::to_vec(&spooled_report("old-pod", 1001, now + 3_600_000, 1000)).unwrap(),
    );
    let mut old_format = serde_json::to_value(spooled_report("old-pod", 999, now, 500)).unwrap();
    old_format["version"] = json!(0);
    write(
        "batch-00000000000000000999.json",
        serde_json::to_vec(&old_format).unwrap(),
    );
    write("batch-00000000000000000998.tmp", b"{\"vers".to_vec());
    write("batch-00000000000000000997.corrupt", b"{\"vers".to_vec());

    let collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("ledger")
        .instance("new-pod")
        .collector(&collector.url())
        .args(&["--flush-interval", "300ms", "--max-spooled", "3"])
        .spool(&spool)
        .resolve(OLD, 80, up.addr())
        .spawn();
    assert!(
        !spool.join("batch-00000000000000000998.tmp").exists(),
        "a stale .tmp is deleted at start"
    );
    assert_eq!(
        send_through(&s.proxy_url(), &format!("http://{OLD}/z"), 11, 1),
        11
    );
    wait::until_eq("old-pod's batch and new-pod's counts", secs(30), 18, || {
        collector.requests_to(OLD)
    });
    s.wait_acked(2, secs(20));
    assert_eq!(collector.requests_to(OLD), 18, "exactly once");
    let services = collector.get_json("/v1/services");
    let mut instances: Vec<String> = services["services"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap().to_string())
        .collect();
    instances.sort();
    assert_eq!(instances, vec!["new-pod", "old-pod"], "{services}");

    let rejected = files(&spool, ".rejected");
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let reasons: Vec<String> = rejected
        .iter()
        .map(|p| read_json(p)["reason"].as_str().unwrap().to_string())
        .collect();
    assert!(reasons[0].contains("version"), "{}", reasons[0]);
    assert!(
        reasons[1].contains("400") && reasons[1].contains("future"),
        "{}",
        reasons[1]
    );
    assert!(spool.join("batch-00000000000000000997.corrupt").exists());
    assert!(files(&spool, ".json").is_empty());
    assert_eq!(shipping_field(&s, "rejected_batches"), 2);
    assert_eq!(
        s.metric("whouses_shipper_rejected_batches_total"),
        Some(2.0)
    );
}

/// A full spool (`--max-spooled 2`) keeps further batches in memory: nothing is lost while
/// the process lives, and health says the spool is full.
#[test]
fn a_full_spool_keeps_batches_in_memory_and_loses_nothing() {
    let (_guard, spool) = temp_dir();
    let mut collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("hoarder")
        .collector(&collector.url())
        .args(&["--flush-interval", "200ms", "--max-spooled", "2"])
        .spool(&spool)
        .resolve(OLD, 80, up.addr())
        .spawn();
    collector.stop();
    let url = format!("http://{OLD}/f");
    assert_eq!(send_through(&s.proxy_url(), &url, 30, 2), 30);
    wait::until("five batches waiting", secs(20), || {
        (shipping_field(&s, "pending_batches") >= 5).then_some(())
    });
    assert_eq!(files(&spool, ".json").len(), 2, "the spool holds its limit");
    let (status, body) = s.admin_get("/shipping");
    assert_eq!(status, 503);
    assert!(body.contains("2 waiting batches"), "{body}");
    assert_eq!(send_through(&s.proxy_url(), &url, 20, 2), 20);
    collector.restart();
    wait::until_eq("everything delivered", secs(60), 50, || {
        collector.requests_to(OLD)
    });
    s.wait_acked(2, secs(20));
    assert_eq!(collector.requests_to(OLD), 50);
    assert!(files(&spool, ".json").is_empty());
    wait::until("healthy again", secs(20), || {
        (s.admin_get("/shipping").0 == 200).then_some(())
    });
}

/// A pod restarted under a new instance id finds the old instance's spooled batches and
/// ships them under the old instance: counted once, attributed to the right instance.
#[test]
fn spooled_batches_of_a_previous_instance_ship_under_their_own_instance() {
    let (_guard, spool) = temp_dir();
    let mut collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    let url = format!("http://{OLD}/p");
    let mut a = Sidecar::builder("pods")
        .instance("pod-a")
        .collector(&collector.url())
        .args(&["--flush-interval", "200ms"])
        .spool(&spool)
        .resolve(OLD, 80, up.addr())
        .spawn();
    collector.stop();
    assert_eq!(send_through(&a.proxy_url(), &url, 40, 2), 40);
    wait::until_eq("the 40 calls spooled", secs(20), 40, || {
        requests_in(&files(&spool, ".json"), OLD)
    });
    a.kill9();

    collector.restart();
    let b = Sidecar::builder("pods")
        .instance("pod-b")
        .collector(&collector.url())
        .args(&["--flush-interval", "200ms"])
        .spool(&spool)
        .resolve(OLD, 80, up.addr())
        .spawn();
    assert_eq!(send_through(&b.proxy_url(), &url, 10, 2), 10);
    wait::until_eq("both instances' counts", secs(30), 50, || {
        collector.requests_to(OLD)
    });
    b.wait_acked(2, secs(20));
    assert_eq!(collector.requests_to(OLD), 50);
    let services = collector.get_json("/v1/services");
    let reports = |id: &str| {
        services["services"][0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["instance"] == id)
            .map(|i| i["reports"].as_u64().unwrap_or(1))
    };
    assert!(reports("pod-a").is_some(), "{services}");
    assert!(reports("pod-b").is_some(), "{services}");
    assert!(files(&spool, ".json").is_empty());
}

/// Issue 19 item 5 and issue 12: the collector requires a token. A wrong one gets 403:
/// the sidecar keeps every count, retries, and shows it; once the token file is
/// corrected (rotated like a Secret) it ships everything, once. A fixed `--token` works
/// too.
#[test]
fn a_refused_token_keeps_the_counts_until_the_token_file_is_fixed() {
    let (_guard, dir) = temp_dir();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "wrong\n").unwrap();
    let collector = Collector::builder().ingest_token("t").spawn();
    let up = Upstream::start("127.0.0.1");
    let s = Sidecar::builder("rotated")
        .collector(&collector.url())
        .args(&["--flush-interval", "200ms"])
        .arg("--token-file")
        .arg(&token_file.display().to_string())
        .resolve(OLD, 80, up.addr())
        .spawn();
    let url = format!("http://{OLD}/t");
    assert_eq!(send_through(&s.proxy_url(), &url, 50, 2), 50);
    wait::until("the refusal to show", secs(20), || {
        let sh = s.shipping();
        (sh["last_status"] == 403 && sh["healthy"] == false).then_some(())
    });
    let (status, body) = s.admin_get("/shipping");
    assert_eq!(status, 503);
    assert!(body.contains("refuses this sidecar's token"), "{body}");
    assert_eq!(s.admin_get("/readyz").0, 200, "the app keeps its proxy");
    assert_eq!(s.metric("whouses_shipper_auth_failing"), Some(1.0));
    assert_eq!(collector.requests_to(OLD), 0);
    assert_eq!(s.count(OLD, 80, "http", "requests"), 50);

    // Rotate the Secret: a new file renamed over the old one.
    let tmp = dir.join("token.new");
    std::fs::write(&tmp, "t\n").unwrap();
    std::fs::rename(&tmp, &token_file).unwrap();
    wait::until_eq(
        "the counts shipped with the new token",
        secs(30),
        50,
        || collector.requests_to(OLD),
    );
    assert_eq!(send_through(&s.proxy_url(), &url, 30, 2), 30);
    wait::until_eq("later counts", secs(20), 80, || collector.requests_to(OLD));
    s.wait_acked(2, secs(20));
    assert_eq!(
        collector.requests_to(OLD),
        80,
        "nothing lost, nothing doubled"
    );
    assert_eq!(s.admin_get("/shipping").0, 200);

    // An emptied file keeps the last good token (and says so).
    std::fs::write(&token_file, "").unwrap();
    wait::until("the warning", secs(20), || {
        s.shipping()["token_warning"]
            .as_str()
            .filter(|w| w.contains("empty"))
            .map(|_| ())
    });
    assert_eq!(send_through(&s.proxy_url(), &url, 5, 1), 5);
    wait::until_eq("still shipping", secs(20), 85, || {
        collector.requests_to(OLD)
    });

    // A fixed --token works as well.
    let fixed = Sidecar::builder("fixed")
        .collector(&collector.url())
        .args(&["--flush-interval", "200ms", "--token", "t"])
        .resolve(OLD, 80, up.addr())
        .spawn();
    assert_eq!(send_through(&fixed.proxy_url(), &url, 20, 2), 20);
    wait::until_eq("the fixed-token sidecar's counts", secs(20), 20, || {
        collector.requests_from(OLD, "fixed")
    });
}

/// Issue 12 item 7: with `HTTP_PROXY` and friends pointing at its own listener (as when
/// injected beside an app), the sidecar must not send its reports through itself: it
/// would count itself as a caller of the collector, and its final flush would go to its
/// own closed listener.
#[test]
fn the_sidecar_never_sends_its_reports_through_a_proxy_from_its_environment() {
    let collector = Collector::spawn();
    let up = Upstream::start("127.0.0.1");
    // The proxy address must be in the environment before the sidecar starts, so it is
    // chosen here (bound and released). Should another process take it meanwhile, the
    // sidecar cannot bind it and the builder fails saying so: never a false pass.
    let own = free_addr("127.0.0.1");
    let own_url = format!("http://{own}");
    let mut b = Sidecar::builder("injected")
        .listen(own)
        .collector(&collector.url())
        .args(&["--flush-interval", "200ms"])
        .resolve(OLD, 80, up.addr());
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        b = b.env(var, &own_url);
    }
    b = b.env("NO_PROXY", "").env("no_proxy", "");
    let mut s = b.spawn();
    assert_eq!(s.proxy, own);
    let url = format!("http://{OLD}/e");
    assert_eq!(send_through(&s.proxy_url(), &url, 40, 2), 40);
    wait::until_eq("periodic flushes", secs(20), 40, || {
        collector.requests_to(OLD)
    });
    s.wait_acked(2, secs(20));
    let edges = s.stats()["edges"].as_array().unwrap().clone();
    assert_eq!(
        edges.len(),
        1,
        "only the app's upstream is counted: {edges:?}"
    );
    assert_eq!(edges[0]["host"], OLD);
    // The final flush after SIGTERM (the proxy listener is closed by then).
    assert_eq!(send_through(&s.proxy_url(), &url, 25, 1), 25);
    s.sigterm();
    assert_eq!(s.wait_exit(secs(30)), Some(0));
    assert_eq!(collector.requests_to(OLD), 65, "the final flush arrived");
    let callees = collector.get_json("/v1/callees?service=injected");
    assert_eq!(
        callees["callees"].as_array().unwrap().len(),
        1,
        "the collector is not a callee: {callees}"
    );
}

/// Issue 19: `/readyz` is about the proxy (never the collector: the app's traffic must
/// not stop), `/shipping` and `/readyz?shipping=strict` about shipping. Both listeners
/// answer; the probe listener gives no detail and serves nothing else.
#[test]
fn readiness_follows_the_proxy_and_shipping_health_follows_the_collector() {
    let mut collector = Collector::spawn();
    let s = Sidecar::builder("ready")
        .collector(&collector.url())
        .args(&["--flush-interval", "200ms", "--final-flush-timeout", "3s"])
        .probe()
        .spawn();
    let probe = s.probe.expect("a probe address");
    let probe_get = |path: &str| {
        let r = whouses_tests::sidecar::client()
            .get(format!("http://{probe}{path}"))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    wait::until("a first acknowledged batch", secs(20), || {
        (shipping_field(&s, "batches_acked") >= 1).then_some(())
    });
    let (status, body) = s.admin_get("/readyz");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true);
    assert_eq!(v["instance"], s.instance);
    assert_eq!(v["shipping"]["healthy"], true, "{body}");
    assert_eq!(s.admin_get("/shipping").0, 200);
    assert_eq!(s.admin_get("/readyz?shipping=strict").0, 200);
    assert_eq!(s.metric("whouses_shipper_healthy"), Some(1.0));
    assert_eq!(probe_get("/healthz"), (200, format!("ok {}\n", s.instance)));

    collector.stop();
    wait::until("shipping unhealthy", secs(20), || {
        (s.admin_get("/shipping").0 == 503).then_some(())
    });
    let (status, body) = s.admin_get("/readyz");
    assert_eq!(
        status, 200,
        "the collector never makes the pod unready: {body}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["shipping"]["healthy"], false);
    assert!(
        v["shipping"]["reason"]
            .as_str()
            .unwrap()
            .contains("not acknowledged"),
        "{body}"
    );
    assert!(
        v["shipping"]["oldest_pending_age_seconds"]
            .as_f64()
            .unwrap()
            > 0.6
    );
    assert_eq!(s.admin_get("/readyz?shipping=strict").0, 503);
    let (status, body) = probe_get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["shipping"],
        json!({"healthy": false}),
        "the probe port gives no detail"
    );
    assert_eq!(probe_get("/readyz?shipping=strict").0, 503);
    assert_eq!(probe_get("/stats").0, 404);
    assert_eq!(probe_get("/metrics").0, 404);
    assert_eq!(s.metric("whouses_shipper_healthy"), Some(0.0));
    assert!(s.metric("whouses_shipper_consecutive_failures").unwrap() >= 1.0);
    assert!(
        s.metric("whouses_shipper_oldest_pending_age_seconds")
            .unwrap()
            > 0.6
    );

    collector.restart();
    wait::until("shipping healthy again", secs(30), || {
        (s.admin_get("/shipping").0 == 200).then_some(())
    });

    // Draining: the final flush runs (and fails for up to 3 s: the collector is down),
    // and meanwhile /readyz says 503, draining.
    collector.stop();
    let mut s = s;
    s.sigterm();
    wait::until("/readyz draining", secs(10), || {
        let (status, body) = s.admin_get("/readyz");
        (status == 503 && body.contains("\"draining\":true")).then_some(())
    });
    assert_eq!(s.wait_exit(secs(20)), Some(0));
}

/// A count-only sidecar has no shipping to be unhealthy about.
#[test]
fn a_count_only_sidecar_reports_no_shipping_trouble() {
    let s = Sidecar::builder("counter").spawn();
    let (status, body) = s.admin_get("/shipping");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("count only"), "{body}");
    assert_eq!(s.admin_get("/readyz?shipping=strict").0, 200);
    // Only GET and HEAD.
    let r = whouses_tests::sidecar::client()
        .post(s.admin_url("/healthz"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
}
