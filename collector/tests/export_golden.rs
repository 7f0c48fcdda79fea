//! Golden tests of every export format on a fixed dataset. Regenerate after an intended
//! change with `UPDATE_GOLDEN=1 cargo test -p whouses-collector --test export_golden`
//! and review the diff.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;

use whouses_collector::export::{render, Format, Meta, CSV_COLUMNS};
use whouses_wire::api::EdgeRow;
use whouses_wire::decom::{Owner, OwnerSource};
use whouses_wire::{Counts, Scheme, Timestamp};

const T: i64 = 1_795_000_000_000; // 2026-11-18T…

pub fn dataset() -> Vec<EdgeRow> {
    let row =
        |service: &str, host: &str, port: u16, requests: u64, errors: u64, age_h: i64| EdgeRow {
            service: service.into(),
            environment: "prod".into(),
            host: host.into(),
            port,
            scheme: if port == 443 {
                Scheme::Https
            } else {
                Scheme::Http
            },
            counts: Counts {
                requests,
                connections: requests / 10 + 1,
                errors,
                bytes_sent: requests * 120,
                bytes_received: requests * 2048,
                first_seen: Timestamp(T - 30 * 24 * 3_600_000),
                last_seen: Timestamp(T - age_h * 3_600_000),
            },
        };
    vec![
        row(
            "tis-notification-generator",
            "tis-reference.internal",
            443,
            15_234,
            12,
            1,
        ),
        row("tis-concerns", "tis-reference.internal", 443, 877, 0, 2),
        row("tis-sync", "tis-reference.internal", 443, 31, 3, 200),
        row(
            "tis-trainee-ui",
            "reference.tis-lb.internal",
            443,
            99_120,
            41,
            0,
        ),
        row("tis-trainee-ui", "auth.internal", 80, 5_001, 0, 0),
        row("tis-\"quoted\" <svc>", "odd|host.internal", 8080, 1, 0, 5),
        row("-cmd", "=calc.internal", 80, 2, 0, 7),
    ]
}

fn meta() -> Meta {
    Meta {
        generated_at: Timestamp(T),
        since: Some(Timestamp(T - 30 * 24 * 3_600_000)),
        environment: Some("prod".into()),
        host: None,
        service: None,
        owners: [(
            ("tis-concerns".to_string(), "prod".to_string()),
            Owner {
                team: "tis".into(),
                contact: Some("#tis-oncall".into()),
                source: OwnerSource::OwnersFile,
            },
        )]
        .into(),
    }
}

fn golden(format: Format) -> String {
    let out = String::from_utf8(render(format, &meta(), &dataset()).unwrap()).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("report.{}", format.extension()));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &out).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", path.display()));
    assert_eq!(
        out, want,
        "{format:?} output changed; if intended, run with UPDATE_GOLDEN=1"
    );
    out
}

#[test]
fn csv_is_stable_and_parses_back_to_the_same_numbers() {
    let out = golden(Format::Csv);
    let mut r = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        CSV_COLUMNS.to_vec()
    );
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    let data = dataset();
    assert_eq!(rows.len(), data.len());
    for (rec, row) in rows.iter().zip(&data) {
        // Text that a spreadsheet would run as a formula carries a leading quote.
        let text = |s: &str| {
            if s.starts_with(['=', '+', '-', '@']) {
                format!("'{s}")
            } else {
                s.to_string()
            }
        };
        assert_eq!(rec[0], text(&row.service));
        assert_eq!(rec[2], text(&row.host));
        assert_eq!(rec[3].parse::<u16>().unwrap(), row.port);
        assert_eq!(rec[5].parse::<u64>().unwrap(), row.counts.requests);
        assert_eq!(rec[7].parse::<u64>().unwrap(), row.counts.errors);
        assert_eq!(rec[9].parse::<u64>().unwrap(), row.counts.bytes_received);
        assert_eq!(
            Timestamp::parse_rfc3339(&rec[11]).unwrap(),
            row.counts.last_seen
        );
    }
    assert!(out.contains("\n'-cmd,prod,'=calc.internal,80,"), "{out}");
    assert!(
        out.contains(",tis (#tis-oncall)\n"),
        "the owner, last: {out}"
    );
    assert!(!out.contains("\n-cmd") && !out.contains(",=calc"), "{out}");
}

#[test]
fn json_is_stable_and_complete() {
    let out = golden(Format::Json);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["edges"].as_array().unwrap().len(), dataset().len());
    assert_eq!(v["edges"][3]["requests"], 99_120);
    assert_eq!(v["environment"], "prod");
    assert_eq!(v["edges"][1]["service"], "tis-concerns");
    assert_eq!(v["edges"][1]["owner"]["team"], "tis");
    assert!(v["edges"][0].get("owner").is_none());
}

#[test]
fn markdown_is_stable_and_escapes_pipes() {
    let out = golden(Format::Markdown);
    assert!(out.contains("| tis-reference.internal:443 | tis-concerns (prod), tis-notification-generator (prod), tis-sync (prod) | 16142 |"), "{out}");
    assert!(out.contains("odd\\|host.internal"));
}

#[test]
fn markdown_cannot_be_injected_through_the_query() {
    let mut m = meta();
    m.host = Some("x\n# Injected heading\n[link](http://evil)".into());
    let out = String::from_utf8(render(Format::Markdown, &m, &dataset()).unwrap()).unwrap();
    assert!(!out.contains("\n# Injected"), "{out}");
    assert!(!out.contains("[link]"), "{out}");
    assert!(out.contains("x \\# Injected heading \\[link\\]"), "{out}");
}

#[test]
fn dot_is_stable_and_escapes_quotes() {
    let out = golden(Format::Dot);
    assert!(out.starts_with("digraph whouses {"));
    assert!(out.contains(r#""tis-\"quoted\" <svc>/prod""#), "{out}");
    assert_eq!(out.matches(" -> ").count(), dataset().len());
}

#[test]
fn html_is_stable_self_contained_and_well_formed() {
    let out = golden(Format::Html);
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&out, opts)
        .expect("the HTML report is well-formed XHTML");
    let svg = doc
        .descendants()
        .find(|n| n.has_tag_name("svg"))
        .expect("an inline SVG graph");
    assert!(svg.descendants().filter(|n| n.has_tag_name("path")).count() >= dataset().len());
    assert!(!out.contains("<script"), "no scripts");
    assert_eq!(
        out.matches("http://www.w3.org").count(),
        out.matches("http://").count(),
        "no external resources: only XML namespace names"
    );
    assert!(!out.contains("https://"), "no external resources");
    assert!(!out.contains("src=") && !out.contains("@import") && !out.contains("url("));
    assert!(out.contains("tis-&quot;quoted&quot; &lt;svc&gt;"));
}
