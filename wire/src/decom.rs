//! The decommission workflow's answers, as JSON: owners, watches and their alerts
//! (`/v1/watches`), the migration view (`/v1/migration`), the difference between two
//! periods (`/v1/diff`), timelines (`/v1/timeline`) and the dashboard (`/v1/dashboard`).
//! The collector builds them, the `whouses` CLI and the web page read them. These names
//! are the public interface, like [`crate::api`]'s.

use serde::{Deserialize, Serialize};

use crate::host::Scheme;
use crate::time::Timestamp;

/// Who owns a service: a team and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub team: String,
    /// How to reach the team (a channel, an address, a rota), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Where the owner comes from.
    pub source: OwnerSource,
}

impl Owner {
    /// "payments (#payments-oncall)", or just the team.
    pub fn describe(&self) -> String {
        match &self.contact {
            Some(c) => format!("{} ({c})", self.team),
            None => self.team.clone(),
        }
    }
}

/// Where an owner comes from: the collector's `--owners` file (an operator's mapping,
/// which wins) or the service's sidecars (`--owner`, e.g. from a pod label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OwnerSource {
    OwnersFile,
    Sidecar,
}

/// Why a watch fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// A caller called the host after the watch's cutoff (`--from`).
    TrafficAfterCutoff,
    /// A caller's calls to the host fail (refused, timed out, 5xx) since the watch began:
    /// something was switched off too early.
    FailingCalls,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::TrafficAfterCutoff => "traffic-after-cutoff",
            AlertKind::FailingCalls => "failing-calls",
        }
    }

    pub fn parse(s: &str) -> Option<AlertKind> {
        match s {
            "traffic-after-cutoff" => Some(AlertKind::TrafficAfterCutoff),
            "failing-calls" => Some(AlertKind::FailingCalls),
            _ => None,
        }
    }
}

/// The body of `POST /v1/watches`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWatch {
    /// What to watch: a host, `host:port`, `*.suffix` or a target name (as `check`).
    pub host: String,
    /// The cutoff: `now` (the default), an RFC 3339 time (may be in the future: the
    /// planned switch-off), or a duration back from now (`2h`).
    #[serde(default)]
    pub from: Option<String>,
    /// The replacement, when the watch tracks a migration (`OLD` → `to`): the dashboard
    /// and the host pages show its progress.
    #[serde(default)]
    pub to: Option<String>,
    /// Where alerts go: an Alertmanager `…/api/v2/alerts` endpoint, or any URL that takes
    /// a JSON body with a one-line `text` (Slack-compatible).
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// A watch, as `GET /v1/watches` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    pub id: u64,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The cutoff: calls after it fire `traffic-after-cutoff`.
    pub from: Timestamp,
    /// Notification targets, shown without their path and credentials (a Slack webhook's
    /// path is its secret); Alertmanager endpoints in full.
    pub notify: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: Timestamp,
    /// What fired, per caller and kind.
    pub alerts: Vec<WatchAlert>,
    /// Notifications by state, over the retained ones.
    pub deliveries: DeliveryCounts,
}

/// One caller's alert of one kind on a watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchAlert {
    pub kind: AlertKind,
    pub service: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// `traffic-after-cutoff`: calls since the cutoff (hour granularity: the cutoff's hour
    /// counts whole); `failing-calls`: calls since the watch began.
    pub calls: u64,
    /// Failing calls since the watch began.
    pub errors: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    /// When it first fired (collector time).
    pub fired_at: Timestamp,
    /// When a notification was last queued for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<Timestamp>,
    /// Notifications queued for it so far (first one and re-notifications).
    pub notifications: u64,
}

/// Notifications of a watch, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryCounts {
    pub pending: u64,
    pub delivered: u64,
    /// Given up on after retrying (see the collector's log and `last_error`).
    pub failed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchesResponse {
    pub watches: Vec<Watch>,
}

/// Where a caller stands in a migration from one host to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationStatus {
    /// Calls only the new host in the window (or nothing), and reported throughout.
    Done,
    /// Calls both.
    Migrating,
    /// Calls only the old host.
    NotStarted,
    /// Went quiet: its sidecars stopped reporting (or have gaps in the window), so where
    /// it calls now is not known.
    Unknown,
}

impl MigrationStatus {
    /// As people write it: "done", "migrating", "not started", "unknown".
    pub fn label(self) -> &'static str {
        match self {
            MigrationStatus::Done => "done",
            MigrationStatus::Migrating => "migrating",
            MigrationStatus::NotStarted => "not started",
            MigrationStatus::Unknown => "unknown",
        }
    }
}

/// One calling service (in one environment) of a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationCaller {
    pub service: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    pub status: MigrationStatus,
    /// Calls to the old host within the window.
    pub calls_old: u64,
    /// Calls to the new host within the window.
    pub calls_new: u64,
    /// `calls_new / (calls_old + calls_new)`, 0–1; absent when neither was called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_new: Option<f64>,
    /// The last call to the old host (all retained history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_old: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_new: Option<Timestamp>,
    /// Whether its sidecars reported through the whole window (as `check` reasons).
    pub reporting_throughout: bool,
    /// Until when its sidecars have reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<Timestamp>,
    /// One sentence: why this status.
    pub reason: String,
}

/// Callers per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationSummary {
    pub done: usize,
    pub migrating: usize,
    pub not_started: usize,
    pub unknown: usize,
}

impl MigrationSummary {
    pub fn count(&mut self, s: MigrationStatus) {
        match s {
            MigrationStatus::Done => self.done += 1,
            MigrationStatus::Migrating => self.migrating += 1,
            MigrationStatus::NotStarted => self.not_started += 1,
            MigrationStatus::Unknown => self.unknown += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.done + self.migrating + self.not_started + self.unknown
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationResponse {
    pub from: String,
    pub to: String,
    /// The window's start (calls counted from this hour on).
    pub since: Timestamp,
    pub now: Timestamp,
    /// Callers still to repoint first (not started, migrating), then unknown, then done.
    pub callers: Vec<MigrationCaller>,
    pub summary: MigrationSummary,
}

/// A period `[from, to)` of a diff (bucket granularity: hours, days once folded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// How an edge changed between two periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Called in the second period, not in the first.
    Appeared,
    /// Called in the first period, not in the second.
    Vanished,
    /// Calls per hour grew by more than the factor.
    Grew,
    /// Calls per hour shrank by more than the factor.
    Shrank,
}

/// One edge that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeChange {
    pub service: String,
    pub environment: String,
    pub host: String,
    pub port: u16,
    pub scheme: Scheme,
    pub change: Change,
    /// Calls in each period.
    pub before: u64,
    pub after: u64,
    pub before_errors: u64,
    pub after_errors: u64,
    /// After's calls per hour over before's (absent when before had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffResponse {
    pub before: Period,
    pub after: Period,
    /// Changes in volume by more than this factor (either way) are listed.
    pub factor: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Appeared, vanished, grew, shrank; biggest changes first within each.
    pub changes: Vec<EdgeChange>,
    /// Edges called in both periods within the factor (not listed).
    pub unchanged: usize,
}

/// One caller's calls per step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSeries {
    pub service: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// Calls (requests and tunnel connections) per step, aligned with `steps`.
    pub calls: Vec<u64>,
    /// Failing calls per step.
    pub errors: Vec<u64>,
    pub total_calls: u64,
    pub total_errors: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineResponse {
    pub host: String,
    pub since: Timestamp,
    pub until: Timestamp,
    /// `1h` or `1d`.
    pub step: String,
    pub step_ms: u64,
    /// The start of each step (UTC hours or days).
    pub steps: Vec<Timestamp>,
    /// Steps before this time come from daily buckets (hours older than the collector's
    /// `--hourly-for` are folded into days): with `step=1h` a day's calls sit in its first
    /// hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_before: Option<Timestamp>,
    /// Busiest first.
    pub callers: Vec<TimelineSeries>,
    /// Callers beyond the answer's limit, summed into a last series `(other callers)`.
    pub more_callers: usize,
}

/// "212 of 215 instances reporting".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetHealth {
    /// Instances that reported within `window_ms`.
    pub instances: usize,
    /// Of those, instances whose last report is within three flush intervals.
    pub reporting: usize,
    pub window_ms: u64,
    /// The silent ones (at most a page of them), longest silent first.
    pub silent: Vec<SilentInstance>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilentInstance {
    pub instance: String,
    pub service: String,
    pub environment: String,
    pub last_report: Timestamp,
}

/// A migration a watch tracks (`watch add OLD --to NEW`), summed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationProgress {
    pub watch: u64,
    pub from: String,
    pub to: String,
    pub cutoff: Timestamp,
    pub summary: MigrationSummary,
}

/// A host whose calls dropped: last 7 days against the 7 days before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietingHost {
    pub host: String,
    pub port: u16,
    pub calls_last_7d: u64,
    pub calls_prev_7d: u64,
    pub last_seen: Timestamp,
    pub callers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardResponse {
    pub now: Timestamp,
    pub fleet: FleetHealth,
    pub watches: Vec<Watch>,
    pub migrations: Vec<MigrationProgress>,
    /// Hosts called less than half as much in the last 7 days as in the 7 before, the
    /// biggest drops first.
    pub quieting_hosts: Vec<QuietingHost>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_the_wire_are_kebab_case() {
        assert_eq!(
            serde_json::to_value(AlertKind::TrafficAfterCutoff).unwrap(),
            serde_json::json!("traffic-after-cutoff")
        );
        assert_eq!(
            serde_json::to_value(MigrationStatus::NotStarted).unwrap(),
            serde_json::json!("not-started")
        );
        assert_eq!(MigrationStatus::NotStarted.label(), "not started");
        assert_eq!(
            serde_json::to_value(OwnerSource::OwnersFile).unwrap(),
            serde_json::json!("owners-file")
        );
        for k in [AlertKind::TrafficAfterCutoff, AlertKind::FailingCalls] {
            assert_eq!(AlertKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn a_new_watch_refuses_unknown_fields() {
        let e = serde_json::from_str::<NewWatch>(r#"{"host": "a", "notfiy": []}"#).unwrap_err();
        assert!(e.to_string().contains("notfiy"), "{e}");
        let w: NewWatch = serde_json::from_str(r#"{"host": "a"}"#).unwrap();
        assert_eq!(w.host, "a");
        assert!(w.notify.is_empty());
    }
}
