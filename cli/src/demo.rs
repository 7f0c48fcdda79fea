//! `whouses demo`: the whole loop on loopback, in under 30 seconds.
//!
//! It replays the story that motivated whouses: a reference-data service moves behind a new
//! load-balancer name; some consumers are repointed, some are not. The demo starts the real
//! programs — a `whouses-collector` (SQLite in a temporary directory) and one
//! `whouses-sidecar` per consumer, found next to this `whouses` binary or on `PATH` — and
//! two small upstreams in this process; the consumers' calls go through their sidecars
//! exactly as an app's would. Then it asks the questions a platform team asks before
//! pressing "stop", with the same code as the `whouses` commands, and leaves the
//! collector up to explore (or exits with `--once`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use whouses_plumbing::process::{await_listening, signal, Signal};

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

/// How long a started program has to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// Directory holding whouses-collector and whouses-sidecar (default: next to this
    /// binary, else PATH).
    #[arg(long, env = "WHOUSES_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// A program the demo started; stopped with SIGTERM (then SIGKILL) when dropped.
struct Program {
    name: String,
    child: Child,
}

impl Program {
    /// Start `bin` with `args` and wait for its listening line.
    fn start(
        name: &str,
        bin: &Path,
        args: &[String],
    ) -> anyhow::Result<(Program, whouses_plumbing::process::Listening)> {
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let program = Program {
            name: name.to_string(),
            child,
        };
        let listening = await_listening(stdout, START_TIMEOUT, |_| {})
            .with_context(|| format!("{name} did not start (see its messages above)"))?;
        Ok((program, listening))
    }

    /// SIGTERM, then wait up to `grace` for the orderly exit (final flush included).
    fn stop(mut self, grace: Duration) {
        let _ = signal(&self.child, Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(program = %self.name, "Did not stop in time; killing it.");
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where a sibling program is: `--bin-dir`, next to this executable, else `PATH`.
fn program(bin_dir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    if let Some(dir) = bin_dir.map(Path::to_path_buf).or(beside) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "cannot find {name}: build it (cargo build --release --workspace --bins) or set --bin-dir"
            )
        })
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
    let collector_bin = program(args.bin_dir.as_deref(), "whouses-collector")?;
    let sidecar_bin = program(args.bin_dir.as_deref(), "whouses-sidecar")?;
    let (stop_tx, stop_rx) = watch::channel(false);

    // The collector, as anyone would run it. If the demo's port is taken, any free one.
    let listen = match std::net::TcpListener::bind(&args.listen) {
        Ok(l) => {
            drop(l);
            args.listen.clone()
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            println!(
                "  ({} is in use; the demo's collector takes a free port instead)",
                args.listen
            );
            "127.0.0.1:0".to_string()
        }
        Err(e) => return Err(e).with_context(|| format!("binding {}", args.listen)),
    };
    let db_url = format!("sqlite://{}", db.display());
    let (collector, listening) = Program::start(
        "whouses-collector",
        &collector_bin,
        &["--db".into(), db_url, "--listen".into(), listen],
    )?;
    let collector_addr = listening
        .addr("api")
        .context("the collector did not say where it listens")?;
    let collector_url = format!("http://{collector_addr}");

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
    let mut programs = Vec::new();
    for (service, _) in CONSUMERS {
        let (p, addr) = start_sidecar(&sidecar_bin, service, &collector_url, old_lb, new_lb)?;
        sidecars.push(addr);
        programs.push(p);
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
    crate::run_args(["whouses", "--url", url, "callers", OLD_HOST]).await;
    println!("\n$ whouses check {OLD_HOST} --quiet-for 3s");
    let code = crate::run_args([
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
    let code = crate::run_args([
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
    crate::run_args(["whouses", "--url", url, "callers", NEW_HOST]).await;
    println!("\n  Story told in {:.1}s.", started.elapsed().as_secs_f64());
    if !args.once {
        println!("\n  The collector stays up: open {collector_url}/ in a browser, or try");
        println!("    whouses --url {collector_url} hosts");
        println!("    whouses --url {collector_url} services");
        println!("  Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = stop_tx.send(true);
    // Sidecars drain and ship a final flush before the collector stops.
    tokio::task::spawn_blocking(move || {
        for p in programs {
            p.stop(Duration::from_secs(15));
        }
        collector.stop(Duration::from_secs(15));
    })
    .await
    .context("stopping the demo's programs")?;
    if args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Start one consumer's sidecar; returns it and its proxy address.
fn start_sidecar(
    bin: &Path,
    service: &str,
    collector_url: &str,
    old_lb: SocketAddr,
    new_lb: SocketAddr,
) -> anyhow::Result<(Program, SocketAddr)> {
    let args: Vec<String> = [
        "--service",
        service,
        "--environment",
        "prod",
        "--instance",
        &format!("{service}-demo"),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--collector-url",
        collector_url,
        "--flush-interval",
        "1s",
        "--resolve",
        &format!("{OLD_HOST}:80:{old_lb}"),
        "--resolve",
        &format!("{NEW_HOST}:80:{new_lb}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (p, listening) = Program::start(&format!("sidecar of {service}"), bin, &args)?;
    let proxy = listening
        .addr("proxy")
        .with_context(|| format!("the sidecar of {service} did not say where it listens"))?;
    Ok((p, proxy))
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
