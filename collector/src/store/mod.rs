//! **Where a batch is stored**, behind one narrow interface: [`Store`]. One driver per
//! backend — SQLite ([`sqlite`], rusqlite on a writer thread plus a reader pool) and
//! PostgreSQL ([`postgres`], tokio-postgres) — each with its own migrations; the
//! arithmetic both need (hour and day buckets, coverage intervals, summing rows) lives
//! once, in [`buckets`].
//!
//! Data model (the same in both):
//! * `edges` — one row per `(service, environment, host, port, scheme)` with totals and
//!   first/last seen, plus the edge's current hour bucket (`cur_*`): answers "who calls X"
//!   without touching history.
//! * `edge_hours` — older hourly buckets per edge, for `since` windows; after
//!   `--hourly-for` they are folded into `edge_days`; both pruned by retention. A bucket's
//!   counts are in exactly one of `cur_*`, `edge_hours`, `edge_days`.
//! * `instances` — per sidecar instance: its service (bound at the first batch),
//!   first/last report, last seq.
//! * `coverage` — per instance, merged intervals the instance was observing (from each
//!   batch's trusted period, heartbeats included): what `check` needs to say "every
//!   caller kept reporting through the window".
//! * `seen` — `(instance, seq)` of stored batches, for idempotency, plus a per-instance
//!   floor once old entries are pruned.
//! * `lookups`, `bypass` — what sidecars observe beside edges: names looked up through
//!   their DNS forwarder (with the latest answer's addresses), and connections seen going
//!   around the proxy; totals with first/last seen per key.
//! * `inbound` — calls *to* a service seen by its inbound sidecars (the callee side), per
//!   name dialed and caller address, in hourly buckets; `addresses` — the address book:
//!   merged intervals during which an instance held an address (from its batches' trusted
//!   periods), kept as history because addresses are reused. `instances.side` and
//!   `instances.inbound_hosts` say which instances stand in front of which names.
//!
//! Every counter saturates at [`whouses_wire::MAX_COUNT`] instead of overflowing.

use std::sync::Arc;

use whouses_wire::api::{BypassRow, EdgeRow, InstanceRow, LookupRow};
use whouses_wire::{Counts, Report, Scheme, Side, Timestamp};

use crate::targets::HostPattern;

pub mod buckets;
pub mod decom;
pub mod otel;
pub mod postgres;
pub mod sqlite;

pub use buckets::{merge_interval, merge_intervals, Interval, CONTINUITY_SLACK_MS};

/// Which edges a query wants.
#[derive(Debug, Clone, Default)]
pub struct EdgeFilter {
    /// Upstream hosts (any of); `None` = all.
    pub hosts: Option<Vec<HostPattern>>,
    pub service: Option<String>,
    pub environment: Option<String>,
    /// Only counts from this time on (hour granularity: the hour holding `since` counts
    /// whole, so an answer errs towards "still used"), and only edges active since.
    pub since: Option<Timestamp>,
}

/// One edge and its calls within a window (`check`'s "calls in the window").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCalls {
    /// The edge over all retained time.
    pub edge: EdgeRow,
    /// Its calls (requests + connections) from the window's start on.
    pub calls: u64,
}

/// Which lookups or bypass observations a query wants: those active since `since` that
/// match any of the given names, addresses or calling services (bypass); lookups use only
/// the names.
#[derive(Debug, Clone, Default)]
pub struct ObsFilter {
    pub names: Option<Vec<HostPattern>>,
    pub addresses: Vec<String>,
    pub services: Vec<(String, String)>,
    pub since: Option<Timestamp>,
}

/// Coverage of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A batch to store: the report as received, when, and the part of its period the
/// collector accepts as proof of observation (`None`: counts only, see
/// [`buckets::trusted_coverage`]).
#[derive(Debug, Clone)]
pub struct Batch {
    pub report: Report,
    pub received: Timestamp,
    pub coverage: Option<Interval>,
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
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused a statement or the connection to it failed (`retry`: a deadlock,
    /// a serialization failure or a lost connection, which trying again may fix).
    #[error("database: {message}")]
    Postgres { message: String, retry: bool },
    #[error("database connection pool: {0}")]
    Pool(String),
    #[error("database migration: {0}")]
    Migrate(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// The batch contradicts what is stored (e.g. an instance claimed by another
    /// service): the sender's mistake, answered with 409.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// The database is out of space or read-only: not the sender's fault, retry later.
    #[error("database cannot write: {0}")]
    Full(String),
}

// Issue 14: the callee's view and the address book.

/// Which inbound calls a query wants.
#[derive(Debug, Clone, Default)]
pub struct InboundFilter {
    /// Names the callers dialed (any of); `None` = all.
    pub hosts: Option<Vec<HostPattern>>,
    /// Only hour buckets with a call at or after this time; such a bucket counts whole
    /// (the answer errs towards "still used").
    pub since: Option<Timestamp>,
}

/// Calls a service received under one name from one caller address within one hour
/// bucket, as its inbound sidecars counted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRow {
    /// The callee: the service the inbound sidecar stands in front of.
    pub service: String,
    pub environment: String,
    /// The name the caller dialed.
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    /// The caller's address, or `(other)`.
    pub address: String,
    /// The bucket's counts; its calls were made within `first_seen..=last_seen`.
    pub counts: Counts,
}

/// An instance held an address during an interval (its address book entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressClaim {
    pub address: String,
    pub instance: String,
    pub service: String,
    pub environment: String,
    pub side: Side,
    pub flush_interval_ms: u64,
    pub interval: Interval,
}

/// A callee-side (inbound) instance and the names it declared (`--inbound-host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalleeInstance {
    pub instance: String,
    pub service: String,
    pub environment: String,
    pub inbound_hosts: Vec<String>,
}

/// The storage interface. Implementations are cheap to share (`Arc<dyn Store>`).
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Store one batch atomically; a repeated `(instance, seq)` changes nothing. Returns
    /// only after the batch is durable.
    async fn ingest(&self, batch: Batch) -> Result<Ingested, StoreError>;

    /// Edge rows matching the filter, sorted by host, port, scheme, service, environment.
    async fn edges(&self, f: &EdgeFilter) -> Result<Vec<EdgeRow>, StoreError>;

    /// Every edge of these hosts (as [`Store::edges`] without `since`, same order) with
    /// its calls (requests + connections) from `since` on — exactly `counts.calls()` of
    /// `edges` with that `since` — read from one bucket row per edge (`calls_before`,
    /// migration 0009) instead of every bucket in the window; edges a late batch left
    /// stale are summed.
    async fn window_calls(
        &self,
        hosts: &[HostPattern],
        since: Timestamp,
    ) -> Result<Vec<WindowCalls>, StoreError>;

    /// [`Store::window_calls`] of every host: the whole fleet's edges, each with its
    /// calls from `since` on (the dashboard's hosts going quiet), one bucket row per edge
    /// instead of every bucket in the window.
    async fn fleet_window_calls(&self, since: Timestamp) -> Result<Vec<WindowCalls>, StoreError>;

    /// Lookups through sidecars' DNS forwarders (names matching `f.names`, since `f.since`).
    async fn lookups(&self, f: &ObsFilter) -> Result<Vec<LookupRow>, StoreError>;

    /// Connections seen going around sidecars (matching any part of `f`).
    async fn bypass(&self, f: &ObsFilter) -> Result<Vec<BypassRow>, StoreError>;

    /// Every instance, sorted by service, environment, instance.
    async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError>;

    /// Every instance of these `(service, environment)` pairs, with its observation
    /// intervals that end at or after `after`.
    async fn coverage(
        &self,
        services: &[(String, String)],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError>;

    /// [`Store::coverage`] of every service that ever called these hosts (`check`: the
    /// past callers' reporting, without reading their list first).
    async fn callers_coverage(
        &self,
        hosts: &[HostPattern],
        after: Timestamp,
    ) -> Result<Vec<InstanceCoverage>, StoreError>;

    /// The start of observation: the earliest coverage any stored batch proves.
    async fn observed_since(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Delete what is older than `cutoff`; returns rows deleted. Idempotency records
    /// older than `seen_cutoff` become a per-instance floor.
    async fn prune(&self, cutoff: Timestamp, seen_cutoff: Timestamp) -> Result<u64, StoreError>;

    /// Fold hourly buckets of the UTC days that ended before `before` into daily buckets,
    /// then recompute the `calls_before` of edges a late batch left stale; returns the
    /// hourly rows folded.
    async fn rollup(&self, before: Timestamp) -> Result<u64, StoreError>;

    /// Inbound calls matching the filter, one row per hour bucket, sorted by host, port,
    /// scheme, service, environment, address and hour.
    async fn inbound(&self, f: &InboundFilter) -> Result<Vec<InboundRow>, StoreError>;

    /// Every interval any instance held one of these addresses, sorted by address,
    /// start, instance.
    async fn address_claims(&self, addresses: &[String]) -> Result<Vec<AddressClaim>, StoreError>;

    /// Every callee-side (inbound) instance, sorted by service, environment, instance.
    async fn callee_instances(&self) -> Result<Vec<CalleeInstance>, StoreError>;

    /// Whether the database answers and can take writes, for `/readyz`.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Finish queued writes and close.
    async fn close(&self);

    /// The decommission workflow's storage: buckets for timelines and diffs, watches,
    /// alerts, the notification outbox, leases, reported owners ([`decom`]).
    fn decom(&self) -> &dyn decom::DecomStore;

    // ---- OTLP ingest (issue 17; `otel_series`, migration 0008) ----

    /// The OTLP series rows with these keys (those that exist, in any order).
    async fn otel_series(&self, keys: &[String]) -> Result<Vec<otel::OtelSeries>, StoreError>;

    /// Advance series rows by compare-and-set, all in one transaction; per step, whether
    /// it applied (`false`: someone else moved the series first; read it again).
    async fn otel_advance(&self, steps: &[otel::OtelAdvance]) -> Result<Vec<bool>, StoreError>;

    /// Mark the latest points of these series (`(key, at)`) as stored.
    async fn otel_stored(&self, points: &[(String, i64)]) -> Result<(), StoreError>;

    /// Take or renew the OTLP export lease for `holder` until `until` (ms) if it is free,
    /// expired (before `now`) or already `holder`'s; whether `holder` now holds it.
    async fn otel_export_lease(
        &self,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError>;

    /// Forget series unchanged since before `cutoff` (collector time); returns rows deleted.
    async fn otel_prune(&self, cutoff: Timestamp) -> Result<u64, StoreError>;
}

/// How a store is opened (beyond its URL).
#[derive(Debug, Clone)]
pub struct Options {
    /// Free space on the database's file system below which the store reports itself not
    /// ready (SQLite), so a filling disk shows in `/readyz` before batches fail.
    pub min_free_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            min_free_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Open (and create/migrate) the database named by `--db` with default options.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, &Options::default()).await
}

/// Open (and create/migrate) the database named by `--db`.
pub async fn open_with(url: &str, options: &Options) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(redact(url)))
    }
}

/// A database URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
