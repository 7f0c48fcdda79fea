//! The decommission workflow's commands (issue 16): `watch add|list|rm`, `migration`,
//! `diff` and `timeline`. Each asks the collector and prints a table, JSON or CSV
//! (`migration --format markdown`: the ticket's checklist, as the collector writes it).

use clap::{Args, Subcommand};
use whouses_wire::decom::{
    DiffResponse, MigrationResponse, NewWatch, TimelineResponse, Watch, WatchesResponse,
};
use whouses_wire::Timestamp;

use crate::output::{relative, Table};
use crate::{emit, Api, Cli, Command, Format};

#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Watch HOST: alert on calls after --from and on failing calls (needs --admin-token).
    Add {
        /// A host, host:port, *.suffix or a target name.
        host: String,
        /// The cutoff: `now` (default), an RFC 3339 time (the planned switch-off), or a
        /// duration back from now.
        #[arg(long)]
        from: Option<String>,
        /// The replacement, when the watch tracks a migration (shown on the dashboard).
        #[arg(long)]
        to: Option<String>,
        /// Where alerts go (repeatable): an Alertmanager /api/v2/alerts URL, or any URL
        /// taking a JSON body with a one-line `text` (a Slack incoming webhook).
        #[arg(long = "notify")]
        notify: Vec<String>,
        #[arg(long)]
        note: Option<String>,
    },
    /// Every watch, and what fired.
    List,
    /// Remove watch ID with its alerts (needs --admin-token).
    Rm { id: u64 },
}

#[derive(Debug, Args)]
pub struct MigrationArgs {
    /// The old host (host, host:port, *.suffix or a target name).
    #[arg(long)]
    pub from: String,
    /// The new host.
    #[arg(long)]
    pub to: String,
    /// The window calls are counted in (e.g. 30d).
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first period, FROM..TO (e.g. 14d..7d; ends are `now`, a duration back from now,
    /// or an RFC 3339 time).
    #[arg(long)]
    pub before: String,
    /// The second period (e.g. 7d..now).
    #[arg(long)]
    pub after: String,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub service: Option<String>,
    #[arg(long)]
    pub environment: Option<String>,
    /// Changes in calls per hour by more than this factor are listed (default 2).
    #[arg(long)]
    pub factor: Option<f64>,
}

#[derive(Debug, Args)]
pub struct TimelineArgs {
    pub host: String,
    #[arg(long)]
    pub since: Option<String>,
    /// 1h or 1d (default: hours up to 3 days, days beyond).
    #[arg(long)]
    pub step: Option<String>,
    #[arg(long)]
    pub environment: Option<String>,
}

impl Api {
    /// A request with a JSON body and a token of the caller's choice; the body of a 2xx.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Vec<u8>> {
        self.request(method, path, &[], token, body).await
    }
}

/// Run a decommission command; `None` if `cli.command` is not one.
pub async fn run(cli: &Cli, api: &Api, now: Timestamp) -> anyhow::Result<Option<u8>> {
    let format = cli.format.unwrap_or(Format::Table);
    let query_format = || match format {
        f @ (Format::Table | Format::Json | Format::Csv) => Ok(f),
        other => anyhow::bail!(
            "--format {other:?}: this command prints table, json or csv{}",
            if matches!(cli.command, Command::Migration(_)) {
                " (or markdown)"
            } else {
                ""
            }
        ),
    };
    // Mutations take the admin token when given, else the read token.
    let admin = cli.admin_token.as_deref().or(cli.token.as_deref());
    match &cli.command {
        Command::Watch(WatchCommand::Add {
            host,
            from,
            to,
            notify,
            note,
        }) => {
            let format = query_format()?;
            let w = NewWatch {
                host: host.clone(),
                from: from.clone(),
                to: to.clone(),
                notify: notify.clone(),
                note: note.clone(),
            };
            let body = serde_json::to_value(&w)?;
            let raw = api
                .send(reqwest::Method::POST, "/v1/watches", admin, Some(&body))
                .await?;
            let w: Watch = serde_json::from_slice(&raw)
                .map_err(|e| anyhow::anyhow!("unexpected answer from the collector: {e}"))?;
            match format {
                Format::Json => println!("{}", String::from_utf8_lossy(&raw)),
                _ => println!(
                    "Watch {} on {}: calls after {} and failing calls alert{}.",
                    w.id,
                    w.host,
                    w.from,
                    if w.notify.is_empty() {
                        " (shown in `whouses watch list`; no --notify)".to_string()
                    } else {
                        format!(" to {}", w.notify.join(", "))
                    }
                ),
            }
            Ok(Some(0))
        }
        Command::Watch(WatchCommand::List) => {
            let format = query_format()?;
            let (raw, r): (_, WatchesResponse) = api.get("/v1/watches", &[]).await?;
            let mut t = Table::new(&[
                "WATCH",
                "KIND",
                "SERVICE",
                "ENVIRONMENT",
                "OWNER",
                "CALLS",
                "FAILING",
                "LAST SEEN",
                "FIRED",
                "NOTIFIED",
            ]);
            for w in &r.watches {
                for a in &w.alerts {
                    t.row(vec![
                        w.id.to_string(),
                        a.kind.as_str().to_string(),
                        a.service.clone(),
                        a.environment.clone(),
                        a.owner.as_ref().map(|o| o.describe()).unwrap_or_default(),
                        a.calls.to_string(),
                        a.errors.to_string(),
                        relative(a.last_seen, now),
                        relative(a.fired_at, now),
                        format!("{}×", a.notifications),
                    ]);
                }
            }
            emit(format, &raw, &t, || watches_heading(&r.watches, now))?;
            Ok(Some(0))
        }
        Command::Watch(WatchCommand::Rm { id }) => {
            api.send(
                reqwest::Method::DELETE,
                &format!("/v1/watches/{id}"),
                admin,
                None,
            )
            .await?;
            eprintln!("Removed watch {id}.");
            Ok(Some(0))
        }
        Command::Migration(a) => {
            let mut q = vec![("from", a.from.clone()), ("to", a.to.clone())];
            q.extend(a.since.clone().map(|s| ("since", s)));
            if format == Format::Markdown {
                q.push(("format", "markdown".to_string()));
                let body = api.get_bytes("/v1/migration", &q).await?;
                print!("{}", String::from_utf8_lossy(&body));
                return Ok(Some(0));
            }
            let format = query_format()?;
            let (raw, r): (_, MigrationResponse) = api.get("/v1/migration", &q).await?;
            let mut t = Table::new(&[
                "SERVICE",
                "ENVIRONMENT",
                "OWNER",
                "STATUS",
                "CALLS TO OLD",
                "CALLS TO NEW",
                "ON NEW",
                "LAST CALL TO OLD",
            ]);
            for c in &r.callers {
                t.row(vec![
                    c.service.clone(),
                    c.environment.clone(),
                    c.owner.as_ref().map(|o| o.describe()).unwrap_or_default(),
                    c.status.label().to_string(),
                    c.calls_old.to_string(),
                    c.calls_new.to_string(),
                    c.share_new
                        .map(|s| format!("{:.0}%", s * 100.0))
                        .unwrap_or_else(|| "-".into()),
                    c.last_old.map(|t| relative(t, now)).unwrap_or_default(),
                ]);
            }
            emit(format, &raw, &t, || {
                let s = &r.summary;
                format!(
                    "{} → {} since {}: {} not started, {} migrating, {} unknown, {} done.",
                    r.from,
                    r.to,
                    relative(r.since, now),
                    s.not_started,
                    s.migrating,
                    s.unknown,
                    s.done
                )
            })?;
            Ok(Some(0))
        }
        Command::Diff(a) => {
            let format = query_format()?;
            let mut q = vec![("before", a.before.clone()), ("after", a.after.clone())];
            q.extend(a.host.clone().map(|v| ("host", v)));
            q.extend(a.service.clone().map(|v| ("service", v)));
            q.extend(a.environment.clone().map(|v| ("environment", v)));
            q.extend(a.factor.map(|v| ("factor", v.to_string())));
            let (raw, r): (_, DiffResponse) = api.get("/v1/diff", &q).await?;
            let mut t = Table::new(&[
                "CHANGE",
                "SERVICE",
                "ENVIRONMENT",
                "HOST",
                "BEFORE",
                "AFTER",
                "RATE RATIO",
            ]);
            for c in &r.changes {
                t.row(vec![
                    serde_json::to_value(c.change)?
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    c.service.clone(),
                    c.environment.clone(),
                    format!("{}:{}", c.host, c.port),
                    c.before.to_string(),
                    c.after.to_string(),
                    c.ratio
                        .map(|r| format!("{r:.2}×"))
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            emit(format, &raw, &t, || {
                format!(
                    "{} change(s) between {}..{} and {}..{} ({} edge(s) within {}×):",
                    r.changes.len(),
                    r.before.from,
                    r.before.to,
                    r.after.from,
                    r.after.to,
                    r.unchanged,
                    r.factor
                )
            })?;
            Ok(Some(0))
        }
        Command::Timeline(a) => {
            let format = query_format()?;
            let mut q = vec![("host", a.host.clone())];
            q.extend(a.since.clone().map(|v| ("since", v)));
            q.extend(a.step.clone().map(|v| ("step", v)));
            q.extend(a.environment.clone().map(|v| ("environment", v)));
            let (raw, r): (_, TimelineResponse) = api.get("/v1/timeline", &q).await?;
            let mut t = Table::new(&[
                "SERVICE",
                "ENVIRONMENT",
                "OWNER",
                "CALLS",
                "ERRORS",
                "TREND",
            ]);
            for s in &r.callers {
                t.row(vec![
                    s.service.clone(),
                    s.environment.clone(),
                    s.owner.as_ref().map(|o| o.describe()).unwrap_or_default(),
                    s.total_calls.to_string(),
                    s.total_errors.to_string(),
                    sparkline(&s.calls),
                ]);
            }
            emit(format, &raw, &t, || {
                format!(
                    "Calls to {} per {} since {} ({} step(s)):",
                    r.host,
                    if r.step == "1h" { "hour" } else { "day" },
                    r.since,
                    r.steps.len()
                )
            })?;
            Ok(Some(0))
        }
        _ => Ok(None),
    }
}

fn watches_heading(watches: &[Watch], now: Timestamp) -> String {
    if watches.is_empty() {
        return "No watches.".to_string();
    }
    let mut out = format!("{} watch(es):\n", watches.len());
    for w in watches {
        let to =
            w.to.as_deref()
                .map(|t| format!(" → {t}"))
                .unwrap_or_default();
        let d = &w.deliveries;
        out.push_str(&format!(
            "  #{} {}{to}, cutoff {} ({}); {} alert(s); notifications: {} delivered, {} pending, {} failed{}\n",
            w.id,
            w.host,
            w.from,
            relative(w.from, now),
            w.alerts.len(),
            d.delivered,
            d.pending,
            d.failed,
            w.note.as_deref().map(|n| format!("; {n}")).unwrap_or_default(),
        ));
    }
    out.push_str("What fired:");
    out
}

/// Calls per step as a line of block characters, scaled to the busiest step (at most the
/// last 60 steps).
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(60)..];
    let max = tail.iter().copied().max().unwrap_or(0);
    tail.iter()
        .map(|&v| {
            if v == 0 {
                ' '
            } else if max == 0 {
                BARS[0]
            } else {
                let i = ((v as u128 * 7) / max as u128) as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn sparklines_scale_to_the_busiest_step() {
        assert_eq!(sparkline(&[0, 1, 4, 8]), " ▁▄█");
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[u64::MAX, 1]), "█▁");
    }

    #[test]
    fn the_commands_parse() {
        let c = Cli::try_parse_from([
            "whouses",
            "--admin-token",
            "adm",
            "watch",
            "add",
            "old.internal",
            "--from",
            "2026-12-01T00:00:00Z",
            "--notify",
            "http://am:9093/api/v2/alerts",
            "--notify",
            "https://hooks.slack.com/x",
        ])
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("adm"));
        match c.command {
            Command::Watch(WatchCommand::Add { notify, from, .. }) => {
                assert_eq!(notify.len(), 2);
                assert_eq!(from.as_deref(), Some("2026-12-01T00:00:00Z"));
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from([
            "whouses",
            "--format",
            "markdown",
            "migration",
            "--from",
            "old",
            "--to",
            "new",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Migration(_)));
        assert!(Cli::try_parse_from(["whouses", "migration", "--from", "old"]).is_err());
        let c = Cli::try_parse_from([
            "whouses", "diff", "--before", "14d..7d", "--after", "7d..now", "--host", "h",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Diff(_)));
        assert!(Cli::try_parse_from(["whouses", "watch", "rm", "x"]).is_err());
    }
}
