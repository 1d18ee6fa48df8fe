//! What both binaries' `main` does around its service: bind the listeners its flags name, and
//! turn the outcome into an exit code, each failure logged once with what to do about it.

use std::{fmt::Display, net::SocketAddr, process::ExitCode};

use tokio::net::TcpListener;

/// Binds `addr`, named on the command line by `flag`; on failure logs the address, the error
/// and the flag, and returns the exit code `main` should end with.
pub async fn bind(addr: SocketAddr, flag: &str) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|err| {
        tracing::error!(%addr, %err, flag, "cannot listen");
        ExitCode::FAILURE
    })
}

/// Binds `addr` when one is given (a listener that can be turned off).
pub async fn bind_optional(
    addr: Option<SocketAddr>,
    flag: &str,
) -> Result<Option<TcpListener>, ExitCode> {
    match addr {
        Some(addr) => bind(addr, flag).await.map(Some),
        None => Ok(None),
    }
}

/// The exit code for a service's result: success, or failure with the error logged.
pub fn exit_code<E: Display>(service: &str, result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "{service} failed");
            ExitCode::FAILURE
        }
    }
}
