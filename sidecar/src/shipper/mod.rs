//! Shipping counts to the collector: every `--flush-interval`, cut the deltas since the
//! previous batch, number the batch with the next `seq`, post it, and re-send the *same*
//! batch until it is acknowledged.
//!
//! Exactly-once effect: the collector applies each `(instance, seq)` once, and a batch is
//! never re-cut — its deltas are frozen when it is numbered. While batches wait (collector
//! down, slow, rejecting), new batches are still cut every interval and queued behind
//! them, up to 256 batches or `--max-hosts` keys in total; beyond that, new counts stay
//! merged per key in the live counters, so memory stays bounded however long the outage
//! lasts, and the next batch carries all of them. The proxy path never waits for any of
//! this: it only does atomic adds that this task reads.
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
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use whouses_wire::{Counts, Edge, Report, Timestamp, MAX_EDGES_PER_REPORT, REPORT_VERSION};

pub mod spool;

use crate::counters::{Counters, Key, Totals};
use crate::Identity;
use spool::Spool;

/// First retry delay after a failed send; doubles per failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between retries, so recovery after an outage is quick.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Most batches queued unacknowledged (mostly heartbeats during a long outage).
const MAX_PENDING_BATCHES: usize = 256;

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// Shipping health, for `/stats` (as `"shipping"`), `/readyz` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShippingStatus {
    pub collector_url: String,
    pub spool_dir: Option<String>,
    /// When a batch was last acknowledged.
    pub last_success: Option<Timestamp>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Keys in batches that are cut but not yet acknowledged.
    pub pending_keys: usize,
    /// Batches cut but not yet acknowledged (spooled ones from a previous run included).
    pub pending_batches: usize,
    pub batches_acked: u64,
    pub retries: u64,
    pub last_seq: u64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone)]
struct Metrics {
    batches: Family<OutcomeLabel, Counter>,
    retries: Counter,
    pending_keys: Gauge,
    pending_batches: Gauge,
    last_success: Gauge,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            batches: Family::default(),
            retries: Counter::default(),
            pending_keys: Gauge::default(),
            pending_batches: Gauge::default(),
            last_success: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("whouses_shipper");
        r.register(
            "batches",
            "Batch send attempts by outcome (acked, failed)",
            m.batches.clone(),
        );
        r.register(
            "retries",
            "Re-sends of a batch after a failure",
            m.retries.clone(),
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
        m
    }
}

/// The running shipper: a background task plus its shared status.
pub struct Shipper {
    status: Arc<Mutex<ShippingStatus>>,
    stop: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

impl Shipper {
    /// Start shipping if `--collector-url` is set; `None` otherwise (count only).
    pub fn start(
        config: &crate::config::Config,
        identity: Identity,
        counters: Arc<Counters>,
        registry: &mut Registry,
    ) -> anyhow::Result<Option<Shipper>> {
        let Some(base) = config.collector_url.as_deref() else {
            return Ok(None);
        };
        let url = reports_url(base)?;
        let token = read_token(config.token.as_deref(), config.token_file.as_deref())?;
        let flush_interval = config.flush_interval.0;
        let spool = match &config.spool_dir {
            Some(dir) => Some(Spool::open(dir)?),
            None => None,
        };
        Ok(Some(Self::spawn(
            ShipperSettings {
                url,
                token,
                flush_interval,
            },
            spool,
            identity,
            counters,
            registry,
        )?))
    }

    fn spawn(
        settings: ShipperSettings,
        spool: Option<Spool>,
        identity: Identity,
        counters: Arc<Counters>,
        registry: &mut Registry,
    ) -> anyhow::Result<Shipper> {
        let pending: VecDeque<Report> = match &spool {
            Some(s) => s.load()?.into(),
            None => VecDeque::new(),
        };
        if !pending.is_empty() {
            tracing::info!(
                batches = pending.len(),
                spool = %spool.as_ref().map(|s| s.dir().display().to_string()).unwrap_or_default(),
                "Found spooled batches from a previous run; shipping them first."
            );
        }
        let status = Arc::new(Mutex::new(ShippingStatus {
            collector_url: settings.url.to_string(),
            spool_dir: spool.as_ref().map(|s| s.dir().display().to_string()),
            ..ShippingStatus::default()
        }));
        let request_timeout = settings
            .flush_interval
            .clamp(Duration::from_secs(2), Duration::from_secs(15));
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("whouses-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let last_seq = pending
            .iter()
            .filter(|r| r.instance == identity.instance)
            .map(|r| r.seq)
            .max()
            .unwrap_or(0);
        let core = Core {
            period_start: identity.started_at,
            identity,
            counters,
            cut: HashMap::new(),
            pending,
            more: false,
            last_seq,
            spool,
            client,
            settings,
            status: status.clone(),
            metrics: Metrics::register(registry),
        };
        core.publish();
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

    /// The proxy is usable whatever the collector does (never break the app), so shipping
    /// trouble does not make the sidecar unready; it is reported in `/readyz`'s body,
    /// `/stats` and `/metrics` instead.
    pub fn is_ready(&self) -> bool {
        true
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

fn lock(m: &Mutex<ShippingStatus>) -> std::sync::MutexGuard<'_, ShippingStatus> {
    // A panic while holding this lock cannot corrupt a plain status struct.
    m.lock().unwrap_or_else(|p| p.into_inner())
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

fn read_token(
    token: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    match (token, file) {
        (Some(_), Some(_)) => anyhow::bail!("give --token or --token-file, not both"),
        (Some(t), None) => Ok(Some(t.trim().to_string())),
        (None, Some(path)) => {
            let t = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read --token-file {}: {e}", path.display()))?;
            let t = t.trim();
            if t.is_empty() {
                anyhow::bail!("--token-file {} is empty", path.display());
            }
            Ok(Some(t.to_string()))
        }
        (None, None) => Ok(None),
    }
}

struct ShipperSettings {
    url: reqwest::Url,
    token: Option<String>,
    flush_interval: Duration,
}

/// Everything the shipping task owns.
struct Core {
    identity: Identity,
    counters: Arc<Counters>,
    /// Cumulative totals already cut into a batch, per key.
    cut: HashMap<Key, Totals>,
    /// Batches cut but not acknowledged, oldest first; sent strictly in order.
    pending: VecDeque<Report>,
    /// The last cut stopped at `MAX_EDGES_PER_REPORT`; more deltas wait.
    more: bool,
    last_seq: u64,
    period_start: Timestamp,
    spool: Option<Spool>,
    client: reqwest::Client,
    settings: ShipperSettings,
    status: Arc<Mutex<ShippingStatus>>,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("collector unreachable: {0}")]
    Transport(String),
    #[error("collector answered {status}: {body}")]
    Status { status: u16, body: String },
}

impl Core {
    async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let interval = self.settings.flush_interval;
        // Two clocks: batches are cut every interval (so with a spool, at most one
        // interval of counts is ever only in memory), and sent as soon as they are cut,
        // or on the retry backoff while the collector is failing.
        let mut next_cut = Instant::now() + interval;
        let mut next_send = if self.pending.is_empty() {
            far_future()
        } else {
            Instant::now()
        };
        let mut failures: u32 = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_cut.min(next_send)) => {}
                _ = stop.changed() => break,
            }
            let now = Instant::now();
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
                        let wait = backoff(failures);
                        tracing::warn!(%error, retry_in = ?wait, pending_batches = self.pending.len(),
                            "Failed to ship counts; keeping the batch and retrying.");
                        next_send = Instant::now() + wait;
                    }
                }
            }
        }
        let until = (*stop.borrow()).unwrap_or_else(Instant::now);
        self.final_flush(until).await;
    }

    /// Whether another batch may be queued behind unacknowledged ones. Beyond these
    /// bounds new counts stay merged per key in the live counters (bounded by
    /// `--max-hosts`) until the queue drains, so an outage of any length costs bounded
    /// memory.
    fn can_cut(&self) -> bool {
        let keys: usize = self.pending.iter().map(|r| r.edges.len()).sum();
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
        let keys: usize = self.pending.iter().map(|r| r.edges.len()).sum();
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

    /// Cut the deltas since the last batch into a new numbered batch (a heartbeat when
    /// nothing was counted) and queue it; with a spool, write it to disk first.
    fn cut_batch(&mut self) {
        let now = SystemTime::now();
        let period_end = Timestamp::from_system_time(now);
        let mut edges = Vec::new();
        self.more = false;
        for (key, totals) in self.counters.snapshot() {
            let prev = self.cut.get(&key).copied().unwrap_or_default();
            let d = totals.since(&prev);
            if d.is_zero() {
                continue;
            }
            if edges.len() == MAX_EDGES_PER_REPORT {
                self.more = true;
                break;
            }
            edges.push(Edge {
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
            });
            self.cut.insert(key, totals);
        }
        // Strictly increasing per instance, and also across restarts: a microsecond
        // clock reading unless that would not be above the last one.
        let micros = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_seq = (self.last_seq + 1).max(micros);
        let report = Report {
            version: REPORT_VERSION,
            service: self.identity.service.clone(),
            environment: self.identity.environment.clone(),
            instance: self.identity.instance.clone(),
            seq: self.last_seq,
            started_at: self.identity.started_at,
            period_start: self.period_start.min(period_end),
            period_end,
            flush_interval_ms: self.settings.flush_interval.as_millis() as u64,
            edges,
        };
        self.period_start = period_end;
        if let Some(spool) = &self.spool {
            if let Err(error) = spool.write(&report) {
                tracing::error!(%error, seq = report.seq, "Failed to spool a batch; it is sent but not durable.");
            }
        }
        self.pending.push_back(report);
        self.publish();
    }

    /// Send pending batches in order until none is left or one fails.
    async fn send_pending(&mut self) -> Result<(), SendError> {
        while let Some(report) = self.pending.front() {
            let result = self.post(report).await;
            let seq = report.seq;
            match result {
                Ok(()) => {
                    self.metrics
                        .batches
                        .get_or_create(&OutcomeLabel { outcome: "acked" })
                        .inc();
                    if let Some(spool) = &self.spool {
                        if let Err(error) = spool.remove(seq) {
                            // A re-send after restart is a harmless duplicate.
                            tracing::warn!(%error, seq, "Failed to remove an acknowledged batch from the spool.");
                        }
                    }
                    self.pending.pop_front();
                    let now = Timestamp::now();
                    {
                        let mut s = lock(&self.status);
                        s.last_success = Some(now);
                        s.last_error = None;
                        s.consecutive_failures = 0;
                        s.batches_acked += 1;
                    }
                    self.metrics.last_success.set(now.as_millis() / 1000);
                    self.publish();
                }
                Err(error) => {
                    self.metrics
                        .batches
                        .get_or_create(&OutcomeLabel { outcome: "failed" })
                        .inc();
                    self.metrics.retries.inc();
                    {
                        let mut s = lock(&self.status);
                        s.last_error = Some(error.to_string());
                        s.consecutive_failures += 1;
                        s.retries += 1;
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    async fn post(&self, report: &Report) -> Result<(), SendError> {
        let mut req = self.client.post(self.settings.url.clone()).json(report);
        if let Some(t) = &self.settings.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SendError::Transport(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        Err(SendError::Status {
            status: status.as_u16(),
            body,
        })
    }

    fn publish(&self) {
        let keys: usize = self.pending.iter().map(|r| r.edges.len()).sum();
        let mut s = lock(&self.status);
        s.pending_keys = keys;
        s.pending_batches = self.pending.len();
        s.last_seq = self.last_seq;
        self.metrics.pending_keys.set(keys as i64);
        self.metrics.pending_batches.set(self.pending.len() as i64);
    }
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s … capped at 30 s, each scaled by a
/// random factor in [0.5, 1.0) so a fleet does not retry in lock-step.
fn backoff(failures: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << failures.saturating_sub(1).min(10));
    let capped = exp.min(MAX_BACKOFF);
    capped.mul_f64(rand::thread_rng().gen_range(0.5..1.0))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

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
    fn backoff_grows_and_is_capped() {
        for f in 1..40 {
            let b = backoff(f);
            assert!(b <= MAX_BACKOFF, "{f}: {b:?}");
            assert!(b >= BASE_BACKOFF / 2, "{f}: {b:?}");
        }
        assert!(backoff(30) >= MAX_BACKOFF / 2);
    }

    #[test]
    fn token_sources_are_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "secret\n").unwrap();
        assert_eq!(
            read_token(None, Some(&f)).unwrap().as_deref(),
            Some("secret")
        );
        assert!(read_token(Some("a"), Some(&f)).is_err());
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token(None, Some(&f)).is_err());
        assert!(read_token(None, Some(&dir.path().join("missing"))).is_err());
    }
}
