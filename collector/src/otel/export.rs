//! **OTLP export**: every `--otlp-interval`, the stored edge totals are pushed to
//! `--otlp-endpoint` (OTLP/HTTP protobuf) as monotonic cumulative sums, through the
//! OpenTelemetry SDK (`opentelemetry_sdk` observable counters, a manual reader) and its
//! OTLP exporter (`opentelemetry-otlp`), sent by our own reqwest client (rustls) so no
//! second HTTP or TLS stack is linked.
//!
//! Metrics (resource `service.name = whouses-collector`):
//! * `traces_service_graph_request_total`, `traces_service_graph_request_failed_total` —
//!   named as the servicegraph connector names them, attributes `client` (the calling
//!   service), `server` (the dialed `host:port`) and `connection_type` (empty: a direct
//!   call, as the connector writes it); calls = requests + tunnel/TCP connections. Edges
//!   that came *from* OTLP (scheme `otel`) are left out here, so a dashboard that already
//!   shows the connector's own series does not count them twice.
//! * `whouses.edge.requests`, `.errors`, `.bytes_sent`, `.bytes_received` — attributes
//!   `service`, `environment`, `host`, `port`, `scheme`: one series per stored edge.
//! * `whouses.export.overflow_edges` — edges beyond `--otlp-max-series` (a gauge).
//!
//! Values are the database's totals, so they are exact, survive a collector restart (the
//! start time changes, the values go on from the stored totals) and are the same
//! whichever replica exports. Replicas on one PostgreSQL database take turns through a
//! lease row (`otel_export_lease`, migration 0008): one exports, renewing its lease of
//! three intervals at every push; another takes over once it has expired. Cardinality: at most `--otlp-max-series` edges get series
//! of their own (the first ones seen since start; sticky, so a series never jumps);
//! the rest are summed into one series per metric whose attributes say `(other)`, and
//! counted in `whouses.export.overflow_edges`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Stream, Temporality,
};
use opentelemetry_sdk::Resource;
use whouses_wire::api::EdgeRow;
use whouses_wire::{counts, Scheme, OTHER_HOST};

use crate::query::host_port;
use crate::store::{EdgeFilter, Store};

/// The OTLP export flags (flattened into the collector's configuration).
#[derive(Debug, Clone, clap::Args)]
pub struct OtlpArgs {
    /// Push the stored edges as OTLP/HTTP protobuf metrics to this URL: the receiver's
    /// base (`http://otel-collector:4318`, `/v1/metrics` is added) or the full metrics
    /// URL (ending in `/v1/metrics`). None: no export.
    #[arg(long, env = "WHOUSES_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<url::Url>,

    /// How often the edges are pushed (the receiver's resolution; a few times a minute is
    /// plenty for edges kept for months).
    #[arg(long, env = "WHOUSES_OTLP_INTERVAL", default_value = "60s")]
    pub otlp_interval: whouses_wire::DurationArg,

    /// A header sent with every push, `K=V` (repeatable), e.g. `Authorization=Bearer …`.
    #[arg(
        long = "otlp-header",
        env = "WHOUSES_OTLP_HEADER",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub otlp_headers: Vec<String>,

    /// Edges exported as series of their own; the rest are summed into `(other)` series.
    /// Bounds what the receiver stores: 6 series per edge (2 service-graph, 4 whouses).
    #[arg(long, env = "WHOUSES_OTLP_MAX_SERIES", default_value_t = 2000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub otlp_max_series: u32,
}

impl OtlpArgs {
    /// Problems with the flags, reported with the others.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(u) = &self.otlp_endpoint {
            if !matches!(u.scheme(), "http" | "https") {
                errors.push(format!(
                    "--otlp-endpoint {u}: must be an http:// or https:// URL"
                ));
            }
        }
        if self.otlp_interval.0 < Duration::from_secs(1)
            || self.otlp_interval.0 > Duration::from_secs(86_400)
        {
            errors.push("--otlp-interval must be 1s to 1d".into());
        }
        if let Err(e) = self.headers() {
            errors.push(e);
        }
        errors
    }

    /// `--otlp-header K=V` as a map.
    pub fn headers(&self) -> Result<HashMap<String, String>, String> {
        let mut out = HashMap::new();
        for h in &self.otlp_headers {
            let Some((k, v)) = h.split_once('=') else {
                return Err(format!("--otlp-header {h:?}: expected NAME=VALUE"));
            };
            let k = k.trim();
            if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || http::HeaderValue::from_str(v.trim()).is_err()
            {
                return Err(format!("--otlp-header {k:?}: not a valid HTTP header"));
            }
            out.insert(k.to_string(), v.trim().to_string());
        }
        Ok(out)
    }

    /// The metrics URL: the endpoint with `/v1/metrics` added unless it is there.
    pub fn metrics_url(&self) -> Option<String> {
        let u = self.otlp_endpoint.as_ref()?;
        let s = u.as_str().trim_end_matches('/');
        Some(if s.ends_with("/v1/metrics") {
            s.to_string()
        } else {
            format!("{s}/v1/metrics")
        })
    }
}

/// The HTTP client the OTLP exporter sends with: our reqwest (rustls, webpki roots),
/// never through a proxy from the environment, with a timeout.
#[derive(Debug, Clone)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self
            .0
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (k, v) in &parts.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        let mut out = http::Response::builder().status(status);
        for (k, v) in &headers {
            out = out.header(k, v);
        }
        Ok(out.body(body)?)
    }
}

/// The reader the provider owns and the export loop collects through.
#[derive(Debug, Clone)]
struct Shared(Arc<ManualReader>);

impl MetricReader for Shared {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, t: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(t)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// One series' attributes and value.
type Series = Vec<(Vec<KeyValue>, u64)>;

/// What the instruments report at the next collection.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub graph_requests: Series,
    pub graph_failed: Series,
    pub requests: Series,
    pub errors: Series,
    pub bytes_sent: Series,
    pub bytes_received: Series,
    /// Edges summed into the `(other)` series.
    pub overflow_edges: u64,
}

/// The key an edge is admitted under.
type EdgeKey = (String, String, String, u16, Scheme);

/// Which edges have series of their own: the first `max` seen (sticky).
#[derive(Debug)]
pub struct Admitted {
    max: usize,
    keys: HashSet<EdgeKey>,
}

impl Admitted {
    pub fn new(max: usize) -> Admitted {
        Admitted {
            max,
            keys: HashSet::new(),
        }
    }

    fn admit(&mut self, e: &EdgeRow) -> bool {
        let k = (
            e.service.clone(),
            e.environment.clone(),
            e.host.clone(),
            e.port,
            e.scheme,
        );
        if self.keys.contains(&k) {
            return true;
        }
        if self.keys.len() < self.max {
            self.keys.insert(k);
            return true;
        }
        false
    }
}

const OTHER: &str = "(other)";

/// The stored edges → the series to report (pure; tested). Edges are taken in the
/// store's order, so which ones are admitted first is deterministic.
pub fn snapshot(edges: &[EdgeRow], admitted: &mut Admitted) -> Snapshot {
    let mut graph: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    type Own = (String, String, String, u16, String);
    let mut own: BTreeMap<Own, [u64; 4]> = BTreeMap::new();
    let mut out = Snapshot::default();
    for e in edges {
        let c = &e.counts;
        let (key, graph_key) = if admitted.admit(e) {
            (
                (
                    e.service.clone(),
                    e.environment.clone(),
                    e.host.clone(),
                    e.port,
                    e.scheme.to_string(),
                ),
                (e.service.clone(), server_name(e)),
            )
        } else {
            out.overflow_edges = out.overflow_edges.saturating_add(1);
            (
                (OTHER.into(), OTHER.into(), OTHER.into(), 0, OTHER.into()),
                (OTHER.to_string(), OTHER.to_string()),
            )
        };
        let v = own.entry(key).or_default();
        for (slot, n) in v
            .iter_mut()
            .zip([c.calls(), c.errors, c.bytes_sent, c.bytes_received])
        {
            *slot = counts::add(*slot, n);
        }
        if e.scheme != Scheme::Otel {
            let g = graph.entry(graph_key).or_default();
            g.0 = counts::add(g.0, c.calls());
            g.1 = counts::add(g.1, c.errors);
        }
    }
    for ((client, server), (calls, failed)) in graph {
        let attrs = vec![
            KeyValue::new("client", client),
            KeyValue::new("server", server),
            KeyValue::new("connection_type", ""),
        ];
        out.graph_requests.push((attrs.clone(), calls));
        out.graph_failed.push((attrs, failed));
    }
    for ((service, environment, host, port, scheme), v) in own {
        let attrs = vec![
            KeyValue::new("service", service),
            KeyValue::new("environment", environment),
            KeyValue::new("host", host),
            KeyValue::new("port", i64::from(port)),
            KeyValue::new("scheme", scheme),
        ];
        out.requests.push((attrs.clone(), v[0]));
        out.errors.push((attrs.clone(), v[1]));
        out.bytes_sent.push((attrs.clone(), v[2]));
        out.bytes_received.push((attrs, v[3]));
    }
    out
}

/// The `server` of an edge: the dialed `host:port` (`(other)` for the fold bucket).
fn server_name(e: &EdgeRow) -> String {
    if e.host == OTHER_HOST {
        OTHER.to_string()
    } else {
        host_port(&e.host, e.port)
    }
}

/// An OTLP exporter ready to push: the provider and its instruments, the reader, the
/// OTLP exporter, and the snapshot the instruments read.
pub struct Exporter {
    provider: SdkMeterProvider,
    reader: Shared,
    exporter: opentelemetry_otlp::MetricExporter,
    current: Arc<Mutex<Snapshot>>,
    admitted: Admitted,
    url: String,
    /// This process, as the holder of the export lease.
    holder: String,
    /// How long a lease lasts: three intervals, so one slow push does not lose it.
    lease_ms: i64,
    leading: bool,
}

impl Exporter {
    /// Build from the flags; `None` when no `--otlp-endpoint` is given.
    pub fn new(args: &OtlpArgs) -> anyhow::Result<Option<Exporter>> {
        let Some(url) = args.metrics_url() else {
            return Ok(None);
        };
        let headers = args.headers().map_err(anyhow::Error::msg)?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()?;
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(Client(client))
            .with_endpoint(url.clone())
            .with_headers(headers)
            .with_timeout(Duration::from_secs(30))
            .with_temporality(Temporality::Cumulative)
            .build()?;
        let reader = Shared(Arc::new(
            ManualReader::builder()
                .with_temporality(Temporality::Cumulative)
                .build(),
        ));
        // One series per admitted edge plus the (other) one; the SDK's own limit (2000 by
        // default) must not fold them a second time.
        let limit = usize::try_from(args.otlp_max_series)
            .unwrap_or(usize::MAX)
            .saturating_add(2);
        let provider = SdkMeterProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("whouses-collector")
                    .build(),
            )
            .with_reader(reader.clone())
            .with_view(move |_: &opentelemetry_sdk::metrics::Instrument| {
                Stream::builder().with_cardinality_limit(limit).build().ok()
            })
            .build();
        let current = Arc::new(Mutex::new(Snapshot::default()));
        register(&provider, &current);
        Ok(Some(Exporter {
            provider,
            reader,
            exporter,
            current,
            admitted: Admitted::new(usize::try_from(args.otlp_max_series).unwrap_or(usize::MAX)),
            url,
            holder: format!(
                "{}-{}-{}",
                std::env::var("HOSTNAME").unwrap_or_default(),
                std::process::id(),
                whouses_wire::Timestamp::now().0
            ),
            lease_ms: i64::try_from(args.otlp_interval.0.as_millis())
                .unwrap_or(i64::MAX / 4)
                .saturating_mul(3),
            leading: false,
        }))
    }

    /// Read the stored edges and push them once, if this replica holds the export
    /// lease (replicas on one PostgreSQL database take turns: one exports at a time).
    pub async fn push(&mut self, store: &dyn Store) -> anyhow::Result<()> {
        let now = whouses_wire::Timestamp::now().0;
        let lead = store
            .otel_export_lease(&self.holder, now, now.saturating_add(self.lease_ms))
            .await?;
        if lead != self.leading {
            tracing::info!(
                holder = %self.holder,
                "{}",
                if lead {
                    "This replica now exports the edges over OTLP."
                } else {
                    "Another replica exports the edges over OTLP; this one waits."
                }
            );
            self.leading = lead;
        }
        if !lead {
            return Ok(());
        }
        let edges = store.edges(&EdgeFilter::default()).await?;
        let snap = snapshot(&edges, &mut self.admitted);
        if snap.overflow_edges > 0 {
            tracing::debug!(
                overflow = snap.overflow_edges,
                "More edges than --otlp-max-series: the rest are exported as (other)."
            );
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = snap;
        let mut rm = ResourceMetrics::default();
        self.reader.collect(&mut rm)?;
        self.exporter.export(&rm).await?;
        Ok(())
    }

    /// Push every `interval` until `shutdown`, then once more.
    pub async fn run(
        mut self,
        store: Arc<dyn Store>,
        interval: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tracing::info!(endpoint = %self.url, every = ?interval, "Exporting edges over OTLP.");
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = &mut shutdown => break,
            }
            if let Err(error) = self.push(store.as_ref()).await {
                tracing::warn!(%error, endpoint = %self.url, "Failed to export edges over OTLP.");
            }
        }
        if let Err(error) = self.push(store.as_ref()).await {
            tracing::warn!(%error, endpoint = %self.url, "Failed the final OTLP export.");
        }
        if self.leading {
            // Hand the lease back (expired at once), so a replica or the next start of
            // this one exports without waiting for it to run out.
            let now = whouses_wire::Timestamp::now().0;
            if let Err(error) = store.otel_export_lease(&self.holder, now, 0).await {
                tracing::warn!(%error, "Failed to release the OTLP export lease.");
            }
        }
        let _ = self.provider.shutdown();
    }
}

/// A counter: name, description, unit, and the part of the snapshot it reports.
type Counter = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Snapshot) -> &Series,
);

/// The instruments, each reading its part of the current snapshot at collection.
fn register(provider: &SdkMeterProvider, current: &Arc<Mutex<Snapshot>>) {
    let meter = provider.meter("whouses-collector");
    let counters: [Counter; 6] = [
        (
            "traces_service_graph_request_total",
            "Calls from client to server (whouses: requests + connections).",
            "{request}",
            |s| &s.graph_requests,
        ),
        (
            "traces_service_graph_request_failed_total",
            "Failed calls from client to server.",
            "{request}",
            |s| &s.graph_failed,
        ),
        (
            "whouses.edge.requests",
            "Calls per edge (requests + tunnel/TCP connections).",
            "{request}",
            |s| &s.requests,
        ),
        (
            "whouses.edge.errors",
            "Failed calls per edge.",
            "{request}",
            |s| &s.errors,
        ),
        (
            "whouses.edge.bytes_sent",
            "Bytes the caller sent per edge.",
            "By",
            |s| &s.bytes_sent,
        ),
        (
            "whouses.edge.bytes_received",
            "Bytes the caller received per edge.",
            "By",
            |s| &s.bytes_received,
        ),
    ];
    for (name, description, unit, pick) in counters {
        let current = current.clone();
        // The instrument lives as long as the provider (its callback is registered there).
        let _ = meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_unit(unit)
            .with_callback(move |o| {
                let s = current.lock().unwrap_or_else(PoisonError::into_inner);
                for (attrs, v) in pick(&s) {
                    o.observe(*v, attrs);
                }
            })
            .build();
    }
    let current = current.clone();
    let _ = meter
        .u64_observable_gauge("whouses.export.overflow_edges")
        .with_description("Edges beyond --otlp-max-series, exported summed as (other).")
        .with_unit("{edge}")
        .with_callback(move |o| {
            let s = current.lock().unwrap_or_else(PoisonError::into_inner);
            o.observe(s.overflow_edges, &[]);
        })
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;
    use whouses_wire::{Counts, Timestamp};

    fn edge(service: &str, host: &str, port: u16, scheme: Scheme, requests: u64) -> EdgeRow {
        EdgeRow {
            service: service.into(),
            environment: "prod".into(),
            host: host.into(),
            port,
            scheme,
            counts: Counts {
                requests,
                connections: 1,
                errors: 1,
                first_seen: Timestamp(1),
                last_seen: Timestamp(2),
                ..Counts::default()
            },
        }
    }

    #[test]
    fn overflow_is_summed_counted_and_sticky() {
        let edges = vec![
            edge("a", "x", 80, Scheme::Http, 10),
            edge("b", "y", 443, Scheme::Https, 20),
            edge("c", "z", 80, Scheme::Http, 30),
            edge("d", "svc", 0, Scheme::Otel, 5),
        ];
        let mut adm = Admitted::new(2);
        let s = snapshot(&edges, &mut adm);
        assert_eq!(s.overflow_edges, 2);
        assert_eq!(s.requests.len(), 3, "two edges and (other)");
        let other: u64 = s
            .requests
            .iter()
            .filter(|(a, _)| a[0].value.as_str() == OTHER)
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(other, 31 + 6);
        // The otel edge is not re-exported under the service-graph names.
        assert_eq!(
            s.graph_requests.iter().map(|(_, v)| *v).sum::<u64>(),
            11 + 21 + 31
        );
        // A new edge sorting first does not push an admitted one out.
        let mut more = vec![edge("0", "w", 80, Scheme::Http, 1)];
        more.extend(edges);
        let s = snapshot(&more, &mut adm);
        assert_eq!(s.overflow_edges, 3);
        assert!(s.requests.iter().any(|(a, _)| a[0].value.as_str() == "a"));
    }

    #[test]
    fn flags_are_checked() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            o: OtlpArgs,
        }
        let t = T::try_parse_from([
            "t",
            "--otlp-endpoint",
            "http://otel:4318",
            "--otlp-header",
            "Authorization=Bearer x",
        ])
        .unwrap();
        assert!(t.o.problems().is_empty());
        assert_eq!(t.o.metrics_url().unwrap(), "http://otel:4318/v1/metrics");
        let t = T::try_parse_from(["t", "--otlp-endpoint", "ftp://x", "--otlp-header", "nope"])
            .unwrap();
        let p = t.o.problems().join("; ");
        assert!(
            p.contains("--otlp-endpoint") && p.contains("--otlp-header"),
            "{p}"
        );
    }
}
