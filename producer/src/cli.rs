//! The command line: the service's flags ([`Config`]), or a subcommand that talks to a running
//! producer instead of starting one.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushpull::health_probe::HealthcheckArgs;

use crate::Config;

/// `producer [FLAGS]` serves; `producer healthcheck` probes a running producer.
#[derive(Debug, Parser)]
#[command(name = "producer", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of serving.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Ask a running producer (by default this container's own, on the --listen port) over the
    /// gRPC health protocol; exit 0 only if it is SERVING. For container healthchecks.
    Healthcheck(HealthcheckArgs),
    /// Write a development CA and certificates signed by it (for TLS and mutual TLS on
    /// loopback and in docker compose). Never for production: the CA key sits beside them.
    DevCerts(DevCertsArgs),
}

/// Flags of the `dev-certs` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DevCertsArgs {
    /// Directory to write into (created if missing): `ca.pem`, `ca.key`, and `<name>.pem` /
    /// `<name>.key` per --name. Existing files are replaced.
    #[arg(long, default_value = "certs")]
    pub out: std::path::PathBuf,

    /// Certificates to make, each valid for its name (a compose service's host name),
    /// `localhost`, 127.0.0.1 and ::1, as server and as client certificate.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "producer,consumer,client"
    )]
    pub name: Vec<String>,

    /// More names or addresses every certificate is valid for.
    #[arg(long, value_delimiter = ',')]
    pub san: Vec<String>,
}

impl Command {
    /// Runs the subcommand; `config` supplies defaults such as the listen port.
    pub async fn run(&self, config: &Config) -> ExitCode {
        match self {
            Command::Healthcheck(args) => {
                args.run(config.listen, config.serving.tls_cert.is_some())
                    .await
            }
            Command::DevCerts(args) => {
                match pushpull::tls::dev_certs(&args.out, &args.name, &args.san) {
                    Ok(()) => {
                        println!(
                            "wrote {} ({}) and {} (.pem/.key) into {}",
                            pushpull::tls::dev::CA_CERT,
                            pushpull::tls::dev::CA_KEY,
                            args.name.join(", "),
                            args.out.display()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(err) => {
                        eprintln!("dev-certs: {err}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_subcommand_the_flags_configure_the_service() {
        let cli = Cli::parse_from(["producer", "--demo-rate", "20"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.config.demo_rate, 20);
    }

    #[test]
    fn healthcheck_takes_its_own_flags_and_keeps_the_service_flags() {
        let cli = Cli::parse_from([
            "producer",
            "--listen",
            "0.0.0.0:6000",
            "healthcheck",
            "--timeout",
            "500ms",
        ]);
        let Some(Command::Healthcheck(args)) = cli.command else {
            panic!("expected healthcheck: {cli:?}");
        };
        assert_eq!(args.timeout, std::time::Duration::from_millis(500));
        assert_eq!(args.address, None);
        assert_eq!(cli.config.listen.port(), 6000);
    }
}
