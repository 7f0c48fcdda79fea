//! Human output: aligned tables, CSV of the same columns, relative times ("3 days ago").

use whouses_wire::api::{Caller, CheckResponse, SeenBy, Unattributed};
use whouses_wire::Timestamp;

pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.header).chain(&self.rows) {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str("  ");
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out
    }

    pub fn to_csv(&self) -> anyhow::Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let header: Vec<String> = self
            .header
            .iter()
            .map(|h| h.to_lowercase().replace(' ', "_"))
            .collect();
        w.write_record(&header)?;
        for r in &self.rows {
            w.write_record(r)?;
        }
        Ok(String::from_utf8(w.into_inner()?)?)
    }
}

/// "just now", "5 minutes ago", "3 days ago", "in 2 hours".
pub fn relative(t: Timestamp, now: Timestamp) -> String {
    let d = now.0 - t.0;
    let text = duration(d.abs());
    if d.abs() < 1_000 {
        "just now".into()
    } else if d > 0 {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

/// A coarse, readable duration: "42 seconds", "5 minutes", "3 hours", "12 days".
pub fn duration(ms: i64) -> String {
    let s = ms / 1000;
    let (n, unit) = if s < 60 {
        (s, "second")
    } else if s < 3600 {
        (s / 60, "minute")
    } else if s < 86_400 {
        (s / 3600, "hour")
    } else {
        (s / 86_400, "day")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// The NOTE of a callers row (issue 14): a service reaching the host around its
/// sidecar, or the two sides' counts when they differ.
pub fn caller_note(c: &Caller) -> String {
    if c.around_sidecar {
        return "around its sidecar".to_string();
    }
    match (c.seen_by, c.caller_counts, c.callee_counts) {
        (SeenBy::Both, Some(a), Some(b)) if a.calls() != b.calls() => {
            format!("caller counted {}, callee {}", a.calls(), b.calls())
        }
        _ => String::new(),
    }
}

/// The NOTE of an unattributed row: the services that all held the address.
pub fn unattributed_note(u: &Unattributed) -> String {
    if u.candidates.is_empty() {
        "no sidecar held this address".to_string()
    } else {
        format!("held by several: {}", u.candidates.join(", "))
    }
}

/// What `check` prints under its table about the callee side (issue 14).
pub fn callee_side(r: &CheckResponse, now: Timestamp) -> String {
    let mut out = String::new();
    for c in &r.callee_side {
        out.push_str(&format!(
            "Callee side: {} ({}), {} inbound sidecar(s) for {}: {} (last report {}).\n",
            c.service,
            c.environment,
            c.instances.len(),
            if c.hosts.is_empty() {
                "-".to_string()
            } else {
                c.hosts.join(", ")
            },
            if c.reporting_through_window {
                "reported throughout"
            } else {
                "did NOT report throughout"
            },
            c.last_report
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "never".into())
        ));
    }
    for u in &r.unattributed {
        out.push_str(&format!(
            "Unattributed caller: {} ({} call(s), last {}).\n",
            u.address,
            u.counts.calls(),
            relative(u.counts.last_seen, now)
        ));
    }
    for d in &r.disagreements {
        out.push_str(&format!("Disagreement: {}.\n", d.message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_well() {
        let now = Timestamp(10 * 86_400_000);
        assert_eq!(relative(now, now), "just now");
        assert_eq!(
            relative(Timestamp(now.0 - 3 * 86_400_000), now),
            "3 days ago"
        );
        assert_eq!(relative(Timestamp(now.0 - 60_000), now), "1 minute ago");
        assert_eq!(relative(Timestamp(now.0 + 7_200_000), now), "in 2 hours");
    }

    #[test]
    fn tables_align_and_csv_round_trips() {
        let mut t = Table::new(&["SERVICE", "REQUESTS"]);
        t.row(vec!["tis-sync".into(), "1234".into()]);
        t.row(vec!["a,b".into(), "1".into()]);
        let r = t.render();
        assert!(r.contains("  SERVICE   REQUESTS\n"), "{r}");
        let csv = t.to_csv().unwrap();
        assert!(csv.starts_with("service,requests\n"));
        assert!(csv.contains("\"a,b\",1"));
    }
}
