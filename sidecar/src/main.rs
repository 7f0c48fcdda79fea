//! `whouses-sidecar`: parse flags, set up logging, bind, and run until SIGTERM/SIGINT; or,
//! as `whouses-sidecar iptables …`, set up transparent capture and exit.
//! Once listening it prints one JSON line on stdout with the bound addresses (logs go to
//! stderr).

use std::process::ExitCode;

use clap::Parser;
use whouses_sidecar::config::{Config, LogFormat};

fn main() -> ExitCode {
    // `whouses-sidecar iptables install|uninstall|show`: set up transparent capture (an
    // init container's job), then exit.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "iptables") {
        return whouses_sidecar::capture::iptables::main(args);
    }
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("whouses-sidecar: {e}");
        return ExitCode::from(2);
    }
    init_tracing(config.log_format);
    // One worker: a single-threaded event loop (no work stealing, no cross-thread
    // wake-ups), like HAProxy's nbthread 1. More: the multi-threaded scheduler.
    let mut builder = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.threads as usize);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("whouses-sidecar: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "Sidecar failed.");
            eprintln!("whouses-sidecar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let proxy = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on --listen {}", config.listen))?;
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on --admin-listen {}", config.admin_listen))?;
    let probe = match config.probe_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --probe-listen {addr}"))?,
        ),
        None => None,
    };
    // The bound addresses (port 0 picks one) go to stdout as one JSON line.
    config.announce = true;
    let listeners = whouses_sidecar::Listeners {
        proxy,
        admin,
        probe,
    };
    whouses_sidecar::run_with(config, listeners, shutdown_signal()).await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "Cannot watch SIGTERM; only SIGINT will stop the sidecar.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down."),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down."),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
