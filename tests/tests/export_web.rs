//! Issue 5: the traffic report in every format through the real CLI and API, and the web
//! page driven in a real headless Chromium (Debian's chromium + chromium-driver).

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::process::{Command, Stdio};

use serde_json::{json, Value};
use whouses_tests::browser::Browser;
use whouses_tests::collector::{whouses, Collector};
use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

fn seed(c: &Collector, token: Option<&str>) {
    let t = Timestamp::now().0;
    let edge = |host: &str, port: u16, requests: u64| Edge {
        host: host.into(),
        port,
        scheme: if port == 443 {
            Scheme::Https
        } else {
            Scheme::Http
        },
        counts: Counts {
            requests,
            connections: 1,
            errors: requests / 100,
            bytes_sent: requests,
            bytes_received: requests * 10,
            first_seen: Timestamp(t - 3_600_000),
            last_seen: Timestamp(t - 60_000),
        },
    };
    let services = [
        (
            "tis-notification-generator",
            vec![edge("tis-reference.internal", 443, 1500)],
        ),
        (
            "tis-concerns",
            vec![
                edge("tis-reference.internal", 443, 300),
                edge("auth.internal", 80, 20),
            ],
        ),
        (
            "tis-trainee-ui",
            vec![edge("reference.tis-lb.internal", 443, 9000)],
        ),
    ];
    for (i, (service, edges)) in services.into_iter().enumerate() {
        let r = Report {
            version: REPORT_VERSION,
            service: service.into(),
            environment: "prod".into(),
            instance: format!("{service}-{i}"),
            seq: 1,
            started_at: Timestamp(t - 7_200_000),
            period_start: Timestamp(t - 7_200_000),
            period_end: Timestamp(t - 1_000),
            // An hourly reporter: the page shows it as "reporting" for three hours, so
            // no check below depends on how long the browser takes to start.
            flush_interval_ms: 3_600_000,
            edges,
            ..Default::default()
        };
        let (s, v) = c.post_report(&r, token);
        assert_eq!(s, 200, "{v}");
    }
}

#[test]
fn every_export_format_through_the_cli() {
    let c = Collector::spawn();
    seed(&c, None);
    let dir = tempfile::tempdir().unwrap();
    let export = |format: &str, extra: &[&str]| -> String {
        let file = dir.path().join(format!("report.{format}"));
        let mut args = vec![
            "--url",
            c.url().leak() as &str,
            "--format",
            format,
            "export",
            "-o",
            file.to_str().unwrap().to_string().leak(),
        ];
        args.extend_from_slice(extra);
        let out = whouses(&args);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        std::fs::read_to_string(&file).unwrap()
    };
    // CSV parses back to the numbers that went in.
    let csv_text = export("csv", &[]);
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let mut got: Vec<(String, String, u64)> = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                rec[0].to_string(),
                rec[2].to_string(),
                rec[5].parse().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("tis-concerns".into(), "auth.internal".into(), 20),
            ("tis-concerns".into(), "tis-reference.internal".into(), 300),
            (
                "tis-notification-generator".into(),
                "tis-reference.internal".into(),
                1500
            ),
            (
                "tis-trainee-ui".into(),
                "reference.tis-lb.internal".into(),
                9000
            ),
        ]
    );
    // Narrowed to one host.
    let only = export("csv", &["--host", "tis-reference.internal"]);
    assert_eq!(only.lines().count(), 3, "{only}");
    // JSON.
    let v: Value = serde_json::from_str(&export("json", &["--service", "tis-concerns"])).unwrap();
    assert_eq!(v["edges"].as_array().unwrap().len(), 2);
    // Markdown.
    let md = export("markdown", &["--since", "1d"]);
    assert!(md.contains("| tis-reference.internal:443 |"), "{md}");
    // DOT parses with Graphviz.
    let dot_src = export("dot", &[]);
    let mut dot = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Graphviz `dot` is needed (scripts/test-all.sh installs the graphviz package)");
    use std::io::Write as _;
    dot.stdin
        .take()
        .unwrap()
        .write_all(dot_src.as_bytes())
        .unwrap();
    let out = dot.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dot rejected the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (Graphviz writes "-" as "&#45;" in SVG text.)
    assert!(String::from_utf8_lossy(&out.stdout).contains("notification"));
    // HTML: well-formed, self-contained, with the inline graph.
    let html = export("html", &[]);
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opts).expect("well-formed HTML");
    assert!(doc.descendants().any(|n| n.has_tag_name("svg")));
    assert!(!html.contains("<script") && !html.contains("<link"));
    // Bad format: exit 2 with a reason.
    let out = whouses(&["--url", &c.url(), "--format", "table", "export"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("export writes"));
    let r = c.get("/v1/export?format=pdf");
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("unknown format"));
}

#[test]
fn the_web_page_answers_who_uses_in_a_real_browser() {
    let c = Collector::builder().read_token("r3ad").spawn();
    seed(&c, None);
    let b = Browser::start();
    b.goto(&c.url());
    // The page itself is open; the data needs the read token, like the API.
    let host = b.find("#host");
    b.cmd(
        "POST",
        &format!("/element/{host}/value"),
        json!({"text": "tis-reference.internal"}),
    );
    let button = b.find("#search-button");
    b.cmd("POST", &format!("/element/{button}/click"), json!({}));
    b.wait_text("#error", "401");
    let token = b.find("#token");
    // A wrong token: 403 with the collector's reason.
    b.cmd(
        "POST",
        &format!("/element/{token}/value"),
        json!({"text": "wrong"}),
    );
    b.cmd("POST", &format!("/element/{button}/click"), json!({}));
    let err = b.wait_text("#error", "403");
    assert!(err.contains("not valid"), "{err}");
    b.cmd("POST", &format!("/element/{token}/clear"), json!({}));
    b.cmd(
        "POST",
        &format!("/element/{token}/value"),
        json!({"text": "r3ad"}),
    );
    b.cmd("POST", &format!("/element/{button}/click"), json!({}));
    let callers = b.wait_text("#callers", "tis-notification-generator");
    assert!(callers.contains("tis-concerns"), "{callers}");
    assert!(
        callers.contains("1500") && callers.contains("300"),
        "{callers}"
    );
    assert!(!callers.contains("tis-trainee-ui"), "{callers}");
    assert!(
        callers.contains("minute ago") || callers.contains("minutes ago"),
        "relative times: {callers}"
    );
    let verdict = b.wait_text("#verdict", "IN-USE");
    assert!(verdict.contains("tis-notification-generator"), "{verdict}");
    b.screenshot("search.png");

    for (tab, view, needle) in [
        ("#tab-hosts", "#hosts", "reference.tis-lb.internal"),
        ("#tab-services", "#services", "tis-trainee-ui"),
    ] {
        let t = b.find(tab);
        b.cmd("POST", &format!("/element/{t}/click"), json!({}));
        b.wait_text(view, needle);
    }
    let services = b.wait_text("#services", "reporting");
    assert!(services.contains("tis-concerns"));

    let t = b.find("#tab-graph");
    b.cmd("POST", &format!("/element/{t}/click"), json!({}));
    let graph = b.wait_text("#graph", "tis-concerns (prod)");
    assert!(graph.contains("tis-reference.internal:443"), "{graph}");
    let paths = b.js("return document.querySelectorAll('#graph svg path').length;");
    assert_eq!(
        paths.as_u64(),
        Some(2),
        "the neighbourhood of the searched host: two edges"
    );
    b.screenshot("graph.png");

    // A link with ?host= opens on that host's answer, and the token entered before is
    // remembered (a pasted link works without typing it again).
    b.goto(&format!("{}/?host=reference.tis-lb.internal", c.url()));
    let callers = b.wait_text("#callers", "tis-trainee-ui");
    assert!(!callers.contains("tis-concerns"), "{callers}");
    assert_eq!(
        b.js("return document.getElementById('token').value;"),
        json!("r3ad")
    );
    b.wait_text("#verdict", "IN-USE");
}
