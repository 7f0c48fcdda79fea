//! The callee's view in the traffic report (issue 14): what inbound sidecars saw, per
//! calling service (attributed through the address book) or per caller address nobody
//! holds, beside the callers' own edges. Every format shows it: CSV rows (`seen_by`,
//! `address` columns), JSON arrays, Markdown and HTML tables, dashed edges in DOT.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use whouses_wire::api::{EdgeRow, SeenBy};
use whouses_wire::{Counts, Scheme};

use super::{dq, esc, md};
use crate::reconcile::Attribution;
use crate::store::InboundRow;

/// Calls an inbound sidecar saw under one name from one calling service (or from
/// caller addresses nobody holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundEdgeRow {
    /// The calling service, when attributed.
    pub service: Option<String>,
    pub environment: Option<String>,
    /// The callee: the service the inbound sidecar stands in front of.
    pub callee: String,
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    /// The caller addresses the calls came from.
    pub addresses: Vec<String>,
    /// `callee` (only the inbound sidecar saw them) or `both` (the caller's sidecar
    /// reported calls to this host too).
    pub seen_by: SeenBy,
    /// The caller's own (caller-side) sidecar held the address and reported none of these
    /// calls.
    pub around_sidecar: bool,
    /// Services that all held the address at the time (none is sure).
    pub candidates: Vec<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The report's callee side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundExport {
    pub rows: Vec<InboundEdgeRow>,
    /// `(service, environment, host)` of the edges the callee saw too (`seen_by: both`).
    pub both: BTreeSet<(String, String, String)>,
}

impl InboundExport {
    /// Build from the report's edges and the inbound rows of the same filter with their
    /// attributions; `service`/`environment`: keep only calls attributed to them.
    pub fn build(
        edges: &[EdgeRow],
        rows: &[InboundRow],
        attributions: &[Attribution],
        service: Option<&str>,
        environment: Option<&str>,
    ) -> InboundExport {
        let called: BTreeSet<(&str, &str, &str)> = edges
            .iter()
            .map(|e| (e.service.as_str(), e.environment.as_str(), e.host.as_str()))
            .collect();
        type Key = (
            Option<String>,
            Option<String>,
            String,
            String,
            u16,
            Scheme,
            String,
        );
        let mut by: BTreeMap<Key, InboundEdgeRow> = BTreeMap::new();
        let mut both = BTreeSet::new();
        for (r, a) in rows.iter().zip(attributions) {
            let (svc, env, around, candidates, unattributed_address) = match a {
                Attribution::To {
                    service,
                    environment,
                    caller_side,
                } => (
                    Some(service.clone()),
                    Some(environment.clone()),
                    *caller_side,
                    Vec::new(),
                    String::new(),
                ),
                Attribution::Nobody => (None, None, false, Vec::new(), r.address.clone()),
                Attribution::Several(c) => (None, None, false, c.clone(), r.address.clone()),
            };
            if service.is_some() && svc.as_deref() != service {
                continue;
            }
            if environment.is_some() && env.is_some() && env.as_deref() != environment {
                continue;
            }
            let seen_by = match (&svc, &env) {
                (Some(s), Some(e))
                    if called.contains(&(s.as_str(), e.as_str(), r.host.as_str())) =>
                {
                    both.insert((s.clone(), e.clone(), r.host.clone()));
                    SeenBy::Both
                }
                _ => SeenBy::Callee,
            };
            let key = (
                svc.clone(),
                env.clone(),
                r.service.clone(),
                r.host.clone(),
                r.port,
                r.scheme,
                unattributed_address,
            );
            let row = by.entry(key).or_insert_with(|| InboundEdgeRow {
                service: svc,
                environment: env,
                callee: format!("{} ({})", r.service, r.environment),
                host: r.host.clone(),
                port: r.port,
                scheme: r.scheme,
                addresses: Vec::new(),
                seen_by,
                around_sidecar: false,
                candidates: Vec::new(),
                counts: Counts {
                    first_seen: r.counts.first_seen,
                    last_seen: r.counts.last_seen,
                    ..Counts::default()
                },
            });
            row.counts.merge(&r.counts);
            row.around_sidecar |= around && seen_by == SeenBy::Callee;
            if !row.addresses.contains(&r.address) {
                row.addresses.push(r.address.clone());
            }
            for c in candidates {
                if !row.candidates.contains(&c) {
                    row.candidates.push(c);
                }
            }
        }
        let mut rows: Vec<InboundEdgeRow> = by.into_values().collect();
        for r in &mut rows {
            r.addresses.sort();
        }
        // Calling services first, then the addresses nobody holds.
        rows.sort_by(|a, b| {
            (
                a.service.is_none(),
                &a.service,
                &a.environment,
                &a.host,
                a.port,
                &a.addresses,
            )
                .cmp(&(
                    b.service.is_none(),
                    &b.service,
                    &b.environment,
                    &b.host,
                    b.port,
                    &b.addresses,
                ))
        });
        InboundExport { rows, both }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether an edge row was seen by the callee too.
    pub fn seen_by(&self, e: &EdgeRow) -> SeenBy {
        if self
            .both
            .contains(&(e.service.clone(), e.environment.clone(), e.host.clone()))
        {
            SeenBy::Both
        } else {
            SeenBy::Caller
        }
    }

    /// The rows only the callee saw (the `both` ones are the edges' rows already).
    pub fn callee_only(&self) -> impl Iterator<Item = &InboundEdgeRow> {
        self.rows.iter().filter(|r| r.seen_by == SeenBy::Callee)
    }

    /// What a row's caller is called in the human formats.
    pub fn caller_label(r: &InboundEdgeRow) -> String {
        match (&r.service, &r.environment) {
            (Some(s), Some(e)) => format!("{s} ({e})"),
            _ => format!("{} (unattributed)", r.addresses.join(" ")),
        }
    }

    fn note(r: &InboundEdgeRow) -> String {
        if r.around_sidecar {
            "around its sidecar".to_string()
        } else if !r.candidates.is_empty() {
            format!("held by several: {}", r.candidates.join(", "))
        } else if r.service.is_none() {
            "no sidecar held this address".to_string()
        } else {
            String::new()
        }
    }

    /// The Markdown section (nothing when no inbound sidecar saw anything).
    pub fn markdown(&self, out: &mut String) {
        if self.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n## Seen by the callee (inbound sidecars)\n");
        let _ = writeln!(out, "| caller | callee | host | port | seen by | addresses | requests | connections | errors | last seen | note |");
        let _ = writeln!(out, "|---|---|---|---:|---|---|---:|---:|---:|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                md(&Self::caller_label(r)),
                md(&r.callee),
                md(&r.host),
                r.port,
                r.seen_by.as_str(),
                md(&r.addresses.join(" ")),
                r.counts.requests,
                r.counts.connections,
                r.counts.errors,
                r.counts.last_seen,
                md(&Self::note(r))
            );
        }
    }

    /// The HTML section (nothing when no inbound sidecar saw anything).
    pub fn html(&self, out: &mut String) {
        if self.is_empty() {
            return;
        }
        out.push_str("<h2>Seen by the callee (inbound sidecars)</h2>\n<table>\n<thead><tr>");
        for c in [
            "caller",
            "callee",
            "host",
            "port",
            "seen by",
            "addresses",
            "requests",
            "connections",
            "errors",
            "last seen",
            "note",
        ] {
            let _ = write!(out, "<th>{c}</th>");
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&Self::caller_label(r)),
                esc(&r.callee),
                esc(&r.host),
                r.port,
                r.seen_by.as_str(),
                esc(&r.addresses.join(" ")),
                r.counts.requests,
                r.counts.connections,
                r.counts.errors,
                esc(&r.counts.last_seen.to_string()),
                esc(&Self::note(r))
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    /// DOT: the callee-only calls as dashed edges (unattributed addresses as their own
    /// nodes); the `both` ones are the edges' already.
    pub fn dot(&self, out: &mut String) {
        for r in self.callee_only() {
            let host = format!("{}:{}", r.host, r.port);
            let _ = writeln!(
                out,
                "  {} [shape=ellipse, label={}];",
                dq(&format!("host:{host}")),
                dq(&host)
            );
            let from = match (&r.service, &r.environment) {
                (Some(s), Some(e)) => {
                    let node = format!("{s}/{e}");
                    let _ = writeln!(
                        out,
                        "  {} [shape=box, style=\"rounded,dashed\"];",
                        dq(&node)
                    );
                    node
                }
                _ => {
                    let node = format!("address:{}", r.addresses.join(" "));
                    let _ = writeln!(
                        out,
                        "  {} [shape=note, style=dashed, label={}];",
                        dq(&node),
                        dq(&format!("{} (unattributed)", r.addresses.join(" ")))
                    );
                    node
                }
            };
            let _ = writeln!(
                out,
                "  {} -> {} [style=dashed, label={}];",
                dq(&from),
                dq(&format!("host:{host}")),
                dq(&format!(
                    "{} req, seen by the callee{}",
                    r.counts.requests,
                    if r.around_sidecar {
                        ", around its sidecar"
                    } else {
                        ""
                    }
                ))
            );
        }
    }
}
