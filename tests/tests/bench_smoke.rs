//! The benchmarks cannot rot: `bench/run.sh --smoke` (every proxy side by side, tiny load,
//! debug build, then the collector fleet benchmark at toy size) must run to the end and
//! produce its tables. No assertions on speed — that is what the real run is for.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn bench_smoke_runs_and_produces_the_tables() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for tool in ["wrk", "nginx", "haproxy"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: scripts/test-all.sh installs the benchmark peers"
        );
    }
    let out = Command::new(root.join("bench/run.sh"))
        .arg("--smoke")
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "| direct |",
        "| whouses-sidecar |",
        "| whouses-inbound |",
        "| haproxy |",
        "| nginx |",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
    let sidecar_row = stdout
        .lines()
        .find(|l| l.starts_with("| whouses-sidecar |"))
        .unwrap();
    let rps: f64 = sidecar_row
        .split('|')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(rps > 0.0, "the sidecar served no requests: {sidecar_row}");
    // Issue 14: inbound mode under the same load.
    let inbound_row = stdout
        .lines()
        .find(|l| l.starts_with("| whouses-inbound |"))
        .unwrap();
    let rps: f64 = inbound_row
        .split('|')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        rps > 0.0,
        "the inbound sidecar served no requests: {inbound_row}"
    );
    assert!(
        stdout.contains("sustained ingest") && stdout.contains("`check` p50 / p99"),
        "{stdout}"
    );
    // The sweep of every window and pattern ran on the fleet, every answer a success.
    assert!(
        stdout.contains("Every window and pattern") && stdout.contains("| `/v1/dashboard` |"),
        "{stdout}"
    );
    assert!(root.join("target/bench/results.md").exists());
}

/// `bench/capture.sh --smoke` (transparent capture against the explicit proxy, in network
/// namespaces of its own with `whouses-sidecar iptables install`) runs to the end, and
/// both the explicit and the transparent runs were served and counted.
#[test]
fn capture_bench_smoke_runs_and_produces_the_table() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let before = bench_processes();
    let out = Command::new(root.join("bench/capture.sh"))
        .arg("--smoke")
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in ["direct", "explicit", "transparent"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with("| HTTP keep-alive") && l.contains(&format!("| {path} |")))
            .unwrap_or_else(|| panic!("no keep-alive row for {path}:\n{stdout}"));
        let rps: f64 = row.split('|').nth(3).unwrap().trim().parse().unwrap();
        assert!(rps > 0.0, "{path} served no requests: {row}");
    }
    // Both sidecar paths counted under the upstream's address (the explicit requests'
    // authority, the redirected requests' Host).
    let edges = stdout
        .lines()
        .find(|l| l.starts_with("Sidecar edges at the end:"))
        .unwrap();
    assert!(
        edges.contains("198.18.254.2:8080/http requests="),
        "{edges}"
    );
    assert!(root.join("target/bench/capture.md").exists());
    // Nothing of the run is left behind (its upstream nginx once was: it was started
    // through a shell function, whose `$!` is not nginx's).
    let left: Vec<String> = bench_processes()
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

/// Processes whose command line names a capture-bench work directory.
fn bench_processes() -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("whouses-capture-bench.") {
                found.push(format!("{name} {cmd}"));
            }
        }
    }
    found
}
