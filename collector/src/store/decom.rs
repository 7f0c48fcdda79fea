//! What the decommission workflow keeps (issue 16), behind a second narrow interface,
//! [`DecomStore`], that every backend implements beside [`super::Store`]
//! (`sqlite/decom.rs`, `postgres/decom.rs`) and reaches through [`super::Store::decom`]:
//!
//! * **buckets** — an edge's counts per stored bucket (hour, or day once folded), for
//!   timelines and diffs;
//! * **watches** — hosts being retired, with a cutoff and where to notify;
//! * **alerts** — per watch, kind and caller: the failing-calls baseline, and once fired,
//!   what deduplicates notifications (when it was last notified, and the mark: the last
//!   call or failing-call total it was notified for);
//! * **deliveries** — the notification outbox, written in the same transaction as the
//!   alert state that decided it, so a restart neither loses nor repeats an alert;
//! * **leases** — one collector at a time runs the notifier;
//! * **owners** — the owner each service's sidecars report.

use whouses_wire::api::EdgeRow;
use whouses_wire::decom::AlertKind;
use whouses_wire::{Counts, Scheme, Timestamp};

use super::buckets::HOUR_MS;
use super::{EdgeFilter, StoreError};

/// One edge's counts in one stored bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketRow {
    pub service: String,
    pub environment: String,
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    /// The bucket's start: an hour, or a UTC day when `daily`.
    pub start: Timestamp,
    pub daily: bool,
    pub counts: Counts,
}

impl BucketRow {
    /// An edge's row read with one bucket's counts: `bucket` is its hour, or its day
    /// when `daily` (either backend's bucket statement).
    pub fn of(e: EdgeRow, bucket: i64, daily: bool) -> BucketRow {
        let width = if daily { 24 * HOUR_MS } else { HOUR_MS };
        BucketRow {
            service: e.service,
            environment: e.environment,
            host: e.host,
            port: e.port,
            scheme: e.scheme,
            start: Timestamp(bucket.saturating_mul(width)),
            daily,
            counts: e.counts,
        }
    }
}

/// A stored watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRow {
    pub id: i64,
    pub host: String,
    pub to: Option<String>,
    pub cutoff: Timestamp,
    pub notify: Vec<String>,
    pub note: Option<String>,
    pub created: Timestamp,
}

/// A watch to add (its id is given by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchInsert {
    pub host: String,
    pub to: Option<String>,
    pub cutoff: Timestamp,
    pub notify: Vec<String>,
    pub note: Option<String>,
    pub created: Timestamp,
}

/// A caller's failing calls to the host when the watch began: only failing calls after
/// it can fire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    pub service: String,
    pub environment: String,
    pub errors: u64,
}

/// The stored state of one (watch, kind, caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRow {
    pub watch_id: i64,
    pub kind: AlertKind,
    pub service: String,
    pub environment: String,
    /// Failing calls when the watch began.
    pub base: u64,
    /// When it first fired; `None`: a baseline only.
    pub fired: Option<Timestamp>,
    /// When a notification was last queued.
    pub notified: Option<Timestamp>,
    /// Traffic: the last call (ms) notified about; failing calls: the failing-call total
    /// notified about.
    pub mark: i64,
    pub calls: u64,
    pub errors: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub notifications: u64,
}

/// A notification decided: the alert's new state (`fired` kept if already set).
pub type AlertUpdate = AlertRow;

/// A notification to send to one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub url: String,
    /// The JSON body, as it will be sent.
    pub body: String,
}

/// A queued notification, due to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: i64,
    pub watch_id: i64,
    pub kind: AlertKind,
    pub service: String,
    pub environment: String,
    pub url: String,
    pub body: String,
    pub created: Timestamp,
    pub attempts: u32,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Try again at this time.
    Retry {
        at: Timestamp,
        error: String,
    },
    /// Give up (retried for too long, or refused for good).
    Failed {
        error: String,
    },
}

/// Notifications of one watch by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryStats {
    pub watch_id: i64,
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub last_error: Option<String>,
}

/// What [`DecomStore::record_alerts`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Alerts whose state and notifications were stored.
    pub stored: usize,
    /// Alerts left for a later round: the outbox was full.
    pub deferred: usize,
    /// Nothing stored: this collector no longer holds the lease.
    pub lost_lease: bool,
}

/// An owner a service's sidecars reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedOwner {
    pub service: String,
    pub environment: String,
    pub owner: String,
}

/// Sort bucket rows as [`DecomStore::buckets`] promises.
pub fn sort_buckets(rows: &mut [BucketRow]) {
    rows.sort_by(|a, b| {
        (
            &a.host,
            a.port,
            a.scheme.as_str(),
            &a.service,
            &a.environment,
            a.start,
            a.daily,
        )
            .cmp(&(
                &b.host,
                b.port,
                b.scheme.as_str(),
                &b.service,
                &b.environment,
                b.start,
                b.daily,
            ))
    });
}

/// The error for an answer over `max_rows` buckets.
pub fn too_many_buckets(max_rows: usize) -> StoreError {
    StoreError::Invalid(format!(
        "the answer would hold more than {max_rows} buckets: narrow the host, the service or the period"
    ))
}

/// The UTC days overlapping the hours `[from_hour, to_hour)`.
pub fn day_range(from_hour: i64, to_hour: i64) -> (i64, i64) {
    (
        from_hour.div_euclid(24),
        to_hour.saturating_add(23).div_euclid(24),
    )
}

/// The lease name the notifier runs under.
pub const NOTIFIER_LEASE: &str = "notifier";

#[async_trait::async_trait]
pub trait DecomStore: Send + Sync {
    /// Every stored bucket of the edges matching `f` (its `since` is ignored) that
    /// overlaps the hours `[from_hour, to_hour)`, sorted by host, port, scheme, service,
    /// environment, start. A day bucket and hour buckets of the same day may both exist
    /// (a late batch for a folded day): consumers sum. More than `max_rows` rows is an
    /// [`StoreError::Invalid`] naming the limit.
    async fn buckets(
        &self,
        f: &EdgeFilter,
        from_hour: i64,
        to_hour: i64,
        max_rows: usize,
    ) -> Result<Vec<BucketRow>, StoreError>;

    /// The owner each service's sidecars reported last.
    async fn reported_owners(&self) -> Result<Vec<ReportedOwner>, StoreError>;

    /// Remember the owner a service's sidecars report.
    async fn set_reported_owner(
        &self,
        owner: ReportedOwner,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Every watch, by id.
    async fn watches(&self) -> Result<Vec<WatchRow>, StoreError>;

    /// Add a watch with its callers' failing-call baselines, in one transaction; refused
    /// ([`StoreError::Invalid`]) when `max_watches` exist already.
    async fn add_watch(
        &self,
        w: WatchInsert,
        baselines: Vec<Baseline>,
        max_watches: usize,
    ) -> Result<WatchRow, StoreError>;

    /// Remove a watch with its alerts and notifications; `false` if there was none.
    async fn remove_watch(&self, id: i64) -> Result<bool, StoreError>;

    /// Every alert row (baselines included), by watch, kind, service, environment.
    async fn alerts(&self) -> Result<Vec<AlertRow>, StoreError>;

    /// Take (or renew) the lease `name` for `holder` until `now + ttl_ms`, unless another
    /// holder's lease is still valid. Returns whether `holder` holds it.
    async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: Timestamp,
        ttl_ms: i64,
    ) -> Result<bool, StoreError>;

    /// Give the lease up (at shutdown), if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Store decided notifications: each alert's new state with its deliveries, in one
    /// transaction, only while `holder` holds the notifier's lease at `now`, and only as
    /// many as fit under `max_pending` undelivered notifications (the rest are deferred:
    /// their state is not written, so a later round decides them again).
    async fn record_alerts(
        &self,
        holder: &str,
        now: Timestamp,
        alerts: Vec<(AlertUpdate, Vec<NewDelivery>)>,
        max_pending: usize,
    ) -> Result<Recorded, StoreError>;

    /// Notifications due at `now`, oldest first, at most `limit`.
    async fn due_deliveries(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<DeliveryRow>, StoreError>;

    /// Record an attempt's outcome.
    async fn finish_delivery(
        &self,
        id: i64,
        now: Timestamp,
        outcome: DeliveryOutcome,
    ) -> Result<(), StoreError>;

    /// Notifications per watch, by state.
    async fn delivery_stats(&self) -> Result<Vec<DeliveryStats>, StoreError>;

    /// Delete delivered and failed notifications finished before `before`; returns rows.
    async fn prune_deliveries(&self, before: Timestamp) -> Result<u64, StoreError>;
}
