//! `whouses-fleet`: a realistic fleet against a real collector, on SQLite and — with
//! `--postgres URL` — on PostgreSQL, same data, same machine, one run. For each backend it
//! spawns `whouses-collector` on a fresh database, ingests N days of daily reports from S
//! services calling H hosts (skewed popularity, a few rare monthly callers, one host
//! called by 1,000 services), then live 10-second rounds (on PostgreSQL once more through
//! two replicas on the one database, POSTs alternating), then measures query latency.
//! Prints one Markdown table, a column per backend.
//!
//! Full run (the targets of PRODUCT.md): `whouses-fleet [--postgres URL]` (2,000
//! services, 50,000 hosts, 90 days). Smoke: `whouses-fleet --smoke`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures_util::stream::{self, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use whouses_wire::{Counts, Edge, Report, Scheme, Timestamp, REPORT_VERSION};

const DAY: i64 = 86_400_000;
/// Services calling host 0.
const HUB_CALLERS: usize = 1_000;
/// The database the PostgreSQL run creates (and drops first) on the server.
const PG_DATABASE: &str = "whouses_fleet";

#[derive(Debug, Parser)]
#[command(
    name = "whouses-fleet",
    about = "Fleet benchmark of the whouses collector"
)]
struct Args {
    #[arg(long, default_value_t = 2_000)]
    services: usize,
    #[arg(long, default_value_t = 50_000)]
    hosts: usize,
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// Distinct upstreams each service calls.
    #[arg(long, default_value_t = 30)]
    hosts_per_service: usize,
    /// Concurrent report POSTs (a fleet's sidecars post independently: many at once).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Live rounds after the history: every service sends one 10-second batch per round,
    /// as running sidecars do (60 rounds: ten minutes of fleet time, which starts a new
    /// hour bucket for every edge once). This is the sustained ingest rate. PostgreSQL runs
    /// as many again through two replicas.
    #[arg(long, default_value_t = 60)]
    live_rounds: u64,
    /// The collectors' `--max-concurrent-ingest`: batches inside the collector at once,
    /// so the most a group commit can gather (the collector's default is 16; with 64
    /// POSTs in flight, 128 lets every waiting batch join a group).
    #[arg(long, default_value_t = 128)]
    max_concurrent_ingest: u32,
    /// Timed queries per kind for callers and check.
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// Requests per shape of the sweep after the steady-state queries: every window and
    /// host pattern of `check`, `callers` and the decommission views, once each backend
    /// (0: no sweep). An answer slow only for some window or pattern does not show in
    /// the timed queries above, which use one of each.
    #[arg(long, default_value_t = 5)]
    sweep: usize,
    /// The collector binary (default: next to this one).
    #[arg(long)]
    collector_bin: Option<PathBuf>,
    /// Working directory for the SQLite database.
    #[arg(long, default_value = "target/bench/fleet")]
    dir: PathBuf,
    /// Also run on PostgreSQL: a server URL we may create the database `whouses_fleet` on
    /// (dropped first). `bench/run.sh` starts a throwaway cluster and passes it.
    #[arg(long, env = "WHOUSES_FLEET_POSTGRES_URL")]
    postgres: Option<String>,
    /// Skip the SQLite run.
    #[arg(long)]
    no_sqlite: bool,
    /// Write the table here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Tiny sizes, for the test suite: seconds, not minutes.
    #[arg(long)]
    smoke: bool,
}

struct Fleet {
    /// Per service: (host index, port, daily requests, monthly-only).
    edges: Vec<Vec<(usize, u16, u64, bool)>>,
}

fn host_name(i: usize) -> String {
    format!("svc-{i}.ns-{}.svc.cluster.local", i % 200)
}

fn generate(a: &Args, rng: &mut StdRng) -> Fleet {
    let edges = (0..a.services)
        .map(|s| {
            let mut mine: Vec<(usize, u16, u64, bool)> =
                Vec::with_capacity(a.hosts_per_service + 1);
            while mine.len() < a.hosts_per_service.min(a.hosts) {
                // Skewed popularity: low indices are popular (a few shared platform services).
                let u: f64 = rng.gen();
                let h = ((a.hosts as f64) * u.powf(2.5)) as usize % a.hosts;
                if mine.iter().any(|e| e.0 == h) {
                    continue;
                }
                let port = [443, 80, 8080][h % 3];
                let volume = (1_000_000.0 / (h as f64 + 10.0)) as u64 + rng.gen_range(1..50);
                mine.push((h, port, volume, false));
            }
            // The first 1,000 services all call host 0 (the platform's most popular
            // service): `callers` and `check` are timed on it separately.
            if s < HUB_CALLERS && !mine.iter().any(|e| e.0 == 0) {
                mine.push((0, [443, 80, 8080][0], 1_000_000 / 10, false));
            }
            // One service in 20 also has a rare monthly caller edge (a batch job).
            if s % 20 == 0 {
                mine.push((a.hosts - 1 - (s % a.hosts.max(1)), 443, 3, true));
            }
            mine
        })
        .collect();
    Fleet { edges }
}

fn report(f: &Fleet, s: usize, day: i64, base: i64, rng: &mut StdRng) -> Report {
    let start = base + day * DAY;
    let edges = f.edges[s]
        .iter()
        .filter(|e| {
            if e.3 {
                day % 30 == 0
            } else {
                rng.gen_bool(0.9)
            }
        })
        .map(|&(h, port, volume, _)| Edge {
            host: host_name(h),
            port,
            scheme: if port == 443 {
                Scheme::Https
            } else {
                Scheme::Http
            },
            counts: Counts {
                requests: volume,
                connections: 1 + volume / 1000,
                errors: volume / 500,
                bytes_sent: volume * 200,
                bytes_received: volume * 1500,
                first_seen: Timestamp(start + 1_000),
                last_seen: Timestamp(start + DAY - 1_000),
            },
        })
        .collect();
    Report {
        version: REPORT_VERSION,
        service: format!("service-{s}"),
        environment: "prod".into(),
        instance: format!("service-{s}-0"),
        seq: day as u64 + 1,
        started_at: Timestamp(base),
        period_start: Timestamp(start),
        period_end: Timestamp(start + DAY),
        flush_interval_ms: DAY as u64 / 100,
        edges,
        ..Default::default()
    }
}

/// A running sidecar's 10-second batch: the same edges, each with ten seconds' share of
/// its daily traffic, in the hour before now.
fn live_report(f: &Fleet, s: usize, days: i64, round: u64, base: i64, rng: &mut StdRng) -> Report {
    let mut r = report(f, s, 0, base, rng);
    let start = Timestamp::now().0 - 3_600_000 + round as i64 * 10_000;
    r.seq = days as u64 + 1 + round;
    r.period_start = Timestamp(start);
    r.period_end = Timestamp(start + 10_000);
    r.flush_interval_ms = 10_000;
    for e in &mut r.edges {
        e.counts.requests = e.counts.requests / 8_640 + 1;
        e.counts.first_seen = Timestamp(start + 100);
        e.counts.last_seen = Timestamp(start + 9_900);
    }
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Collector(Child);
impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Collector {
    /// Start one on `db` and wait until it answers; returns it and its base URL.
    async fn start(
        bin: &PathBuf,
        db: &str,
        slots: u32,
        http: &reqwest::Client,
    ) -> anyhow::Result<(Collector, String)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--db",
                db,
                "--max-body-bytes",
                "67108864",
                "--max-concurrent-ingest",
                &slots.to_string(),
                // The history is ingested now, about the past: let it count as coverage.
                "--max-backfill",
                "400d",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let c = Collector(child);
        let t = Instant::now();
        while http.get(format!("{url}/healthz")).send().await.is_err() {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(60),
                "collector did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok((c, url))
    }

    /// SIGTERM, and wait for the exit (SQLite folds its WAL into the file on the way).
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while self.0.try_wait()?.is_none() && t.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

/// Which database a run uses.
enum Backend {
    Sqlite(PathBuf),
    Postgres { admin: String },
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "SQLite",
            Backend::Postgres { .. } => "PostgreSQL",
        }
    }

    /// A fresh, empty database; its `--db` URL.
    fn fresh(&self) -> anyhow::Result<String> {
        match self {
            Backend::Sqlite(db) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
                }
                Ok(format!("sqlite://{}", db.display()))
            }
            Backend::Postgres { admin } => {
                psql(
                    admin,
                    &format!("DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"),
                )?;
                psql(admin, &format!("CREATE DATABASE {PG_DATABASE}"))?;
                let (base, _) = admin
                    .rsplit_once('/')
                    .context("the PostgreSQL URL names no database")?;
                Ok(format!("{base}/{PG_DATABASE}"))
            }
        }
    }

    /// Bytes the database takes.
    fn size(&self) -> anyhow::Result<u64> {
        match self {
            Backend::Sqlite(db) => Ok(["", "-wal"]
                .iter()
                .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
                .map(|m| m.len())
                .sum()),
            Backend::Postgres { admin } => {
                let out = psql(admin, &format!("SELECT pg_database_size('{PG_DATABASE}')"))?;
                out.trim().parse().context("pg_database_size")
            }
        }
    }
}

/// Run SQL with psql (it comes with the server); returns its unaligned output.
fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .context("running psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// POST every body, `concurrency` at once, spread over the replicas in turn; the time
/// it took.
async fn post_all(
    http: &reqwest::Client,
    replicas: &[String],
    reports: Vec<Vec<u8>>,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let results: Vec<anyhow::Result<()>> = stream::iter(reports.into_iter().enumerate())
        .map(|(i, body)| {
            let http = http.clone();
            let url = format!("{}/v1/reports", replicas[i % replicas.len()]);
            async move {
                let r = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(r.status().is_success(), "ingest answered {}", r.status());
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let took = t.elapsed();
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(took)
}

/// What one backend measured.
struct Measured {
    edge_days: u64,
    history: (u64, Duration),
    live: (u64, Duration),
    live_two: Option<(u64, Duration)>,
    /// After the upkeep: the steady state.
    lat: Vec<(&'static str, Vec<Duration>)>,
    /// Right after the load, before the upkeep folded it.
    lat_loaded: Vec<(&'static str, Vec<Duration>)>,
    /// The sweep (steady state): each shape's path and its latencies, sorted.
    sweep: Vec<(String, Vec<Duration>)>,
    /// The upkeep round after the load (the fold of the history).
    upkeep: Duration,
    /// Database size after the upkeep, and before it (right after the load).
    bytes: u64,
    bytes_loaded: u64,
}

fn rate((edges, took): (u64, Duration)) -> String {
    format!(
        "{:.0} edges/s ({} in {:.1} s)",
        edges as f64 / took.as_secs_f64().max(1e-9),
        edges,
        took.as_secs_f64()
    )
}

async fn run(
    a: &Args,
    backend: &Backend,
    bin: &PathBuf,
    http: &reqwest::Client,
) -> anyhow::Result<Measured> {
    let db = backend.fresh()?;
    let (collector, url) = Collector::start(bin, &db, a.max_concurrent_ingest, http).await?;
    // PostgreSQL's second replica starts now, on the empty database, as the first did: a
    // collector's upkeep runs at its start, and one started after the history would fold
    // 76 days of hourly buckets in the middle of the measurement.
    let second = match backend {
        Backend::Postgres { .. } => {
            Some(Collector::start(bin, &db, a.max_concurrent_ingest, http).await?)
        }
        Backend::Sqlite(_) => None,
    };
    // The same fleet and the same reports on every backend.
    let mut rng = StdRng::seed_from_u64(42);
    let fleet = generate(a, &mut rng);
    let base = Timestamp::now().0 - (a.days + 1) * DAY;
    eprintln!(
        "{}: ingesting {} days × {} services …",
        backend.name(),
        a.days,
        a.services
    );
    let mut edge_days = 0u64;
    let mut history = Duration::ZERO;
    for day in 0..a.days {
        let reports: Vec<Vec<u8>> = (0..a.services)
            .map(|s| report(&fleet, s, day, base, &mut rng))
            .map(|r| {
                edge_days += r.edges.len() as u64;
                serde_json::to_vec(&r).expect("reports encode")
            })
            .collect();
        history += post_all(http, std::slice::from_ref(&url), reports, a.concurrency).await?;
    }
    let live_rounds = |from: u64, rng: &mut StdRng| {
        let mut all = Vec::new();
        let mut edges = 0u64;
        for round in from..from + a.live_rounds {
            let reports: Vec<Vec<u8>> = (0..a.services)
                .map(|s| live_report(&fleet, s, a.days, round, base, rng))
                .map(|r| {
                    edges += r.edges.len() as u64;
                    serde_json::to_vec(&r).expect("reports encode")
                })
                .collect();
            all.push(reports);
        }
        (all, edges)
    };
    eprintln!(
        "{}: live, {} rounds of 10-second batches …",
        backend.name(),
        a.live_rounds
    );
    let (rounds, edges) = live_rounds(0, &mut rng);
    let mut took = Duration::ZERO;
    for r in rounds {
        took += post_all(http, std::slice::from_ref(&url), r, a.concurrency).await?;
    }
    let live = (edges, took);
    let live_two = match &second {
        Some((_, b_url)) => {
            eprintln!("{}: live through two replicas …", backend.name());
            let (rounds, edges) = live_rounds(a.live_rounds, &mut rng);
            let replicas = [url.clone(), b_url.clone()];
            let mut took = Duration::ZERO;
            for r in rounds {
                took += post_all(http, &replicas, r, a.concurrency).await?;
            }
            Some((edges, took))
        }
        None => None,
    };

    // Queries right after the load: 90 days of hourly rows, as a collector holds them
    // only until its upkeep runs (or with --hourly-for 90d).
    let mut qrng = rng.clone();
    let lat_loaded = queries(a, http, &url, &mut qrng).await?;
    if let Some((b, _)) = second {
        b.stop().await?;
    }
    collector.stop().await?;
    // Then the steady state of a running collector: its hourly upkeep folds the rows
    // older than --hourly-for into daily ones. Run it once now, timed (what an upgraded
    // or backfilled database takes), and measure the same queries again.
    let bytes_loaded = backend.size()?;
    eprintln!("{}: the upkeep (--upkeep-once) …", backend.name());
    let t = Instant::now();
    let status = Command::new(bin)
        .args(["--db", &db, "--upkeep-once"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {} --upkeep-once", bin.display()))?;
    anyhow::ensure!(status.success(), "--upkeep-once failed: {status}");
    let upkeep = t.elapsed();
    let (collector, url) = Collector::start(bin, &db, a.max_concurrent_ingest, http).await?;
    let mut qrng = rng.clone();
    let lat = queries(a, http, &url, &mut qrng).await?;
    let sweep = sweep(a, http, &url).await?;
    collector.stop().await?;
    let bytes = backend.size()?;
    Ok(Measured {
        edge_days,
        history: (edge_days, history),
        live,
        live_two,
        lat,
        lat_loaded,
        sweep,
        upkeep,
        bytes,
        bytes_loaded,
    })
}

/// The paths of the sweep: `check` and `callers` at every window and host pattern (the
/// busiest host, a middling one, the least called, ten hosts by `*.suffix`, a
/// `host:port`, a name never seen), and the decommission views.
fn sweep_paths(a: &Args) -> Vec<String> {
    let hub = host_name(0);
    let mid = host_name(5.min(a.hosts - 1));
    let tail = host_name(a.hosts - 1);
    let suffix = "%2A.ns-0.svc.cluster.local";
    let mut v = Vec::new();
    for w in ["1h", "1d", "7d", "20d", "30d", "89d"] {
        v.push(format!("/v1/check?host={hub}&quiet_for={w}"));
    }
    for w in ["7d", "30d"] {
        v.push(format!("/v1/check?host={mid}&quiet_for={w}"));
        v.push(format!("/v1/check?host={tail}&quiet_for={w}"));
        v.push(format!("/v1/check?host={suffix}&quiet_for={w}"));
    }
    v.push(format!("/v1/check?host={hub}:443&quiet_for=7d"));
    v.push("/v1/check?host=never-seen.internal&quiet_for=7d".to_string());
    v.push(format!("/v1/callers?host={hub}"));
    for w in ["1h", "7d", "30d", "90d"] {
        v.push(format!("/v1/callers?host={hub}&since={w}"));
    }
    for w in ["7d", "30d"] {
        v.push(format!("/v1/callers?host={suffix}&since={w}"));
    }
    v.push("/v1/callees?service=service-0&since=30d".to_string());
    v.push(format!("/v1/timeline?host={hub}&since=7d"));
    v.push(format!("/v1/timeline?host={hub}&since=30d&step=1d"));
    v.push(format!("/v1/timeline?host={suffix}&since=7d"));
    v.push(format!("/v1/diff?before=14d..7d&after=7d..now&host={hub}"));
    v.push(format!("/v1/migration?from={hub}&to={mid}&since=7d"));
    for p in ["/v1/dashboard", "/v1/services", "/v1/coverage?since=7d"] {
        v.push(p.to_string());
    }
    v
}

/// Each sweep path `a.sweep` times, one after another; every answer must be a success.
async fn sweep(
    a: &Args,
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<Vec<(String, Vec<Duration>)>> {
    let mut out = Vec::new();
    if a.sweep == 0 {
        return Ok(out);
    }
    for path in sweep_paths(a) {
        let mut samples = Vec::with_capacity(a.sweep);
        for _ in 0..a.sweep {
            let t = Instant::now();
            let r = http.get(format!("{url}{path}")).send().await?;
            let status = r.status();
            let body = r.bytes().await?;
            anyhow::ensure!(
                status.is_success(),
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            samples.push(t.elapsed());
        }
        samples.sort();
        out.push((path, samples));
    }
    Ok(out)
}

/// The timed queries, the same sequence for the same `rng` state.
async fn queries(
    a: &Args,
    http: &reqwest::Client,
    url: &str,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<(&'static str, Vec<Duration>)>> {
    let query = |path: String| {
        let http = http.clone();
        let url = format!("{url}{path}");
        async move {
            let t = Instant::now();
            let r = http.get(url).send().await?;
            anyhow::ensure!(r.status().is_success(), "query answered {}", r.status());
            let _ = r.bytes().await?;
            Ok::<Duration, anyhow::Error>(t.elapsed())
        }
    };
    let mut lat: Vec<(&'static str, Vec<Duration>)> = Vec::new();
    let hub = host_name(0);
    for (kind, n) in [
        ("callers", a.queries),
        ("check", a.queries),
        // As many as for random hosts: the p99 of 100 samples is the second slowest, so
        // one stall moved it by milliseconds from run to run.
        ("callers-hub", a.queries),
        ("check-hub", a.queries),
        ("check-hub-7d", a.queries / 3),
        ("hosts", 5),
        ("export", 3),
    ] {
        let mut samples = Vec::new();
        for i in 0..n {
            let u: f64 = rng.gen();
            let h = if i % 10 == 0 {
                a.hosts - 1 - (i % 50)
            } else {
                ((a.hosts as f64) * u.powf(2.5)) as usize % a.hosts
            };
            let path = match kind {
                "callers" => format!("/v1/callers?host={}", host_name(h)),
                "check" => format!("/v1/check?host={}&quiet_for=30d", host_name(h)),
                "callers-hub" => format!("/v1/callers?host={hub}"),
                "check-hub" => format!("/v1/check?host={hub}&quiet_for=30d"),
                // A window younger than the upkeep's fold (14 days): no daily row in it.
                "check-hub-7d" => format!("/v1/check?host={hub}&quiet_for=7d"),
                "hosts" => "/v1/hosts".to_string(),
                _ => "/v1/export?format=csv".to_string(),
            };
            samples.push(query(path).await?);
        }
        samples.sort();
        lat.push((kind, samples));
    }
    Ok(lat)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut a = Args::parse();
    if a.smoke {
        a.live_rounds = 3;
        a.services = 20;
        a.hosts = 200;
        a.days = 3;
        a.hosts_per_service = 5;
        a.queries = 10;
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let bin = match &a.collector_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir")?
            .join("whouses-collector"),
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut backends = Vec::new();
    if !a.no_sqlite {
        backends.push(Backend::Sqlite(a.dir.join("fleet.db")));
    }
    if let Some(admin) = &a.postgres {
        backends.push(Backend::Postgres {
            admin: admin.clone(),
        });
    }
    let mut results = Vec::new();
    for b in &backends {
        results.push(run(&a, b, &bin, &http).await?);
    }

    let names: Vec<&str> = backends.iter().map(Backend::name).collect();
    let edge_days = results.first().map(|m| m.edge_days).unwrap_or(0);
    let mut t = String::new();
    t.push_str(&format!(
        "Fleet: {} services, {} hosts ({} callers of the busiest), {} days, {} edge-days ingested ({}; {} concurrent POSTs, --max-concurrent-ingest {})\n\n",
        a.services,
        a.hosts,
        HUB_CALLERS.min(a.services),
        a.days,
        edge_days,
        names.join(" and "),
        a.concurrency,
        a.max_concurrent_ingest
    ));
    t.push_str(&format!(
        "| measure | {} |\n|---|{}\n",
        names.join(" | "),
        "---:|".repeat(names.len())
    ));
    let row = |t: &mut String, label: String, f: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = results.iter().map(f).collect();
        t.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    };
    row(
        &mut t,
        format!(
            "sustained ingest, live (10-second batches of every service, {} rounds), one collector",
            a.live_rounds
        ),
        &|m| rate(m.live),
    );
    row(
        &mut t,
        format!(
            "sustained ingest, live, two replicas on one database ({} rounds more)",
            a.live_rounds
        ),
        &|m| {
            m.live_two
                .map(rate)
                .unwrap_or_else(|| "— (one writer)".into())
        },
    );
    row(
        &mut t,
        "history load (one daily batch per service and day)".into(),
        &|m| rate(m.history),
    );
    let size = |bytes: u64, edge_days: u64| {
        format!(
            "{:.1} MiB ({:.1} MiB per million edge-days)",
            bytes as f64 / 1_048_576.0,
            bytes as f64 / 1_048_576.0 / (edge_days.max(1) as f64 / 1e6)
        )
    };
    row(&mut t, "database size, right after the load".into(), &|m| {
        size(m.bytes_loaded, m.edge_days)
    });
    row(
        &mut t,
        "database size after the upkeep (freed pages kept in the file)".into(),
        &|m| size(m.bytes, m.edge_days),
    );
    let labels = [
        ("callers", "`callers` p50 / p99".to_string()),
        ("check", "`check` p50 / p99".to_string()),
        (
            "callers-hub",
            format!(
                "`callers` of the host with {} callers, p50 / p99",
                HUB_CALLERS.min(a.services)
            ),
        ),
        (
            "check-hub",
            format!(
                "`check` of the host with {} callers, p50 / p99",
                HUB_CALLERS.min(a.services)
            ),
        ),
        (
            "check-hub-7d",
            format!(
                "`check` of the host with {} callers, 7-day window, p50 / p99",
                HUB_CALLERS.min(a.services)
            ),
        ),
        ("hosts", "`hosts` p50 / p99".to_string()),
        ("export", "`export` p50 / p99".to_string()),
    ];
    row(
        &mut t,
        "upkeep after the load (`--upkeep-once`: folds the hourly rows older than 14 days)".into(),
        &|m| format!("{:.1} s", m.upkeep.as_secs_f64()),
    );
    // The steady state (after the upkeep) first; then the same queries right after the
    // load, before it.
    for (loaded, suffix) in [(false, ""), (true, ", right after the load (not folded)")] {
        for (kind, label) in &labels {
            let pick = |m: &Measured| -> Vec<Duration> {
                let lat = if loaded { &m.lat_loaded } else { &m.lat };
                lat.iter()
                    .find(|l| l.0 == *kind)
                    .map(|l| l.1.clone())
                    .unwrap_or_default()
            };
            let n = results.first().map(|m| pick(m).len()).unwrap_or(0);
            row(&mut t, format!("{label}{suffix} (n={n})"), &|m| {
                let s = pick(m);
                format!("{} / {}", ms(percentile(&s, 0.5)), ms(percentile(&s, 0.99)))
            });
        }
    }
    if let Some(first) = results.first().filter(|m| !m.sweep.is_empty()) {
        t.push_str(&format!(
            "\nEvery window and pattern, steady state: p50 / slowest of {} requests each\n\n| path | {} |\n|---|{}\n",
            a.sweep,
            names.join(" | "),
            "---:|".repeat(names.len())
        ));
        for (i, (path, _)) in first.sweep.iter().enumerate() {
            let cells: Vec<String> = results
                .iter()
                .map(|m| match m.sweep.get(i) {
                    Some((_, s)) => format!(
                        "{} / {}",
                        ms(percentile(s, 0.5)),
                        ms(s.last().copied().unwrap_or_default())
                    ),
                    None => "—".to_string(),
                })
                .collect();
            t.push_str(&format!(
                "| `{}` | {} |\n",
                path.replace("%2A", "*"),
                cells.join(" | ")
            ));
        }
    }
    println!("{t}");
    if let Some(out) = &a.out {
        std::fs::write(out, &t).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
