//! `consumer`: parse flags, start logging, bind, read and serve until SIGTERM / SIGINT. With a
//! subcommand (`consumer healthcheck`, `consumer stats`), run that instead.

use std::process::ExitCode;

use clap::Parser as _;
use consumer::cli::Cli;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return command.run(&cli.config).await;
    }
    let config = cli.config;
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
