//! The collector's configuration: the contract's flags, each also read from
//! `WHOUSES_<FLAG>`, plus the limits an outsider could otherwise make us spend.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};
use whouses_wire::DurationArg;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Receives counts from whouses sidecars, keeps them, and answers "who uses X?".
#[derive(Debug, Clone, Parser)]
#[command(name = "whouses-collector", version, about)]
pub struct Config {
    /// API, web page and /metrics.
    #[arg(long, env = "WHOUSES_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,

    /// Database: sqlite://PATH (file created on first run) or postgres://…
    #[arg(long, env = "WHOUSES_DB", default_value = "sqlite://whouses.db")]
    pub db: String,

    /// Token sidecars must present (repeatable; none = ingest open to anyone who can
    /// reach the port).
    #[arg(
        long = "ingest-token",
        env = "WHOUSES_INGEST_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub ingest_tokens: Vec<String>,

    /// File with ingest tokens, one per line.
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

    /// Largest accepted report body; larger gets 413.
    #[arg(long, env = "WHOUSES_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "WHOUSES_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    /// All tokens of one kind: flags plus file lines.
    pub fn tokens(flags: &[String], file: Option<&Path>) -> anyhow::Result<Vec<String>> {
        let mut out: Vec<String> = flags
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read token file {}: {e}", f.display()))?;
            out.extend(
                text.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty() && !l.starts_with('#')),
            );
            if out.is_empty() {
                anyhow::bail!("token file {} holds no token", f.display());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::try_parse_from(["whouses-collector"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.db, "sqlite://whouses.db");
        assert_eq!(c.retention.0, std::time::Duration::from_secs(400 * 86400));
        assert!(c.ingest_tokens.is_empty() && c.read_tokens.is_empty());
    }

    #[test]
    fn tokens_repeat_and_come_from_files() {
        let c = Config::try_parse_from([
            "whouses-collector",
            "--ingest-token",
            "a",
            "--ingest-token",
            "b",
        ])
        .unwrap();
        assert_eq!(c.ingest_tokens, vec!["a", "b"]);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "# comment\nx\n\ny\n").unwrap();
        assert_eq!(Config::tokens(&[], Some(&f)).unwrap(), vec!["x", "y"]);
        std::fs::write(&f, "\n").unwrap();
        assert!(Config::tokens(&[], Some(&f)).is_err());
        assert!(Config::try_parse_from(["whouses-collector", "--retention", "forever"]).is_err());
    }
}
