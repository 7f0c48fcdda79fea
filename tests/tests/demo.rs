//! `whouses demo` — the README's "run" command — tells its story in under 30 seconds and
//! gets the answers right.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

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
    // Act 1: exactly the five consumers that were not repointed, with exact counts.
    let act1 = &stdout[..stdout.find("Act 2").expect("two acts")];
    for (service, n) in [
        ("tis-notification-generator", 15),
        ("tis-concerns", 5),
        ("tis-bulk-upload", 10),
        ("tis-profile", 15),
        ("tis-sync", 5),
    ] {
        let line = act1
            .lines()
            .find(|l| l.trim_start().starts_with(service))
            .unwrap_or_else(|| panic!("{service} missing:\n{stdout}"));
        assert!(
            line.split_whitespace().nth(2) == Some(&n.to_string()),
            "{line}"
        );
    }
    assert!(!act1.contains("tis-trainee-ui  "), "{act1}");
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
