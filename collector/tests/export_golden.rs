//! Golden tests of every export format on a fixed dataset. Regenerate after an intended
//! change with `UPDATE_GOLDEN=1 cargo test -p whouses-collector --test export_golden`
//! and review the diff.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;

use whouses_collector::export::{render, render_with, Format, InboundExport, Meta, CSV_COLUMNS};
use whouses_collector::reconcile::Attribution;
use whouses_collector::store::InboundRow;
use whouses_wire::api::{EdgeRow, SeenBy};
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

// Issue 14: the same dataset with what the old host's inbound sidecar saw — calls from
// tis-concerns (also on its own side: seen by both), from tis-bulk-upload's address while
// its sidecar reported none (around it), and from an address nobody holds.

fn inbound_dataset() -> InboundExport {
    let row = |address: &str, requests: u64| InboundRow {
        service: "tis-reference".into(),
        environment: "prod".into(),
        host: "tis-reference.internal".into(),
        port: 443,
        scheme: Scheme::Https,
        address: address.into(),
        counts: Counts {
            requests,
            connections: 1,
            errors: 0,
            bytes_sent: requests * 100,
            bytes_received: requests * 1000,
            first_seen: Timestamp(T - 48 * 3_600_000),
            last_seen: Timestamp(T - 3_600_000),
        },
    };
    let to = |service: &str| Attribution::To {
        service: service.into(),
        environment: "prod".into(),
        caller_side: true,
    };
    InboundExport::build(
        &dataset(),
        &[
            row("10.0.4.2", 877),
            row("10.0.4.9", 12),
            row("10.0.9.99", 5),
        ],
        &[
            to("tis-concerns"),
            to("tis-bulk-upload"),
            Attribution::Nobody,
        ],
        None,
        None,
    )
}

fn golden_inbound(format: Format) -> String {
    let out =
        String::from_utf8(render_with(format, &meta(), &dataset(), &inbound_dataset()).unwrap())
            .unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("report-inbound.{}", format.extension()));
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
fn every_format_shows_the_callee_side() {
    let ex = inbound_dataset();
    assert_eq!(ex.rows.len(), 3);
    assert_eq!(
        ex.rows.iter().map(|r| r.seen_by).collect::<Vec<_>>(),
        vec![SeenBy::Callee, SeenBy::Both, SeenBy::Callee]
    );
    // CSV: tis-concerns' edge is seen by both, with its address; the others are rows of
    // their own (the owner column, issue 16, comes after the address).
    let csv = golden_inbound(Format::Csv);
    assert!(
        csv.contains("\ntis-concerns,prod,tis-reference.internal,443,https,877,"),
        "{csv}"
    );
    assert!(csv.contains(",both,10.0.4.2,"), "{csv}");
    assert!(
        csv.contains("\ntis-bulk-upload,prod,tis-reference.internal,443,https,12,1,0,1200,12000,"),
        "{csv}"
    );
    assert!(csv.contains(",callee,10.0.4.9,"), "{csv}");
    assert!(
        csv.contains("\n,,tis-reference.internal,443,https,5,1,0,"),
        "{csv}"
    );
    assert!(csv.contains(",callee,10.0.9.99,"), "{csv}");
    assert!(
        csv.contains("\ntis-sync,prod,tis-reference.internal,443,https,31,4,3,"),
        "{csv}"
    );
    assert!(csv.contains(",caller,,"), "{csv}");
    let json: serde_json::Value = serde_json::from_str(&golden_inbound(Format::Json)).unwrap();
    let inbound = json["inbound"].as_array().unwrap();
    assert_eq!(inbound.len(), 3);
    assert_eq!(inbound[0]["service"], "tis-bulk-upload");
    assert_eq!(inbound[0]["around_sidecar"], true);
    assert_eq!(inbound[2]["service"], serde_json::Value::Null);
    assert_eq!(inbound[2]["addresses"][0], "10.0.9.99");
    assert_eq!(inbound[2]["requests"], 5);
    let md = golden_inbound(Format::Markdown);
    assert!(
        md.contains("## Seen by the callee (inbound sidecars)"),
        "{md}"
    );
    assert!(
        md.contains("| 10.0.9.99 (unattributed) | tis-reference (prod) |"),
        "{md}"
    );
    assert!(md.contains("around its sidecar"), "{md}");
    let dot = golden_inbound(Format::Dot);
    assert!(
        dot.contains(r#""address:10.0.9.99" -> "host:tis-reference.internal:443" [style=dashed"#),
        "{dot}"
    );
    assert!(
        dot.contains(
            r#""tis-bulk-upload/prod" -> "host:tis-reference.internal:443" [style=dashed"#
        ),
        "{dot}"
    );
    assert!(dot.trim_end().ends_with('}'));
    let html = golden_inbound(Format::Html);
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(&html, opts).expect("well-formed XHTML");
    assert!(html.contains("10.0.9.99 (unattributed)"), "{html}");
}
