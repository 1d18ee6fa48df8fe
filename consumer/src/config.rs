//! The consumer's settings: every flag has an environment-variable twin (`CONSUMER_*`).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Parser, ValueEnum, builder::PossibleValue};
use pushpull::{pb::ReadMode, telemetry::LogFormat};

/// Reads a pushpull producer's log by push, poll or long poll, and reports what it saw.
#[derive(Debug, Clone, Parser)]
#[command(name = "consumer", version, about, long_about = None)]
pub struct Config {
    /// The producer's gRPC address, `http://host:port`; or several producers of one log (the
    /// same log_id and sequences), comma-separated or by repeating the flag: the consumer reads
    /// from the first, and when it fails moves on to the next with the same cursor (round
    /// robin), backing off only once every one has failed in a row.
    #[arg(
        long,
        env = "CONSUMER_PRODUCER",
        value_name = "URL",
        value_delimiter = ',',
        value_parser = producer_url,
        default_value = "http://127.0.0.1:50051"
    )]
    pub producer: Vec<String>,

    /// How to read: `push` (Subscribe stream), `poll` (Poll every --poll-interval) or
    /// `long-poll` (back-to-back Polls waiting up to --max-wait).
    #[arg(long, env = "CONSUMER_MODE", value_enum, default_value_t = Mode::Push)]
    pub mode: Mode,

    /// Poll mode: time between the starts of two polls (a poll that finds more events than
    /// --max-events polls again at once).
    #[arg(long, env = "CONSUMER_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Long-poll mode: how long each Poll may wait for an event.
    #[arg(long, env = "CONSUMER_MAX_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,

    /// Poll modes: most events per Poll.
    #[arg(long, env = "CONSUMER_MAX_EVENTS", default_value_t = 1000)]
    pub max_events: u32,

    /// Only these topics (comma-separated); all topics when empty.
    #[arg(long, env = "CONSUMER_TOPICS", value_delimiter = ',')]
    pub topics: Vec<String>,

    /// Where to start when there is no checkpoint: `latest` (only new events), `earliest` (the
    /// oldest retained) or a sequence number (events after it).
    #[arg(long, env = "CONSUMER_FROM", default_value = "latest")]
    pub from: StartFrom,

    /// File where the cursor is saved (atomically, by rename), so a restarted consumer continues
    /// where it stopped. When it exists it wins over --from.
    #[arg(long, env = "CONSUMER_CHECKPOINT")]
    pub checkpoint: Option<PathBuf>,

    /// Most time between two checkpoint saves while events flow (the cursor is also saved on
    /// shutdown). After a crash, at most this much is read again.
    #[arg(long, env = "CONSUMER_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,

    /// Address to serve ConsumerService (GetStats), health and reflection on.
    #[arg(long, env = "CONSUMER_LISTEN", default_value = "0.0.0.0:50061")]
    pub listen: SocketAddr,

    /// First delay before reconnecting after an error; doubles up to --backoff-max, with jitter.
    #[arg(long, env = "CONSUMER_BACKOFF_INITIAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub backoff_initial: Duration,

    /// Longest delay between reconnection attempts.
    #[arg(long, env = "CONSUMER_BACKOFF_MAX", default_value = "5s", value_parser = humantime::parse_duration)]
    pub backoff_max: Duration,

    /// Push mode: a stream with no message (not even a heartbeat) for this long is treated as
    /// dead and reconnected. Keep it a few times the producer's heartbeat interval.
    #[arg(long, env = "CONSUMER_STREAM_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stream_idle_timeout: Duration,

    /// How often a one-line summary is logged (0 turns it off).
    #[arg(long, env = "CONSUMER_SUMMARY_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub summary_interval: Duration,

    /// gRPC message size limit, both directions; must exceed the producer's largest response.
    #[arg(long, env = "CONSUMER_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Address to serve Prometheus metrics on (GET /metrics), e.g. 0.0.0.0:9464. Off when unset.
    #[arg(long, env = "CONSUMER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log output format.
    #[arg(long, env = "CONSUMER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How the consumer reads the log.
///
/// [`Mode::name`] is the one spelling of each mode: the command line (`--mode`), the logs, and
/// the `mode` label of the metrics all use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One Subscribe stream.
    Push,
    /// A Poll every --poll-interval.
    Poll,
    /// Back-to-back long polls.
    LongPoll,
}

impl Mode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Mode; 3] = [Mode::Push, Mode::Poll, Mode::LongPoll];

    /// The mode's name: `push`, `poll`, `long-poll` (spelled once, by [`ReadMode::name`]).
    pub fn name(self) -> &'static str {
        ReadMode::from(self).name()
    }

    fn help(self) -> &'static str {
        match self {
            Mode::Push => "One Subscribe stream",
            Mode::Poll => "A Poll every --poll-interval",
            Mode::LongPoll => "Back-to-back long polls",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Written by hand rather than derived, so the command line takes its values from
/// [`Mode::name`] instead of spelling them a second time from the variant names.
impl ValueEnum for Mode {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.help()))
    }
}

impl From<Mode> for ReadMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Push => ReadMode::Push,
            Mode::Poll => ReadMode::Poll,
            Mode::LongPoll => ReadMode::LongPoll,
        }
    }
}

/// The consumer's mode behind a GetStats `mode`; `READ_MODE_UNSPECIFIED` is none.
impl TryFrom<ReadMode> for Mode {
    type Error = ReadMode;

    fn try_from(mode: ReadMode) -> Result<Self, Self::Error> {
        match mode {
            ReadMode::Push => Ok(Mode::Push),
            ReadMode::Poll => Ok(Mode::Poll),
            ReadMode::LongPoll => Ok(Mode::LongPoll),
            ReadMode::Unspecified | ReadMode::Webhook => Err(mode),
        }
    }
}

/// Where a consumer without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Only events appended after the first call (cursor unset).
    Latest,
    /// The oldest retained event (cursor 0).
    Earliest,
    /// Events after this sequence.
    After(u64),
}

impl StartFrom {
    /// The request cursor this start point means.
    pub fn cursor(self) -> Option<u64> {
        match self {
            StartFrom::Latest => None,
            StartFrom::Earliest => Some(0),
            StartFrom::After(seq) => Some(seq),
        }
    }
}

impl FromStr for StartFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(StartFrom::Latest),
            "earliest" => Ok(StartFrom::Earliest),
            other => other
                .parse()
                .map(StartFrom::After)
                .map_err(|_| format!("{other:?} is not `latest`, `earliest` or a sequence number")),
        }
    }
}

/// One `--producer` address, checked as clap reads it, so a typo is refused at start (clap's
/// message names the address, this one says what is wrong with it) instead of being retried
/// forever: an `http://host[:port]` URL and nothing more. Surrounding spaces (`a, b`) are
/// dropped.
///
/// `https://` is refused too: this consumer is built without TLS, and tonic would then speak
/// plaintext HTTP/2 to such an address without a word. A path would be ignored just as silently
/// (gRPC requests have paths of their own), so it is refused as well.
fn producer_url(address: &str) -> Result<String, String> {
    let address = address.trim();
    let expected = "expected http://host:port";
    if address.is_empty() {
        return Err(format!(
            "an empty address (two commas in a row, or one at the end?); {expected}"
        ));
    }
    let uri: tonic::codegen::http::Uri = address
        .parse()
        .map_err(|err| format!("not a URL ({err}); {expected}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "https is not supported (this consumer has no TLS, and would speak plaintext to it); {expected}"
            ));
        }
        Some(other) => {
            return Err(format!("the scheme {other:?} is not supported; {expected}"));
        }
        None => {
            return Err(format!("no scheme; expected http://{address}"));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("no host; {expected}"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "a path or a query, which gRPC would ignore; {expected}"
        ));
    }
    Ok(address.to_owned())
}

impl Config {
    /// Checks values clap cannot: refused at start rather than misbehaving later.
    pub fn validate(&self) -> Result<(), String> {
        for (i, address) in self.producer.iter().enumerate() {
            if self.producer[..i].contains(address) {
                return Err(format!("--producer lists {address} twice"));
            }
        }
        if self.mode == Mode::Poll && self.poll_interval.is_zero() {
            return Err("--poll-interval must be greater than zero".into());
        }
        if self.mode == Mode::LongPoll && self.max_wait.is_zero() {
            return Err("--max-wait must be greater than zero in long-poll mode".into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(
                "--backoff-initial must be greater than zero and at most --backoff-max".into(),
            );
        }
        if self.stream_idle_timeout.is_zero() {
            return Err("--stream-idle-timeout must be greater than zero".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_are_the_command_line_values_and_round_trip_through_read_mode() {
        let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["push", "poll", "long-poll"]);
        for mode in Mode::ALL {
            assert_eq!(Mode::from_str(mode.name(), false), Ok(mode));
            assert_eq!(mode.to_string(), mode.name());
            assert_eq!(Mode::try_from(ReadMode::from(mode)), Ok(mode));
        }
        assert!(Mode::from_str("long_poll", false).is_err());
        assert_eq!(
            Mode::try_from(ReadMode::Unspecified),
            Err(ReadMode::Unspecified)
        );
    }

    #[test]
    fn from_parses_all_forms() {
        assert_eq!("latest".parse(), Ok(StartFrom::Latest));
        assert_eq!("earliest".parse(), Ok(StartFrom::Earliest));
        assert_eq!("42".parse(), Ok(StartFrom::After(42)));
        assert!("-1".parse::<StartFrom>().is_err());
        assert_eq!(StartFrom::Earliest.cursor(), Some(0));
        assert_eq!(StartFrom::Latest.cursor(), None);
    }

    #[test]
    fn flags_parse_with_defaults() {
        let config = Config::parse_from([
            "consumer",
            "--mode",
            "long-poll",
            "--topics",
            "a,b.c",
            "--from",
            "7",
        ]);
        assert_eq!(config.mode, Mode::LongPoll);
        assert_eq!(config.topics, vec!["a", "b.c"]);
        assert_eq!(config.from, StartFrom::After(7));
        assert_eq!(config.producer, ["http://127.0.0.1:50051"]);
        config.validate().unwrap();
    }

    fn producers(args: &[&str]) -> Result<Vec<String>, String> {
        let config =
            Config::try_parse_from(std::iter::once("consumer").chain(args.iter().copied()))
                .map_err(|err| err.to_string())?;
        config.validate()?;
        Ok(config.producer)
    }

    #[test]
    fn producer_takes_one_address_a_comma_list_or_the_flag_repeated() {
        assert_eq!(
            producers(&["--producer", "http://a:1"]).unwrap(),
            ["http://a:1"]
        );
        let three = ["http://a:1", "http://b:2", "http://[::1]:3"];
        for args in [
            &["--producer", "http://a:1,http://b:2,http://[::1]:3"][..],
            &["--producer", "http://a:1, http://b:2 ,http://[::1]:3"],
            &[
                "--producer",
                "http://a:1",
                "--producer",
                "http://b:2,http://[::1]:3",
            ],
            &[
                "--producer=http://a:1",
                "--producer",
                "http://b:2",
                "--producer",
                "http://[::1]:3",
            ],
        ] {
            assert_eq!(producers(args).unwrap(), three, "{args:?}");
        }
    }

    #[test]
    fn a_bad_producer_address_is_refused_with_a_message_naming_it() {
        for (list, bad, why) in [
            ("http://a:1,b:2", "b:2", "no scheme; expected http://b:2"),
            (
                "http://a:1,https://b:2",
                "https://b:2",
                "https is not supported",
            ),
            (
                "grpc://b:2",
                "grpc://b:2",
                "the scheme \"grpc\" is not supported",
            ),
            ("http://a:1,http://b:2/v1", "http://b:2/v1", "a path"),
            ("http://a b:1", "http://a b:1", "not a URL"),
            ("http:///x", "http:///x", "not a URL"),
        ] {
            let err = producers(&["--producer", list]).unwrap_err();
            let named = format!("invalid value '{bad}' for '--producer <URL>': {why}");
            assert!(err.contains(&named), "{list}: {err}");
        }
        let err = producers(&["--producer", "http://a:1,,http://b:2"]).unwrap_err();
        assert!(err.contains("an empty address"), "{err}");
        let err = producers(&["--producer", "http://a:1,http://b:2,http://a:1"]).unwrap_err();
        assert_eq!(err, "--producer lists http://a:1 twice");
    }
}
