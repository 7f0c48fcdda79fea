//! The shutdown signal every server waits on: SIGTERM (what Kubernetes, systemd and ECS
//! send) or SIGINT (Ctrl-C).

/// Completes on SIGTERM or SIGINT, logging which.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(error) => {
            tracing::error!(%error, "Cannot watch SIGTERM; only SIGINT will stop this process.");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down."),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received; shutting down."),
    }
}
