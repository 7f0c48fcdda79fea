//! `whouses-webhook`: the Kubernetes injection webhook (HTTPS). Flags in
//! [`whouses_webhook::server::WebhookConfig`].

use anyhow::Context as _;
use clap::Parser;
use whouses_plumbing::{logging, LogFormat};
use whouses_webhook::server::{run, WebhookConfig};

fn main() {
    let cfg = WebhookConfig::parse();
    if let Err(e) = cfg.inject.validate() {
        // A bad setting must stop the webhook, not reach pods: with failurePolicy Ignore
        // pods are admitted unchanged while it is down.
        eprintln!("whouses-webhook: {e}");
        std::process::exit(2);
    }
    logging::init(LogFormat::Json, "info");
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
                run(cfg, listener, whouses_plumbing::shutdown::signal()).await
            })
        });
    if let Err(e) = result {
        eprintln!("whouses-webhook: {e:#}");
        std::process::exit(1);
    }
}
