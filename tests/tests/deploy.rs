//! Deployment outside Kubernetes (issue 13, part 4): the systemd units in
//! `deploy/systemd/` pass `systemd-analyze verify` (in a temporary copy whose `ExecStart`
//! lines point at the binaries just built) and every whouses command line in them is one
//! the binaries accept; the ECS CloudFormation template in `deploy/ecs/` passes `cfn-lint`
//! (pinned, installed under `target/tools` by `tests/deploy/install-tools.sh`) and its
//! sidecar command is one the sidecar accepts.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;

use whouses_tests::bins::bin_path;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn units() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "{v:?}");
    v
}

/// `text` with the installed binaries' paths replaced by the built ones.
fn point_at_built_binaries(text: &str) -> String {
    ["whouses-sidecar", "whouses-collector"]
        .iter()
        .fold(text.to_string(), |t, name| {
            t.replace(
                &format!("/usr/local/bin/{name}"),
                bin_path(name).to_str().unwrap(),
            )
        })
}

/// The unit's command lines (`Exec*=`), continuation lines joined, without the `+`/`-`
/// prefixes.
fn exec_lines(unit: &str) -> Vec<(String, String)> {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            key.starts_with("Exec").then(|| {
                (
                    key.to_string(),
                    value.trim_start_matches(['+', '-']).to_string(),
                )
            })
        })
        .collect()
}

/// Run `program args… --help`: clap refuses an unknown flag or a bad value before it
/// reaches `--help`, so success means every flag and value is accepted.
fn accepted(what: &str, program: &str, args: &[String]) {
    let out = Command::new(program)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {program} {args:?} is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    let analyze = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .unwrap();
    assert!(
        analyze.status.success(),
        "systemd-analyze is missing: tests/deploy/install-tools.sh installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for unit in units() {
        let copy = dir.path().join(unit.file_name().unwrap());
        std::fs::write(
            &copy,
            point_at_built_binaries(&std::fs::read_to_string(&unit).unwrap()),
        )
        .unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&copies)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // verify exits 0 on an unknown key or a value it cannot parse ("…, ignoring"): any
    // message about our units is a failure.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("whouses")).collect();
    assert!(ours.is_empty(), "{}", ours.join("\n"));

    // A broken copy is caught (the check checks).
    let broken = dir.path().join("broken.service");
    std::fs::write(
        &broken,
        "[Service]\nExecStart=/nonexistent/whouses-sidecar\n",
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!out.status.success(), "verify accepted a missing binary");
}

#[test]
fn systemd_units_run_whouses_with_flags_it_accepts() {
    let mut seen = 0;
    for unit in units() {
        let name = unit.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&unit).unwrap();
        for (key, line) in exec_lines(&text) {
            // `sh -c '…'`: the quoted script, with the shell's substitutions ("$$" in a
            // unit is a "$") given a value.
            let line = match line.split_once(" -c '") {
                Some((_, script)) => script
                    .trim_end_matches('\'')
                    .trim_start_matches("exec ")
                    .replace("\"$$(id -u whouses-sidecar)\"", "998")
                    .replace("\"$$(id -g whouses-sidecar)\"", "998"),
                None => line,
            };
            let words: Vec<String> = line
                .split_whitespace()
                .map(|w| w.replace("${CREDENTIALS_DIRECTORY}", "/run/credentials/x"))
                .collect();
            let Some(program) = words.first() else {
                continue;
            };
            let Some(bin) = program.strip_prefix("/usr/local/bin/") else {
                panic!("{name} {key}: not a whouses binary: {line}");
            };
            assert!(
                !words.iter().any(|w| w.contains('$')),
                "{name} {key}: {line}"
            );
            accepted(
                &format!("{name} {key}"),
                bin_path(bin).to_str().unwrap(),
                &words[1..],
            );
            seen += 1;
        }
    }
    // collector; sidecar (iptables install, the sidecar, iptables uninstall); explicit.
    assert_eq!(seen, 5);
}

#[test]
fn ecs_template_passes_cfn_lint_and_runs_the_sidecar_with_flags_it_accepts() {
    let cfn_lint = root().join("target/tools/deploy-venv/bin/cfn-lint");
    assert!(
        cfn_lint.exists(),
        "{} is missing: run tests/deploy/install-tools.sh",
        cfn_lint.display()
    );
    let template = root().join("deploy/ecs/service.yaml");
    let out = Command::new(&cfn_lint).arg(&template).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let text = std::fs::read_to_string(&template).unwrap();
    // A broken copy is caught (the check checks): Fargate accepts only awsvpc.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        text.replace("NetworkMode: awsvpc", "NetworkMode: bogus"),
    )
    .unwrap();
    let out = Command::new(&cfn_lint).arg(&broken).output().unwrap();
    assert!(
        !out.status.success(),
        "cfn-lint accepted NetworkMode: bogus"
    );

    // The sidecar container's Command: the list items after `Command:`.
    let args: Vec<String> = text
        .lines()
        .skip_while(|l| l.trim() != "Command:")
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .take_while(|l| l.starts_with("- "))
        .map(|l| l.trim_start_matches("- ").to_string())
        .collect();
    assert!(
        args.contains(&"--bypass-scan-interval".to_string()),
        "{args:?}"
    );
    accepted(
        "deploy/ecs/service.yaml",
        bin_path("whouses-sidecar").to_str().unwrap(),
        &args,
    );
}
