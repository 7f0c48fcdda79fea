//! The traffic report: the same edges as CSV, JSON, Markdown, Graphviz DOT, or one
//! self-contained HTML file (tables plus an inline SVG graph, no external resources).
//! Rendering is pure — rows and metadata in, bytes out — so golden tests pin each format.

use std::fmt::Write as _;
use std::str::FromStr;

use std::collections::BTreeMap;

use serde::Serialize;
use whouses_wire::decom::Owner;
use whouses_wire::Timestamp;

use whouses_wire::api::EdgeRow;

pub mod api;
pub mod graph;
pub mod inbound;

pub use inbound::InboundExport;

/// The export formats of `GET /v1/export` and `whouses export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    Markdown,
    Dot,
    Html,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            "dot" => Ok(Format::Dot),
            "html" => Ok(Format::Html),
            other => Err(format!(
                "unknown format {other:?} (expected csv, json, markdown, dot or html)"
            )),
        }
    }
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Dot => "text/vnd.graphviz; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Markdown => "md",
            Format::Dot => "dot",
            Format::Html => "html",
        }
    }
}

/// What the report covers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Meta {
    pub generated_at: Timestamp,
    pub since: Option<Timestamp>,
    pub environment: Option<String>,
    /// The host or service the report was narrowed to, as asked.
    pub host: Option<String>,
    pub service: Option<String>,
    /// The owner of each calling `(service, environment)` that has one (`--owners`, or
    /// its sidecars' `--owner`).
    #[serde(skip)]
    pub owners: BTreeMap<(String, String), Owner>,
}

impl Meta {
    /// The owner of an edge's caller, as one line ("" when unknown).
    fn owner(&self, r: &EdgeRow) -> String {
        self.owners
            .get(&(r.service.clone(), r.environment.clone()))
            .map(Owner::describe)
            .unwrap_or_default()
    }

    fn scope(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.host {
            parts.push(format!("callers of {h}"));
        }
        if let Some(s) = &self.service {
            parts.push(format!("calls by {s}"));
        }
        if let Some(e) = &self.environment {
            parts.push(format!("environment {e}"));
        }
        parts.push(match self.since {
            Some(t) => format!("since {t}"),
            None => "all retained history".to_string(),
        });
        parts.join(", ")
    }
}

/// The stable CSV columns, in order (new ones are only ever added at the end: issue 14
/// appended `seen_by` and `address`, issue 16 `owner`).
pub const CSV_COLUMNS: [&str; 15] = [
    "service",
    "environment",
    "host",
    "port",
    "scheme",
    "requests",
    "connections",
    "errors",
    "bytes_sent",
    "bytes_received",
    "first_seen",
    "last_seen",
    "seen_by",
    "address",
    "owner",
];

/// The report of the callers' edges alone.
pub fn render(format: Format, meta: &Meta, rows: &[EdgeRow]) -> Result<Vec<u8>, String> {
    render_with(format, meta, rows, &InboundExport::default())
}

/// The report of the callers' edges and what inbound sidecars saw (issue 14).
pub fn render_with(
    format: Format,
    meta: &Meta,
    rows: &[EdgeRow],
    inbound: &InboundExport,
) -> Result<Vec<u8>, String> {
    match format {
        Format::Csv => csv(meta, rows, inbound),
        Format::Json => serde_json::to_vec_pretty(&serde_json::json!({
            "generated_at": meta.generated_at,
            "since": meta.since,
            "environment": meta.environment,
            "host": meta.host,
            "service": meta.service,
            "edges": json_edges(meta, rows),
            "inbound": inbound.rows,
        }))
        .map_err(|e| e.to_string()),
        Format::Markdown => {
            let mut out = markdown(meta, rows);
            inbound.markdown(&mut out);
            Ok(out.into_bytes())
        }
        Format::Dot => {
            let mut out = dot(rows);
            if let Some(end) = out.rfind('}') {
                out.truncate(end);
                inbound.dot(&mut out);
                out.push_str("}\n");
            }
            Ok(out.into_bytes())
        }
        Format::Html => {
            let mut out = html(meta, rows);
            if let Some(end) = out.rfind("</body>") {
                let tail = out.split_off(end);
                inbound.html(&mut out);
                out.push_str(&tail);
            }
            Ok(out.into_bytes())
        }
    }
}

/// The edges as JSON, each with its caller's `owner` when known.
fn json_edges(meta: &Meta, rows: &[EdgeRow]) -> serde_json::Value {
    if meta.owners.is_empty() {
        return serde_json::json!(rows);
    }
    serde_json::Value::Array(
        rows.iter()
            .map(|r| {
                let mut v = serde_json::json!(r);
                if let Some(o) = meta.owners.get(&(r.service.clone(), r.environment.clone())) {
                    v["owner"] = serde_json::json!(o);
                }
                v
            })
            .collect(),
    )
}

fn csv(meta: &Meta, rows: &[EdgeRow], inbound: &InboundExport) -> Result<Vec<u8>, String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS).map_err(|e| e.to_string())?;
    for r in rows {
        let seen_by = inbound.seen_by(r);
        let address = inbound
            .rows
            .iter()
            .filter(|i| {
                i.service.as_deref() == Some(r.service.as_str())
                    && i.environment.as_deref() == Some(r.environment.as_str())
                    && i.host == r.host
            })
            .flat_map(|i| i.addresses.iter().cloned())
            .collect::<std::collections::BTreeSet<String>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(" ");
        w.write_record([
            cell(&r.service).as_ref(),
            &cell(&r.environment),
            &cell(&r.host),
            &r.port.to_string(),
            r.scheme.as_str(),
            &r.counts.requests.to_string(),
            &r.counts.connections.to_string(),
            &r.counts.errors.to_string(),
            &r.counts.bytes_sent.to_string(),
            &r.counts.bytes_received.to_string(),
            &r.counts.first_seen.to_string(),
            &r.counts.last_seen.to_string(),
            seen_by.as_str(),
            &address,
            &cell(&meta.owner(r)),
        ])
        .map_err(|e| e.to_string())?;
    }
    // Issue 14: calls only the callee saw (attributed or not).
    for r in inbound.callee_only() {
        let owner = match (r.service.as_deref(), r.environment.as_deref()) {
            (Some(service), Some(environment)) => meta
                .owners
                .get(&(service.to_string(), environment.to_string()))
                .map(Owner::describe)
                .unwrap_or_default(),
            _ => String::new(),
        };
        w.write_record([
            cell(r.service.as_deref().unwrap_or("")).as_ref(),
            &cell(r.environment.as_deref().unwrap_or("")),
            &cell(&r.host),
            &r.port.to_string(),
            r.scheme.as_str(),
            &r.counts.requests.to_string(),
            &r.counts.connections.to_string(),
            &r.counts.errors.to_string(),
            &r.counts.bytes_sent.to_string(),
            &r.counts.bytes_received.to_string(),
            &r.counts.first_seen.to_string(),
            &r.counts.last_seen.to_string(),
            r.seen_by.as_str(),
            &r.addresses.join(" "),
            &cell(&owner),
        ])
        .map_err(|e| e.to_string())?;
    }
    w.into_inner().map_err(|e| e.to_string())
}

/// A CSV text cell that a spreadsheet will not run: a value starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return is a formula there, so it gets a leading `'`.
fn cell(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

/// Markdown text: characters Markdown would read as markup escaped, line breaks turned
/// into spaces (a value must not start a heading or break a table row).
pub(crate) fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '|' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn markdown(meta: &Meta, rows: &[EdgeRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# whouses traffic report\n");
    let _ = writeln!(
        out,
        "Generated {} — {}.\n",
        meta.generated_at,
        md(&meta.scope())
    );
    let _ = writeln!(out, "## Hosts and their callers\n");
    let _ = writeln!(out, "| host | callers | requests | errors | last seen |");
    let _ = writeln!(out, "|---|---|---:|---:|---|");
    for h in graph::hosts(rows) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            md(&h.name),
            md(&h.callers.join(", ")),
            h.requests,
            h.errors,
            h.last_seen
        );
    }
    let _ = writeln!(out, "\n## Edges\n");
    let _ = writeln!(out, "| service | environment | host | port | scheme | requests | errors | first seen | last seen | owner |");
    let _ = writeln!(out, "|---|---|---|---:|---|---:|---:|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            md(&r.service),
            md(&r.environment),
            md(&r.host),
            r.port,
            r.scheme,
            r.counts.requests,
            r.counts.errors,
            r.counts.first_seen,
            r.counts.last_seen,
            md(&meta.owner(r))
        );
    }
    out
}

/// A DOT double-quoted string.
pub(crate) fn dq(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    )
}

fn dot(rows: &[EdgeRow]) -> String {
    let mut out = String::from(
        "digraph whouses {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n",
    );
    let mut services: Vec<String> = rows
        .iter()
        .map(|r| format!("{}/{}", r.service, r.environment))
        .collect();
    services.sort();
    services.dedup();
    for s in &services {
        let _ = writeln!(out, "  {} [shape=box, style=rounded];", dq(s));
    }
    let hosts = graph::hosts(rows);
    for h in &hosts {
        let _ = writeln!(
            out,
            "  {} [shape=ellipse, label={}];",
            dq(&format!("host:{}", h.name)),
            dq(&h.name)
        );
    }
    for r in rows {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            dq(&format!("{}/{}", r.service, r.environment)),
            dq(&format!("host:{}", graph::node_name(r))),
            dq(&format!(
                "{} req, {} err",
                r.counts.requests, r.counts.errors
            ))
        );
    }
    out.push_str("}\n");
    out
}

/// Escape text for HTML and XML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(meta: &Meta, rows: &[EdgeRow]) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n<title>whouses traffic report</title>\n<style>\n");
    out.push_str(include_str!("report.css"));
    out.push_str("</style>\n</head>\n<body>\n");
    let _ = writeln!(
        out,
        "<h1>whouses traffic report</h1>\n<p class=\"meta\">Generated {} — {}.</p>",
        esc(&meta.generated_at.to_string()),
        esc(&meta.scope())
    );
    out.push_str("<h2>Dependency graph</h2>\n<div class=\"graph\">\n");
    out.push_str(&graph::svg(rows, &graph::Options::default()));
    out.push_str("</div>\n<h2>Hosts and their callers</h2>\n<table>\n<thead><tr><th>host</th><th>callers</th><th>requests</th><th>errors</th><th>last seen</th></tr></thead>\n<tbody>\n");
    for h in graph::hosts(rows) {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            esc(&h.name),
            esc(&h.callers.join(", ")),
            h.requests,
            h.errors,
            esc(&h.last_seen.to_string())
        );
    }
    out.push_str("</tbody>\n</table>\n<h2>Edges</h2>\n<table>\n<thead><tr>");
    for c in [
        "service",
        "environment",
        "host",
        "port",
        "scheme",
        "requests",
        "errors",
        "first seen",
        "last seen",
        "owner",
    ] {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for r in rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.service), esc(&r.environment), esc(&r.host), r.port, esc(r.scheme.as_str()),
            r.counts.requests, r.counts.errors, esc(&r.counts.first_seen.to_string()), esc(&r.counts.last_seen.to_string()),
            esc(&meta.owner(r))
        );
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_with_clear_errors() {
        assert_eq!("md".parse::<Format>(), Ok(Format::Markdown));
        assert!("pdf"
            .parse::<Format>()
            .unwrap_err()
            .contains("expected csv"));
    }

    #[test]
    fn escaping() {
        assert_eq!(esc("<a&\"b'>"), "&lt;a&amp;&quot;b&#39;&gt;");
        assert_eq!(dq("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(md("a|b\nc"), "a\\|b c");
    }
}
