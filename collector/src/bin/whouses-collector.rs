//! `whouses-collector`: parse flags, set up logging, bind, serve until SIGTERM/SIGINT.

use anyhow::Context as _;
use clap::Parser;
use whouses_collector::config::{Config, LogFormat};

fn main() {
    let config = Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| rt.block_on(serve(config)));
    if let Err(e) = result {
        tracing::error!(error = %format!("{e:#}"), "Collector failed.");
        eprintln!("whouses-collector: {e:#}");
        std::process::exit(1);
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    whouses_collector::run(config, listener, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; finishing in-flight requests."),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; finishing in-flight requests."),
    }
}
