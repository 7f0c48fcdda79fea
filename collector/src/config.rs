//! The collector's configuration: the contract's flags, each also read from
//! `WHOUSES_<FLAG>`, plus the limits an outsider could otherwise make us spend. Checked
//! as a whole before anything starts ([`Config::validate`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use whouses_plumbing::LogFormat;
use whouses_wire::DurationArg;

use crate::auth::Tokens;

/// Receives counts from whouses sidecars, keeps them, and answers "who uses X?".
#[derive(Debug, Clone, Parser)]
#[command(name = "whouses-collector", version, about)]
pub struct Config {
    /// API, web page and /metrics. Port 0 picks a free port (printed on stdout).
    #[arg(long, env = "WHOUSES_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Database: sqlite://PATH (file created on first run) or postgres://…
    #[arg(long, env = "WHOUSES_DB", default_value = "sqlite://whouses.db")]
    pub db: String,

    /// Token sidecars must present (repeatable; none = ingest open to anyone who can
    /// reach the port). `TOKEN service=GLOB environment=GLOB` scopes a token to the
    /// services it may report for.
    #[arg(
        long = "ingest-token",
        env = "WHOUSES_INGEST_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub ingest_tokens: Vec<String>,

    /// File with ingest tokens, one per line (`TOKEN [service=GLOB] [environment=GLOB]`;
    /// `#` starts a comment).
    #[arg(long, env = "WHOUSES_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,

    /// Token for queries and the web page (repeatable; none = open).
    #[arg(
        long = "read-token",
        env = "WHOUSES_READ_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub read_tokens: Vec<String>,

    /// File with read tokens, one per line.
    #[arg(long, env = "WHOUSES_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,

    /// TOML file naming targets: one name for all the addresses a service is reached by.
    #[arg(long, env = "WHOUSES_TARGETS")]
    pub targets: Option<PathBuf>,

    /// How long counts are kept.
    #[arg(long, env = "WHOUSES_RETENTION", default_value = "400d")]
    pub retention: DurationArg,

    /// How long hourly buckets are kept before they are folded into daily ones (`since`
    /// windows reaching further back count whole UTC days).
    #[arg(long, env = "WHOUSES_HOURLY_FOR", default_value = "14d")]
    pub hourly_for: DurationArg,

    /// Run one round of the hourly upkeep on --db now (fold hourly buckets older than
    /// --hourly-for, recompute window sums late batches left stale, apply --retention),
    /// print what it did and exit: after an upgrade or a bulk backfill, before the first
    /// hourly round would. Safe beside running collectors: on PostgreSQL they take turns
    /// under the upkeep lock; on SQLite its transactions (one per folded day) and the
    /// running collector's writes wait for each other.
    #[arg(long)]
    pub upkeep_once: bool,

    /// How far back a batch's period is trusted as proof that its sidecar was observing.
    /// Older batches (a long-spooled sidecar, a replay, a forgery) still add their counts,
    /// but cannot fill gaps in coverage, so they cannot make a host look unused.
    #[arg(long, env = "WHOUSES_MAX_BACKFILL", default_value = "7d")]
    pub max_backfill: DurationArg,

    /// Largest accepted report body; larger gets 413 (sidecars cut their batches at 512
    /// KiB, and split a batch refused as too large).
    #[arg(long, env = "WHOUSES_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(256..=64 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Report bodies read at once; more wait (bounds memory: this × --max-body-bytes = 64
    /// MiB by default). Also how many batches one group commit can gather: measured in the
    /// fleet benchmark, more concurrent batches commit faster.
    #[arg(long, env = "WHOUSES_MAX_CONCURRENT_INGEST", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_ingest: u32,

    /// Connections served at once; beyond it new ones wait in the kernel's backlog.
    #[arg(long, env = "WHOUSES_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Time a client has to send a request head (slowloris bound).
    #[arg(long, env = "WHOUSES_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: DurationArg,

    /// Time a request (body included) may take before it is answered 408/503.
    #[arg(long, env = "WHOUSES_REQUEST_TIMEOUT", default_value = "60s")]
    pub request_timeout: DurationArg,

    /// On SIGTERM, how long in-flight requests (and their commits) may take.
    #[arg(long, env = "WHOUSES_DRAIN_TIMEOUT", default_value = "20s")]
    pub drain_timeout: DurationArg,

    /// Free space (bytes) on the database's file system below which `/readyz` fails, so a
    /// filling disk is seen before batches are refused.
    #[arg(long, env = "WHOUSES_MIN_FREE_SPACE", default_value_t = 64 * 1024 * 1024)]
    pub min_free_space: u64,

    /// PEM certificate chain: serve HTTPS (with --tls-key). Reloaded when it changes.
    #[arg(long, env = "WHOUSES_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "WHOUSES_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// OTLP export of the stored edges (issue 17): `--otlp-endpoint`, `--otlp-interval`,
    /// `--otlp-header`, `--otlp-max-series`.
    #[command(flatten)]
    pub otlp: crate::otel::export::OtlpArgs,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "WHOUSES_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    // The decommission workflow (issue 16): owners, watches and their alerts.
    /// TOML file naming services' owners: `[services."NAME-OR-GLOB"]` with `team` and
    /// `contact`. It wins over the owner a service's sidecars report (`--owner`).
    #[arg(long, env = "WHOUSES_OWNERS")]
    pub owners: Option<PathBuf>,

    /// Token needed to add or remove watches (repeatable; none = open to anyone who can
    /// reach the port, with a warning at start). Separate from read tokens: a watch makes
    /// the collector send requests to the URLs it names.
    #[arg(
        long = "admin-token",
        env = "WHOUSES_ADMIN_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub admin_tokens: Vec<String>,

    /// File with admin tokens, one per line.
    #[arg(long, env = "WHOUSES_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// An alert (per watch, caller and kind) is notified again after this long if it is
    /// still happening, and never sooner: 4h wakes nobody twice a night for one caller.
    #[arg(long, env = "WHOUSES_RENOTIFY_AFTER", default_value = "4h")]
    pub renotify_after: DurationArg,

    /// How often watches are evaluated and notifications sent: an alert goes out within
    /// about a sidecar flush interval plus this.
    #[arg(long, env = "WHOUSES_WATCH_INTERVAL", default_value = "10s")]
    pub watch_interval: DurationArg,

    /// Most watches kept (each is evaluated every --watch-interval).
    #[arg(long, env = "WHOUSES_MAX_WATCHES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_watches: u32,

    /// Most notifications waiting for delivery; beyond, new alerts wait for room (none is
    /// lost: they are decided again at the next evaluation).
    #[arg(long, env = "WHOUSES_MAX_PENDING_NOTIFICATIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pending_notifications: u32,

    /// Time one notification request may take (connect, send, answer).
    #[arg(long, env = "WHOUSES_NOTIFY_TIMEOUT", default_value = "10s")]
    pub notify_timeout: DurationArg,

    /// How long an undeliverable notification is retried (with backoff) before it is
    /// given up and counted as failed.
    #[arg(long, env = "WHOUSES_NOTIFY_GIVE_UP_AFTER", default_value = "24h")]
    pub notify_give_up_after: DurationArg,

    /// This collector's address as people reach it (e.g. https://whouses.internal): alerts
    /// link to the host's page there.
    #[arg(long, env = "WHOUSES_PUBLIC_URL")]
    pub public_url: Option<url::Url>,
}

impl Config {
    /// Checks beyond single flags, reported all at once.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for (flag, d, min) in [
            ("--retention", self.retention.0, Duration::from_secs(3600)),
            ("--hourly-for", self.hourly_for.0, Duration::from_secs(3600)),
            (
                "--max-backfill",
                self.max_backfill.0,
                Duration::from_secs(60),
            ),
            (
                "--header-read-timeout",
                self.header_read_timeout.0,
                Duration::from_millis(100),
            ),
            (
                "--request-timeout",
                self.request_timeout.0,
                Duration::from_secs(1),
            ),
        ] {
            if d < min {
                errors.push(format!("{flag} must be at least {}", DurationArg(min)));
            }
            if d > Duration::from_secs(100 * 365 * 86_400) {
                errors.push(format!("{flag} must be at most 100 years"));
            }
        }
        if let Err(e) = self.ingest() {
            errors.push(e);
        }
        if let Err(e) = self.read() {
            errors.push(e);
        }
        errors.extend(self.validate_workflow());
        errors.extend(self.otlp.problems());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The ingest tokens: flags plus file lines.
    pub fn ingest(&self) -> Result<Tokens, String> {
        tokens(
            &self.ingest_tokens,
            self.ingest_token_file.as_deref(),
            "ingest",
            true,
        )
    }

    /// The read tokens: flags plus file lines.
    pub fn read(&self) -> Result<Tokens, String> {
        tokens(
            &self.read_tokens,
            self.read_token_file.as_deref(),
            "read",
            false,
        )
    }

    /// The admin tokens (watches): flags plus file lines.
    pub fn admin(&self) -> Result<Tokens, String> {
        tokens(
            &self.admin_tokens,
            self.admin_token_file.as_deref(),
            "admin",
            false,
        )
    }

    /// The decommission workflow's flags, checked.
    fn validate_workflow(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (flag, d, min, max) in [
            (
                "--renotify-after",
                self.renotify_after.0,
                Duration::from_secs(1),
                Duration::from_secs(30 * 86_400),
            ),
            (
                "--watch-interval",
                self.watch_interval.0,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "--notify-timeout",
                self.notify_timeout.0,
                Duration::from_millis(100),
                Duration::from_secs(300),
            ),
            (
                "--notify-give-up-after",
                self.notify_give_up_after.0,
                Duration::from_secs(1),
                Duration::from_secs(30 * 86_400),
            ),
        ] {
            if d < min || d > max {
                errors.push(format!(
                    "{flag} must be between {} and {}",
                    DurationArg(min),
                    DurationArg(max)
                ));
            }
        }
        if let Err(e) = self.admin() {
            errors.push(e);
        }
        if let Some(u) = &self.public_url {
            if !matches!(u.scheme(), "http" | "https") {
                errors.push(format!(
                    "--public-url {u}: must be an http:// or https:// URL"
                ));
            }
        }
        errors
    }
}

/// All tokens of one kind: flags plus file lines (`#` comments and blank lines skipped).
/// An empty flag value or an empty file is an error, not an open door: it is almost
/// always a secret that failed to mount.
fn tokens(
    flags: &[String],
    file: Option<&Path>,
    what: &str,
    scoped: bool,
) -> Result<Tokens, String> {
    let mut specs: Vec<String> = flags.iter().map(|t| t.trim().to_string()).collect();
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read the {what} token file {}: {e}", f.display()))?;
        let before = specs.len();
        specs.extend(
            text.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty() && !l.starts_with('#')),
        );
        if specs.len() == before {
            return Err(format!(
                "the {what} token file {} holds no token",
                f.display()
            ));
        }
    }
    Tokens::parse(specs.iter().map(String::as_str), what, scoped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::try_parse_from(["whouses-collector"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.db, "sqlite://whouses.db");
        assert_eq!(c.retention.0, Duration::from_secs(400 * 86400));
        assert!(c.ingest().unwrap().is_empty() && c.read().unwrap().is_empty());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn tokens_repeat_and_come_from_files() {
        let c = Config::try_parse_from([
            "whouses-collector",
            "--ingest-token",
            "a",
            "--ingest-token",
            "b service=x-*",
        ])
        .unwrap();
        assert_eq!(c.ingest().unwrap().len(), 2);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "# comment\nx\n\ny environment=prod\n").unwrap();
        assert_eq!(tokens(&[], Some(&f), "ingest", true).unwrap().len(), 2);
        std::fs::write(&f, "\n").unwrap();
        assert!(tokens(&[], Some(&f), "ingest", true).is_err());
        assert!(Config::try_parse_from(["whouses-collector", "--retention", "forever"]).is_err());
    }

    #[test]
    fn an_empty_token_is_an_error_not_an_open_door() {
        let c = Config::try_parse_from(["whouses-collector", "--read-token", ""]).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.contains("empty read token"), "{e}");
        let c = Config::try_parse_from(["whouses-collector", "--ingest-token", " "]).unwrap();
        assert!(c.validate().unwrap_err().contains("empty ingest token"));
    }

    #[test]
    fn workflow_flags_have_sane_defaults_and_bounds() {
        let c = Config::try_parse_from(["whouses-collector"]).unwrap();
        assert_eq!(c.renotify_after.0, Duration::from_secs(4 * 3600));
        assert_eq!(c.max_watches, 100);
        assert!(c.admin().unwrap().is_empty());
        let c = Config::try_parse_from([
            "whouses-collector",
            "--renotify-after",
            "100ms",
            "--watch-interval",
            "2h",
            "--admin-token",
            "",
            "--public-url",
            "ftp://x",
        ])
        .unwrap();
        let e = c.validate().unwrap_err();
        for needle in [
            "--renotify-after",
            "--watch-interval",
            "empty admin token",
            "--public-url",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(Config::try_parse_from(["whouses-collector", "--max-watches", "0"]).is_err());
    }

    #[test]
    fn bad_combinations_are_reported_together() {
        let c = Config::try_parse_from([
            "whouses-collector",
            "--retention",
            "1s",
            "--request-timeout",
            "300000000y",
        ])
        .unwrap();
        let e = c.validate().unwrap_err();
        assert!(
            e.contains("--retention") && e.contains("--request-timeout"),
            "{e}"
        );
        assert!(
            Config::try_parse_from(["whouses-collector", "--tls-cert", "/c.pem"]).is_err(),
            "a certificate without a key"
        );
    }
}
