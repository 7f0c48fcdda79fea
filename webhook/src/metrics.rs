//! The webhook's counters and their Prometheus text form (`GET /metrics`): reviews by
//! result, and pods admitted without the sidecar by reason — the number to alert on, since
//! a skipped pod runs uncounted.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::mutate::{Outcome, SkipReason};

/// Counters shared by the handlers.
#[derive(Debug, Default)]
pub struct Metrics {
    injected: AtomicU64,
    injected_with_warnings: AtomicU64,
    not_selected: AtomicU64,
    already_injected: AtomicU64,
    malformed: AtomicU64,
    skipped: [AtomicU64; SkipReason::ALL.len()],
}

impl Metrics {
    /// Count one answered review.
    pub fn record(&self, outcome: &Outcome) {
        let c = match outcome {
            Outcome::Injected { warnings, .. } => {
                if !warnings.is_empty() {
                    self.injected_with_warnings.fetch_add(1, Ordering::Relaxed);
                }
                &self.injected
            }
            Outcome::Skipped { reason, .. } => {
                let i = SkipReason::ALL
                    .iter()
                    .position(|r| r == reason)
                    .unwrap_or(0);
                &self.skipped[i]
            }
            Outcome::NotSelected => &self.not_selected,
            Outcome::AlreadyInjected => &self.already_injected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a review that could not be read (answered 400/413).
    pub fn record_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let skipped_total: u64 = self.skipped.iter().map(get).sum();
        let mut out = String::new();
        out.push_str(
            "# HELP whouses_webhook_reviews_total Admission reviews answered, by result.\n",
        );
        out.push_str("# TYPE whouses_webhook_reviews_total counter\n");
        for (result, n) in [
            ("injected", get(&self.injected)),
            ("skipped", skipped_total),
            ("not_selected", get(&self.not_selected)),
            ("already_injected", get(&self.already_injected)),
            ("malformed", get(&self.malformed)),
        ] {
            let _ = writeln!(
                out,
                "whouses_webhook_reviews_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP whouses_webhook_injected_total Pods given the sidecar.\n");
        out.push_str("# TYPE whouses_webhook_injected_total counter\n");
        let _ = writeln!(
            out,
            "whouses_webhook_injected_total {}",
            get(&self.injected)
        );
        out.push_str("# HELP whouses_webhook_injected_with_warnings_total Pods given the sidecar with a warning (e.g. a container that keeps its own proxy).\n");
        out.push_str("# TYPE whouses_webhook_injected_with_warnings_total counter\n");
        let _ = writeln!(
            out,
            "whouses_webhook_injected_with_warnings_total {}",
            get(&self.injected_with_warnings)
        );
        out.push_str("# HELP whouses_webhook_skipped_total Pods selected for injection but admitted without the sidecar, by reason.\n");
        out.push_str("# TYPE whouses_webhook_skipped_total counter\n");
        for (reason, c) in SkipReason::ALL.iter().zip(&self.skipped) {
            let _ = writeln!(
                out,
                "whouses_webhook_skipped_total{{reason=\"{}\"}} {}",
                reason.label(),
                get(c)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_counted_under_their_labels() {
        let m = Metrics::default();
        m.record(&Outcome::Injected {
            service: "a".into(),
            environment: "b".into(),
            warnings: vec!["w".into()],
        });
        m.record(&Outcome::Skipped {
            reason: SkipReason::InvalidEnvironment,
            detail: "d".into(),
        });
        m.record(&Outcome::Skipped {
            reason: SkipReason::InvalidEnvironment,
            detail: "d".into(),
        });
        m.record(&Outcome::NotSelected);
        m.record_malformed();
        let text = m.render();
        for line in [
            "whouses_webhook_injected_total 1",
            "whouses_webhook_injected_with_warnings_total 1",
            "whouses_webhook_skipped_total{reason=\"invalid_environment\"} 2",
            "whouses_webhook_skipped_total{reason=\"host_network\"} 0",
            "whouses_webhook_reviews_total{result=\"skipped\"} 2",
            "whouses_webhook_reviews_total{result=\"not_selected\"} 1",
            "whouses_webhook_reviews_total{result=\"malformed\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
