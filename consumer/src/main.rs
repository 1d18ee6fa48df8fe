//! `consumer`: parse flags, start logging, bind, read and serve until SIGTERM / SIGINT.

use std::process::ExitCode;

use clap::Parser as _;
use consumer::Config;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    pushpull::telemetry::init(config.log_format);
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(addr = %config.listen, %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match config.metrics_listen {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::error!(%addr, %err, "cannot listen for metrics");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let listeners = consumer::Listeners {
        grpc: listener,
        metrics,
    };
    match consumer::run_with(config, listeners, pushpull::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "consumer failed");
            ExitCode::FAILURE
        }
    }
}
