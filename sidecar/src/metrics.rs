//! The sidecar's Prometheus metrics: client connections, and the count totals read from
//! the counters at scrape time (so the hot path pays nothing extra for them).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::counters::Counters;

#[derive(Clone, Default)]
pub struct ProxyMetrics {
    pub accepted: Counter,
    pub refused: Counter,
    pub not_http: Counter,
    pub open: Gauge,
}

impl ProxyMetrics {
    pub fn register(registry: &mut Registry, counters: Arc<Counters>) -> ProxyMetrics {
        let m = ProxyMetrics::default();
        let r = registry.sub_registry_with_prefix("whouses_sidecar");
        r.register(
            "client_connections_accepted",
            "Client connections accepted",
            m.accepted.clone(),
        );
        r.register(
            "client_connections_refused",
            "Client connections refused by --allow-from",
            m.refused.clone(),
        );
        r.register(
            "client_connections_not_http",
            "Client connections that did not start with an HTTP request (e.g. TLS sent to the plain proxy port)",
            m.not_http.clone(),
        );
        r.register(
            "client_connections_open",
            "Client connections open now",
            m.open.clone(),
        );
        registry.register_collector(Box::new(CountTotals(counters)));
        m
    }
}

/// Sums over every key, computed when scraped.
#[derive(Debug)]
struct CountTotals(Arc<Counters>);

impl Collector for CountTotals {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut t = [0u64; 5];
        for (_, v) in self.0.snapshot() {
            t[0] += v.requests;
            t[1] += v.connections;
            t[2] += v.errors;
            t[3] += v.bytes_sent;
            t[4] += v.bytes_received;
        }
        let names = [
            (
                "whouses_sidecar_requests",
                "Requests forwarded, over all upstream keys",
            ),
            (
                "whouses_sidecar_upstream_connections",
                "Upstream connections and tunnels opened",
            ),
            (
                "whouses_sidecar_errors",
                "Failed calls (connect failures, 5xx, broken bodies)",
            ),
            (
                "whouses_sidecar_bytes_sent",
                "Body and tunnel bytes sent upstream",
            ),
            (
                "whouses_sidecar_bytes_received",
                "Body and tunnel bytes received from upstream",
            ),
        ];
        for ((name, help), value) in names.into_iter().zip(t) {
            let c = ConstCounter::new(value);
            let e = encoder.encode_descriptor(name, help, None, c.metric_type())?;
            c.encode(e)?;
        }
        for (name, help, value) in [
            (
                "whouses_sidecar_keys",
                "Distinct upstream keys tracked",
                self.0.len() as i64,
            ),
            (
                "whouses_sidecar_max_hosts",
                "The --max-hosts bound",
                self.0.max_hosts() as i64,
            ),
        ] {
            let g = ConstGauge::new(value);
            let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(e)?;
        }
        let c = ConstCounter::new(self.0.folded());
        let e = encoder.encode_descriptor(
            "whouses_sidecar_folded_keys",
            "New keys folded into (other) because of --max-hosts",
            None,
            c.metric_type(),
        )?;
        c.encode(e)?;
        Ok(())
    }
}
