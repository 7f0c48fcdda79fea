//! The collector over HTTPS (issue 12): `--tls-cert`/`--tls-key`, the certificate
//! reloaded when its files change, and the CLI trusting a private CA with `--ca-cert`.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use whouses_tests::bins::secs;
use whouses_tests::certs::Ca;
use whouses_tests::collector::{whouses, Collector};
use whouses_tests::reports::{edge, now, report, MIN};
use whouses_tests::wait;

#[test]
fn the_collector_serves_https_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let first = Ca::new(dir.path(), "first-ca");
    first.issue("server", "whouses-collector", &cert, &key);
    let c = Collector::builder().tls(&cert, &key, &first.cert).spawn();
    assert!(c.url().starts_with("https://"));
    let t = now();
    let (s, v) = c.post_report(
        &report(
            "a",
            "a-1",
            1,
            t - MIN,
            t,
            vec![edge("old.internal", 80, 3, t - 1000)],
        ),
        None,
    );
    assert_eq!(s, 200, "{v}");

    let cli = |ca: &std::path::Path| {
        whouses(&[
            "--url",
            &c.url(),
            "--ca-cert",
            ca.to_str().unwrap(),
            "--format",
            "json",
            "callers",
            "old.internal",
        ])
    };
    let out = cli(&first.cert);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"requests\": 3"));
    // Without the CA: a one-line error, exit 2.
    let out = whouses(&["--url", &c.url(), "callers", "old.internal"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the collector"), "{err}");
    // Plain HTTP to the TLS port gets nowhere.
    let plain = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{}/healthz", c.addr))
        .send();
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));

    // Rotate: a certificate from another CA replaces the files in place; new
    // connections get it without a restart.
    let second = Ca::new(dir.path(), "second-ca");
    second.issue("server", "whouses-collector", &cert, &key);
    wait::until("the new certificate is served", secs(20), || {
        (cli(&second.cert).status.code() == Some(0)).then_some(())
    });
    let out = cli(&first.cert);
    assert_eq!(out.status.code(), Some(2), "the old CA no longer verifies");
    // A broken replacement keeps the current certificate serving.
    std::fs::write(&cert, "not a certificate").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let out = cli(&second.cert);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(c.proc.output().contains("Keeping the previous certificate"));

    // A bad CA file for the CLI: a clear error.
    let bogus = dir.path().join("bogus.pem");
    std::fs::write(&bogus, "nothing here").unwrap();
    let out = cli(&bogus);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca-cert"));
}

#[test]
fn a_missing_or_mismatched_certificate_is_a_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ca");
    let a = ca.issue(
        "a",
        "a",
        &dir.path().join("a.crt"),
        &dir.path().join("a.key"),
    );
    let b = ca.issue(
        "b",
        "b",
        &dir.path().join("b.crt"),
        &dir.path().join("b.key"),
    );
    for (cert, key, says) in [
        (dir.path().join("missing.crt"), a.key.clone(), "--tls-cert"),
        (a.cert.clone(), b.key.clone(), "do not match"),
    ] {
        let out = std::process::Command::new(whouses_tests::bins::bin_path("whouses-collector"))
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(format!("sqlite://{}", dir.path().join("x.db").display()))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
