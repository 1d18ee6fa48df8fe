//! The command line: the service's flags ([`Config`]), or a subcommand that talks to a running
//! consumer instead of starting one: `healthcheck` for container healthchecks, `stats` to read
//! its counters where no gRPC tool is installed (`docker compose exec push consumer stats`).

use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use pushpull::{
    health_probe::{HealthcheckArgs, ProbeTls},
    pb::{self, consumer_service_client::ConsumerServiceClient},
    time::{std_duration, system_time},
};

use crate::Config;

/// `consumer [FLAGS]` reads and serves; `consumer healthcheck` and `consumer stats` ask a
/// running consumer.
#[derive(Debug, Parser)]
#[command(name = "consumer", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What the binary does instead of reading.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Ask a running consumer (by default this container's own, on the --listen port) over the
    /// gRPC health protocol; exit 0 only if it is SERVING. For container healthchecks.
    Healthcheck(HealthcheckArgs),
    /// Print a running consumer's GetStats, one `name: value` line per field.
    Stats(StatsArgs),
}

/// Flags of the `stats` subcommand.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    /// The consumer's gRPC address, `host:port` or `http://host:port`. Default: the --listen
    /// port on loopback.
    #[arg(long)]
    pub address: Option<String>,

    /// Give up after this long, connection included.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub tls: ProbeTls,
}

impl Command {
    /// Runs the subcommand; `config` supplies defaults such as the listen port.
    pub async fn run(&self, config: &Config) -> ExitCode {
        match self {
            Command::Healthcheck(args) => {
                args.run(config.listen, config.serving.tls_cert.is_some())
                    .await
            }
            Command::Stats(args) => match fetch_stats(args, config).await {
                Ok(stats) => {
                    print!("{}", format_stats(&stats));
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("cannot read stats: {err}");
                    ExitCode::FAILURE
                }
            },
        }
    }
}

/// Calls GetStats on `--address`, or on the loopback address of `listen`.
async fn fetch_stats(
    args: &StatsArgs,
    config: &Config,
) -> Result<pb::GetStatsResponse, Box<dyn std::error::Error>> {
    let address = args.tls.address(
        args.address.as_deref(),
        config.listen,
        config.serving.tls_cert.is_some(),
    );
    let endpoint = args.tls.endpoint(&address)?.connect_timeout(args.timeout);
    let call = async {
        let channel = endpoint.connect().await?;
        let response = ConsumerServiceClient::new(channel)
            .get_stats(pb::GetStatsRequest {})
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(response.into_inner())
    };
    tokio::time::timeout(args.timeout, call)
        .await
        .map_err(|_| format!("no answer within {:?}", args.timeout))?
}

/// One `name: value` line per field, named as in the proto, so both people and scripts
/// (`awk '$1 == "events_missed:"'`) read it.
pub fn format_stats(s: &pb::GetStatsResponse) -> String {
    let duration = |d: &Option<prost_types::Duration>| {
        d.as_ref()
            .and_then(|d| std_duration(d).ok())
            .map_or_else(|| "-".to_owned(), |d| format!("{d:?}"))
    };
    let mode = pb::ReadMode::try_from(s.mode)
        .map_or_else(|_| s.mode.to_string(), |m| m.as_str_name().to_owned());
    let started_at = s.started_at.as_ref().and_then(system_time).map_or_else(
        || "-".to_owned(),
        |t| humantime::format_rfc3339_millis(t).to_string(),
    );
    let after_sequence = s
        .after_sequence
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let fields: [(&str, String); 24] = [
        ("mode", mode),
        ("events_received", s.events_received.to_string()),
        ("last_sequence", s.last_sequence.to_string()),
        ("events_missed", s.events_missed.to_string()),
        ("duplicates_dropped", s.duplicates_dropped.to_string()),
        ("rpcs_sent", s.rpcs_sent.to_string()),
        ("reconnects", s.reconnects.to_string()),
        ("log_id", s.log_id.clone()),
        ("latency_p50", duration(&s.latency_p50)),
        ("latency_p99", duration(&s.latency_p99)),
        ("latency_p999", duration(&s.latency_p999)),
        ("latency_max", duration(&s.latency_max)),
        ("empty_responses", s.empty_responses.to_string()),
        ("log_changes", s.log_changes.to_string()),
        ("after_sequence", after_sequence),
        ("connected", s.connected.to_string()),
        ("started_at", started_at),
        ("topics", s.topics.join(",")),
        ("producer", s.producer.clone()),
        ("current_producer", s.current_producer.clone()),
        ("failovers", s.failovers.to_string()),
        ("webhooks_received", s.webhooks_received.to_string()),
        ("webhooks_refused", s.webhooks_refused.to_string()),
        ("events_backfilled", s.events_backfilled.to_string()),
    ];
    fields
        .iter()
        .map(|(name, value)| format!("{name}: {value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_subcommand_the_flags_configure_the_service() {
        let cli = Cli::parse_from(["consumer", "--mode", "poll"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.config.mode, crate::Mode::Poll);
    }

    #[test]
    fn subcommands_parse() {
        let cli = Cli::parse_from(["consumer", "healthcheck", "--address", "h:1"]);
        assert!(
            matches!(&cli.command, Some(Command::Healthcheck(a)) if a.address.as_deref() == Some("h:1"))
        );
        let cli = Cli::parse_from(["consumer", "--listen", "0.0.0.0:7", "stats"]);
        assert!(matches!(&cli.command, Some(Command::Stats(a)) if a.address.is_none()));
        assert_eq!(cli.config.listen.port(), 7);
    }

    #[test]
    fn stats_print_one_named_line_per_field() {
        let text = format_stats(&pb::GetStatsResponse {
            mode: pb::ReadMode::LongPoll as i32,
            events_received: 12,
            last_sequence: 40,
            after_sequence: Some(40),
            latency_p50: Some(prost_types::Duration {
                seconds: 0,
                nanos: 1_500_000,
            }),
            connected: true,
            topics: vec!["a".into(), "b".into()],
            producer: "http://a:1,http://b:2".into(),
            current_producer: "http://b:2".into(),
            failovers: 3,
            webhooks_received: 4,
            webhooks_refused: 5,
            events_backfilled: 6,
            ..Default::default()
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 24, "{text}");
        assert_eq!(lines[0], "mode: READ_MODE_LONG_POLL");
        assert!(lines.contains(&"events_received: 12"), "{text}");
        assert!(lines.contains(&"after_sequence: 40"), "{text}");
        assert!(lines.contains(&"latency_p50: 1.5ms"), "{text}");
        assert!(lines.contains(&"latency_p99: -"), "{text}");
        assert!(lines.contains(&"topics: a,b"), "{text}");
        assert!(lines.contains(&"connected: true"), "{text}");
        assert!(lines.contains(&"producer: http://a:1,http://b:2"), "{text}");
        assert!(lines.contains(&"current_producer: http://b:2"), "{text}");
        assert!(lines.contains(&"failovers: 3"), "{text}");
        assert!(lines.contains(&"webhooks_received: 4"), "{text}");
        assert!(lines.contains(&"webhooks_refused: 5"), "{text}");
        assert!(lines.contains(&"events_backfilled: 6"), "{text}");
    }
}
