//! `whouses-webhook`: the Kubernetes injection webhook (HTTPS). Flags in
//! `whouses_collector::webhook::server::WebhookConfig`.

use anyhow::Context as _;
use clap::Parser;
use whouses_collector::webhook::server::{run, WebhookConfig};

fn main() {
    let cfg = WebhookConfig::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(true)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| {
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(cfg.listen)
                    .await
                    .with_context(|| format!("cannot listen on --listen {}", cfg.listen))?;
                run(cfg, listener, async {
                    use tokio::signal::unix::{signal, SignalKind};
                    match signal(SignalKind::terminate()) {
                        Ok(mut t) => {
                            tokio::select! { _ = t.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
                        }
                        Err(_) => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                })
                .await
            })
        });
    if let Err(e) = result {
        eprintln!("whouses-webhook: {e:#}");
        std::process::exit(1);
    }
}
