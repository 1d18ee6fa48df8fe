//! `producer`: parse flags, start logging, bind (gRPC, and HTTP unless off), serve until SIGTERM /
//! SIGINT. With a subcommand (`producer healthcheck`), run that instead.

use std::process::ExitCode;

use clap::Parser as _;
use producer::cli::Cli;
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
    let http = match config.http_listen.addr() {
        Some(addr) => match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::error!(%addr, %err, "cannot listen for HTTP (--http-listen off turns it off)");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let listeners = producer::Listeners {
        grpc: listener,
        http,
    };
    match producer::run_with(config, listeners, pushpull::shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(%err, "producer failed");
            ExitCode::FAILURE
        }
    }
}
