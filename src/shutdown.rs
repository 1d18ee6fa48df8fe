//! The process-level stop signal. Services take any `Future` as their shutdown trigger (tests
//! pass their own); the binaries pass [`signal`].

use std::future::Future;

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C) after this call. On non-Unix platforms,
/// Ctrl-C only.
///
/// The handlers are installed by the call, not when the future is first polled: a service polls
/// its shutdown future only once it serves, after opening its store and binding, and a SIGTERM
/// before that (a `docker stop` just after a start, a test stopping what it just started) would
/// get the default action instead: the process killed, exit status 143, no graceful close.
/// Installed early, such a signal waits, and the service stops as soon as it can.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
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
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!(signal = %"Ctrl-C", "shutting down");
        }
    }
}
