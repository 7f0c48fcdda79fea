//! **Watches and alerts.** A watch on a host being retired fires, per caller, on
//! *traffic after its cutoff* and on *failing calls* (refused, timed out, 5xx — something
//! was switched off too early), and notifies Alertmanager or any webhook (a JSON body
//! with a one-line `text`, Slack-compatible): at least once, deduplicated per (watch,
//! caller, kind) with `--renotify-after`, surviving restarts.
//!
//! * [`evaluate`] (here) — what a watch sees now: per caller of the host, its last call,
//!   its calls since the cutoff and its failing-call total, from the stored edges.
//! * [`rules`] — **when an alert fires**: a pure function of that and the stored alert
//!   state (table-tested).
//! * [`payload`] — what a notification says; notify URLs checked and shown redacted.
//! * [`notifier`] — the background loop: every collector evaluates (for `/metrics` and
//!   the answers); the one holding the notifier lease decides, records each alert's state
//!   with its notifications in one transaction (the outbox), and sends them with retries
//!   and backoff.
//! * [`api`] — `POST/GET/DELETE /v1/watches`.
//!
//! Why nothing is lost or repeated across a restart: an alert's state and its queued
//! notifications are written together, before anything is sent; a notification is marked
//! delivered after the receiver's 2xx (a crash in between sends it once more: at least
//! once); the next evaluation after a restart finds the alert notified and waits for
//! `--renotify-after`; failing calls are compared with the total at the last
//! notification, so calls that failed while the collector was down still fire.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use whouses_wire::{counts, Timestamp};

use crate::store::decom::{AlertRow, WatchRow};
use crate::store::{EdgeFilter, Store, StoreError};
use crate::targets::Targets;

pub mod api;
pub mod notifier;
pub mod payload;
pub mod rules;

/// Most callers per watch with series of their own in `/metrics`; the others are summed
/// under `service="(other)"`, so a watch adds at most this many series per metric.
pub const MAX_SERIES_PER_WATCH: usize = 50;

/// The watch flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub interval: Duration,
    pub renotify_after: Duration,
    pub max_watches: usize,
    pub max_pending: usize,
    pub notify_timeout: Duration,
    pub give_up_after: Duration,
    pub public_url: Option<url::Url>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            interval: Duration::from_secs(10),
            renotify_after: Duration::from_secs(4 * 3600),
            max_watches: 100,
            max_pending: 10_000,
            notify_timeout: Duration::from_secs(10),
            give_up_after: Duration::from_secs(86_400),
            public_url: None,
        }
    }
}

/// What a watch sees of one caller of its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerObs {
    pub service: String,
    pub environment: String,
    /// Its last call to the host.
    pub last_seen: Timestamp,
    /// Its failing calls to the host over all retained history.
    pub errors_total: u64,
    /// Its calls since the cutoff (hour granularity: the cutoff's hour counts whole); 0
    /// when it has not called since the cutoff, or the cutoff is still to come.
    pub calls_after: u64,
    /// Its first call since the cutoff (no earlier than the cutoff).
    pub first_after: Timestamp,
}

/// What a watch sees now, per caller of its host (busiest since the cutoff first).
pub async fn evaluate(
    store: &dyn Store,
    targets: &Targets,
    watch: &WatchRow,
    now: Timestamp,
) -> Result<Vec<CallerObs>, StoreError> {
    let patterns = targets.resolve(&watch.host).map_err(StoreError::Invalid)?;
    let all = store
        .edges(&EdgeFilter {
            hosts: Some(patterns.clone()),
            ..Default::default()
        })
        .await?;
    let mut by: BTreeMap<(String, String), CallerObs> = BTreeMap::new();
    for e in &all {
        let c = by
            .entry((e.service.clone(), e.environment.clone()))
            .or_insert_with(|| CallerObs {
                service: e.service.clone(),
                environment: e.environment.clone(),
                last_seen: e.counts.last_seen,
                errors_total: 0,
                calls_after: 0,
                first_after: watch.cutoff,
            });
        c.last_seen = c.last_seen.max(e.counts.last_seen);
        c.errors_total = counts::add(c.errors_total, e.counts.errors);
    }
    let cutoff = watch.cutoff;
    if now >= cutoff && by.values().any(|c| c.last_seen >= cutoff) {
        let since = store
            .edges(&EdgeFilter {
                hosts: Some(patterns),
                since: Some(cutoff),
                ..Default::default()
            })
            .await?;
        let mut first: BTreeMap<(&str, &str), Timestamp> = BTreeMap::new();
        for e in &since {
            let Some(c) = by.get_mut(&(e.service.clone(), e.environment.clone())) else {
                continue;
            };
            if c.last_seen < cutoff {
                continue;
            }
            c.calls_after = counts::add(c.calls_after, e.counts.calls());
            let f = first
                .entry((&e.service, &e.environment))
                .or_insert(e.counts.first_seen);
            *f = (*f).min(e.counts.first_seen);
        }
        for ((service, environment), f) in first {
            if let Some(c) = by.get_mut(&(service.to_string(), environment.to_string())) {
                c.first_after = f.max(cutoff);
            }
        }
    }
    let mut out: Vec<CallerObs> = by.into_values().collect();
    out.sort_by(|a, b| {
        b.calls_after
            .cmp(&a.calls_after)
            .then(b.errors_total.cmp(&a.errors_total))
            .then(a.service.cmp(&b.service))
            .then(a.environment.cmp(&b.environment))
    });
    Ok(out)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SeriesLabels {
    watch: String,
    host: String,
    service: String,
    environment: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The latest evaluation on this collector, for answers and `/metrics`.
#[derive(Default)]
pub struct Live {
    evaluations: Mutex<BTreeMap<i64, Vec<CallerObs>>>,
    calls: Family<SeriesLabels, Gauge>,
    failing: Family<SeriesLabels, Gauge>,
    alerts: Family<KindLabels, Counter>,
    notifications: Family<OutcomeLabels, Counter>,
    pending: Gauge,
}

/// A count as a gauge value (saturating).
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Live {
    /// Register the metrics (documented in docs/operations.md).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "watch_calls",
            "Calls to a watched host since the watch's cutoff, per watch and caller (at most 50 callers per watch, the rest under service=\"(other)\")",
            self.calls.clone(),
        );
        r.register(
            "watch_failing_calls",
            "Failing calls (refused, timed out, 5xx) to a watched host since the watch began, per watch and caller (at most 50 callers per watch)",
            self.failing.clone(),
        );
        r.register(
            "watch_alerts",
            "Alerts decided (first notifications and re-notifications), by kind",
            self.alerts.clone(),
        );
        r.register(
            "watch_notifications",
            "Notification attempts by outcome (delivered, retry, failed) and alerts deferred for a full outbox (deferred)",
            self.notifications.clone(),
        );
        r.register(
            "watch_pending_notifications",
            "Notifications waiting for delivery (on the collector holding the notifier lease)",
            self.pending.clone(),
        );
    }

    /// Replace the evaluation of every watch, and the series that show it.
    pub fn set(
        &self,
        watches: &[WatchRow],
        evaluations: BTreeMap<i64, Vec<CallerObs>>,
        alerts: &[AlertRow],
    ) {
        self.calls.clear();
        self.failing.clear();
        let base: BTreeMap<(i64, &str, &str), u64> = alerts
            .iter()
            .filter(|a| a.kind == whouses_wire::decom::AlertKind::FailingCalls)
            .map(|a| {
                (
                    (a.watch_id, a.service.as_str(), a.environment.as_str()),
                    a.base,
                )
            })
            .collect();
        for w in watches {
            let Some(callers) = evaluations.get(&w.id) else {
                continue;
            };
            let mut other = (0u64, 0u64, false);
            for (i, c) in callers.iter().enumerate() {
                let failing = c.errors_total.saturating_sub(
                    base.get(&(w.id, c.service.as_str(), c.environment.as_str()))
                        .copied()
                        .unwrap_or(0),
                );
                if i < MAX_SERIES_PER_WATCH {
                    let labels = SeriesLabels {
                        watch: w.id.to_string(),
                        host: w.host.clone(),
                        service: c.service.clone(),
                        environment: c.environment.clone(),
                    };
                    self.calls.get_or_create(&labels).set(gauge(c.calls_after));
                    self.failing.get_or_create(&labels).set(gauge(failing));
                } else {
                    other = (
                        counts::add(other.0, c.calls_after),
                        counts::add(other.1, failing),
                        true,
                    );
                }
            }
            if other.2 {
                let labels = SeriesLabels {
                    watch: w.id.to_string(),
                    host: w.host.clone(),
                    service: "(other)".into(),
                    environment: String::new(),
                };
                self.calls.get_or_create(&labels).set(gauge(other.0));
                self.failing.get_or_create(&labels).set(gauge(other.1));
            }
        }
        *self
            .evaluations
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = evaluations;
    }

    /// The latest evaluation of one watch.
    pub fn of(&self, watch: i64) -> Option<Vec<CallerObs>> {
        self.evaluations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&watch)
            .cloned()
    }

    pub fn alert(&self, kind: whouses_wire::decom::AlertKind) {
        self.alerts
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn notification(&self, outcome: &'static str) {
        self.notifications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn pending(&self, n: u64) {
        self.pending.set(gauge(n));
    }
}
