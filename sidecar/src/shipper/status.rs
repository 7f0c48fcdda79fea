//! Shipping health: what the shipper reports about itself, and the one rule that turns it
//! into "healthy" or "unhealthy, because …" for `/readyz`'s body, `/shipping`, `/stats`
//! and `/metrics`.
//!
//! Health is never a reason to stop the app's traffic (the proxy keeps serving whatever
//! the collector does); it is what an operator alerts on: this sidecar has not had a batch
//! acknowledged for several intervals, the collector refuses its token, it had a batch
//! rejected, or its spool is failing.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;
use whouses_wire::Timestamp;

/// Unacknowledged for this many flush intervals is unhealthy: one failed attempt is a
/// blip, three in a row is an outage worth a page (and still well inside what memory and
/// the spool absorb).
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// How long a rejected batch keeps shipping unhealthy. Long enough for a probe or a
/// scrape every minute to see it several times; alert on
/// `whouses_shipper_rejected_batches_total` to catch every one.
pub const REJECTION_SHOWS_FOR: Duration = Duration::from_secs(300);

/// A batch the collector refused for good, set aside so later batches can ship.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub instance: String,
    pub seq: u64,
    pub edges: usize,
    pub requests: u64,
    pub reason: String,
    pub at: Timestamp,
    /// Where it was kept: a spool file, or "memory" without `--spool-dir`.
    pub kept: String,
}

/// Shipping state, written by the shipper task and read by the admin endpoints.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ShippingStatus {
    pub collector_url: String,
    pub spool_dir: Option<String>,
    pub flush_interval_ms: u64,
    /// When a batch was last acknowledged.
    pub last_success: Option<Timestamp>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// The HTTP status of the last failed attempt, if the collector answered.
    pub last_status: Option<u16>,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Keys in batches that are cut but not yet acknowledged.
    pub pending_keys: usize,
    /// Batches cut but not yet acknowledged (spooled ones from a previous run included).
    pub pending_batches: usize,
    /// When the oldest unacknowledged batch was cut.
    pub oldest_pending_cut: Option<Timestamp>,
    pub batches_acked: u64,
    pub retries: u64,
    pub last_seq: u64,
    /// Batches split in two after the collector answered 413.
    pub batches_split: u64,
    /// Batches the collector refused for good (400, or 413 when it cannot be split).
    pub rejected_batches: u64,
    pub last_rejection: Option<Rejection>,
    /// Rejected batches held in memory (no `--spool-dir`), newest last.
    pub rejected_in_memory: usize,
    /// The last spool failure, cleared by the next successful spool write.
    pub spool_error: Option<String>,
    /// A problem with `--token-file` (the last good token is still used).
    pub token_warning: Option<String>,
}

/// The verdict on a [`ShippingStatus`] at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub healthy: bool,
    /// Why it is unhealthy (every problem, "; "-separated), or a short "ok" summary.
    pub reason: String,
    pub oldest_pending_age_seconds: Option<f64>,
}

/// The status and its verdict together: the `"shipping"` object of `/stats` and
/// `/readyz`, and the body of `/shipping`.
#[derive(Debug, Clone, Serialize)]
pub struct ShippingView {
    #[serde(flatten)]
    pub health: Health,
    #[serde(flatten)]
    pub status: ShippingStatus,
}

impl ShippingStatus {
    /// Decide health at `now`: a pure function of the status, so it is table-tested.
    pub fn health(&self, now: Timestamp) -> Health {
        let mut problems = Vec::new();
        let interval_ms = self.flush_interval_ms.max(1);
        let age_ms = self
            .oldest_pending_cut
            .map(|t| now.0.saturating_sub(t.0).max(0) as u64);
        if matches!(self.last_status, Some(401 | 403)) && self.consecutive_failures > 0 {
            problems.push(format!(
                "the collector refuses this sidecar's token ({}); fix --token or the \
                 --token-file (it is re-read when it changes)",
                self.last_error.as_deref().unwrap_or("401/403")
            ));
        }
        if let Some(age) = age_ms {
            if age > interval_ms.saturating_mul(u64::from(STALE_AFTER_INTERVALS)) {
                problems.push(format!(
                    "{} batch(es) not acknowledged for {:.1}s ({} consecutive failures; last error: {})",
                    self.pending_batches,
                    age as f64 / 1000.0,
                    self.consecutive_failures,
                    self.last_error.as_deref().unwrap_or("none yet")
                ));
            }
        }
        if let Some(r) = &self.last_rejection {
            let since = now.0.saturating_sub(r.at.0).max(0) as u128;
            if since <= REJECTION_SHOWS_FOR.as_millis() {
                problems.push(format!(
                    "batch seq {} of instance {} ({} edges, {} requests) was rejected by the collector: {}; set aside in {}",
                    r.seq, r.instance, r.edges, r.requests, r.reason, r.kept
                ));
            }
        }
        if let Some(e) = &self.spool_error {
            problems.push(format!("spool: {e}"));
        }
        if let Some(w) = &self.token_warning {
            problems.push(format!("token file: {w}"));
        }
        let healthy = problems.is_empty();
        let reason = if healthy {
            match self.last_success {
                Some(t) => format!("ok; last batch acknowledged at {t}"),
                None => "ok; no batch acknowledged yet".to_string(),
            }
        } else {
            problems.join("; ")
        };
        Health {
            healthy,
            reason,
            oldest_pending_age_seconds: age_ms.map(|a| a as f64 / 1000.0),
        }
    }

    pub fn view(&self, now: Timestamp) -> ShippingView {
        ShippingView {
            health: self.health(now),
            status: self.clone(),
        }
    }
}

/// Lock the shared status; a panic while holding it cannot corrupt a plain struct.
pub fn lock(m: &Mutex<ShippingStatus>) -> MutexGuard<'_, ShippingStatus> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Health gauges computed when scraped (the age of the oldest batch moves with the clock).
#[derive(Debug)]
pub struct HealthMetrics(pub Arc<Mutex<ShippingStatus>>);

impl Collector for HealthMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (health, status) = {
            let s = lock(&self.0);
            (s.health(Timestamp::now()), s.clone())
        };
        let gauges: [(&str, &str, f64); 5] = [
            (
                "whouses_shipper_healthy",
                "1 when shipping is healthy (see /shipping for the reason when it is not)",
                if health.healthy { 1.0 } else { 0.0 },
            ),
            (
                "whouses_shipper_consecutive_failures",
                "Failed send attempts since the last acknowledged batch",
                status.consecutive_failures as f64,
            ),
            (
                "whouses_shipper_oldest_pending_age_seconds",
                "Age of the oldest batch not yet acknowledged (0 when none waits)",
                health.oldest_pending_age_seconds.unwrap_or(0.0),
            ),
            (
                "whouses_shipper_rejected_batches_in_memory",
                "Rejected batches held in memory (no --spool-dir)",
                status.rejected_in_memory as f64,
            ),
            (
                "whouses_shipper_auth_failing",
                "1 while the collector answers 401/403 to this sidecar's token",
                if matches!(status.last_status, Some(401 | 403)) && status.consecutive_failures > 0
                {
                    1.0
                } else {
                    0.0
                },
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ShippingStatus {
        ShippingStatus {
            flush_interval_ms: 10_000,
            ..ShippingStatus::default()
        }
    }

    #[test]
    fn health_rules() {
        let now = Timestamp(1_000_000_000);
        // (what, status, healthy, a word the reason must hold)
        let cases: Vec<(&str, ShippingStatus, bool, &str)> = vec![
            ("fresh start", base(), true, "no batch acknowledged yet"),
            (
                "a batch waiting for two intervals",
                ShippingStatus {
                    oldest_pending_cut: Some(Timestamp(now.0 - 20_000)),
                    pending_batches: 2,
                    ..base()
                },
                true,
                "ok",
            ),
            (
                "a batch waiting for just over three intervals",
                ShippingStatus {
                    oldest_pending_cut: Some(Timestamp(now.0 - 30_001)),
                    pending_batches: 4,
                    consecutive_failures: 3,
                    last_error: Some("collector unreachable".into()),
                    ..base()
                },
                false,
                "not acknowledged for 30.0s",
            ),
            (
                "exactly three intervals is still healthy",
                ShippingStatus {
                    oldest_pending_cut: Some(Timestamp(now.0 - 30_000)),
                    ..base()
                },
                true,
                "ok",
            ),
            (
                "token refused",
                ShippingStatus {
                    last_status: Some(403),
                    consecutive_failures: 1,
                    last_error: Some("collector answered 403".into()),
                    ..base()
                },
                false,
                "refuses this sidecar's token",
            ),
            (
                "a 403 followed by a success",
                ShippingStatus {
                    last_status: Some(403),
                    consecutive_failures: 0,
                    ..base()
                },
                true,
                "ok",
            ),
            (
                "rejected just now",
                ShippingStatus {
                    last_rejection: Some(Rejection {
                        instance: "i".into(),
                        seq: 7,
                        edges: 1,
                        requests: 3,
                        reason: "400: invalid".into(),
                        at: Timestamp(now.0 - 1_000),
                        kept: "memory".into(),
                    }),
                    ..base()
                },
                false,
                "seq 7",
            ),
            (
                "rejected long ago",
                ShippingStatus {
                    last_rejection: Some(Rejection {
                        instance: "i".into(),
                        seq: 7,
                        edges: 1,
                        requests: 3,
                        reason: "400: invalid".into(),
                        at: Timestamp(now.0 - REJECTION_SHOWS_FOR.as_millis() as i64 - 1),
                        kept: "memory".into(),
                    }),
                    ..base()
                },
                true,
                "ok",
            ),
            (
                "spool failing",
                ShippingStatus {
                    spool_error: Some("disk full".into()),
                    ..base()
                },
                false,
                "disk full",
            ),
        ];
        for (what, status, healthy, word) in cases {
            let h = status.health(now);
            assert_eq!(h.healthy, healthy, "{what}: {}", h.reason);
            assert!(
                h.reason.contains(word),
                "{what}: {:?} lacks {word:?}",
                h.reason
            );
        }
    }

    #[test]
    fn the_view_flattens_health_beside_the_status() {
        let v = serde_json::to_value(base().view(Timestamp(5))).unwrap();
        assert_eq!(v["healthy"], true);
        assert!(v["reason"].is_string());
        assert_eq!(v["flush_interval_ms"], 10_000);
        assert_eq!(v["rejected_batches"], 0);
    }
}
