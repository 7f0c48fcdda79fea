//! Storage behind one narrow interface: what ingest writes and what queries read.
//!
//! [`Store`] dispatches to a backend; today SQLite ([`sqlite`]), with PostgreSQL an
//! addition (a new variant and file), not a rewrite — the SQL is written to the subset
//! both speak (`$n` parameters, `ON CONFLICT … DO UPDATE`, integer milliseconds).
//!
//! Data model:
//! * `edges` — one row per `(service, environment, host, port, scheme)` with totals and
//!   first/last seen: answers "who calls X" without touching history.
//! * `edge_hours` — hourly buckets per edge, for `since` windows; after `--hourly-for`
//!   they are folded into `edge_days` (daily buckets); both pruned by retention.
//! * `instances` — per sidecar instance: first/last report, last seq.
//! * `coverage` — per instance, merged intervals the instance was observing (from each
//!   batch's `period_start..period_end`, heartbeats included): what `check` needs to say
//!   "every caller kept reporting through the window".
//! * `seen` — `(instance, seq)` of stored batches, for idempotency, plus a per-instance
//!   floor once old entries are pruned.

use serde::{Deserialize, Serialize};
use whouses_wire::{Report, Timestamp};

use crate::targets::HostPattern;

pub mod sqlite;
mod sqlite_writer;

/// Which edges a query wants.
#[derive(Debug, Clone, Default)]
pub struct EdgeFilter {
    /// Upstream hosts (any of); `None` = all.
    pub hosts: Option<Vec<HostPattern>>,
    pub service: Option<String>,
    pub environment: Option<String>,
    /// Only counts from this time on (hour granularity), and only edges active since.
    pub since: Option<Timestamp>,
}

/// One edge with its totals (over the whole history, or since the filter's `since`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRow {
    pub service: String,
    pub environment: String,
    pub host: String,
    pub port: u16,
    pub scheme: String,
    pub requests: u64,
    pub connections: u64,
    pub errors: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// One sidecar instance's reporting history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRow {
    pub instance: String,
    pub service: String,
    pub environment: String,
    pub first_report: Timestamp,
    pub last_report: Timestamp,
    /// End of the last period the instance reported on.
    pub observed_until: Timestamp,
    pub last_seq: u64,
    pub started_at: Timestamp,
    pub flush_interval_ms: u64,
    pub reports: u64,
}

/// An interval an instance was observing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Coverage of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCoverage {
    pub instance: String,
    pub service: String,
    pub environment: String,
    /// How often this instance reports.
    pub flush_interval_ms: u64,
    /// End of the last period it reported on.
    pub observed_until: Timestamp,
    /// Its observation intervals ending after the time asked for.
    pub intervals: Vec<Interval>,
}

/// Outcome of storing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    Stored {
        edges: usize,
    },
    /// This `(instance, seq)` was stored before; nothing changed.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH (postgres:// is planned)")]
    UnsupportedUrl(String),
    #[error("{0}")]
    Invalid(String),
}

/// How far apart two periods of one instance may be and still count as continuous
/// observation (clock granularity between a batch's end and the next one's start).
pub const CONTINUITY_SLACK_MS: i64 = 1_000;

/// The storage interface.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Open (and create/migrate) the database named by `--db`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(sqlite::SqliteStore::open(url).await?))
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }

    /// Store one batch in one transaction; a repeated `(instance, seq)` changes nothing.
    pub async fn ingest(&self, r: &Report, received: Timestamp) -> Result<Ingested, StoreError> {
        match self {
            Store::Sqlite(s) => s.ingest(r, received).await,
        }
    }

    pub async fn edges(&self, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.edges(f).await,
        }
    }

    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        match self {
            Store::Sqlite(s) => s.instances().await,
        }
    }

    /// Every instance of these `(service, environment)` pairs, with its observation
    /// intervals that end after `after`.
    pub async fn coverage(
        &self,
        services: &[(String, String)],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError> {
        match self {
            Store::Sqlite(s) => s.coverage(services, after).await,
        }
    }

    /// The start of observation: the earliest period any stored batch covers.
    pub async fn observed_since(&self) -> Result<Option<Timestamp>, StoreError> {
        match self {
            Store::Sqlite(s) => s.observed_since().await,
        }
    }

    /// Delete what is older than `cutoff`; returns rows deleted.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.prune(cutoff).await,
        }
    }

    /// Fold hourly buckets of the UTC days that ended before `before` into daily buckets;
    /// returns hourly rows folded.
    pub async fn rollup(&self, before: Timestamp) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(s) => s.rollup(before).await,
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
        }
    }
}

/// Merge `new` into sorted, disjoint `intervals` (within [`CONTINUITY_SLACK_MS`]).
pub fn merge_interval(intervals: &mut Vec<Interval>, new: Interval) {
    intervals.push(new);
    intervals.sort_by_key(|i| i.start);
    let mut out: Vec<Interval> = Vec::with_capacity(intervals.len());
    for i in intervals.drain(..) {
        match out.last_mut() {
            Some(last) if i.start.0 <= last.end.0 + CONTINUITY_SLACK_MS => {
                last.end = Timestamp(last.end.0.max(i.end.0));
            }
            _ => out.push(i),
        }
    }
    *intervals = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(a: i64, b: i64) -> Interval {
        Interval {
            start: Timestamp(a),
            end: Timestamp(b),
        }
    }

    #[test]
    fn intervals_merge_when_continuous() {
        let mut v = vec![];
        merge_interval(&mut v, iv(0, 10_000));
        merge_interval(&mut v, iv(10_000, 20_000));
        merge_interval(&mut v, iv(40_000, 50_000));
        assert_eq!(v, vec![iv(0, 20_000), iv(40_000, 50_000)]);
        merge_interval(&mut v, iv(20_500, 40_000));
        assert_eq!(v, vec![iv(0, 50_000)]);
    }
}
