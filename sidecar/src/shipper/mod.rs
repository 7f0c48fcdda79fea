//! Shipping counts to the collector: every `--flush-interval`, cut the deltas since the
//! previous batch, number the batch with the next `seq`, post it, and re-send the *same*
//! batch until it is acknowledged.
//!
//! Exactly-once effect: the collector applies each `(instance, seq)` once, and a batch is
//! never re-cut — its deltas are frozen when it is numbered. While batches wait (collector
//! down, slow, refusing our token), new batches are still cut every interval and queued
//! behind them, up to 256 batches or `--max-hosts` keys in total; beyond that, new counts
//! stay merged per key in the live counters, so memory stays bounded however long the
//! outage lasts, and the next batch carries all of them. The proxy path never waits for
//! any of this: it only does atomic adds that this task reads.
//!
//! Batches are cut under `--max-batch-bytes` (and [`MAX_EDGES_PER_REPORT`]), so one busy
//! interval becomes several batches, never one the collector refuses as too large. What
//! the collector answers decides a batch's fate (`client::Verdict`):
//!
//! * 2xx — stored; drop it (and its spool file).
//! * 413 — too large, *not stored*. If no earlier attempt of it can have been stored
//!   (it was cut by this process, and every earlier attempt was refused before the
//!   request was read — connection refused, a failed write — or answered 4xx), it is
//!   split into two halves under two new seqs, queued last so seqs still go out in
//!   order: the original seq was never stored, so the halves carry its counts exactly
//!   once between them. Otherwise (a timeout or a 5xx, which a gateway may give after
//!   the collector stored it; a batch from the spool of an earlier run; a single edge)
//!   it is set aside like a 400: halves of a batch that may be stored could count it
//!   twice.
//!   A request that could not be written to its end twice in a row is split the same
//!   way (a collector refusing a large body may reset the connection before its 413
//!   arrives); it cannot have been stored either.
//! * 400/422 — refused for good: set aside (`*.rejected` in the spool with the reason,
//!   or in memory), counted in `/metrics`, logged, and the next batch goes on. Nothing
//!   set aside is ever re-sent, so it can never be counted twice.
//! * 401/403 — about our token, not this batch: retry with backoff (the token file is
//!   re-read), shown in shipping health.
//! * anything else — retry the same batch with backoff.
//!
//! With `--spool-dir` a batch is written to disk before it is first sent and removed once
//! acknowledged, so a restart ships it; without it, a hard kill loses at most the counts
//! since the last acknowledged batch.
//!
//! A batch is cut every interval even when nothing was counted (a heartbeat), so silence
//! at the collector means "this sidecar is gone", never "nothing happened".

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use whouses_wire::{
    Bypass, Counts, Edge, Lookup, Report, Timestamp, MAX_EDGES_PER_REPORT, REPORT_VERSION,
};

pub mod batch;
pub mod client;
mod inbound;
pub mod spool;
pub mod status;
pub mod token;

use crate::counters::{Counters, Key, Totals};
use crate::Identity;
use batch::{Pending, Size};
use client::{SendError, Verdict};
use spool::Spool;
use status::lock;
pub use status::{Health, Rejection, ShippingStatus, ShippingView};
use token::Token;

/// First retry delay after a failed send; doubles per failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between retries, so recovery after an outage is quick.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Most batches queued unacknowledged (mostly heartbeats during a long outage).
const MAX_PENDING_BATCHES: usize = 256;
/// A batch whose request could not be written to its end this many times in a row is
/// split as if refused with 413: a collector that refuses a large body may close the
/// connection before its 413 reaches us. Splitting is safe whatever the cause, since the
/// batch was never stored; one failure alone may be a collector restarting.
const SPLIT_AFTER_WRITE_FAILURES: u32 = 2;
/// Rejected batches kept in memory without a spool, for `/stats`; beyond it the oldest
/// is dropped (logged with its counts). They are never re-sent either way.
const MAX_REJECTED_IN_MEMORY: usize = 16;

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone)]
struct Metrics {
    batches: Family<OutcomeLabel, Counter>,
    retries: Counter,
    rejected: Counter,
    split: Counter,
    pending_keys: Gauge,
    pending_batches: Gauge,
    last_success: Gauge,
}

impl Metrics {
    fn register(registry: &mut Registry, status: Arc<Mutex<ShippingStatus>>) -> Metrics {
        let m = Metrics {
            batches: Family::default(),
            retries: Counter::default(),
            rejected: Counter::default(),
            split: Counter::default(),
            pending_keys: Gauge::default(),
            pending_batches: Gauge::default(),
            last_success: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("whouses_shipper");
        r.register(
            "batches",
            "Batch send attempts by outcome (acked, failed, split, rejected)",
            m.batches.clone(),
        );
        r.register(
            "retries",
            "Re-sends of a batch after a failure",
            m.retries.clone(),
        );
        r.register(
            "rejected_batches",
            "Batches the collector refused for good (or this version cannot send), set aside",
            m.rejected.clone(),
        );
        r.register(
            "split_batches",
            "Batches split in two after the collector answered 413",
            m.split.clone(),
        );
        r.register(
            "pending_keys",
            "Keys in batches not yet acknowledged",
            m.pending_keys.clone(),
        );
        r.register(
            "pending_batches",
            "Batches not yet acknowledged",
            m.pending_batches.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the last acknowledged batch",
            m.last_success.clone(),
        );
        registry.register_collector(Box::new(status::HealthMetrics(status)));
        m
    }

    fn outcome(&self, outcome: &'static str) {
        self.batches.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

/// The running shipper: a background task plus its shared status.
pub struct Shipper {
    status: Arc<Mutex<ShippingStatus>>,
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

/// What the shipper needs from the flags.
pub struct Settings {
    pub url: reqwest::Url,
    pub token: Token,
    pub flush_interval: Duration,
    pub max_batch_bytes: usize,
    pub client: reqwest::Client,
    /// What is observed besides the edges and shipped with them.
    pub observers: Observers,
}

/// Observations shipped beside the edges: the DNS forwarder's lookups and the bypass
/// detector's connections (each only when enabled).
#[derive(Debug, Clone, Default)]
pub struct Observers {
    pub names: Option<Arc<crate::dns::Names>>,
    pub bypass: Option<Arc<crate::bypass::Bypass>>,
    /// Inbound mode (issue 14): the calls to the service, per caller address.
    pub inbound: Option<Arc<crate::inbound::Peers>>,
    /// Inbound mode: the names the sidecar witnesses (`--inbound-host`).
    pub inbound_hosts: Vec<String>,
    /// This instance's addresses, for the collector's address book (every sidecar).
    pub addresses: Option<Arc<crate::inbound::addresses::Addresses>>,
}

impl Shipper {
    /// Start shipping if `--collector-url` is set; `None` otherwise (count only). Every
    /// startup problem (URL, token file, CA file, spool) is a clear error here.
    pub fn start(
        config: &crate::config::Config,
        identity: Identity,
        counters: Arc<Counters>,
        observers: Observers,
        registry: &mut Registry,
    ) -> anyhow::Result<Option<Shipper>> {
        let Some(base) = config.collector_url.as_deref() else {
            return Ok(None);
        };
        let url = reports_url(base)?;
        let token = Token::from_config(config.token.as_deref(), config.token_file.as_deref())?;
        let flush_interval = config.flush_interval.0;
        let client = client::build(flush_interval, config.collector_ca.as_deref())?;
        let spool = match &config.spool_dir {
            Some(dir) => Some(Spool::open(dir, config.max_spooled as usize)?),
            None => None,
        };
        Ok(Some(Self::spawn(
            Settings {
                url,
                token,
                flush_interval,
                max_batch_bytes: config.max_batch_bytes as usize,
                client,
                observers,
            },
            spool,
            identity,
            counters,
            registry,
        )?))
    }

    /// Start the shipping task with explicit settings.
    pub fn spawn(
        settings: Settings,
        spool: Option<Spool>,
        identity: Identity,
        counters: Arc<Counters>,
        registry: &mut Registry,
    ) -> anyhow::Result<Shipper> {
        let core = Core::new(settings, spool, identity, counters, registry)?;
        let status = core.status.clone();
        let (stop, stop_rx) = watch::channel(None);
        let task = tokio::spawn(core.run(stop_rx));
        Ok(Shipper { status, stop, task })
    }

    /// A handle to the live status, readable after the shipper itself is shut down.
    pub fn status_handle(&self) -> Arc<Mutex<ShippingStatus>> {
        self.status.clone()
    }

    pub fn status(&self) -> ShippingStatus {
        lock(&self.status).clone()
    }

    /// Final flush: ship everything counted so far, retrying until `deadline` has passed.
    /// Call after in-flight requests have finished.
    pub async fn shutdown(self, deadline: Duration) {
        let until = Instant::now() + deadline;
        let _ = self.stop.send(Some(until));
        // The task bounds itself by `until`; the extra second covers a request in flight.
        if tokio::time::timeout(deadline + Duration::from_secs(1), self.task)
            .await
            .is_err()
        {
            tracing::error!("Final flush did not finish in time; abandoning it.");
        }
    }
}

/// `http://collector:7070` → `http://collector:7070/v1/reports`.
pub fn reports_url(base: &str) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(base)
        .map_err(|e| anyhow::anyhow!("invalid --collector-url {base:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("invalid --collector-url {base:?}: scheme must be http or https");
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{path}/v1/reports"));
    Ok(url)
}

/// Everything the shipping task owns.
struct Core {
    identity: Identity,
    counters: Arc<Counters>,
    /// Cumulative totals already cut into a batch, per key.
    cut: HashMap<Key, Totals>,
    /// Cumulative lookups already cut, per name.
    cut_lookups: HashMap<String, u64>,
    /// Cumulative bypassing connections already cut, per remote address.
    cut_bypass: HashMap<std::net::SocketAddr, u64>,
    /// Cumulative inbound totals already cut, per key (issue 14).
    cut_inbound: HashMap<crate::inbound::peers::PeerKey, Totals>,
    /// Batches cut but not acknowledged, in seq order; sent strictly in order.
    pending: VecDeque<Pending>,
    /// Batches set aside in memory (no spool), newest last.
    rejected: VecDeque<Pending>,
    /// The last cut stopped at a size bound; more deltas wait.
    more: bool,
    last_seq: u64,
    period_start: Timestamp,
    spool: Option<Spool>,
    settings: Settings,
    status: Arc<Mutex<ShippingStatus>>,
    metrics: Metrics,
}

impl Core {
    /// The task's state: batches left in the spool by an earlier run first.
    fn new(
        settings: Settings,
        spool: Option<Spool>,
        identity: Identity,
        counters: Arc<Counters>,
        registry: &mut Registry,
    ) -> anyhow::Result<Core> {
        let (loaded, set_aside) = match &spool {
            Some(s) => s.load()?,
            None => (Vec::new(), Vec::new()),
        };
        if !loaded.is_empty() {
            tracing::info!(
                batches = loaded.len(),
                spool = %spool.as_ref().map(|s| s.dir().display().to_string()).unwrap_or_default(),
                "Found spooled batches from a previous run; shipping them first."
            );
        }
        // A spooled batch may have been stored just before the previous run ended.
        let pending: VecDeque<Pending> = loaded
            .into_iter()
            .map(|s| Pending {
                report: s.report,
                spool_path: Some(s.path),
                maybe_stored: true,
                write_failures: 0,
            })
            .collect();
        let status = Arc::new(Mutex::new(ShippingStatus {
            collector_url: settings.url.to_string(),
            spool_dir: spool.as_ref().map(|s| s.dir().display().to_string()),
            flush_interval_ms: settings.flush_interval.as_millis() as u64,
            ..ShippingStatus::default()
        }));
        let metrics = Metrics::register(registry, status.clone());
        for aside in &set_aside {
            metrics.rejected.inc();
            metrics.outcome("rejected");
            let mut s = lock(&status);
            s.rejected_batches += 1;
            s.last_rejection = Some(Rejection {
                instance: aside.instance.clone(),
                seq: aside.seq,
                edges: 0,
                requests: 0,
                reason: aside.reason.clone(),
                at: Timestamp::now(),
                kept: aside.path.display().to_string(),
            });
        }
        let last_seq = pending
            .iter()
            .filter(|p| p.report.instance == identity.instance)
            .map(|p| p.report.seq)
            .max()
            .unwrap_or(0);
        let core = Core {
            period_start: identity.started_at,
            identity,
            counters,
            cut: HashMap::new(),
            cut_lookups: HashMap::new(),
            cut_bypass: HashMap::new(),
            cut_inbound: HashMap::new(),
            pending,
            rejected: VecDeque::new(),
            more: false,
            last_seq,
            spool,
            settings,
            status,
            metrics,
        };
        core.publish();
        Ok(core)
    }

    async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let interval = self.settings.flush_interval;
        // Two clocks: batches are cut every interval (so with a spool, at most one
        // interval of counts is ever only in memory), and sent as soon as they are cut,
        // or on the retry backoff while the collector is failing. A third looks at the
        // token file.
        let mut next_cut = Instant::now() + interval;
        let mut next_send = if self.pending.is_empty() {
            far_future()
        } else {
            Instant::now()
        };
        let mut failures: u32 = 0;
        loop {
            let token_check = self
                .settings
                .token
                .next_check()
                .map(Instant::from_std)
                .unwrap_or_else(far_future);
            tokio::select! {
                _ = tokio::time::sleep_until(next_cut.min(next_send).min(token_check)) => {}
                _ = stop.changed() => break,
            }
            let now = Instant::now();
            if now >= token_check && self.refresh_token(false) && failures > 0 {
                // A new token: try it now rather than after the backoff.
                next_send = now;
            }
            if now >= next_cut {
                if self.can_cut() {
                    self.cut_batch();
                    if failures == 0 {
                        next_send = now;
                    }
                }
                next_cut = if self.more { now } else { now + interval };
            }
            if now >= next_send {
                match self.send_pending().await {
                    Ok(()) => {
                        failures = 0;
                        next_send = far_future();
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        if error.verdict() == Verdict::Auth && self.refresh_token(true) {
                            next_send = Instant::now();
                            continue;
                        }
                        let wait = backoff(failures);
                        if error.verdict() == Verdict::Auth {
                            tracing::error!(%error, retry_in = ?wait, pending_batches = self.pending.len(),
                                "The collector refuses this sidecar's token; keeping the counts and retrying.");
                        } else {
                            tracing::warn!(%error, retry_in = ?wait, pending_batches = self.pending.len(),
                                "Failed to ship counts; keeping the batch and retrying.");
                        }
                        next_send = Instant::now() + wait;
                    }
                }
            }
        }
        let until = (*stop.borrow()).unwrap_or_else(Instant::now);
        self.final_flush(until).await;
    }

    /// Look at the token file; returns whether the token changed.
    fn refresh_token(&mut self, force: bool) -> bool {
        let changed = self
            .settings
            .token
            .refresh(std::time::Instant::now(), force);
        lock(&self.status).token_warning = self.settings.token.warning();
        changed
    }

    /// Whether another batch may be queued behind unacknowledged ones. Beyond these
    /// bounds new counts stay merged per key in the live counters (bounded by
    /// `--max-hosts`) until the queue drains, so an outage of any length costs bounded
    /// memory.
    fn can_cut(&self) -> bool {
        let keys: usize = self
            .pending
            .iter()
            .map(|p| p.report.edges.len() + p.report.inbound.len())
            .sum();
        self.pending.len() < MAX_PENDING_BATCHES && keys < self.counters.max_hosts().max(1)
    }

    /// Ship every pending batch and then everything counted, until `until`.
    async fn final_flush(&mut self, until: Instant) {
        let mut failures = 0;
        let mut final_cut = false;
        loop {
            if self.pending.is_empty() {
                if final_cut && !self.more {
                    tracing::info!(seq = self.last_seq, "Final flush delivered.");
                    return;
                }
                self.cut_batch();
                final_cut = true;
            }
            let attempt = tokio::time::timeout_at(until, self.send_pending()).await;
            match attempt {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => {
                    failures += 1;
                    if error.verdict() == Verdict::Auth {
                        self.refresh_token(true);
                    }
                    let wait = backoff(failures).min(Duration::from_secs(1));
                    if Instant::now() + wait >= until {
                        self.give_up(&error.to_string());
                        return;
                    }
                    tracing::warn!(%error, "Final flush failed; retrying.");
                    tokio::time::sleep(wait).await;
                }
                Err(_) => {
                    self.give_up("deadline passed");
                    return;
                }
            }
        }
    }

    fn give_up(&self, why: &str) {
        let keys: usize = self.pending.iter().map(|p| p.report.edges.len()).sum();
        if self.spool.is_some() {
            tracing::warn!(reason = why, batches = self.pending.len(), keys,
                "Final flush not acknowledged; the spooled batches will be shipped on the next start.");
        } else {
            tracing::error!(
                reason = why,
                batches = self.pending.len(),
                keys,
                "Final flush not acknowledged and no --spool-dir is set; these counts are lost."
            );
        }
    }

    /// The next seq: strictly increasing per instance, and also across restarts — a
    /// microsecond clock reading unless that would not be above the last one.
    fn next_seq(&mut self) -> u64 {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.last_seq = self.last_seq.saturating_add(1).max(micros);
        self.last_seq
    }

    /// Cut the deltas since the last batch into a new numbered batch (a heartbeat when
    /// nothing was counted), at most `--max-batch-bytes` encoded and
    /// [`MAX_EDGES_PER_REPORT`] edges, and queue it; with a spool, write it to disk first.
    fn cut_batch(&mut self) {
        let now = SystemTime::now();
        let period_end = Timestamp::from_system_time(now);
        let seq = self.next_seq();
        let mut report = Report {
            version: REPORT_VERSION,
            service: self.identity.service.clone(),
            environment: self.identity.environment.clone(),
            instance: self.identity.instance.clone(),
            seq,
            started_at: self.identity.started_at,
            period_start: self.period_start.min(period_end),
            period_end,
            flush_interval_ms: self.settings.flush_interval.as_millis() as u64,
            edges: Vec::new(),
            owner: self.identity.owner.clone(),
            ..Default::default()
        };
        self.more = false;
        self.cut_observations(&mut report);
        self.cut_identity(&mut report);
        let mut size = Size::of_envelope(&report);
        for (key, totals) in self.counters.snapshot() {
            let prev = self.cut.get(&key).copied().unwrap_or_default();
            let d = totals.since(&prev);
            if d.is_zero() {
                continue;
            }
            let edge = Edge {
                host: key.host.to_string(),
                port: key.port,
                scheme: key.scheme,
                counts: Counts {
                    requests: d.requests,
                    connections: d.connections,
                    errors: d.errors,
                    bytes_sent: d.bytes_sent,
                    bytes_received: d.bytes_received,
                    first_seen: d.first_seen_ts(),
                    last_seen: d.last_seen_ts(),
                },
            };
            let grown = size.with(&edge);
            // One edge always fits (the budget's lower bound is far above an edge), so a
            // cut always makes progress.
            if report.edges.len() == MAX_EDGES_PER_REPORT
                || (!report.edges.is_empty() && grown.bytes() > self.settings.max_batch_bytes)
            {
                self.more = true;
                break;
            }
            size = grown;
            report.edges.push(edge);
            self.cut.insert(key, totals);
        }
        self.cut_inbound(&mut report, size.bytes());
        self.period_start = period_end;
        let spool_path = self.spool_write(&report, None);
        self.pending.push_back(Pending {
            report,
            spool_path,
            maybe_stored: false,
            write_failures: 0,
        });
        self.publish();
    }

    /// Add the lookups and bypass observations since the last cut to `report`, within half
    /// the batch budget (the edges get the rest; what does not fit waits for the next cut).
    fn cut_observations(&mut self, report: &mut Report) {
        let budget = self.settings.max_batch_bytes / 2;
        let mut used = 0usize;
        if let Some(names) = self.settings.observers.names.clone() {
            for (name, t) in names.snapshot() {
                let prev = self.cut_lookups.get(&name).copied().unwrap_or(0);
                let delta = t.lookups.saturating_sub(prev);
                if delta == 0 {
                    continue;
                }
                if report.lookups.len() == MAX_EDGES_PER_REPORT || used > budget {
                    self.more = true;
                    break;
                }
                let l = Lookup {
                    name: name.clone(),
                    lookups: delta,
                    addresses: t.addresses.iter().map(|a| a.to_string()).collect(),
                    first_seen: Timestamp(t.first_seen),
                    last_seen: Timestamp(t.last_seen),
                };
                used = used.saturating_add(batch::json_len(&l) + 1);
                report.lookups.push(l);
                self.cut_lookups.insert(name, t.lookups);
            }
        }
        if let Some(bypass) = self.settings.observers.bypass.clone() {
            for (addr, t) in bypass.snapshot() {
                let prev = self.cut_bypass.get(&addr).copied().unwrap_or(0);
                let delta = t.connections.saturating_sub(prev);
                if delta == 0 {
                    continue;
                }
                if report.bypass.len() == MAX_EDGES_PER_REPORT || used > budget {
                    self.more = true;
                    break;
                }
                let b = Bypass {
                    address: addr.ip().to_string(),
                    port: addr.port(),
                    name: t.name.clone(),
                    connections: delta,
                    first_seen: Timestamp(t.first_seen),
                    last_seen: Timestamp(t.last_seen),
                };
                used = used.saturating_add(batch::json_len(&b) + 1);
                report.bypass.push(b);
                self.cut_bypass.insert(addr, t.connections);
            }
        }
    }

    /// Spool a batch; on failure it is still sent, just not durable, and health shows it.
    fn spool_write(&self, report: &Report, parent: Option<u64>) -> Option<std::path::PathBuf> {
        let spool = self.spool.as_ref()?;
        match spool.write(report, parent) {
            Ok(path) => {
                lock(&self.status).spool_error = None;
                Some(path)
            }
            Err(error) => {
                tracing::error!(%error, seq = report.seq, "Failed to spool a batch; it is sent but not durable.");
                lock(&self.status).spool_error = Some(error.to_string());
                None
            }
        }
    }

    /// Send pending batches in order until none is left or one fails. A batch refused as
    /// too large is split, one refused for good is set aside; both let the next go on.
    async fn send_pending(&mut self) -> Result<(), SendError> {
        while let Some(front) = self.pending.front() {
            let result = client::post(
                &self.settings.client,
                &self.settings.url,
                self.settings.token.current(),
                &front.report,
                self.settings.observers.bypass.as_deref(),
            )
            .await;
            let (maybe_stored, edges, write_failures) = (
                front.maybe_stored,
                front.report.items(),
                front.write_failures,
            );
            let error = match result {
                Ok(()) => {
                    self.acknowledged();
                    continue;
                }
                Err(error) => error,
            };
            match error.verdict() {
                Verdict::TooLarge if !maybe_stored && edges > 1 => self.split_front(&error),
                Verdict::TooLarge if edges > 1 => self.reject_front(format!(
                    "{error}; not split because an earlier attempt may have been stored \
                     (halves under new seqs could count it twice)"
                )),
                Verdict::TooLarge | Verdict::Rejected => self.reject_front(error.to_string()),
                Verdict::Retry
                    if error.write_failed()
                        && !maybe_stored
                        && edges > 1
                        && write_failures + 1 >= SPLIT_AFTER_WRITE_FAILURES =>
                {
                    self.split_front(&error);
                }
                Verdict::Retry | Verdict::Auth => {
                    if let Some(front) = self.pending.front_mut() {
                        if error.maybe_delivered() {
                            front.maybe_stored = true;
                        }
                        front.write_failures = if error.write_failed() {
                            front.write_failures.saturating_add(1)
                        } else {
                            0
                        };
                    }
                    self.metrics.outcome("failed");
                    self.metrics.retries.inc();
                    {
                        let mut s = lock(&self.status);
                        s.last_error = Some(error.to_string());
                        s.last_status = error.status();
                        s.consecutive_failures += 1;
                        s.retries += 1;
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    fn acknowledged(&mut self) {
        let Some(done) = self.pending.pop_front() else {
            return;
        };
        self.metrics.outcome("acked");
        if let (Some(spool), Some(path)) = (&self.spool, &done.spool_path) {
            if let Err(error) = spool.remove(path) {
                // A re-send after restart is a harmless duplicate.
                tracing::warn!(%error, seq = done.report.seq, "Failed to remove an acknowledged batch from the spool.");
            }
        }
        let now = Timestamp::now();
        {
            let mut s = lock(&self.status);
            s.last_success = Some(now);
            s.last_error = None;
            s.last_status = None;
            s.consecutive_failures = 0;
            s.batches_acked += 1;
        }
        self.metrics.last_success.set(now.as_millis() / 1000);
        self.publish();
    }

    /// Replace the front batch (refused as too large, never stored) by its two halves
    /// under new seqs, queued at the back so seqs stay in send order. With a spool the
    /// halves are written before the parent's file is removed (see `spool`), so a crash
    /// in between keeps the parent and drops the never-sent halves.
    fn split_front(&mut self, error: &SendError) {
        let Some(parent) = self.pending.pop_front() else {
            return;
        };
        let seqs = (self.next_seq(), self.next_seq());
        let (a, b) = batch::split(&parent.report, seqs);
        tracing::warn!(%error, seq = parent.report.seq, edges = parent.report.edges.len(),
            halves = ?seqs, "The collector refused a batch (as too large, or by closing the connection while it was sent); split it in two.");
        let mut halves = [
            Pending {
                report: a,
                spool_path: None,
                maybe_stored: false,
                write_failures: 0,
            },
            Pending {
                report: b,
                spool_path: None,
                maybe_stored: false,
                write_failures: 0,
            },
        ];
        if let Some(spool) = &self.spool {
            let parent_seq = parent.report.seq;
            for h in halves.iter_mut() {
                h.spool_path = self.spool_write(&h.report, Some(parent_seq));
            }
            if halves.iter().all(|h| h.spool_path.is_some()) {
                if let Some(path) = &parent.spool_path {
                    if let Err(error) = spool.remove(path) {
                        tracing::error!(%error, seq = parent_seq,
                            "Failed to remove a split batch from the spool; a restart will set it aside.");
                    }
                }
            } else {
                // Keep the parent on disk rather than risk losing it; the halves ship
                // from memory. Should the process restart first, the parent is set
                // aside (it may be stored by then), never counted twice.
                for h in halves.iter_mut() {
                    if let Some(path) = h.spool_path.take() {
                        let _ = spool.remove(&path);
                    }
                }
            }
        }
        self.metrics.split.inc();
        self.metrics.outcome("split");
        lock(&self.status).batches_split += 1;
        self.pending.extend(halves);
        self.publish();
    }

    /// Set the front batch aside for good: never re-sent (so never counted twice), kept
    /// for an operator, and out of the way of the batches behind it.
    fn reject_front(&mut self, reason: String) {
        let Some(batch) = self.pending.pop_front() else {
            return;
        };
        let kept = match &self.spool {
            Some(spool) => {
                match spool.set_aside(&batch.report, batch.spool_path.as_deref(), &reason) {
                    Ok(path) => Some(path.display().to_string()),
                    Err(error) => {
                        tracing::error!(%error, seq = batch.report.seq,
                        "Failed to set a rejected batch aside in the spool; keeping it in memory.");
                        None
                    }
                }
            }
            None => None,
        };
        let rejection = Rejection {
            instance: batch.report.instance.clone(),
            seq: batch.report.seq,
            edges: batch.report.edges.len(),
            requests: batch.requests(),
            reason: reason.clone(),
            at: Timestamp::now(),
            kept: kept.clone().unwrap_or_else(|| "memory".to_string()),
        };
        tracing::error!(reason = %reason, seq = rejection.seq, instance = %rejection.instance,
            edges = rejection.edges, requests = rejection.requests, kept = %rejection.kept,
            "The collector rejected a batch for good; set it aside and shipping the next.");
        if kept.is_none() {
            if self.rejected.len() == MAX_REJECTED_IN_MEMORY {
                if let Some(old) = self.rejected.pop_front() {
                    tracing::error!(
                        seq = old.report.seq,
                        requests = old.requests(),
                        "Too many rejected batches held in memory; dropping the oldest."
                    );
                }
            }
            self.rejected.push_back(batch);
        }
        self.metrics.rejected.inc();
        self.metrics.outcome("rejected");
        {
            let mut s = lock(&self.status);
            s.rejected_batches += 1;
            s.rejected_in_memory = self.rejected.len();
            s.last_rejection = Some(rejection);
        }
        self.publish();
    }

    fn publish(&self) {
        let keys: usize = self.pending.iter().map(|p| p.report.edges.len()).sum();
        let oldest = self.pending.iter().map(|p| p.report.period_end).min();
        let mut s = lock(&self.status);
        s.pending_keys = keys;
        s.pending_batches = self.pending.len();
        s.oldest_pending_cut = oldest;
        s.last_seq = self.last_seq;
        self.metrics.pending_keys.set(keys as i64);
        self.metrics.pending_batches.set(self.pending.len() as i64);
    }
}

/// The backoff before retry number `failures` without jitter: 0.5 s, 1 s, 2 s …, capped
/// at 30 s.
fn backoff_ceiling(failures: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(10));
    exp.min(MAX_BACKOFF)
}

/// Exponential backoff with jitter: [`backoff_ceiling`] scaled by a random factor in
/// [0.5, 1.0), so a fleet does not retry in lock-step.
fn backoff(failures: u32) -> Duration {
    backoff_ceiling(failures).mul_f64(rand::thread_rng().gen_range(0.5..1.0))
}

#[cfg(test)]
mod send_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_url_appends_the_path() {
        assert_eq!(
            reports_url("http://127.0.0.1:7070").unwrap().as_str(),
            "http://127.0.0.1:7070/v1/reports"
        );
        assert_eq!(
            reports_url("https://c.example/base/").unwrap().as_str(),
            "https://c.example/base/v1/reports"
        );
        assert!(reports_url("ftp://x").is_err());
        assert!(reports_url("not a url").is_err());
    }

    #[test]
    fn backoff_doubles_then_is_capped() {
        let ms = |f| backoff_ceiling(f).as_millis();
        assert_eq!(
            (1..=8).map(ms).collect::<Vec<_>>(),
            vec![500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]
        );
        assert_eq!(ms(0), 500);
        assert_eq!(ms(u32::MAX), 30_000);
        for f in 0..40 {
            let ceiling = backoff_ceiling(f);
            for _ in 0..20 {
                let b = backoff(f);
                assert!(b >= ceiling / 2 && b < ceiling, "{f}: {b:?} vs {ceiling:?}");
            }
        }
        // Jittered values still grow: the smallest after two more failures is above
        // the largest before them, until the cap.
        for f in 1..6 {
            assert!(backoff_ceiling(f + 2) / 2 > backoff_ceiling(f), "{f}");
        }
    }
}
