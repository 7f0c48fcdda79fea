//! Shared vocabulary of whouses: what a sidecar sends and how names are normalised.
//!
//! * [`report`] — the versioned JSON batch a sidecar posts to `POST /v1/reports`.
//! * [`host`] — parsing and normalising the upstream host a caller dialed (the count key).
//! * [`time`] — millisecond timestamps that travel as RFC 3339 strings.
//! * [`duration`] — `500ms`, `10s`, `5m`, `7d` as used by every flag and query parameter.

pub mod duration;
pub mod host;
pub mod report;
pub mod time;

pub use duration::{parse_duration, DurationArg};
pub use host::{HostError, HostPort, Scheme};
pub use report::{Edge, Report, ReportError, MAX_EDGES_PER_REPORT, OTHER_HOST, REPORT_VERSION};
pub use time::Timestamp;
