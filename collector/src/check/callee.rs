//! `check`'s callee side (issue 14): what the inbound sidecars in front of the host saw,
//! and how it weighs against the callers' side. Pure, like [`super::decide`]:
//!
//! * any inbound call within the quiet period, attributed or not, means `in-use`;
//! * callee-side sidecars that reported through the whole period and saw nothing make it
//!   `unused` **on the callee's evidence**, even when a past caller's sidecar went quiet
//!   (unless they folded calls into `(other)` meanwhile);
//! * callee-side sidecars that did not report throughout are a doubt when the callee had
//!   seen callers no caller-side sidecar reports for (a caller without a sidecar, or one
//!   going around it): those may still call.

use whouses_wire::api::{CalleeEvidence, Caller, Disagreement, SeenBy, Unattributed, Verdict};
use whouses_wire::{counts, Timestamp};

use super::{name_some, Inbound};
use crate::reconcile;
use crate::targets::HostPattern;

/// The callee's evidence about one host, digested.
#[derive(Debug, Default)]
pub(super) struct CalleeView {
    /// The callee-side services and their reporting.
    pub side: Vec<CalleeEvidence>,
    /// Callers the callee saw within the window (merged with their own side's counts).
    pub callers: Vec<Caller>,
    /// Caller addresses within the window that no sidecar held.
    pub unattributed: Vec<Unattributed>,
    pub disagreements: Vec<Disagreement>,
    /// Calls the callee saw within the window (whole hour buckets).
    pub calls_in_window: u64,
    /// Every callee-side service reported through the window.
    covered: bool,
    /// Calls the witnesses folded into `(other)` within the window.
    folded: u64,
    /// Past callers only the callee saw: unattributed addresses, services around their
    /// sidecars or without one.
    past_unseen: Vec<String>,
}

impl CalleeView {
    pub fn of(
        inb: &Inbound<'_>,
        patterns: &[HostPattern],
        host: &str,
        window_start: Timestamp,
        now: Timestamp,
        caller_side_in_window: &[Caller],
        caller_side: &[Caller],
    ) -> CalleeView {
        let (mut rows, mut attributions) = (Vec::new(), Vec::new());
        for (r, a) in inb.rows.iter().zip(inb.attributions) {
            if r.counts.last_seen >= window_start {
                rows.push(r.clone());
                attributions.push(a.clone());
            }
        }
        let calls_in_window = rows
            .iter()
            .fold(0u64, |n, r| counts::add(n, r.counts.calls()));
        let merged = reconcile::merge(caller_side_in_window.to_vec(), &rows, &attributions, None);
        let disagreements = reconcile::disagreements(&merged.callers, host);
        let witnesses: Vec<_> = inb.witnesses.iter().collect();
        let side = reconcile::callee_evidence(
            &witnesses,
            inb.coverage,
            patterns,
            inb.rows,
            window_start,
            now,
        );
        let covered = !side.is_empty() && side.iter().all(|s| s.reporting_through_window);
        let folded = inb
            .folded
            .iter()
            .filter(|r| r.counts.last_seen >= window_start)
            .filter(|r| {
                side.iter()
                    .any(|s| s.service == r.service && s.environment == r.environment)
            })
            .fold(0u64, |n, r| counts::add(n, r.counts.calls()));
        // Past callers the callers' side cannot vouch for: seen by the callee alone (none
        // when the callee side saw nothing: no need to copy every caller to find out).
        let past_unseen = if inb.rows.is_empty() {
            Vec::new()
        } else {
            let past = reconcile::merge(caller_side.to_vec(), inb.rows, inb.attributions, None);
            past.callers
                .iter()
                .filter(|c| c.seen_by == SeenBy::Callee)
                .map(|c| c.service.clone())
                .chain(past.unattributed.iter().map(|u| u.address.clone()))
                .collect()
        };
        CalleeView {
            side,
            callers: merged
                .callers
                .into_iter()
                .filter(|c| c.seen_by != SeenBy::Caller)
                .collect(),
            unattributed: merged.unattributed,
            disagreements,
            calls_in_window,
            covered,
            folded,
            past_unseen,
        }
    }

    /// The sentences an `in-use` reason gets from the callee side.
    pub fn in_use_parts(&self, quiet: &str) -> Vec<String> {
        let mut parts = Vec::new();
        if self.calls_in_window > 0 {
            let who: Vec<String> = self
                .callers
                .iter()
                .map(|c| c.service.clone())
                .chain(
                    self.unattributed
                        .iter()
                        .map(|u| format!("{} (unattributed)", u.address)),
                )
                .collect();
            parts.push(format!(
                "the callee saw {} call(s) within the last {quiet}, from {}",
                self.calls_in_window,
                name_some(&who)
            ));
        }
        parts.extend(self.disagreements.iter().map(|d| d.message.clone()));
        parts
    }

    fn names(&self) -> String {
        let names: Vec<String> = self
            .side
            .iter()
            .map(|s| format!("{} ({})", s.service, s.environment))
            .collect();
        name_some(&names)
    }

    /// Weigh the callers' verdict (not `in-use`) against the callee's evidence.
    /// `past_callers`: the callers' side knows of any (else its `unused` says nothing).
    pub fn judge(
        &self,
        verdict: Verdict,
        reason: String,
        host: &str,
        quiet: &str,
        past_callers: bool,
    ) -> (Verdict, String) {
        if self.covered && self.folded == 0 {
            let decided = format!(
                "on the callee's evidence: the callee ({}) saw no calls to {host} for {quiet} and reported throughout",
                self.names()
            );
            return if verdict == Verdict::Unused {
                (
                    Verdict::Unused,
                    format!("{decided}; the callers' side agrees ({reason})"),
                )
            } else {
                (
                    Verdict::Unused,
                    format!("{decided} (the callers' side alone would not tell: {reason})"),
                )
            };
        }
        let mut doubts = Vec::new();
        if self.folded > 0 {
            doubts.push(format!(
                "the inbound sidecars of {} folded {} call(s) into (other) at --max-hosts, which may include calls to {host}",
                self.names(),
                self.folded
            ));
        }
        if !self.covered && !self.past_unseen.is_empty() {
            doubts.push(format!(
                "the callee saw calls from callers no sidecar of theirs reports ({}), and its inbound sidecars ({}) did not report through the whole period, so they may still call it",
                name_some(&self.past_unseen),
                if self.side.is_empty() { "none left".to_string() } else { self.names() }
            ));
        } else if !self.covered && !self.side.is_empty() && verdict == Verdict::Unknown {
            doubts.push(format!(
                "the callee-side sidecars ({}) did not report through the whole period either",
                self.names()
            ));
        } else if !self.covered && !self.side.is_empty() && !past_callers {
            doubts.push(format!(
                "no call to {host} was ever recorded, and the callee-side sidecars ({}) did not report through the whole period",
                self.names()
            ));
        }
        match (doubts.is_empty(), verdict) {
            (true, v) => (v, reason),
            (false, Verdict::Unused) => (
                Verdict::Unknown,
                format!("no calls for {quiet}, but {}", doubts.join("; and ")),
            ),
            (false, v) => (v, format!("{reason}; and {}", doubts.join("; and "))),
        }
    }
}
