//! `whouses demo` — the README's "run" command — tells its story in under 30 seconds and
//! gets the answers right.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use whouses_tests::bins::bin_path;

#[test]
fn the_demo_tells_the_story_and_exits_with_once() {
    let t = Instant::now();
    let out = Command::new(bin_path("whouses"))
        .args(["demo", "--once", "--listen", "127.0.0.1:0"])
        .output()
        .expect("running whouses demo");
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(30), "the demo took {took:?}");
    // Act 1: the callers table of the old name holds exactly the five consumers that
    // were not repointed (neither repointed one), each with its exact count.
    let act1 = &stdout[..stdout.find("Act 2").expect("two acts")];
    let table: BTreeMap<String, String> = act1
        .lines()
        .skip_while(|l| !l.starts_with("$ whouses callers tis-reference.internal"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with("SERVICE"))
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].to_string(), cols[2].to_string())
        })
        .collect();
    let want: BTreeMap<String, String> = [
        ("tis-notification-generator", 15),
        ("tis-concerns", 5),
        ("tis-bulk-upload", 10),
        ("tis-profile", 15),
        ("tis-sync", 5),
    ]
    .into_iter()
    .map(|(s, n)| (s.to_string(), n.to_string()))
    .collect();
    assert_eq!(table, want, "{act1}");
    assert!(
        act1.contains("IN-USE") && act1.contains("exit code 1"),
        "{act1}"
    );
    let act2 = &stdout[stdout.find("Act 2").unwrap()..];
    assert!(
        act2.contains("UNUSED") && act2.contains("exit code 0"),
        "{act2}"
    );
}
