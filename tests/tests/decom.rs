//! Issue 16, the decommission workflow, end to end with the real binaries: watches whose
//! alerts reach a real Alertmanager and a plain webhook receiver (through a collector
//! restart), re-notification, the migration story, diff and timeline answers per hour
//! bucket, and the dashboard, a host's page and the migration view in headless Chromium.
//!
//! Past hours are crafted batches (`whouses_tests::reports`), all within the collector's
//! `--max-backfill` (7 days) so their periods count as coverage; the current hour's calls
//! go through real sidecars to real upstreams.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use whouses_tests::alerting::{Alertmanager, Receiver};
use whouses_tests::bins::secs;
use whouses_tests::browser::Browser;
use whouses_tests::collector::{whouses, Collector};
use whouses_tests::reports::{edge, report, DAY, HOUR, MIN};
use whouses_tests::sidecar::{self, send_through, Sidecar};
use whouses_tests::upstream::Upstream;
use whouses_tests::wait;
use whouses_wire::Timestamp;

const OLD: &str = "tis-reference.internal";
const NEW: &str = "reference.tis-lb.internal";
/// The sidecars' flush interval: an alert must be in Alertmanager within two.
const FLUSH: Duration = Duration::from_secs(2);
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

/// The notifications a receiver accepted, each once and in order: delivery is at least
/// once, so a notification whose 2xx the collector did not see arrives again, with the
/// same `notification` number (see [`assert_repeats_were_retries`]).
fn notices(r: &Receiver) -> Vec<Value> {
    let mut seen = BTreeSet::new();
    r.bodies()
        .into_iter()
        .filter(|b| {
            seen.insert((
                b["watch"].to_string(),
                b["service"].to_string(),
                b["kind"].to_string(),
                b["notification"].to_string(),
            ))
        })
        .collect()
}

/// The notifications a receiver accepted for one (service, kind).
fn bodies_for(r: &Receiver, service: &str, kind: &str) -> Vec<Value> {
    notices(r)
        .into_iter()
        .filter(|b| b["service"] == service && b["kind"] == kind)
        .collect()
}

/// A notification the receiver got twice was retried by the collector (it never saw the
/// first 2xx): never more repeats than retries beyond the ones the receiver refused.
fn assert_repeats_were_retries(r: &Receiver, c: &Collector) {
    let repeats = r.bodies().len() - notices(r).len();
    let metrics = c.get("/metrics").text().unwrap();
    let retries = metrics
        .lines()
        .find(|l| l.starts_with("whouses_collector_watch_notifications_total{outcome=\"retry\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as usize;
    assert!(
        repeats <= retries.saturating_sub(r.refused()),
        "{repeats} repeated notification(s) but {retries} retries ({} refused): {:?}",
        r.refused(),
        r.bodies()
    );
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
    for b in notices(&hook) {
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
    assert_repeats_were_retries(&hook, &collector);
}

/// `--renotify-after`: a caller still calling is notified again once the interval has
/// passed, never sooner; a caller that stopped calling is not notified again.
#[test]
fn an_alert_is_renotified_only_after_the_interval_and_only_while_it_goes_on() {
    let hook = Receiver::start(0);
    let collector = Collector::builder()
        .args(&[
            "--admin-token",
            ADMIN,
            "--watch-interval",
            "200ms",
            "--renotify-after",
            "4s",
        ])
        .spawn();
    let old = Upstream::start("127.0.0.1");
    let new = Upstream::start("127.0.0.1");
    let steady = sidecar("tis-sync", &collector, &old, &new).spawn();
    let once = sidecar("tis-profile", &collector, &old, &new).spawn();
    let out = whouses(&[
        "--url",
        &collector.url(),
        "--admin-token",
        ADMIN,
        "watch",
        "add",
        OLD,
        "--notify",
        &hook.url(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let old_url = format!("http://{OLD}/");
    assert_eq!(send_through(&steady.proxy_url(), &old_url, 2, 1), 2);
    assert_eq!(send_through(&once.proxy_url(), &old_url, 2, 1), 2);
    let first = Instant::now();
    wait::until("both first notifications", secs(20), || {
        (bodies_for(&hook, "tis-sync", "traffic-after-cutoff").len() == 1
            && bodies_for(&hook, "tis-profile", "traffic-after-cutoff").len() == 1)
            .then_some(())
    });
    // One caller keeps calling; within the interval, nothing more is sent.
    while first.elapsed() < Duration::from_millis(3_000) {
        assert_eq!(send_through(&steady.proxy_url(), &old_url, 1, 1), 1);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(notices(&hook).len(), 2, "{:?}", hook.bodies());
    }
    // After it, the one still calling is notified again (its second notification).
    let again = wait::until("the re-notification", secs(20), || {
        let _ = send_through(&steady.proxy_url(), &old_url, 1, 1);
        bodies_for(&hook, "tis-sync", "traffic-after-cutoff")
            .get(1)
            .cloned()
    });
    assert!(
        first.elapsed() >= Duration::from_secs(4),
        "{:?}: {:?}",
        first.elapsed(),
        hook.bodies()
    );
    assert_eq!(again["notification"], 2, "{again}");
    // Well past the interval, the one that stopped calling was not notified again.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        bodies_for(&hook, "tis-profile", "traffic-after-cutoff").len(),
        1,
        "{:?}",
        hook.bodies()
    );
    assert_repeats_were_retries(&hook, &collector);
}

/// Two collector replicas on one PostgreSQL database: each caller's alert is sent once,
/// whichever replica its sidecar reports to (one notifier at a time, by lease); when a
/// replica is killed, the other notifies the next alert, and the first one is not sent
/// again.
#[test]
fn two_replicas_on_postgres_notify_each_alert_once_and_hand_the_lease_over() {
    let Some(db) = whouses_tests::postgres::database(
        "two_replicas_on_postgres_notify_each_alert_once_and_hand_the_lease_over",
    ) else {
        return;
    };
    let hook = Receiver::start(0);
    let replica = || {
        Collector::builder()
            .db_url(&db)
            .args(&[
                "--admin-token",
                ADMIN,
                "--watch-interval",
                "200ms",
                "--notify-timeout",
                "1s",
            ])
            .spawn()
    };
    let mut a = replica();
    let b = replica();
    let old = Upstream::start("127.0.0.1");
    let new = Upstream::start("127.0.0.1");
    let via_a = sidecar("tis-concerns", &a, &old, &new).spawn();
    let via_b = sidecar("bulk-upload", &b, &old, &new).spawn();
    let out = whouses(&[
        "--url",
        &a.url(),
        "--admin-token",
        ADMIN,
        "watch",
        "add",
        OLD,
        "--notify",
        &hook.url(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let old_url = format!("http://{OLD}/");
    assert_eq!(send_through(&via_a.proxy_url(), &old_url, 3, 1), 3);
    wait::until("tis-concerns's alert", secs(20), || {
        (!bodies_for(&hook, "tis-concerns", "traffic-after-cutoff").is_empty()).then_some(())
    });
    // Both replicas evaluate every 200 ms; only the lease holder notifies.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(notices(&hook).len(), 1, "{:?}", hook.bodies());
    // Both answer alike.
    for c in [&a, &b] {
        let w = c.get_json("/v1/watches");
        assert_eq!(
            w["watches"][0]["alerts"][0]["service"], "tis-concerns",
            "{w}"
        );
    }

    // One replica dies without giving the lease up; the other goes on.
    a.kill9();
    assert_eq!(send_through(&via_b.proxy_url(), &old_url, 2, 1), 2);
    wait::until("bulk-upload's alert from the survivor", secs(30), || {
        (!bodies_for(&hook, "bulk-upload", "traffic-after-cutoff").is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let mut services: Vec<String> = notices(&hook)
        .iter()
        .map(|b| b["service"].as_str().unwrap().to_string())
        .collect();
    services.sort();
    assert_eq!(services, ["bulk-upload", "tis-concerns"]);
}

// ---- The migration story, diffs and timelines, per hour bucket ----

/// One caller of the story: its past hours as crafted batches (one per UTC hour, hour
/// `-9` to `-1` before the current one, then up to now unless it went quiet), each with
/// its calls to the old and new host.
struct Caller {
    service: &'static str,
    /// The owner its sidecar reports (`--owner`), if any.
    owner: Option<&'static str>,
    /// `(host, hour relative to the current one, requests)`.
    calls: &'static [(&'static str, i64, u64)],
    /// The last hour it reported on (exclusive): 0 = through now.
    quiet_from: i64,
}

/// The story: done, migrating (partly repointed), not started (two: one owned through
/// the owners file, one through its sidecar's report), went quiet.
const STORY: &[Caller] = &[
    Caller {
        service: "tis-profile",
        owner: None,
        calls: &[
            (OLD, -9, 5),
            (NEW, -5, 10),
            (NEW, -4, 10),
            (NEW, -3, 10),
            (NEW, -2, 10),
            (NEW, -1, 10),
        ],
        quiet_from: 0,
    },
    Caller {
        service: "tis-concerns",
        owner: None,
        calls: &[
            (OLD, -5, 20),
            (OLD, -4, 20),
            (OLD, -3, 8),
            (OLD, -2, 4),
            (OLD, -1, 2),
            (NEW, -3, 12),
            (NEW, -2, 16),
            (NEW, -1, 18),
        ],
        quiet_from: 0,
    },
    Caller {
        service: "tis-notification-generator",
        owner: None,
        calls: &[
            (OLD, -5, 6),
            (OLD, -4, 6),
            (OLD, -3, 6),
            (OLD, -2, 6),
            (OLD, -1, 6),
        ],
        quiet_from: 0,
    },
    Caller {
        service: "bulk-upload",
        owner: Some("uploads"),
        calls: &[(OLD, -5, 3), (OLD, -4, 3), (OLD, -3, 30), (OLD, -2, 30)],
        quiet_from: 0,
    },
    Caller {
        service: "tis-sync",
        owner: None,
        calls: &[(OLD, -5, 4)],
        quiet_from: -3,
    },
];

/// The current UTC hour's start; waits for the next hour first when this one ends within
/// three minutes (a test's live calls must not straddle two buckets).
fn current_hour() -> i64 {
    let now = whouses_tests::reports::now();
    let next = (now / HOUR + 1) * HOUR;
    if next - now < 3 * MIN {
        std::thread::sleep(Duration::from_millis((next - now + 1_000) as u64));
    }
    whouses_tests::reports::now() / HOUR * HOUR
}

/// Post the story's past hours as the callers' sidecars would have sent them.
fn seed_story(c: &Collector, h0: i64) {
    for (i, caller) in STORY.iter().enumerate() {
        let instance = format!("{}-0", caller.service);
        let last = if caller.quiet_from == 0 {
            0
        } else {
            caller.quiet_from - 1
        };
        for (seq, hour) in (1..).zip(-9..=last) {
            let start = h0 + hour * HOUR;
            let end = if hour == 0 {
                whouses_tests::reports::now()
            } else {
                start + HOUR
            };
            let edges = caller
                .calls
                .iter()
                .filter(|(_, h, _)| *h == hour)
                .map(|(host, _, n)| edge(host, 80, *n, start + 30 * MIN + i as i64 * MIN))
                .collect();
            let mut r = report(caller.service, &instance, seq, start, end, edges);
            // One process throughout, flushing every 10 minutes (so it counts as
            // reporting for a while after the last batch).
            r.started_at = Timestamp(h0 - 30 * DAY);
            r.flush_interval_ms = 600_000;
            r.owner = caller.owner.map(String::from);
            let (status, body) = c.post_report(&r, None);
            assert_eq!(status, 200, "{} hour {hour}: {body}", caller.service);
        }
    }
}

/// What the story sent: calls (requests plus the one connection per batch edge) and
/// errors per (service, host, hour).
fn sent(service: &str, host: &str, hour: i64) -> (u64, u64) {
    STORY
        .iter()
        .filter(|c| c.service == service)
        .flat_map(|c| c.calls.iter())
        .filter(|(h, hr, _)| *h == host && *hr == hour)
        .fold((0, 0), |(calls, errors), (_, _, n)| {
            (calls + n + 1, errors + n / 10)
        })
}

fn ts(ms: i64) -> Value {
    serde_json::to_value(Timestamp(ms)).unwrap()
}

/// The migration story: five callers of the old address, the statuses exactly as sent,
/// the counts per caller in the window (crafted past hours plus a real sidecar's calls
/// in the current hour), the owners, and the Markdown checklist.
#[test]
fn the_migration_story_gives_each_caller_its_status_and_the_checklist_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let owners = dir.path().join("owners.toml");
    std::fs::write(&owners, OWNERS).unwrap();
    let collector = Collector::builder()
        .args(&["--owners", &owners.display().to_string()])
        .spawn();
    let h0 = current_hour();
    seed_story(&collector, h0);
    // The migrating caller, live: a real sidecar calls both hosts in the current hour.
    let old = Upstream::start("127.0.0.1");
    let new = Upstream::start("127.0.0.1");
    let live = sidecar("tis-concerns", &collector, &old, &new).spawn();
    assert_eq!(
        send_through(&live.proxy_url(), &format!("http://{OLD}/"), 3, 1),
        3
    );
    assert_eq!(
        send_through(&live.proxy_url(), &format!("http://{NEW}/"), 7, 1),
        7
    );
    let live_calls = |host: &str| {
        live.count(host, 80, "http", "requests") + live.count(host, 80, "http", "connections")
    };
    wait::until_eq("the live calls stored", secs(20), (3, 7), || {
        (
            collector
                .requests_from(OLD, "tis-concerns")
                .saturating_sub(54),
            collector
                .requests_from(NEW, "tis-concerns")
                .saturating_sub(46),
        )
    });

    let url = collector.url();
    let out = whouses(&[
        "--url",
        &url,
        "--format",
        "json",
        "migration",
        "--from",
        OLD,
        "--to",
        NEW,
        "--since",
        "6h",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let window =
        |service: &str, host: &str| -> u64 { (-5..=-1).map(|h| sent(service, host, h).0).sum() };
    let got: Vec<(String, String, u64, u64, Value)> = m["callers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["service"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["calls_old"].as_u64().unwrap(),
                c["calls_new"].as_u64().unwrap(),
                c["owner"]["team"].clone(),
            )
        })
        .collect();
    let s = |v: &str| v.to_string();
    assert_eq!(
        got,
        vec![
            // Still to repoint first (most calls to old first), then migrating, then the
            // one that went quiet, then done.
            (
                s("bulk-upload"),
                s("not-started"),
                window("bulk-upload", OLD),
                0,
                Value::from("uploads")
            ),
            (
                s("tis-notification-generator"),
                s("not-started"),
                window("tis-notification-generator", OLD),
                0,
                Value::from("tis")
            ),
            (
                s("tis-concerns"),
                s("migrating"),
                window("tis-concerns", OLD) + live_calls(OLD),
                window("tis-concerns", NEW) + live_calls(NEW),
                Value::from("tis")
            ),
            (
                s("tis-sync"),
                s("unknown"),
                window("tis-sync", OLD),
                0,
                Value::from("tis")
            ),
            (
                s("tis-profile"),
                s("done"),
                0,
                window("tis-profile", NEW),
                Value::from("tis")
            ),
        ],
        "{m:#}"
    );
    assert_eq!(
        m["summary"],
        serde_json::json!({"done": 1, "migrating": 1, "not_started": 2, "unknown": 1}),
        "{m:#}"
    );
    let concerns = &m["callers"][2];
    let share = concerns["share_new"].as_f64().unwrap();
    let (o, n) = (
        concerns["calls_old"].as_f64().unwrap(),
        concerns["calls_new"].as_f64().unwrap(),
    );
    assert!((share - n / (o + n)).abs() < 1e-9, "{concerns}");
    assert_eq!(m["callers"][4]["reporting_throughout"], true);
    assert_eq!(m["callers"][3]["reporting_throughout"], false);
    assert_eq!(m["callers"][4]["last_old"], ts(h0 - 9 * HOUR + 30 * MIN));

    // The ticket's checklist: an open item with its owner for each caller still calling
    // old, the quiet one to confirm, the done one checked.
    let md = whouses(&[
        "--url",
        &url,
        "--format",
        "markdown",
        "migration",
        "--from",
        OLD,
        "--to",
        NEW,
        "--since",
        "6h",
    ]);
    assert_eq!(md.status.code(), Some(0), "{md:?}");
    let md = String::from_utf8(md.stdout).unwrap();
    let items: Vec<&str> = md.lines().filter(|l| l.starts_with("- [")).collect();
    assert_eq!(items.len(), 5, "{md}");
    let item = |service: &str| -> &str {
        items
            .iter()
            .find(|l| l.contains(&format!("**{service}**")))
            .unwrap_or_else(|| panic!("no item for {service} in\n{md}"))
    };
    for (service, owner, status) in [
        ("bulk-upload", "owner: uploads", "not started"),
        (
            "tis-notification-generator",
            "owner: tis (#tis-oncall)",
            "not started",
        ),
        ("tis-concerns", "owner: tis (#tis-oncall)", "migrating"),
        ("tis-sync", "owner: tis (#tis-oncall)", "unknown"),
    ] {
        let l = item(service);
        assert!(l.starts_with("- [ ] "), "{l}");
        assert!(l.contains(owner) && l.contains(status), "{l}");
    }
    assert!(item("tis-profile").starts_with("- [x] "), "{md}");
    let repoint = md
        .split("## ")
        .find(|s| s.starts_with("To repoint"))
        .unwrap();
    for service in ["bulk-upload", "tis-notification-generator", "tis-concerns"] {
        assert!(repoint.contains(&format!("**{service}**")), "{md}");
    }
    assert!(
        !repoint.contains("tis-profile") && !repoint.contains("tis-sync"),
        "{md}"
    );
}

/// Diff and timeline answers, checked per hour bucket against what was sent.
#[test]
fn diff_and_timeline_answer_per_hour_bucket_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let owners = dir.path().join("owners.toml");
    std::fs::write(&owners, OWNERS).unwrap();
    let collector = Collector::builder()
        .args(&["--owners", &owners.display().to_string()])
        .spawn();
    let h0 = current_hour();
    seed_story(&collector, h0);
    let url = collector.url();

    // Timelines of both hosts, hour by hour over the last ten hours.
    for host in [OLD, NEW] {
        let out = whouses(&[
            "--url", &url, "--format", "json", "timeline", host, "--since", "10h", "--step", "1h",
        ]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let t: Value = serde_json::from_slice(&out.stdout).unwrap();
        let steps: Vec<Value> = (-10..=0).map(|h| ts(h0 + h * HOUR)).collect();
        assert_eq!(t["steps"].as_array().unwrap(), &steps, "{t:#}");
        assert_eq!(t["step"], "1h");
        let mut services: Vec<&str> = STORY
            .iter()
            .filter(|c| c.calls.iter().any(|(h, hr, _)| *h == host && *hr >= -10))
            .map(|c| c.service)
            .collect();
        services.sort();
        let mut got: Vec<&str> = t["callers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["service"].as_str().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, services, "{host}: {t:#}");
        for series in t["callers"].as_array().unwrap() {
            let service = series["service"].as_str().unwrap();
            let expected: Vec<(u64, u64)> = (-10..=0).map(|h| sent(service, host, h)).collect();
            let calls: Vec<u64> = series["calls"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let errors: Vec<u64> = series["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(
                calls,
                expected.iter().map(|e| e.0).collect::<Vec<_>>(),
                "{service} → {host}, calls per hour"
            );
            assert_eq!(
                errors,
                expected.iter().map(|e| e.1).collect::<Vec<_>>(),
                "{service} → {host}, errors per hour"
            );
            assert_eq!(series["total_calls"], calls.iter().sum::<u64>());
            if service.starts_with("tis-") {
                assert_eq!(series["owner"]["team"], "tis");
            }
        }
    }

    // Diff: the two hours before the cutover against the two after, whole UTC hours.
    let period =
        |a: i64, b: i64| format!("{}..{}", Timestamp(h0 + a * HOUR), Timestamp(h0 + b * HOUR));
    let out = whouses(&[
        "--url",
        &url,
        "--format",
        "json",
        "diff",
        "--before",
        &period(-5, -3),
        "--after",
        &period(-3, -1),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["before"]["from"], ts(h0 - 5 * HOUR));
    assert_eq!(d["after"]["to"], ts(h0 - HOUR));
    let sum = |service: &str, host: &str, hours: [i64; 2]| -> (u64, u64) {
        hours
            .iter()
            .map(|h| sent(service, host, *h))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let mut expected = Vec::new();
    for c in STORY {
        for host in [OLD, NEW] {
            let (before, be) = sum(c.service, host, [-5, -4]);
            let (after, ae) = sum(c.service, host, [-3, -2]);
            let change = match (before, after) {
                (0, 0) => continue,
                (0, _) => "appeared",
                (_, 0) => "vanished",
                (b, a) if a >= 2 * b => "grew",
                (b, a) if 2 * a <= b => "shrank",
                _ => "unchanged",
            };
            expected.push((
                c.service.to_string(),
                host.to_string(),
                change.to_string(),
                before,
                after,
                be,
                ae,
            ));
        }
    }
    expected.sort();
    let mut got: Vec<_> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["service"].as_str().unwrap().to_string(),
                e["host"].as_str().unwrap().to_string(),
                e["change"].as_str().unwrap().to_string(),
                e["before"].as_u64().unwrap(),
                e["after"].as_u64().unwrap(),
                e["before_errors"].as_u64().unwrap(),
                e["after_errors"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    let unchanged = expected.iter().filter(|e| e.2 == "unchanged").count();
    expected.retain(|e| e.2 != "unchanged");
    assert_eq!(got, expected, "{d:#}");
    assert_eq!(d["unchanged"], unchanged as u64, "{d:#}");
    // The story's changes, by name: the partly repointed caller moves, the quiet one
    // vanished, the bulk uploader grew.
    let kinds: BTreeSet<(String, String)> =
        got.iter().map(|e| (e.0.clone(), e.2.clone())).collect();
    for k in [
        ("tis-concerns", "shrank"),
        ("tis-concerns", "appeared"),
        ("tis-sync", "vanished"),
        ("bulk-upload", "grew"),
    ] {
        assert!(
            kinds.contains(&(k.0.to_string(), k.1.to_string())),
            "{k:?} in {kinds:?}"
        );
    }

    // Filtered to the old host and one service.
    let out = whouses(&[
        "--url",
        &url,
        "--format",
        "json",
        "diff",
        "--before",
        &period(-5, -3),
        "--after",
        &period(-3, -1),
        "--host",
        OLD,
        "--service",
        "tis-concerns",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = d["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{d:#}");
    assert_eq!(changes[0]["change"], "shrank");
    assert_eq!(changes[0]["before"], 42);
    assert_eq!(changes[0]["after"], 14);
}

// ---- The page: dashboard, host page, migration view, in headless Chromium ----

/// The story, a watch tracking the migration (cutoff 75 minutes before the current hour:
/// two callers called after it), a host going quiet, and a sidecar that went silent;
/// then the dashboard, a host's page and the migration view driven in a real browser,
/// each at its own URL, their DOM checked against the API and what was sent, and
/// screenshots saved under target/browser/.
#[test]
fn the_dashboard_host_page_and_migration_view_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let owners = dir.path().join("owners.toml");
    std::fs::write(&owners, OWNERS).unwrap();
    let collector = Collector::builder()
        .args(&[
            "--owners",
            &owners.display().to_string(),
            "--admin-token",
            ADMIN,
            "--watch-interval",
            "200ms",
        ])
        .spawn();
    let h0 = current_hour();
    seed_story(&collector, h0);
    // A host going quiet: busy ten days ago, barely called two days ago.
    let t = whouses_tests::reports::now();
    for (seq, (at, n)) in [(t - 10 * DAY, 400), (t - 2 * DAY, 3)]
        .into_iter()
        .enumerate()
    {
        let mut r = report(
            "tis-reports",
            "tis-reports-0",
            seq as u64 + 1,
            at - HOUR,
            at,
            vec![edge("legacy-ldap.internal", 443, n, at - MIN)],
        );
        r.flush_interval_ms = 600_000;
        assert_eq!(collector.post_report(&r, None).0, 200);
    }
    // A sidecar that stops reporting: the fleet is not all there.
    let old = Upstream::start("127.0.0.1");
    let new = Upstream::start("127.0.0.1");
    let mut gone = Sidecar::builder("tis-trainee-ui")
        .collector(&collector.url())
        .args(&["--flush-interval", "500ms", "--environment", "prod"])
        .resolve(NEW, 80, new.addr())
        .spawn();
    assert_eq!(
        send_through(&gone.proxy_url(), &format!("http://{NEW}/"), 2, 1),
        2
    );
    gone.wait_acked(1, secs(20));
    gone.kill9();
    drop(old);

    let cutoff = Timestamp(h0 - 75 * MIN).to_string();
    let out = whouses(&[
        "--url",
        &collector.url(),
        "--admin-token",
        ADMIN,
        "watch",
        "add",
        OLD,
        "--from",
        &cutoff,
        "--to",
        NEW,
        "--note",
        "CHG-1234",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let fired = wait::until("the watch's alerts", secs(20), || {
        let w = collector.get_json("/v1/watches");
        let mut fired: Vec<String> = w["watches"][0]["alerts"]
            .as_array()?
            .iter()
            .map(|a| {
                format!(
                    "{} {}",
                    a["service"].as_str().unwrap(),
                    a["kind"].as_str().unwrap()
                )
            })
            .collect();
        fired.sort();
        (fired.len() >= 2).then_some(fired)
    });
    assert_eq!(
        fired,
        [
            "tis-concerns traffic-after-cutoff",
            "tis-notification-generator traffic-after-cutoff"
        ]
    );
    let dash = wait::until("the silent sidecar", secs(30), || {
        let d = collector.get_json("/v1/dashboard");
        (d["fleet"]["reporting"] == 6 && d["fleet"]["instances"] == 7).then_some(d)
    });

    let b = Browser::start();
    // 1. The dashboard, at /.
    b.goto(&collector.url());
    let fleet = b.wait_text("#fleet-health", "instances reporting");
    assert_eq!(fleet.trim(), "6 of 7 instances reporting");
    let silent = b.wait_text("#fleet-silent", "tis-trainee-ui");
    assert!(!silent.contains("tis-concerns"), "{silent}");
    let watches = b.wait_text("#watches-table", "traffic-after-cutoff");
    for needle in [
        "tis-concerns (prod)",
        "tis-notification-generator (prod)",
        OLD,
        "CHG-1234",
        "tis (#tis-oncall)",
    ] {
        assert!(watches.contains(needle), "{needle} in {watches}");
    }
    assert!(!watches.contains("bulk-upload"), "{watches}");
    // Failing calls count from the watch's start: tis-concerns failed 4 calls before it.
    let failing = b.js(
        "return [...document.querySelectorAll('#watches-table tbody tr')].map(tr => [tr.cells[5].innerText, tr.cells[8].innerText]);",
    );
    assert_eq!(
        failing,
        serde_json::json!([
            ["tis-concerns (prod)", "0"],
            ["tis-notification-generator (prod)", "0"]
        ])
    );
    let rows = b.js("return document.querySelectorAll('#watches-table tbody tr').length;");
    assert_eq!(rows, 2);
    let migrations = b.wait_text("#migrations-table", NEW);
    let summary = &dash["migrations"][0]["summary"];
    let cells = b.js(
        "return [...document.querySelectorAll('#migrations-table tbody tr:first-child td')].map(td => td.innerText);",
    );
    assert_eq!(
        cells.as_array().unwrap()[4..],
        [
            summary["not_started"].to_string(),
            summary["migrating"].to_string(),
            summary["unknown"].to_string(),
            summary["done"].to_string()
        ]
        .map(Value::from),
        "{migrations}"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#migrations-table svg.progress rect').length > 0;"),
        true
    );
    let quieting = b.wait_text("#quieting-table", "legacy-ldap.internal");
    assert!(
        quieting.contains("401"),
        "400 requests and a connection: {quieting}"
    );
    assert!(!quieting.contains(NEW), "{quieting}");
    assert_eq!(
        b.js("return document.getElementById('view-search').hidden && !document.getElementById('view-dashboard').hidden;"),
        true
    );
    b.screenshot("dashboard.png");

    // 2. A host's page, from the dashboard's link, at its own URL.
    b.click("#watches-table tbody tr:first-child td:nth-child(2) a");
    b.wait_js(
        "the host page's URL",
        "return location.hash.startsWith('#/host/') || null;",
    );
    assert!(b.url().ends_with(&format!("#/host/{OLD}")), "{}", b.url());
    let verdict = b.wait_text("#host-verdict", "IN-USE");
    assert!(verdict.contains("tis-"), "{verdict}");
    let callers = b.wait_text("#host-callers-table", "bulk-upload");
    for c in STORY {
        assert!(callers.contains(c.service), "{} in {callers}", c.service);
    }
    assert!(
        callers.contains("uploads"),
        "the sidecar-reported owner: {callers}"
    );
    let m = b.wait_text("#host-migrations", NEW);
    assert!(m.contains("→"), "{m}");
    // The timeline over ten hours, hour by hour: one chart per caller, one bar per hour,
    // each bar's calls and errors those sent.
    b.goto(&format!(
        "{}/#/host/{OLD}?since=10h&step=1h",
        collector.url()
    ));
    b.wait_js(
        "the timeline charts",
        "return document.querySelectorAll('#host-timeline svg.timeline-chart').length === 5 || null;",
    );
    let charts = b.js(
        "return [...document.querySelectorAll('#host-timeline svg.timeline-chart')].map(s => ({
            service: s.dataset.service,
            bars: [...s.querySelectorAll('rect.calls')].map(r => [r.dataset.step, +r.dataset.calls, +r.dataset.errors]),
        }));",
    );
    for chart in charts.as_array().unwrap() {
        let service = chart["service"].as_str().unwrap();
        let expected: Vec<Value> = (-10..=0)
            .map(|h| {
                let (calls, errors) = sent(service, OLD, h);
                serde_json::json!([ts(h0 + h * HOUR), calls, errors])
            })
            .collect();
        assert_eq!(chart["bars"].as_array().unwrap(), &expected, "{service}");
    }
    let heights = b.js(
        "return [...document.querySelectorAll('#host-timeline svg.timeline-chart[data-service=\"bulk-upload\"] rect.calls')].map(r => +r.getAttribute('height'));",
    );
    let heights: Vec<f64> = heights
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(heights[5], heights[6], "-5 and -4: 3 calls each");
    assert!(heights[7] > 5.0 * heights[5], "-3: 30 calls: {heights:?}");
    assert_eq!(heights[0], 0.0);
    assert_eq!(
        b.js("return document.querySelectorAll('#host-timeline svg.timeline-chart[data-service=\"tis-concerns\"] rect.errors').length;"),
        2,
        "tis-concerns failed 2 calls at -5 and -4"
    );
    b.screenshot("host.png");

    // 3. The migration view, at its own URL: the four statuses and the checklist.
    b.goto(&format!(
        "{}/#/migration?from={OLD}&to={NEW}&since=6h",
        collector.url()
    ));
    b.wait_text("#migration-table", "not started");
    let statuses = b.js(
        "return [...document.querySelectorAll('#migration-table tbody tr')].map(tr => [tr.cells[0].innerText, tr.cells[3].innerText, tr.cells[2].innerText]);",
    );
    assert_eq!(
        statuses,
        serde_json::json!([
            ["bulk-upload", "not started", "uploads"],
            [
                "tis-notification-generator",
                "not started",
                "tis (#tis-oncall)"
            ],
            ["tis-concerns", "migrating", "tis (#tis-oncall)"],
            ["tis-sync", "unknown", "tis (#tis-oncall)"],
            ["tis-profile", "done", "tis (#tis-oncall)"],
        ])
    );
    let summary = b.wait_text("#migration-summary", "not started");
    assert!(
        summary.contains("2 not started, 1 migrating, 1 unknown, 1 done"),
        "{summary}"
    );
    let checklist = b.wait_text("#migration-checklist", "- [ ]");
    assert!(checklist.contains("- [x] **tis-profile**"), "{checklist}");
    assert!(
        checklist.contains("**bulk-upload** (prod) — owner: uploads"),
        "{checklist}"
    );
    assert_eq!(
        b.js("return document.getElementById('migration-since').value;"),
        "6h"
    );
    b.screenshot("migration.png");

    // The form changes the URL: a link to paste into the ticket.
    b.type_into("#migration-to", "nowhere.internal");
    b.click("#migration-button");
    b.wait_js(
        "the migration URL",
        "return location.hash.includes('to=nowhere.internal') || null;",
    );
    b.wait_text("#migration-summary", "0 migrating");
    // Back to the dashboard through its tab.
    b.click("#tab-dashboard");
    b.wait_js("the dashboard", "return (location.hash === '#/' && !document.getElementById('view-dashboard').hidden) || null;");
}
