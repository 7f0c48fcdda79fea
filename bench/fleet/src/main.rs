//! `whouses-fleet`: a realistic fleet against a real collector. It spawns
//! `whouses-collector` on a fresh SQLite file, ingests N days of daily reports from
//! S services calling H hosts (skewed popularity, a few rare monthly callers), then
//! measures query latency. Prints one Markdown table.
//!
//! Full run (the targets of PRODUCT.md): `whouses-fleet` (2,000 services, 50,000 hosts,
//! 90 days). Smoke: `whouses-fleet --smoke`.

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
    /// hour bucket for every edge once). This is the sustained ingest rate.
    #[arg(long, default_value_t = 60)]
    live_rounds: u64,
    /// Timed queries per kind for callers and check.
    #[arg(long, default_value_t = 300)]
    queries: usize,
    /// The collector binary (default: next to this one).
    #[arg(long)]
    collector_bin: Option<PathBuf>,
    /// Working directory for the database.
    #[arg(long, default_value = "target/bench/fleet")]
    dir: PathBuf,
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
    let db = a.dir.join("fleet.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let bin = match &a.collector_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent dir")?
            .join("whouses-collector"),
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--db",
            &format!("sqlite://{}", db.display()),
            "--max-body-bytes",
            "67108864",
            // The history is ingested now, about the past: let it count as coverage.
            "--max-backfill",
            "400d",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut collector = Collector(child);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let t = Instant::now();
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(30),
            "collector did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut rng = StdRng::seed_from_u64(42);
    let fleet = generate(&a, &mut rng);
    let base = Timestamp::now().0 - (a.days + 1) * DAY;
    eprintln!("Ingesting {} days × {} services …", a.days, a.services);
    let post_all = |reports: Vec<Vec<u8>>| {
        let http = http.clone();
        let url = format!("{url}/v1/reports");
        let concurrency = a.concurrency;
        async move {
            let t = Instant::now();
            let results: Vec<anyhow::Result<()>> = stream::iter(reports)
                .map(|body| {
                    let http = http.clone();
                    let url = url.clone();
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
            Ok::<Duration, anyhow::Error>(took)
        }
    };
    let mut edge_days = 0u64;
    let mut ingest_time = Duration::ZERO;
    for day in 0..a.days {
        let reports: Vec<Vec<u8>> = (0..a.services)
            .map(|s| report(&fleet, s, day, base, &mut rng))
            .map(|r| {
                edge_days += r.edges.len() as u64;
                serde_json::to_vec(&r).expect("reports encode")
            })
            .collect();
        ingest_time += post_all(reports).await?;
    }
    eprintln!("Live: {} rounds of 10-second batches …", a.live_rounds);
    let mut live_edges = 0u64;
    let mut live_time = Duration::ZERO;
    for round in 0..a.live_rounds {
        let reports: Vec<Vec<u8>> = (0..a.services)
            .map(|s| live_report(&fleet, s, a.days, round, base, &mut rng))
            .map(|r| {
                live_edges += r.edges.len() as u64;
                serde_json::to_vec(&r).expect("reports encode")
            })
            .collect();
        live_time += post_all(reports).await?;
    }
    let live_per_s = live_edges as f64 / live_time.as_secs_f64().max(1e-9);
    let edges_per_s = edge_days as f64 / ingest_time.as_secs_f64();
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
    let mut lat: Vec<(&str, Vec<Duration>)> = Vec::new();
    for (kind, n) in [
        ("callers", a.queries),
        ("check", a.queries),
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
                "hosts" => "/v1/hosts".to_string(),
                _ => "/v1/export?format=csv".to_string(),
            };
            samples.push(query(path).await?);
        }
        samples.sort();
        lat.push((kind, samples));
    }

    // Stop the collector (SIGTERM: it finishes, checkpoints the WAL into the file and
    // removes it), then weigh the database.
    let _ = Command::new("kill")
        .args(["-TERM", &collector.0.id().to_string()])
        .status();
    let t = Instant::now();
    while collector.0.try_wait()?.is_none() && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db_bytes: u64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", db.display())).ok())
        .map(|m| m.len())
        .sum();

    let mut table = String::new();
    table.push_str(&format!(
        "Fleet: {} services, {} hosts, {} days, {} edge-days ingested (SQLite, {} concurrent POSTs)\n\n",
        a.services, a.hosts, a.days, edge_days, a.concurrency
    ));
    table.push_str("| measure | value |\n|---|---:|\n");
    table.push_str(&format!(
        "| sustained ingest, live (10-second batches of every service, {} rounds) | {:.0} edges/s ({} edges in {:.1} s) |\n",
        a.live_rounds,
        live_per_s,
        live_edges,
        live_time.as_secs_f64()
    ));
    table.push_str(&format!(
        "| history load (one daily batch per service and day) | {:.0} edges/s ({:.1} s) |\n",
        edges_per_s,
        ingest_time.as_secs_f64()
    ));
    table.push_str(&format!(
        "| database size | {:.1} MiB ({:.1} MiB per million edge-days) |\n",
        db_bytes as f64 / 1_048_576.0,
        db_bytes as f64 / 1_048_576.0 / (edge_days as f64 / 1e6)
    ));
    for (kind, s) in &lat {
        table.push_str(&format!(
            "| `{kind}` p50 / p99 (n={}) | {} / {} |\n",
            s.len(),
            ms(percentile(s, 0.5)),
            ms(percentile(s, 0.99))
        ));
    }
    println!("{table}");
    if let Some(out) = &a.out {
        std::fs::write(out, &table).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
