//! The dependency graph as SVG, laid out here (no script, no CDN): calling services in
//! the left column, upstream hosts in the right, hosts ordered by the mean position of
//! their callers so that edges cross little. Large fleets are capped, and the picture
//! says what was cut.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use whouses_wire::Timestamp;

use super::esc;
use whouses_wire::api::EdgeRow;
use whouses_wire::counts;

/// An upstream `host:port` with everything that calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNode {
    pub name: String,
    pub callers: Vec<String>,
    pub requests: u64,
    pub errors: u64,
    pub last_seen: Timestamp,
}

/// A host node's name: `host:port`; `otel://server` for an edge counted from
/// OpenTelemetry service-graph metrics (issue 17), so the source shows in the graph too.
pub fn node_name(r: &EdgeRow) -> String {
    if r.scheme == whouses_wire::Scheme::Otel {
        crate::query::edge_name(r)
    } else {
        format!("{}:{}", r.host, r.port)
    }
}

/// Hosts with their callers, by name.
pub fn hosts(rows: &[EdgeRow]) -> Vec<HostNode> {
    let mut by: BTreeMap<String, HostNode> = BTreeMap::new();
    for r in rows {
        let name = node_name(r);
        let h = by.entry(name.clone()).or_insert_with(|| HostNode {
            name,
            callers: Vec::new(),
            requests: 0,
            errors: 0,
            last_seen: r.counts.last_seen,
        });
        h.requests = counts::add(h.requests, r.counts.requests);
        h.errors = counts::add(h.errors, r.counts.errors);
        h.last_seen = h.last_seen.max(r.counts.last_seen);
        let who = service_label(r);
        if !h.callers.contains(&who) {
            h.callers.push(who);
        }
    }
    by.into_values()
        .map(|mut h| {
            h.callers.sort();
            h
        })
        .collect()
}

fn service_label(r: &EdgeRow) -> String {
    format!("{} ({})", r.service, r.environment)
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Most nodes drawn per column; the busiest are kept.
    pub max_per_side: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { max_per_side: 40 }
    }
}

const ROW: f64 = 30.0;
const TOP: f64 = 40.0;
const BOX_W: f64 = 300.0;
const WIDTH: f64 = 960.0;

/// Render the graph of `rows` (already filtered to the neighbourhood wanted).
pub fn svg(rows: &[EdgeRow], opts: &Options) -> String {
    // Busiest services and hosts first; keep at most `max_per_side` of each.
    let mut svc_load: BTreeMap<String, u64> = BTreeMap::new();
    let mut host_load: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows {
        let load = svc_load.entry(service_label(r)).or_default();
        *load = counts::add(*load, r.counts.requests.max(1));
        let load = host_load.entry(node_name(r)).or_default();
        *load = counts::add(*load, r.counts.requests.max(1));
    }
    let top = |m: &BTreeMap<String, u64>| -> (Vec<String>, usize) {
        let mut v: Vec<(&String, &u64)> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let cut = v.len().saturating_sub(opts.max_per_side);
        (
            v.into_iter()
                .take(opts.max_per_side)
                .map(|(k, _)| k.clone())
                .collect(),
            cut,
        )
    };
    let (services, cut_services) = top(&svc_load);
    let (kept_hosts, cut_hosts) = top(&host_load);
    let svc_pos: BTreeMap<&String, usize> =
        services.iter().enumerate().map(|(i, s)| (s, i)).collect();

    // Order hosts by the mean row of their callers (barycentre), ties by name.
    let mut bary: Vec<(f64, String)> = kept_hosts
        .iter()
        .map(|h| {
            let rows_of: Vec<usize> = rows
                .iter()
                .filter(|r| &node_name(r) == h)
                .filter_map(|r| svc_pos.get(&service_label(r)).copied())
                .collect();
            let mean = if rows_of.is_empty() {
                f64::MAX
            } else {
                rows_of.iter().sum::<usize>() as f64 / rows_of.len() as f64
            };
            (mean, h.clone())
        })
        .collect();
    bary.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let host_pos: BTreeMap<String, usize> = bary
        .iter()
        .enumerate()
        .map(|(i, (_, h))| (h.clone(), i))
        .collect();

    let n = services.len().max(host_pos.len()).max(1);
    let note = if cut_services + cut_hosts > 0 {
        1.0
    } else {
        0.0
    };
    let height = TOP + n as f64 * ROW + 20.0 + note * ROW;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"dependency graph\" font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(out, "<text x=\"20\" y=\"22\" font-weight=\"bold\">calling services</text><text x=\"{}\" y=\"22\" font-weight=\"bold\">upstream hosts</text>", WIDTH - BOX_W - 20.0);
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"20\" y=\"{}\">No traffic recorded for this selection.</text>",
            TOP + 16.0
        );
    }
    let y = |i: usize| TOP + i as f64 * ROW + ROW / 2.0;
    let max_req = rows
        .iter()
        .map(|r| r.counts.requests)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    // Edges first, so boxes are drawn over them.
    for r in rows {
        let (Some(&si), Some(&hi)) = (svc_pos.get(&service_label(r)), host_pos.get(&node_name(r)))
        else {
            continue;
        };
        let (x1, y1, x2, y2) = (20.0 + BOX_W, y(si), WIDTH - BOX_W - 20.0, y(hi));
        let w = 1.0 + 4.0 * ((r.counts.requests as f64 + 1.0).ln() / (max_req + 1.0).ln());
        let colour = if r.counts.errors > 0 {
            "#cf222e"
        } else {
            "#8c959f"
        };
        let _ = writeln!(
            out,
            "<path d=\"M{x1},{y1} C{cx},{y1} {cx},{y2} {x2},{y2}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{w:.1}\" stroke-opacity=\"0.7\"><title>{} → {}:{}: {} requests, {} errors</title></path>",
            esc(&service_label(r)), esc(&r.host), r.port, r.counts.requests, r.counts.errors,
            cx = (x1 + x2) / 2.0,
        );
    }
    for (i, s) in services.iter().enumerate() {
        node(&mut out, 20.0, y(i), s, "#ddf4ff", "service");
    }
    for (h, i) in &host_pos {
        node(&mut out, WIDTH - BOX_W - 20.0, y(*i), h, "#fff8c5", "host");
    }
    if note > 0.0 {
        let _ = writeln!(
            out,
            "<text x=\"20\" y=\"{}\" fill=\"#57606a\">… and {cut_services} more services and {cut_hosts} more hosts not shown (the {} busiest of each are drawn; narrow to one host or service to see all its neighbours).</text>",
            height - 14.0,
            opts.max_per_side
        );
    }
    out.push_str("</svg>\n");
    out
}

fn node(out: &mut String, x: f64, cy: f64, label: &str, fill: &str, class: &str) {
    let shown: String = if label.chars().count() > 44 {
        label.chars().take(43).chain(std::iter::once('…')).collect()
    } else {
        label.to_string()
    };
    let _ = writeln!(
        out,
        "<g class=\"{class}\"><rect x=\"{x}\" y=\"{}\" width=\"{BOX_W}\" height=\"{}\" rx=\"5\" fill=\"{fill}\" stroke=\"#57606a\"/><text x=\"{}\" y=\"{}\">{}</text><title>{}</title></g>",
        cy - ROW / 2.0 + 3.0,
        ROW - 6.0,
        x + 8.0,
        cy + 4.0,
        esc(&shown),
        esc(label)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, host: &str, requests: u64) -> EdgeRow {
        EdgeRow {
            service: service.into(),
            environment: "prod".into(),
            host: host.into(),
            port: 80,
            scheme: whouses_wire::Scheme::Http,
            counts: whouses_wire::Counts {
                requests,
                connections: 1,
                first_seen: Timestamp(0),
                last_seen: Timestamp(1),
                ..Default::default()
            },
        }
    }

    #[test]
    fn large_graphs_are_capped_and_say_so() {
        let rows: Vec<EdgeRow> = (0..100)
            .map(|i| row(&format!("s{i}"), &format!("h{i}"), i))
            .collect();
        let svg = svg(&rows, &Options { max_per_side: 10 });
        assert_eq!(svg.matches("class=\"service\"").count(), 10);
        assert!(svg.contains("90 more services and 90 more hosts not shown"));
        assert!(svg.contains("s99 (prod)"), "busiest kept");
    }

    #[test]
    fn labels_are_escaped() {
        let svg = svg(&[row("<x>", "a&b", 1)], &Options::default());
        assert!(svg.contains("&lt;x&gt;") && svg.contains("a&amp;b"));
        assert!(!svg.contains("<x>"));
    }
}
