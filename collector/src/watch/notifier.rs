//! The notifier: one background task per collector, every `--watch-interval`:
//!
//! 1. **Evaluate** every watch from the stored edges ([`super::evaluate`]) — on every
//!    collector, so `/metrics` and `/v1/watches` answer alike whichever replica is asked.
//! 2. **Take the lease** (a row in `leases`, renewed each round): only its holder goes
//!    on, so several replicas notify once. It expires after a few rounds if the holder
//!    dies; a collector stopping cleanly gives it up.
//! 3. **Decide** ([`super::rules`]) and **record**: each alert's new state and its
//!    notifications, one per notify URL, in one transaction — the outbox, bounded by
//!    `--max-pending-notifications` (an alert that does not fit is decided again later).
//! 4. **Send** what is due, a few at a time, each request bounded by `--notify-timeout`:
//!    a 2xx marks it delivered; anything else is retried with exponential backoff (1 s,
//!    2 s, 4 s … at most 5 minutes) until `--notify-give-up-after`, then marked failed
//!    and logged. Redirects are not followed.
//!
//! The task owns nothing the database does not hold: stopping it anywhere loses nothing
//! (a notification sent but not yet marked delivered is sent once more: at least once).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use whouses_wire::decom::AlertKind;

use super::payload::{self, Notice};
use super::{evaluate, rules, CallerObs};
use crate::api::AppState;
use crate::store::decom::{DeliveryOutcome, DeliveryRow, NewDelivery, NOTIFIER_LEASE};
use crate::store::StoreError;

/// Notifications taken per round, and sent at once.
const SEND_BATCH: usize = 64;
const SEND_AT_ONCE: usize = 8;
/// Longest wait between two attempts of one notification.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long delivered and failed notifications are kept (shown in `/v1/watches`).
const KEEP_DELIVERIES: Duration = Duration::from_secs(7 * 86_400);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Most bytes of a refusing receiver's answer kept for the log.
const MAX_ERROR_BODY: usize = 512;

/// Run until `stop` turns true; a round in progress then gets `--notify-timeout` to
/// finish. Gives the lease up on the way out.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut n = match Notifier::new(state) {
        Ok(n) => n,
        Err(error) => {
            tracing::error!(%error, "Cannot start the watch notifier; watches will not alert.");
            return;
        }
    };
    let settings = n.state.workflow.watch.clone();
    let mut tick = tokio::time::interval(settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            break;
        }
        let round = n.round();
        tokio::pin!(round);
        let result = tokio::select! {
            r = &mut round => r,
            _ = stop.changed() => {
                let _ = tokio::time::timeout(settings.notify_timeout, &mut round).await;
                break;
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, "A watch round failed; the next one tries again.");
        }
    }
    if n.held {
        let store = n.state.store.clone();
        if let Err(error) = store.decom().release_lease(NOTIFIER_LEASE, &n.holder).await {
            tracing::debug!(%error, "Could not give the notifier lease up; it expires.");
        }
    }
}

struct Notifier {
    state: AppState,
    /// Who this collector is, in the lease.
    holder: String,
    held: bool,
    http: reqwest::Client,
    pruned: Option<Instant>,
}

/// How long the lease lasts without renewal: a few rounds, and longer than a round can
/// take, so a busy holder keeps it and a dead one hands it over within seconds.
fn lease_ttl(interval: Duration, timeout: Duration) -> Duration {
    (interval * 3)
        .max(timeout + interval * 2)
        .max(Duration::from_secs(5))
}

/// Milliseconds of a duration, saturating.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The wait before attempt `attempts + 1`.
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(16)).min(MAX_BACKOFF)
}

impl Notifier {
    fn new(state: AppState) -> anyhow::Result<Notifier> {
        let s = &state.workflow.watch;
        let http = reqwest::Client::builder()
            .timeout(s.notify_timeout)
            .connect_timeout(s.notify_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("whouses-collector/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Ok(Notifier {
            holder: format!("pid{}-{random:016x}", std::process::id()),
            held: false,
            http,
            pruned: None,
            state,
        })
    }

    async fn round(&mut self) -> Result<(), StoreError> {
        let state = self.state.clone();
        let store = state.store.as_ref();
        let wf = &state.workflow;
        let settings = &wf.watch;
        let now = state.now();
        let watches = store.decom().watches().await?;
        let alerts = store.decom().alerts().await?;
        let mut evaluations: BTreeMap<i64, Vec<CallerObs>> = BTreeMap::new();
        for w in &watches {
            match evaluate(store, &state.targets, w, now).await {
                Ok(callers) => {
                    evaluations.insert(w.id, callers);
                }
                Err(StoreError::Invalid(why)) => {
                    tracing::warn!(watch = w.id, host = %w.host, %why, "A watch names a host that no longer resolves (the targets file changed?).")
                }
                Err(e) => return Err(e),
            }
        }
        wf.live.set(&watches, evaluations.clone(), &alerts);
        if watches.is_empty() && !self.held {
            return Ok(());
        }
        let ttl = lease_ttl(settings.interval, settings.notify_timeout);
        let held = store
            .decom()
            .take_lease(NOTIFIER_LEASE, &self.holder, now, ms(ttl))
            .await?;
        if held != self.held {
            tracing::info!(holder = %self.holder, held, "The notifier lease changed hands.");
        }
        self.held = held;
        if !held {
            return Ok(());
        }

        let renotify = ms(settings.renotify_after);
        let mut decided = Vec::new();
        for w in &watches {
            if let Some(callers) = evaluations.get(&w.id) {
                for a in rules::decide(w, callers, &alerts, now, renotify) {
                    decided.push((w, a));
                }
            }
        }
        if !decided.is_empty() {
            let owners = wf.owners.map(store).await?;
            let ends_at = now.saturating_add(settings.renotify_after);
            let mut kinds: Vec<AlertKind> = Vec::with_capacity(decided.len());
            let batch: Vec<_> = decided
                .into_iter()
                .map(|(w, a)| {
                    let owner = owners.of(&a.service, &a.environment);
                    let link = payload::link(settings.public_url.as_ref(), &w.host);
                    let notice = Notice {
                        watch: w,
                        alert: &a,
                        owner: owner.as_ref(),
                        ends_at,
                        link: link.as_deref(),
                    };
                    tracing::info!(watch = w.id, host = %w.host, service = %a.service,
                        environment = %a.environment, kind = a.kind.as_str(),
                        notification = a.notifications, "{}", payload::text(&notice));
                    let deliveries: Vec<NewDelivery> = w
                        .notify
                        .iter()
                        .map(|url| NewDelivery {
                            url: url.clone(),
                            body: payload::body(url, &notice).to_string(),
                        })
                        .collect();
                    kinds.push(a.kind);
                    (a, deliveries)
                })
                .collect();
            let r = store
                .decom()
                .record_alerts(&self.holder, now, batch, settings.max_pending)
                .await?;
            if r.lost_lease {
                tracing::info!("The notifier lease was lost before the alerts were recorded; its new holder decides them.");
                self.held = false;
                return Ok(());
            }
            for k in kinds {
                wf.live.alert(k);
            }
            for _ in 0..r.deferred {
                wf.live.notification("deferred");
            }
            if r.deferred > 0 {
                tracing::warn!(deferred = r.deferred, max = settings.max_pending,
                    "The notification outbox is full (--max-pending-notifications); alerts wait for room.");
            }
        }
        self.send_due().await?;
        if self.pruned.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            let before = state.now().saturating_sub(KEEP_DELIVERIES);
            store.decom().prune_deliveries(before).await?;
            self.pruned = Some(Instant::now());
        }
        let pending: u64 = store
            .decom()
            .delivery_stats()
            .await?
            .iter()
            .map(|s| s.pending)
            .sum();
        wf.live.pending(pending);
        Ok(())
    }

    /// Send the notifications due now, a few at a time, and record each outcome.
    async fn send_due(&self) -> Result<(), StoreError> {
        let store = self.state.store.clone();
        let settings = &self.state.workflow.watch;
        let due = store
            .decom()
            .due_deliveries(self.state.now(), SEND_BATCH)
            .await?;
        let mut sending: JoinSet<(DeliveryRow, Result<(), String>)> = JoinSet::new();
        let mut due = due.into_iter();
        loop {
            while sending.len() < SEND_AT_ONCE {
                let Some(d) = due.next() else { break };
                let http = self.http.clone();
                sending.spawn(async move {
                    let r = post(&http, &d.url, &d.body).await;
                    (d, r)
                });
            }
            let Some(done) = sending.join_next().await else {
                break;
            };
            let Ok((d, result)) = done else { continue };
            let now = self.state.now();
            let shown = payload::redact(&d.url);
            let outcome = match result {
                Ok(()) => {
                    tracing::info!(watch = d.watch_id, service = %d.service, kind = d.kind.as_str(),
                        url = %shown, "Delivered a notification.");
                    self.state.workflow.live.notification("delivered");
                    DeliveryOutcome::Delivered
                }
                Err(error) if now.0.saturating_sub(d.created.0) >= ms(settings.give_up_after) => {
                    tracing::error!(watch = d.watch_id, service = %d.service, kind = d.kind.as_str(),
                        url = %shown, attempts = d.attempts + 1, %error,
                        "Gave a notification up after retrying for --notify-give-up-after.");
                    self.state.workflow.live.notification("failed");
                    DeliveryOutcome::Failed { error }
                }
                Err(error) => {
                    let wait = backoff(d.attempts);
                    tracing::warn!(watch = d.watch_id, service = %d.service, kind = d.kind.as_str(),
                        url = %shown, attempts = d.attempts + 1, retry_in = ?wait, %error,
                        "Failed to deliver a notification; it is retried.");
                    self.state.workflow.live.notification("retry");
                    DeliveryOutcome::Retry {
                        at: now.saturating_add(wait),
                        error,
                    }
                }
            };
            store.decom().finish_delivery(d.id, now, outcome).await?;
        }
        Ok(())
    }
}

/// POST one notification; `Err` says why it was not accepted.
async fn post(http: &reqwest::Client, url: &str, body: &str) -> Result<(), String> {
    let resp = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| whouses_plumbing::error_chain(&e))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let mut resp = resp;
    let mut text = Vec::new();
    while text.len() < MAX_ERROR_BODY {
        match resp.chunk().await {
            Ok(Some(c)) => text.extend_from_slice(&c),
            _ => break,
        }
    }
    text.truncate(MAX_ERROR_BODY);
    let text = String::from_utf8_lossy(&text);
    Err(format!("answered {status}: {}", text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn the_lease_outlives_a_round() {
        assert_eq!(
            lease_ttl(Duration::from_secs(10), Duration::from_secs(10)),
            Duration::from_secs(30)
        );
        assert_eq!(
            lease_ttl(Duration::from_millis(500), Duration::from_secs(2)),
            Duration::from_secs(5)
        );
        assert_eq!(
            lease_ttl(Duration::from_secs(1), Duration::from_secs(30)),
            Duration::from_secs(32)
        );
    }
}
