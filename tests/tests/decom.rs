//! Issue 16, the decommission workflow, end to end with the real binaries: watches whose
//! alerts reach a real Alertmanager and a plain webhook receiver (through a collector
//! restart), the migration story, and diff and timeline answers per hour bucket.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use whouses_tests::alerting::{Alertmanager, Receiver};
use whouses_tests::bins::secs;
use whouses_tests::collector::{whouses, Collector};
use whouses_tests::sidecar::{self, send_through, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;

const OLD: &str = "tis-reference.internal";
const NEW: &str = "reference.tis-lb.internal";
/// The sidecars' flush interval: an alert must be in Alertmanager within two.
const FLUSH: Duration = Duration::from_secs(1);
const ADMIN: &str = "decom-admin-token";

/// The owners file: every `tis-*` service belongs to team tis.
const OWNERS: &str = "[services.\"tis-*\"]\nteam = \"tis\"\ncontact = \"#tis-oncall\"\n";

fn sidecar(
    service: &str,
    collector: &Collector,
    old: &Upstream,
    new: &Upstream,
) -> sidecar::Builder {
    let flush = format!("{}ms", FLUSH.as_millis());
    Sidecar::builder(service)
        .collector(&collector.url())
        .args(&["--flush-interval", &flush, "--environment", "prod"])
        .resolve(OLD, 80, old.addr())
        .resolve(NEW, 80, new.addr())
}

/// `(service, kind)` of each alert a receiver holds.
fn am_keys(alerts: &[Value]) -> BTreeSet<(String, String)> {
    alerts
        .iter()
        .map(|a| {
            (
                a["labels"]["service"].as_str().unwrap_or("").to_string(),
                a["labels"]["kind"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The generic bodies a receiver accepted for one (service, kind).
fn bodies_for(r: &Receiver, service: &str, kind: &str) -> Vec<Value> {
    r.bodies()
        .into_iter()
        .filter(|b| b["service"] == service && b["kind"] == kind)
        .collect()
}

fn owned(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The story of PRODUCT.md, with a watch: the old reference address is watched from now,
/// notifying a real Alertmanager and a Slack-style webhook (which refuses its first
/// POST: retried). A stale caller keeps calling → `traffic-after-cutoff` naming it and
/// its owner, in Alertmanager within two flush intervals. The collector is restarted; a
/// second stale caller calls while it is down → its alert still comes (nothing lost),
/// the first one's is not sent again (`--renotify-after` 1h). The old upstream is
/// stopped → `failing-calls` for exactly the two callers still pointing at it, not for
/// the repointed one nor the one that went quiet before the cutoff.
#[test]
fn a_watch_alerts_alertmanager_and_a_webhook_through_a_restart_without_loss_or_repeats() {
    let am = Alertmanager::start();
    let hook = Receiver::start(1);
    let dir = tempfile::tempdir().unwrap();
    let owners = dir.path().join("owners.toml");
    std::fs::write(&owners, OWNERS).unwrap();
    let mut collector = Collector::builder()
        .args(&[
            "--admin-token",
            ADMIN,
            "--watch-interval",
            "200ms",
            "--renotify-after",
            "1h",
            "--owners",
            &owners.display().to_string(),
        ])
        .spawn();
    let old = Upstream::start("127.0.0.1");
    let new = Upstream::start("127.0.0.1");

    // Stale: still on the old address. Bulk-upload's owner comes from its sidecar.
    let gen = sidecar("tis-notification-generator", &collector, &old, &new).spawn();
    let bulk = sidecar("bulk-upload", &collector, &old, &new)
        .args(&["--owner", "uploads"])
        .spawn();
    // Repointed to the new address, and one that stopped calling before the cutoff.
    let profile = sidecar("tis-profile", &collector, &old, &new).spawn();
    let sync = sidecar("tis-sync", &collector, &old, &new).spawn();
    let old_url = format!("http://{OLD}/v1/grades");
    let new_url = format!("http://{NEW}/v1/grades");
    assert_eq!(send_through(&gen.proxy_url(), &old_url, 4, 1), 4);
    assert_eq!(send_through(&bulk.proxy_url(), &old_url, 3, 1), 3);
    assert_eq!(send_through(&sync.proxy_url(), &old_url, 2, 1), 2);
    assert_eq!(send_through(&profile.proxy_url(), &new_url, 5, 1), 5);
    wait::until_eq("the calls before the cutoff", secs(20), 9, || {
        collector.requests_to(OLD)
    });

    // The watch, from now, through the CLI (the admin token is needed).
    let url = collector.url();
    let denied = whouses(&[
        "--url",
        &url,
        "watch",
        "add",
        OLD,
        "--notify",
        &am.alerts_url(),
    ]);
    assert_ne!(denied.status.code(), Some(0), "{denied:?}");
    let out = whouses(&[
        "--url",
        &url,
        "--admin-token",
        ADMIN,
        "--format",
        "json",
        "watch",
        "add",
        OLD,
        "--from",
        "now",
        "--to",
        NEW,
        "--notify",
        &am.alerts_url(),
        "--notify",
        &hook.url(),
        "--note",
        "CHG-1234: reference moved behind the new LB",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let watch: Value = serde_json::from_slice(&out.stdout).unwrap();
    let watch_id = watch["id"].as_u64().unwrap().to_string();

    // Calls before the cutoff are history: a few rounds, and nothing fired.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(am.alerts().is_empty(), "{:?}", am.alerts());
    assert!(hook.bodies().is_empty() && hook.refused() == 0);

    // 1. A stale caller calls after the cutoff: in Alertmanager within two flush intervals.
    assert_eq!(send_through(&gen.proxy_url(), &old_url, 6, 1), 6);
    let called = Instant::now();
    let alert = wait::until(
        "the traffic-after-cutoff alert in Alertmanager",
        2 * FLUSH,
        || {
            am.alerts_of("traffic-after-cutoff")
                .into_iter()
                .find(|a| a["labels"]["service"] == "tis-notification-generator")
        },
    );
    eprintln!(
        "traffic-after-cutoff in Alertmanager {:?} after the calls",
        called.elapsed()
    );
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "WhousesTrafficAfterCutoff");
    assert_eq!(labels["watch"], watch_id.as_str());
    assert_eq!(labels["host"], OLD);
    assert_eq!(labels["environment"], "prod");
    assert_eq!(labels["team"], "tis");
    let ann = &alert["annotations"];
    assert_eq!(ann["owner"], "tis (#tis-oncall)");
    let summary = ann["summary"].as_str().unwrap();
    assert!(
        summary.contains("tis-notification-generator") && summary.contains(OLD),
        "{summary}"
    );
    assert!(summary.contains("CHG-1234"), "{summary}");
    assert_eq!(alert["status"]["state"], "active");
    let gen_traffic_updated = alert["updatedAt"].clone();
    assert_eq!(
        am_keys(&am.alerts()),
        BTreeSet::from([(
            "tis-notification-generator".to_string(),
            "traffic-after-cutoff".to_string()
        )])
    );

    // The webhook refused the first POST; the retry brings the generic body.
    let body = wait::until("the generic body at the webhook", secs(20), || {
        bodies_for(&hook, "tis-notification-generator", "traffic-after-cutoff")
            .into_iter()
            .next()
    });
    assert_eq!(hook.refused(), 1);
    let text = body["text"].as_str().unwrap();
    assert!(!text.contains('\n'), "one line: {text:?}");
    for needle in [
        "tis-notification-generator",
        OLD,
        "tis (#tis-oncall)",
        "CHG-1234",
    ] {
        assert!(text.contains(needle), "{needle} in {text:?}");
    }
    assert_eq!(body["kind"], "traffic-after-cutoff");
    assert_eq!(body["environment"], "prod");
    assert_eq!(body["host"], OLD);
    assert_eq!(body["watch"].as_u64().unwrap().to_string(), watch_id);
    assert_eq!(body["owner"]["team"], "tis");
    // Calls since the cutoff, at hour granularity (the cutoff's hour counts whole: the
    // 4 before it too), requests plus upstream connections as everywhere.
    let calls = body["calls"].as_u64().unwrap();
    assert!(
        (6..=12).contains(&calls),
        "the calls after the cutoff: {body}"
    );
    assert!(body["first_seen"].is_string() && body["last_seen"].is_string());

    // 2. The collector restarts; meanwhile the first caller keeps calling and the second
    //    stale caller calls for the first time since the cutoff.
    collector.stop();
    assert_eq!(send_through(&gen.proxy_url(), &old_url, 2, 1), 2);
    assert_eq!(send_through(&bulk.proxy_url(), &old_url, 5, 1), 5);
    collector.restart();
    wait::until_eq("the calls made while it was down", secs(30), 8, || {
        collector.requests_from(OLD, "bulk-upload")
    });
    wait::until_eq("the calls made while it was down", secs(30), 12, || {
        collector.requests_from(OLD, "tis-notification-generator")
    });
    // Nothing lost: the second caller's alert, naming its sidecar-reported owner.
    let b = wait::until("bulk-upload's alert after the restart", secs(20), || {
        am.alerts_of("traffic-after-cutoff")
            .into_iter()
            .find(|a| a["labels"]["service"] == "bulk-upload")
    });
    assert_eq!(b["labels"]["team"], "uploads");
    wait::until("bulk-upload's generic body", secs(20), || {
        (!bodies_for(&hook, "bulk-upload", "traffic-after-cutoff").is_empty()).then_some(())
    });
    // Nothing repeated: some rounds later the first caller's alert was not sent again.
    std::thread::sleep(Duration::from_millis(1500));
    let again = am
        .alerts_of("traffic-after-cutoff")
        .into_iter()
        .find(|a| a["labels"]["service"] == "tis-notification-generator")
        .unwrap();
    assert_eq!(
        again["updatedAt"], gen_traffic_updated,
        "re-posted to Alertmanager before --renotify-after"
    );
    assert_eq!(
        bodies_for(&hook, "tis-notification-generator", "traffic-after-cutoff").len(),
        1
    );

    // 3. The old upstream is stopped: the stale callers now fail, the repointed one not.
    drop(old);
    assert_eq!(send_through(&gen.proxy_url(), &old_url, 3, 1), 0);
    assert_eq!(send_through(&bulk.proxy_url(), &old_url, 2, 1), 0);
    assert_eq!(send_through(&profile.proxy_url(), &new_url, 4, 1), 4);
    let failing = wait::until(
        "failing-calls alerts for both stale callers",
        secs(20),
        || {
            let f = am.alerts_of("failing-calls");
            (f.len() >= 2).then_some(f)
        },
    );
    let errors_of = |service: &str| -> u64 {
        collector.get_json(&format!("/v1/callers?host={OLD}"))["callers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["service"] == service))
            .and_then(|c| c["errors"].as_u64())
            .unwrap_or(0)
    };
    wait::until_eq("the failing calls stored", secs(20), (3, 2), || {
        (
            errors_of("tis-notification-generator"),
            errors_of("bulk-upload"),
        )
    });
    std::thread::sleep(Duration::from_millis(1000));
    let failing_services: BTreeSet<String> = am
        .alerts_of("failing-calls")
        .iter()
        .map(|a| a["labels"]["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        failing_services,
        owned(&["bulk-upload", "tis-notification-generator"]),
        "{failing:?}"
    );
    for a in am.alerts_of("failing-calls") {
        assert_eq!(a["labels"]["alertname"], "WhousesFailingCalls");
        assert_eq!(a["labels"]["watch"], watch_id.as_str());
    }
    wait::until("both failing-calls bodies at the webhook", secs(20), || {
        let services: BTreeSet<String> = hook
            .bodies()
            .iter()
            .filter(|b| b["kind"] == "failing-calls")
            .map(|b| b["service"].as_str().unwrap_or("").to_string())
            .collect();
        (services == owned(&["bulk-upload", "tis-notification-generator"])).then_some(())
    });
    let gen_failing = bodies_for(&hook, "tis-notification-generator", "failing-calls");
    assert!(
        gen_failing[0]["text"]
            .as_str()
            .unwrap()
            .contains("failing call"),
        "{gen_failing:?}"
    );

    // Exactly one notification per (caller, kind), at both receivers.
    let mut per: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for b in hook.bodies() {
        *per.entry((
            b["service"].as_str().unwrap().to_string(),
            b["kind"].as_str().unwrap().to_string(),
        ))
        .or_default() += 1;
    }
    assert_eq!(
        per.into_iter().collect::<Vec<_>>(),
        vec![
            (("bulk-upload".into(), "failing-calls".into()), 1),
            (("bulk-upload".into(), "traffic-after-cutoff".into()), 1),
            (
                ("tis-notification-generator".into(), "failing-calls".into()),
                1
            ),
            (
                (
                    "tis-notification-generator".into(),
                    "traffic-after-cutoff".into()
                ),
                1
            ),
        ]
    );
    assert_eq!(am.alerts().len(), 4, "{:?}", am.alerts());

    // What `watch list` and /metrics say.
    let list = whouses(&["--url", &url, "--format", "json", "watch", "list"]);
    assert_eq!(list.status.code(), Some(0), "{list:?}");
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    let w = &list["watches"][0];
    assert_eq!(w["alerts"].as_array().unwrap().len(), 4, "{w}");
    for a in w["alerts"].as_array().unwrap() {
        assert_eq!(a["notifications"], 1, "{a}");
    }
    assert_eq!(w["deliveries"]["pending"], 0, "{w}");
    let metrics = collector.get("/metrics").text().unwrap();
    let sample = |name: &str, service: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("whouses_collector_{name}{{"))
                    && l.contains(&format!("service=\"{service}\""))
                    && l.contains(&format!("watch=\"{watch_id}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        sample("watch_failing_calls", "tis-notification-generator"),
        Some(3.0)
    );
    assert_eq!(sample("watch_failing_calls", "bulk-upload"), Some(2.0));
    assert_eq!(sample("watch_failing_calls", "tis-sync"), Some(0.0));
    assert!(sample("watch_calls", "tis-notification-generator").unwrap() >= 11.0);
    assert_eq!(sample("watch_calls", "tis-sync"), Some(0.0));
    assert_eq!(
        sample("watch_calls", "tis-profile"),
        None,
        "not a caller of {OLD}"
    );
}
