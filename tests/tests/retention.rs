//! Issue 19, untested path 3: the upkeep the collector runs at start and every hour —
//! hourly buckets older than `--hourly-for` folded into days without changing an answer,
//! and data older than `--retention` pruned (callers, coverage, the start of
//! observation) — on the real binary and a real SQLite file.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use serde_json::{json, Value};
use whouses_tests::bins::secs;
use whouses_tests::collector::Collector;
use whouses_tests::reports::{edge, now, report, DAY, HOUR, MIN};
use whouses_tests::wait;

fn post(c: &Collector, r: whouses_wire::Report) {
    let (s, v) = c.post_report(&r, None);
    assert_eq!(s, 200, "{v}");
}

fn answers(c: &Collector) -> Vec<Value> {
    [
        "/v1/callers?host=old.internal",
        "/v1/callers?host=old.internal&since=4d",
        "/v1/callers?host=new.internal&since=1h",
        "/v1/callees?service=a",
    ]
    .iter()
    .map(|p| {
        let mut v = c.get_json(p);
        v.as_object_mut().unwrap().remove("since");
        v
    })
    .collect()
}

/// Two hours of calls three days ago (the older hour goes to the hourly table), and one a
/// few minutes ago; returns the answers they give.
fn three_days_ago_and_now(c: &Collector, t: i64) -> Vec<Value> {
    let day3 = t - 3 * DAY;
    // (period start, period end, host, requests, last call)
    let calls = [
        (day3, day3 + HOUR, "old.internal", 5, day3 + 30 * MIN),
        (
            day3 + HOUR,
            day3 + 2 * HOUR,
            "old.internal",
            7,
            day3 + 90 * MIN,
        ),
        (t - 10 * MIN, t, "new.internal", 11, t - MIN),
    ];
    for (seq, (start, end, host, requests, last)) in calls.into_iter().enumerate() {
        let r = report(
            "a",
            "a-1",
            seq as u64 + 1,
            start,
            end,
            vec![edge(host, 80, requests, last)],
        );
        post(c, r);
    }
    let before = answers(c);
    assert_eq!(before[0]["callers"][0]["requests"], 12);
    before
}

#[test]
fn upkeep_folds_hours_into_days_and_applies_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whouses.db");
    let t = now();
    let mut c = Collector::builder().db(&db).spawn();
    let before = three_days_ago_and_now(&c, t);
    assert_eq!(before[1]["callers"][0]["requests"], 12);
    let observed = c.get_json("/v1/check?host=old.internal&quiet_for=1h")["observed_since"].clone();
    c.stop();

    // Restart with --hourly-for 1d: the upkeep at start folds the day three days ago.
    let mut c = Collector::builder()
        .db(&db)
        .args(&["--hourly-for", "1d"])
        .spawn();
    wait::until("the fold", secs(20), || {
        c.proc
            .output()
            .contains("Folded hourly buckets into daily ones")
            .then_some(())
    });
    assert_eq!(answers(&c), before, "folding changes no answer");
    c.stop();

    // Restart with --retention 2d: the calls and coverage of three days ago are gone, the
    // recent ones stay, and observation now starts later.
    let c = Collector::builder()
        .db(&db)
        .args(&["--retention", "2d"])
        .spawn();
    wait::until("the prune", secs(20), || {
        c.proc
            .output()
            .contains("Pruned data older than the retention")
            .then_some(())
    });
    assert_eq!(
        c.get_json("/v1/callers?host=old.internal")["callers"],
        json!([])
    );
    assert_eq!(
        c.get_json("/v1/callers?host=new.internal")["callers"][0]["requests"],
        11
    );
    let v = c.get_json("/v1/check?host=old.internal&quiet_for=1h");
    assert_eq!(v["verdict"], "unknown");
    assert!(
        v["reason"].as_str().unwrap().contains("ever been recorded"),
        "{v}"
    );
    assert_ne!(
        v["observed_since"], observed,
        "coverage older than the retention is pruned"
    );
    let since =
        whouses_wire::Timestamp::parse_rfc3339(v["observed_since"].as_str().unwrap()).unwrap();
    assert!(since.0 >= t - 2 * DAY - MIN, "{v}");
}

/// `whouses-collector --upkeep-once`: the same upkeep, run now on the database and exited
/// from (after an upgrade or a backfill, before the first hourly round): it folds, says
/// so, changes no answer, has nothing left to do the second time, and a database it
/// cannot open is a one-line error and a non-zero exit.
#[test]
fn upkeep_once_folds_now_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("whouses.db");
    let t = now();
    let mut c = Collector::builder().db(&db).spawn();
    let before = three_days_ago_and_now(&c, t);
    c.stop();

    let url = format!("sqlite://{}", db.display());
    let once = |db: &str| {
        std::process::Command::new(whouses_tests::bins::bin_path("whouses-collector"))
            .args(["--db", db, "--hourly-for", "1d", "--upkeep-once"])
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    };
    let out = once(&url);
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Folded hourly buckets into daily ones"),
        "{log}"
    );
    assert!(log.contains("Upkeep done"), "{log}");
    // Nothing left: the second round folds nothing.
    let out = once(&url);
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("Folded hourly buckets"), "{log}");

    let mut c = Collector::builder().db(&db).spawn();
    assert_eq!(answers(&c), before, "the fold changes no answer");
    c.stop();

    // A database it cannot open (its directory is a file): a one-line error, exit 1.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let missing = file.join("x.db");
    let out = once(&format!("sqlite://{}", missing.display()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("whouses-collector: cannot open --db"),
        "{err}"
    );
    assert!(!missing.exists());
}
