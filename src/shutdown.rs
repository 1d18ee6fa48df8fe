//! The process-level stop signal. Services take any `Future` as their shutdown trigger (tests
//! pass their own); the binaries pass [`signal`].

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C). On non-Unix platforms, Ctrl-C only.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = %"SIGTERM", "shutting down"),
                    _ = int.recv() => tracing::info!(signal = %"SIGINT", "shutting down"),
                }
            }
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(%err, "cannot install signal handlers; waiting for Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(signal = %"Ctrl-C", "shutting down");
    }
}
