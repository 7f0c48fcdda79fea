//! OpenTelemetry (issue 17), both ways:
//!
//! * [`api`], [`decode`], [`ingest`] — **OTLP ingest**: service-graph metrics
//!   (`traces_service_graph_request_total`, `…_failed_total`) from an OpenTelemetry
//!   Collector, Tempo or Beyla counted as edges whose scheme is `otel` (the source shows
//!   in every answer), so services that run no sidecar are seen too.
//! * [`export`] — **OTLP export**: the stored edges as cumulative sums, under the
//!   service-graph names and whouses' own, pushed to `--otlp-endpoint`.

pub mod api;
pub mod decode;
pub mod export;
pub mod ingest;
