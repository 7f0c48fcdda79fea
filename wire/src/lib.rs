//! Shared vocabulary of whouses: what a sidecar sends and how names are normalised.
//!
//! * [`report`] — the versioned JSON batch a sidecar posts to `POST /v1/reports`.
//! * [`inbound`] — the callee's view in a batch: side, inbound calls per caller address,
//!   the names an inbound sidecar witnesses, the address book.
//! * [`counts`] — the one count record (requests, connections, errors, bytes, first and
//!   last seen) and its saturating merge, from a batch to every answer.
//! * [`api`] — the collector's answers (callers, callees, hosts, services, check).
//! * [`decom`] — the decommission workflow's answers: owners, watches and alerts, the
//!   migration view, diffs, timelines, the dashboard.
//! * [`host`] — parsing and normalising the upstream host a caller dialed (the count key).
//! * [`time`] — millisecond timestamps that travel as RFC 3339 strings.
//! * [`fuzzing`] — the properties the fuzz targets check (`wire/fuzz`).
//! * [`duration`] — `500ms`, `10s`, `5m`, `7d` as used by every flag and query parameter.

pub mod api;
pub mod counts;
pub mod decom;
pub mod duration;
pub mod fuzzing;
pub mod host;
pub mod inbound;
pub mod report;
pub mod time;

pub use counts::{Counts, MAX_COUNT};
pub use duration::{parse_duration, DurationArg};
pub use host::{HostError, HostPort, Scheme};
pub use inbound::{InboundEdge, Side};
pub use report::{
    Bypass, Edge, Lookup, Report, ReportError, MAX_EDGES_PER_REPORT, OTHER_HOST, REPORT_VERSION,
};
pub use time::Timestamp;
