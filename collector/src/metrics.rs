//! The collector's Prometheus metrics: ingest batches and edges, rejects by reason, and
//! request latency by route.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

pub struct ApiMetrics {
    registry: Registry,
    batches: Family<Outcome, Counter>,
    edges: Counter,
    rejects: Family<Reason, Counter>,
    latency: Family<Route, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    pub fn new() -> ApiMetrics {
        let mut registry = Registry::with_prefix("whouses_collector");
        let batches = Family::<Outcome, Counter>::default();
        let edges = Counter::default();
        let rejects = Family::<Reason, Counter>::default();
        let latency = Family::<Route, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "ingest_batches",
            "Report batches received, by outcome (stored, duplicate)",
            batches.clone(),
        );
        registry.register("ingest_edges", "Edges stored from batches", edges.clone());
        registry.register(
            "ingest_rejects",
            "Report batches rejected, by reason",
            rejects.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "API request latency by route",
            latency.clone(),
        );
        ApiMetrics {
            registry,
            batches,
            edges,
            rejects,
            latency,
        }
    }

    pub fn ingested(&self, edges: u64) {
        self.batches
            .get_or_create(&Outcome { outcome: "stored" })
            .inc();
        self.edges.inc_by(edges);
    }

    pub fn duplicate(&self) {
        self.batches
            .get_or_create(&Outcome {
                outcome: "duplicate",
            })
            .inc();
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejects.get_or_create(&Reason { reason }).inc();
    }

    pub fn observe(&self, route: &str, took: Duration) {
        self.latency
            .get_or_create(&Route {
                route: route.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The registry, for other parts of the collector to register their metrics in
    /// (the decommission workflow's, `watch::Live`).
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode(out, &self.registry)
    }
}
