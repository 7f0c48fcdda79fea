//! `whouses demo`: the whole loop on loopback, in one process, in under 30 seconds.
//!
//! It replays the story that motivated whouses: a reference-data service moves behind a new
//! load-balancer name; some consumers are repointed, some are not. A real collector (SQLite
//! in a temporary directory), real sidecars and real upstreams run in-process on
//! 127.0.0.1; the consumers' calls go through their sidecars exactly as an app's would.
//! Then the demo asks the questions a platform team asks before pressing "stop", using the
//! same code as the `whouses` CLI, and leaves the collector up to explore (or exits with
//! `--once`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The old load-balancer name that some consumers still call.
pub const OLD_HOST: &str = "tis-reference.internal";
/// The new load-balancer name of the moved reference service.
pub const NEW_HOST: &str = "reference.tis-lb.internal";

/// Consumers of the reference service, and whether they were repointed to the new name.
const CONSUMERS: &[(&str, bool)] = &[
    ("tis-trainee-ui", true),
    ("tis-admin-ui", true),
    ("tis-notification-generator", false),
    ("tis-concerns", false),
    ("tis-bulk-upload", false),
    ("tis-profile", false),
    ("tis-sync", false),
];

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Tell the story, print the answers and exit instead of leaving the collector up.
    #[arg(long, env = "WHOUSES_ONCE")]
    pub once: bool,
    /// Where the demo's collector listens (API and web page). Port 0 picks a free one.
    #[arg(
        long = "listen",
        env = "WHOUSES_DEMO_LISTEN",
        default_value = "127.0.0.1:7070"
    )]
    pub listen: String,
    /// Directory for the demo's SQLite file (default: a new temporary directory).
    #[arg(long, env = "WHOUSES_DEMO_DIR")]
    pub dir: Option<PathBuf>,
}

/// Run the demo; returns when done (`--once`) or on Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            let d = std::env::temp_dir().join(format!("whouses-demo-{}", std::process::id()));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
    };
    let db = dir.join("whouses-demo.db");
    let _ = std::fs::remove_file(&db);
    // Sidecars and upstreams stop first (their final flush needs the collector), then
    // the collector.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (collector_stop_tx, collector_stop_rx) = watch::channel(false);

    // The collector, exactly as `whouses-collector --db sqlite://… --listen …` runs it.
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            println!(
                "  ({} is in use; the demo's collector takes {} instead)",
                args.listen,
                l.local_addr()?
            );
            l
        }
        Err(e) => return Err(e).with_context(|| format!("binding {}", args.listen)),
    };
    let collector_addr = listener.local_addr()?;
    let collector_url = format!("http://{collector_addr}");
    let db_url = format!("sqlite://{}", db.display());
    let config = crate::config::Config::try_parse_from([
        "whouses-collector",
        "--db",
        db_url.as_str(),
        "--listen",
        &collector_addr.to_string(),
    ])
    .context("building the demo collector's configuration")?;
    let collector = tokio::spawn(crate::run(config, listener, stopped(collector_stop_rx)));

    // The reference service, reachable by its old and its new load-balancer name.
    let old_lb = start_upstream("old load balancer", stop_rx.clone()).await?;
    let new_lb = start_upstream("new load balancer", stop_rx.clone()).await?;

    println!("whouses demo — who still uses {OLD_HOST}?\n");
    println!("  The reference-data service moved behind a new load balancer, {NEW_HOST}.");
    println!("  Two consumers were repointed; five were not. Each consumer calls out through");
    println!("  its own whouses-sidecar, which counts every call and ships the counts to the");
    println!(
        "  collector at {collector_url} (SQLite: {}).\n",
        db.display()
    );

    let mut sidecars = Vec::new();
    let mut sidecar_tasks = Vec::new();
    for (service, _) in CONSUMERS {
        let (addr, task) =
            start_sidecar(service, &collector_url, old_lb, new_lb, stop_rx.clone()).await?;
        sidecars.push(addr);
        sidecar_tasks.push(task);
    }

    // Act 1: each consumer calls the reference service through its sidecar; five of
    // them still use the old name.
    let client = reqwest::Client::builder().no_proxy().build()?;
    let sent = traffic(&sidecars, |repointed| repointed).await?;
    println!(
        "  Act 1: {sent} calls through {} sidecars; waiting for the next flush …\n",
        sidecars.len()
    );
    wait_for_total(&client, &collector_url, sent).await?;
    let url = collector_url.as_str();
    println!("$ whouses callers {OLD_HOST}");
    crate::cli::run_args(["whouses", "--url", url, "callers", OLD_HOST]).await;
    println!("\n$ whouses check {OLD_HOST} --quiet-for 3s");
    let code = crate::cli::run_args([
        "whouses",
        "--url",
        url,
        "check",
        OLD_HOST,
        "--quiet-for",
        "3s",
    ])
    .await;
    println!("  (exit code {code}: a pipeline gating on it refuses to stop the old instance)\n");

    // Act 2: the five are repointed too. The sidecars keep reporting (heartbeats), so
    // after a quiet period whouses can say the old name is unused — not merely unseen.
    println!("  Act 2: the five are repointed; the old name goes quiet while every");
    println!("  sidecar keeps reporting. Waiting out a 3-second quiet period …\n");
    let sent2 = traffic(&sidecars, |_| true).await?;
    wait_for_total(&client, &collector_url, sent + sent2).await?;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    println!("$ whouses check {OLD_HOST} --quiet-for 3s");
    let code = crate::cli::run_args([
        "whouses",
        "--url",
        url,
        "check",
        OLD_HOST,
        "--quiet-for",
        "3s",
    ])
    .await;
    println!("  (exit code {code}: safe to switch off — every past caller reported throughout)\n");
    println!("$ whouses callers {NEW_HOST}");
    crate::cli::run_args(["whouses", "--url", url, "callers", NEW_HOST]).await;
    println!("\n  Story told in {:.1}s.", started.elapsed().as_secs_f64());
    if args.once {
        let _ = stop_tx.send(true);
    } else {
        println!("\n  The collector stays up: open {collector_url}/ in a browser, or try");
        println!("    whouses --url {collector_url} hosts");
        println!("    whouses --url {collector_url} services");
        println!("  Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    }
    // Sidecars drain and ship a final flush before the collector stops.
    for task in sidecar_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    let _ = collector_stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), collector).await {
        Ok(Ok(result)) => result?,
        Ok(Err(e)) => anyhow::bail!("the demo collector task failed: {e}"),
        Err(_) => anyhow::bail!("the demo collector did not stop within 10s"),
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// A future that completes when the demo is told to stop.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Start one consumer's sidecar in-process; returns its proxy address.
async fn start_sidecar(
    service: &str,
    collector_url: &str,
    old_lb: SocketAddr,
    new_lb: SocketAddr,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let proxy = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = proxy.local_addr()?;
    let resolve_old = format!("{OLD_HOST}:80:{old_lb}");
    let resolve_new = format!("{NEW_HOST}:80:{new_lb}");
    let config = whouses_sidecar::config::Config::try_parse_from([
        "whouses-sidecar",
        "--service",
        service,
        "--environment",
        "prod",
        "--instance",
        &format!("{service}-demo"),
        "--collector-url",
        collector_url,
        "--flush-interval",
        "1s",
        "--resolve",
        &resolve_old,
        "--resolve",
        &resolve_new,
    ])
    .with_context(|| format!("building the sidecar configuration for {service}"))?;
    let service = service.to_string();
    let task = tokio::spawn(async move {
        if let Err(error) = whouses_sidecar::run(config, proxy, admin, stopped(stop)).await {
            tracing::error!(%error, service, "Demo sidecar failed.");
        }
    });
    Ok((proxy_addr, task))
}

/// One round of calls from every consumer; `uses_new(repointed)` picks the name each
/// calls. Returns how many calls were made.
async fn traffic(sidecars: &[SocketAddr], uses_new: impl Fn(bool) -> bool) -> anyhow::Result<u64> {
    let mut sent = 0u64;
    for round in 0..5u64 {
        for (i, ((service, repointed), proxy)) in CONSUMERS.iter().zip(sidecars).enumerate() {
            let host = if uses_new(*repointed) {
                NEW_HOST
            } else {
                OLD_HOST
            };
            // A different, fixed number of calls per consumer makes the counts legible.
            for _ in 0..(i as u64 % 3) + 1 {
                call(*proxy, host, &format!("/v1/reference/grades?round={round}"))
                    .await
                    .with_context(|| format!("{service} calling {host}"))?;
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// Wait until the collector has stored `sent` calls in total (sidecars flush every second).
async fn wait_for_total(client: &reqwest::Client, url: &str, sent: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let total = total_requests(client, url).await.unwrap_or(0);
        if total >= sent {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the collector has {total} of {sent} calls after 20s; see the logs above"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One call from a consumer through its sidecar.
async fn call(proxy: SocketAddr, host: &str, path: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{proxy}"))?)
        .build()?;
    let resp = client.get(format!("http://{host}{path}")).send().await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    Ok(())
}

/// Total requests the collector has stored, over all callers of both names.
async fn total_requests(client: &reqwest::Client, base: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    for host in [OLD_HOST, NEW_HOST] {
        let v: serde_json::Value = client
            .get(format!("{base}/v1/callers"))
            .query(&[("host", host)])
            .send()
            .await?
            .json()
            .await?;
        total += v["callers"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c["requests"].as_u64())
                    .sum::<u64>()
            })
            .unwrap_or(0);
    }
    Ok(total)
}

/// A tiny upstream standing in for the reference service behind one load balancer.
async fn start_upstream(
    name: &'static str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut stop = stop;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |_req| async move {
                            Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                                Bytes::from(format!("{{\"served_by\":\"{name}\"}}\n")),
                            )))
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        }
    });
    Ok(addr)
}
