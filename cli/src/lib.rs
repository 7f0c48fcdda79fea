//! The `whouses` command: asks the collector, prints tables/JSON/CSV, and turns `check`
//! into an exit code a pipeline can gate on (0 unused, 1 in use, 3 unknown, 2 error).
//!
//! A thin HTTP client: it links the answer types ([`whouses_wire::api`]) and no server,
//! database or proxy code. [`demo`] starts the other programs as processes.

use std::ffi::OsString;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use whouses_wire::api::{
    CalleesResponse, CallersResponse, CheckResponse, CoverageResponse, HostsResponse, SeenBy,
    ServicesResponse,
};

pub mod decom;
pub mod demo;
pub mod output;

use output::{relative, Table};

/// Exit code for usage errors, unreachable collectors and failed requests.
pub const EXIT_ERROR: u8 = 2;

/// Output format. Queries print `table`, `json` or `csv`; `export` writes `csv`, `json`,
/// `markdown`, `dot` or `html`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Markdown,
    Dot,
    Html,
}

/// Who still uses X? Ask a whouses collector.
#[derive(Debug, Parser)]
#[command(name = "whouses", version, about)]
pub struct Cli {
    /// Collector base URL.
    #[arg(
        long,
        env = "WHOUSES_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub url: String,
    /// Read token for the collector.
    #[arg(long, env = "WHOUSES_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the collector's certificate (for an https:// URL
    /// with a private CA); the system's roots are trusted too.
    #[arg(long, env = "WHOUSES_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Output format: table, json or csv (export also: markdown, dot, html; migration
    /// also: markdown).
    #[arg(long, env = "WHOUSES_FORMAT", value_enum, global = true)]
    pub format: Option<Format>,
    /// Admin token for adding and removing watches (the collector's --admin-token).
    #[arg(
        long,
        env = "WHOUSES_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Which services call HOST (host, host:port, *.suffix or a target name).
    Callers {
        host: String,
        /// Only calls within this period (e.g. 30d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        environment: Option<String>,
    },
    /// Which hosts SERVICE calls.
    Callees {
        service: String,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        environment: Option<String>,
    },
    /// Every upstream seen, quietest first.
    Hosts {
        /// Only hosts not called within this period.
        #[arg(long)]
        unused_since: Option<String>,
    },
    /// Every reporting service and its sidecars' last report.
    Services,
    /// Is HOST safe to switch off? Exit 0 unused, 1 in use, 3 unknown, 2 error.
    Check {
        host: String,
        /// How long HOST must have been quiet (e.g. 14d).
        #[arg(long)]
        quiet_for: String,
    },
    /// Every host with an inbound (callee-side) sidecar: the share of its inbound calls
    /// attributed to known callers, and the caller addresses still to find.
    Coverage {
        /// Only calls within this period (e.g. 30d).
        #[arg(long)]
        since: Option<String>,
    },
    /// The traffic report as csv, json, markdown, dot (Graphviz) or html.
    Export {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        /// Only callers of this host (host, host:port, *.suffix or a target name).
        #[arg(long)]
        host: Option<String>,
        /// Only calls made by this service.
        #[arg(long)]
        service: Option<String>,
        /// Write to FILE instead of standard output.
        #[arg(short = 'o', long = "output")]
        output: Option<std::path::PathBuf>,
    },
    /// The whole loop on loopback: collector, sidecars, upstreams, the story, the answer.
    Demo(crate::demo::DemoArgs),
    /// Watches on hosts being retired: alerts on calls after a cutoff and on failing calls.
    #[command(subcommand)]
    Watch(decom::WatchCommand),
    /// Callers moving from an old host to a new one: done, migrating, not started or
    /// unknown; `--format markdown` prints the ticket's checklist.
    Migration(decom::MigrationArgs),
    /// What changed between two periods: edges that appeared, vanished, grew or shrank.
    Diff(decom::DiffArgs),
    /// Calls to HOST per hour or day, per caller.
    Timeline(decom::TimelineArgs),
}

/// Parse `args` and run; returns the process exit code.
pub async fn run_args<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code().clamp(0, 255) as u8;
        }
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("whouses: {e:#}");
            EXIT_ERROR
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Demo(args) = cli.command {
        Box::pin(crate::demo::run(args)).await?;
        return Ok(0);
    }
    let api = Api::new(&cli.url, cli.token.clone(), cli.ca_cert.as_deref())?;
    let now = whouses_wire::Timestamp::now();
    if let Some(code) = decom::run(&cli, &api, now).await? {
        return Ok(code);
    }
    if let Command::Export {
        since,
        environment,
        host,
        service,
        output,
    } = &cli.command
    {
        let format = match cli.format.unwrap_or(Format::Json) {
            Format::Table => anyhow::bail!(
                "export writes csv, json, markdown, dot or html (--format table is for queries)"
            ),
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Markdown => "markdown",
            Format::Dot => "dot",
            Format::Html => "html",
        };
        let mut q = vec![("format", format.to_string())];
        q.extend(since.clone().map(|v| ("since", v)));
        q.extend(environment.clone().map(|v| ("environment", v)));
        q.extend(host.clone().map(|v| ("host", v)));
        q.extend(service.clone().map(|v| ("service", v)));
        let body = api.get_bytes("/v1/export", &q).await?;
        match output {
            Some(path) => {
                std::fs::write(path, &body)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                eprintln!("Wrote {} bytes to {}.", body.len(), path.display());
            }
            None => {
                use std::io::Write as _;
                std::io::stdout().write_all(&body)?;
            }
        }
        return Ok(0);
    }
    let format = match cli.format.unwrap_or(Format::Table) {
        f @ (Format::Table | Format::Json | Format::Csv) => f,
        other => {
            anyhow::bail!("--format {other:?} is for export; queries print table, json or csv")
        }
    };
    match &cli.command {
        Command::Callers {
            host,
            since,
            environment,
        } => {
            let mut q = vec![("host", host.clone())];
            q.extend(since.clone().map(|s| ("since", s)));
            q.extend(environment.clone().map(|e| ("environment", e)));
            let (raw, r): (_, CallersResponse) = api.get("/v1/callers", &q).await?;
            let mut t = Table::new(&[
                "SERVICE",
                "ENVIRONMENT",
                "REQUESTS",
                "ERRORS",
                "FIRST SEEN",
                "LAST SEEN",
                "HOSTS",
                "SEEN BY",
                "ADDRESS",
                "NOTE",
            ]);
            for c in &r.callers {
                t.row(vec![
                    c.service.clone(),
                    c.environment.clone(),
                    c.counts.requests.to_string(),
                    c.counts.errors.to_string(),
                    relative(c.counts.first_seen, now),
                    relative(c.counts.last_seen, now),
                    c.hosts.join(" "),
                    c.seen_by.as_str().to_string(),
                    c.addresses.join(" "),
                    output::caller_note(c),
                ]);
            }
            // Issue 14: callers the callee saw that no sidecar accounts for.
            for u in &r.unattributed {
                t.row(vec![
                    "(unattributed)".to_string(),
                    String::new(),
                    u.counts.requests.to_string(),
                    u.counts.errors.to_string(),
                    relative(u.counts.first_seen, now),
                    relative(u.counts.last_seen, now),
                    u.hosts.join(" "),
                    SeenBy::Callee.as_str().to_string(),
                    u.address.clone(),
                    output::unattributed_note(u),
                ]);
            }
            emit(format, &raw, &t, || {
                let unattributed = match r.unattributed.len() {
                    0 => String::new(),
                    n => format!(" and {n} caller address(es) no sidecar holds"),
                };
                if r.callers.is_empty() && r.unattributed.is_empty() {
                    format!("No recorded callers of {}.", r.host)
                } else {
                    format!(
                        "{} service(s){unattributed} call {}:",
                        r.callers.len(),
                        r.host
                    )
                }
            })?;
            Ok(0)
        }
        Command::Callees {
            service,
            since,
            environment,
        } => {
            let mut q = vec![("service", service.clone())];
            q.extend(since.clone().map(|s| ("since", s)));
            q.extend(environment.clone().map(|e| ("environment", e)));
            let (raw, r): (_, CalleesResponse) = api.get("/v1/callees", &q).await?;
            let mut t = Table::new(&[
                "HOST",
                "PORT",
                "SCHEME",
                "ENVIRONMENT",
                "REQUESTS",
                "ERRORS",
                "FIRST SEEN",
                "LAST SEEN",
            ]);
            for c in &r.callees {
                t.row(vec![
                    c.host.clone(),
                    c.port.to_string(),
                    c.scheme.to_string(),
                    c.environment.clone(),
                    c.counts.requests.to_string(),
                    c.counts.errors.to_string(),
                    relative(c.counts.first_seen, now),
                    relative(c.counts.last_seen, now),
                ]);
            }
            emit(format, &raw, &t, || {
                format!("{} calls {} upstream(s):", r.service, r.callees.len())
            })?;
            Ok(0)
        }
        Command::Hosts { unused_since } => {
            let q: Vec<(&str, String)> = unused_since
                .clone()
                .map(|u| ("unused_since", u))
                .into_iter()
                .collect();
            let (raw, r): (_, HostsResponse) = api.get("/v1/hosts", &q).await?;
            let mut t = Table::new(&[
                "HOST",
                "PORT",
                "CALLERS",
                "REQUESTS",
                "ERRORS",
                "LAST SEEN",
                "QUIET FOR",
            ]);
            for h in &r.hosts {
                t.row(vec![
                    h.host.clone(),
                    h.port.to_string(),
                    h.callers.to_string(),
                    h.requests.to_string(),
                    h.errors.to_string(),
                    relative(h.last_seen, now),
                    output::duration(h.quiet_for_ms),
                ]);
            }
            emit(format, &raw, &t, || {
                format!("{} upstream(s):", r.hosts.len())
            })?;
            Ok(0)
        }
        Command::Services => {
            let (raw, r): (_, ServicesResponse) = api.get("/v1/services", &[]).await?;
            let mut t = Table::new(&[
                "SERVICE",
                "ENVIRONMENT",
                "INSTANCES",
                "FIRST REPORT",
                "LAST REPORT",
            ]);
            for s in &r.services {
                t.row(vec![
                    s.service.clone(),
                    s.environment.clone(),
                    s.instances.len().to_string(),
                    relative(s.first_report, now),
                    relative(s.last_report, now),
                ]);
            }
            emit(format, &raw, &t, || {
                format!("{} service(s) reporting:", r.services.len())
            })?;
            Ok(0)
        }
        Command::Check { host, quiet_for } => {
            whouses_wire::parse_duration(quiet_for)
                .map_err(|e| anyhow::anyhow!("invalid --quiet-for {quiet_for:?}: {e}"))?;
            let q = vec![("host", host.clone()), ("quiet_for", quiet_for.clone())];
            let (raw, r): (_, CheckResponse) = api.get("/v1/check", &q).await?;
            let mut t = Table::new(&[
                "SERVICE",
                "ENVIRONMENT",
                "REQUESTS IN PERIOD",
                "LAST SEEN",
                "REPORTING THROUGHOUT",
                "LAST REPORT",
            ]);
            for e in &r.evidence {
                t.row(vec![
                    e.service.clone(),
                    e.environment.clone(),
                    e.requests_in_window.to_string(),
                    relative(e.last_seen, now),
                    if e.reporting_through_window {
                        "yes"
                    } else {
                        "NO"
                    }
                    .to_string(),
                    e.last_report
                        .map(|t| relative(t, now))
                        .unwrap_or_else(|| "never".into()),
                ]);
            }
            emit(format, &raw, &t, || {
                format!(
                    "{}: {} — {}",
                    r.host,
                    r.verdict.as_str().to_uppercase(),
                    r.reason
                )
            })?;
            if format == Format::Table {
                print!("{}", output::callee_side(&r, now));
            }
            Ok(r.verdict.exit_code())
        }
        Command::Coverage { since } => {
            let q: Vec<(&str, String)> = since.clone().map(|s| ("since", s)).into_iter().collect();
            let (raw, r): (_, CoverageResponse) = api.get("/v1/coverage", &q).await?;
            let mut t = Table::new(&[
                "HOST",
                "CALLEE",
                "CALLS",
                "ATTRIBUTED",
                "SHARE",
                "CALLERS",
                "UNATTRIBUTED ADDRESSES",
                "LAST SEEN",
            ]);
            for h in &r.hosts {
                t.row(vec![
                    h.host.clone(),
                    h.callee_services.join(" "),
                    h.calls.to_string(),
                    h.attributed_calls.to_string(),
                    format!("{:.0}%", h.attributed_share * 100.0),
                    h.callers.join(" "),
                    h.unattributed
                        .iter()
                        .map(|u| format!("{} ({})", u.address, u.counts.calls()))
                        .collect::<Vec<_>>()
                        .join(" "),
                    h.last_seen
                        .map(|t| relative(t, now))
                        .unwrap_or_else(|| "never".into()),
                ]);
            }
            emit(format, &raw, &t, || {
                let left: usize = r.hosts.iter().map(|h| h.unattributed.len()).sum();
                format!(
                    "{} host(s) with an inbound sidecar; {left} caller address(es) still to find:",
                    r.hosts.len()
                )
            })?;
            Ok(0)
        }
        Command::Demo(_)
        | Command::Export { .. }
        | Command::Watch(_)
        | Command::Migration(_)
        | Command::Diff(_)
        | Command::Timeline(_) => Ok(0),
    }
}

/// Print in the chosen format. Tables get a one-line heading.
fn emit(
    format: Format,
    raw: &serde_json::Value,
    table: &Table,
    heading: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(raw)?),
        Format::Csv => print!("{}", table.to_csv()?),
        _ => {
            println!("{}", heading());
            if !table.is_empty() {
                print!("{}", table.render());
            }
        }
    }
    Ok(())
}

/// A small client of the collector's API.
pub struct Api {
    base: reqwest::Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(
        url: &str,
        token: Option<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Api> {
        let base =
            reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("invalid --url {url:?}: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!("invalid --url {url:?}: use http:// or https://");
        }
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .no_proxy();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read --ca-cert {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "--ca-cert {} holds no valid PEM certificate: {e}",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                !certs.is_empty(),
                "--ca-cert {} holds no certificate",
                path.display()
            );
            for c in certs {
                http = http.add_root_certificate(c);
            }
        }
        let http = http.build()?;
        Ok(Api { base, token, http })
    }

    /// GET any endpoint; returns the body of a 2xx answer.
    pub async fn get_bytes(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Vec<u8>> {
        self.request(
            reqwest::Method::GET,
            path,
            query,
            self.token.as_deref(),
            None,
        )
        .await
    }

    /// Any request to the collector: the body of a 2xx, else an error that says what the
    /// collector answered (its `error` field) or that it could not be reached.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> anyhow::Result<Vec<u8>> {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{path}"));
        let mut req = self.http.request(method, url).query(query);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the collector at {}: {}",
                self.base,
                whouses_plumbing::error_chain(&e)
            )
        })?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            anyhow::bail!("the collector answered {status}: {msg}");
        }
        Ok(body.to_vec())
    }

    /// GET a JSON endpoint; returns the raw JSON and its typed form.
    pub async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<(serde_json::Value, T)> {
        let body = self.get_bytes(path, query).await?;
        let raw: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| anyhow::anyhow!("the collector sent invalid JSON: {e}"))?;
        let typed = serde_json::from_value(raw.clone())
            .map_err(|e| anyhow::anyhow!("unexpected answer from the collector: {e}"))?;
        Ok((raw, typed))
    }
}
