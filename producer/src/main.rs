//! `producer`: parse flags, start logging, bind (gRPC, and HTTP unless off), serve until SIGTERM /
//! SIGINT. With a subcommand (`producer healthcheck`), run that instead.

use std::process::ExitCode;

use clap::Parser as _;
use producer::cli::Cli;
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
        bind_optional(
            config.http_listen.addr(),
            "--http-listen (off turns it off)",
        )
        .await,
    ) {
        (Ok(grpc), Ok(http)) => producer::Listeners { grpc, http },
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let result = producer::run_with(config, listeners, pushpull::shutdown::signal()).await;
    exit_code("producer", result)
}
