//! What the store keeps for OTLP ingest (issue 17): one [`OtelSeries`] row per
//! OpenTelemetry service-graph series, saying where the series stands (its latest point
//! and the delta that point added). `crate::otel::ingest` decides; the store only reads
//! rows and advances them by compare-and-set ([`OtelAdvance`]), so replicas (or two
//! deliveries of one export) racing on a series cannot both count the same point.

use whouses_wire::Timestamp;

/// Which count a service-graph series adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OtelField {
    /// `traces_service_graph_request_total`: calls.
    Requests,
    /// `traces_service_graph_request_failed_total`: failed calls.
    Errors,
}

impl OtelField {
    pub fn as_str(self) -> &'static str {
        match self {
            OtelField::Requests => "requests",
            OtelField::Errors => "errors",
        }
    }

    pub fn parse(s: &str) -> Option<OtelField> {
        match s {
            "requests" => Some(OtelField::Requests),
            "errors" => Some(OtelField::Errors),
            _ => None,
        }
    }
}

/// Where one series stands: its latest point. The point's batch is fully determined by
/// this row (instance = `key`, seq = `at`), so it can be stored again after a failure and
/// the store's `(instance, seq)` idempotency keeps it from counting twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSeries {
    /// `otel:<hash>` of the series' identity; also its batches' instance.
    pub key: String,
    /// The client (calling service) and its environment.
    pub service: String,
    pub environment: String,
    /// The server, as a host and a port (0: none named).
    pub host: String,
    pub port: u16,
    pub field: OtelField,
    /// The period the latest point's delta covers, in ms since the epoch.
    pub prev_at: i64,
    pub at: i64,
    /// The latest point's value (cumulative series: the running total).
    pub value: u64,
    /// What the latest point added.
    pub delta: u64,
    /// Whether the latest point's batch is known to be stored.
    pub stored: bool,
}

/// Move a series to `next` if it still stands where the caller read it (`expect_at`:
/// the `at` it read, `None`: the series did not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelAdvance {
    pub expect_at: Option<i64>,
    pub next: OtelSeries,
}

/// Collector time, for the rows' `updated` column.
pub fn updated_now() -> i64 {
    Timestamp::now().0
}
