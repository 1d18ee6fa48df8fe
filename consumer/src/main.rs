//! `consumer`: parse flags, start logging, bind, read and serve until SIGTERM / SIGINT. With a
//! subcommand (`consumer healthcheck`, `consumer stats`), run that instead.

use std::process::ExitCode;

use clap::Parser as _;
use consumer::cli::Cli;
use pushpull::process::{bind, bind_optional, exit_code};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = &cli.command {
        return command.run(&cli.config).await;
    }
    let config = cli.config;
    pushpull::telemetry::init(config.log_format);
    let listeners = match (
        bind(config.listen, "--listen").await,
        bind_optional(config.metrics_listen, "--metrics-listen").await,
    ) {
        (Ok(grpc), Ok(metrics)) => consumer::Listeners { grpc, metrics },
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let result = consumer::run_with(config, listeners, pushpull::shutdown::signal()).await;
    exit_code("consumer", result)
}
