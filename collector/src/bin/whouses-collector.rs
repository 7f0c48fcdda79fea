//! `whouses-collector`: parse flags, set up logging, bind, serve until SIGTERM/SIGINT.

use anyhow::Context as _;
use clap::Parser;
use whouses_collector::config::Config;

fn main() {
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("whouses-collector: {e}");
        std::process::exit(2);
    }
    whouses_plumbing::logging::init(config.log_format, "info");
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
        .and_then(|rt| {
            if config.upkeep_once {
                rt.block_on(whouses_collector::upkeep_once(&config))
            } else {
                rt.block_on(serve(config))
            }
        });
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
    whouses_collector::run(config, listener, whouses_plumbing::shutdown::signal()).await
}
