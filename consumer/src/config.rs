//! The consumer's settings: every flag has an environment-variable twin (`CONSUMER_*`).

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::{Parser, ValueEnum, builder::PossibleValue};
use pushpull::{pb::ReadMode, telemetry::LogFormat};

/// Reads a pushpull producer's log by push, poll, long poll or webhook, and reports what it saw.
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

    /// How to read: `push` (Subscribe stream), `poll` (Poll every --poll-interval),
    /// `long-poll` (back-to-back Polls waiting up to --max-wait) or `webhook` (the producer POSTs
    /// signed batches to /webhook on --metrics-listen; Polls fill what they miss).
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

    /// Address of the HTTP listener, e.g. 0.0.0.0:9464: Prometheus metrics (GET /metrics), and
    /// in webhook mode the webhook endpoint (POST /webhook), which requires it. Off when unset.
    #[arg(long, env = "CONSUMER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Webhook mode: the URL the producer should POST to, as the producer reaches this consumer
    /// (in docker compose e.g. http://consumer-webhook:9464/webhook). Default:
    /// http://127.0.0.1:<--metrics-listen port>/webhook.
    #[arg(long, env = "CONSUMER_WEBHOOK_URL", value_name = "URL", value_parser = webhook_url)]
    pub webhook_url: Option<String>,

    /// Webhook mode: the id of this consumer's subscription on the producer (1 to 64 characters
    /// from [A-Za-z0-9-]). Registered with replace at every start, so two consumers of one
    /// producer need different ids.
    #[arg(long, env = "CONSUMER_WEBHOOK_ID", value_name = "ID", default_value = "consumer", value_parser = webhook_id)]
    pub webhook_id: String,

    /// Webhook mode: the signing secret, `whsec_` + base64 of 24 to 64 bytes. Default: 32 random
    /// bytes drawn at start (the subscription is re-registered with it at every start).
    #[arg(long, env = "CONSUMER_WEBHOOK_SECRET", value_name = "SECRET", value_parser = SecretParser)]
    pub webhook_secret: Option<WebhookSecret>,

    /// Webhook mode: deliveries whose webhook-timestamp is further than this from the
    /// consumer's clock (either way) are refused with 401, so a captured delivery cannot be
    /// replayed later.
    #[arg(long, env = "CONSUMER_WEBHOOK_TOLERANCE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub webhook_tolerance: Duration,

    /// Webhook mode: when no webhook has come for this long, Poll from the cursor until caught
    /// up (the same is done at start, and before a batch that starts past the cursor).
    #[arg(long, env = "CONSUMER_BACKFILL_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub backfill_interval: Duration,

    /// Log output format.
    #[arg(long, env = "CONSUMER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// CA (PEM) that signed the producer's certificate, for `https://` producers; the
    /// system's roots without it. Refused with an `http://` address, which would ignore it.
    #[arg(long, env = "CONSUMER_PRODUCER_CA", value_name = "PATH")]
    pub producer_ca: Option<PathBuf>,

    /// Certificate (PEM) to present to a producer that asks for one (--tls-client-ca there);
    /// with --producer-key.
    #[arg(long, env = "CONSUMER_PRODUCER_CERT", value_name = "PATH")]
    pub producer_cert: Option<PathBuf>,

    /// The private key of --producer-cert (PEM).
    #[arg(long, env = "CONSUMER_PRODUCER_KEY", value_name = "PATH")]
    pub producer_key: Option<PathBuf>,

    /// File holding the bearer token sent to the producer (`authorization: Bearer …`), which
    /// needs the `read` scope. The token may also come from `CONSUMER_PRODUCER_TOKEN`; there
    /// is no flag holding it, since a command line shows in every process listing.
    #[arg(long, env = "CONSUMER_PRODUCER_TOKEN_FILE", value_name = "PATH")]
    pub producer_token_file: Option<PathBuf>,

    /// The token from `CONSUMER_PRODUCER_TOKEN`.
    #[arg(skip = std::env::var("CONSUMER_PRODUCER_TOKEN").ok())]
    pub producer_token: Option<String>,

    /// TLS and connection limits of the consumer's own ports (GetStats, /metrics, /webhook).
    #[command(flatten)]
    pub serving: ServingFlags,
}

pushpull::serving_flags!("CONSUMER_");

/// The flags naming the consumer's TLS settings towards the producer, for messages.
pub const PRODUCER_TLS_FLAGS: [&str; 3] = ["--producer-ca", "--producer-cert", "--producer-key"];

impl Config {
    /// The TLS files for connecting to the producer.
    pub fn producer_tls(&self) -> pushpull::tls::ClientFiles {
        pushpull::tls::ClientFiles {
            ca: self.producer_ca.clone(),
            cert: self.producer_cert.clone(),
            key: self.producer_key.clone(),
        }
    }

    /// The bearer token for the producer: the file's (trimmed), else the environment's.
    pub fn producer_token(&self) -> Result<Option<String>, String> {
        let token = match &self.producer_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("--producer-token-file {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => self.producer_token.as_ref().map(|t| t.trim().to_owned()),
        };
        match token {
            Some(t) if t.is_empty() => Err("the producer token is empty".into()),
            Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Err("the producer token holds whitespace or control characters".into())
            }
            other => Ok(other),
        }
    }
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
    /// Signed batches POSTed by the producer, and Polls for what they missed.
    Webhook,
}

impl Mode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [Mode; 4] = [Mode::Push, Mode::Poll, Mode::LongPoll, Mode::Webhook];

    /// The mode's name: `push`, `poll`, `long-poll`, `webhook` (spelled once, by
    /// [`ReadMode::name`]).
    pub fn name(self) -> &'static str {
        ReadMode::from(self).name()
    }

    fn help(self) -> &'static str {
        match self {
            Mode::Push => "One Subscribe stream",
            Mode::Poll => "A Poll every --poll-interval",
            Mode::LongPoll => "Back-to-back long polls",
            Mode::Webhook => {
                "Batches POSTed by the producer to /webhook on --metrics-listen, and Polls for what they miss"
            }
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
            Mode::Webhook => ReadMode::Webhook,
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
            ReadMode::Webhook => Ok(Mode::Webhook),
            ReadMode::Unspecified => Err(mode),
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
    let expected = "expected http://host:port or https://host:port";
    if address.is_empty() {
        return Err(format!(
            "an empty address (two commas in a row, or one at the end?); {expected}"
        ));
    }
    let uri: tonic::codegen::http::Uri = address
        .parse()
        .map_err(|err| format!("not a URL ({err}); {expected}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
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

/// The longest `--webhook-id` the producer accepts (webhook.proto, `Webhook.webhook_id`).
const MAX_WEBHOOK_ID_CHARS: usize = 64;

/// `--webhook-id`, checked as the producer checks it, so a bad one is refused at start rather
/// than by every registration.
fn webhook_id(id: &str) -> Result<String, String> {
    if id.is_empty() || id.len() > MAX_WEBHOOK_ID_CHARS {
        return Err(format!(
            "1 to {MAX_WEBHOOK_ID_CHARS} characters expected, got {}",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!("{bad:?} is not one of [A-Za-z0-9-]"));
    }
    Ok(id.to_owned())
}

/// `--webhook-url`: an absolute `http://` or `https://` URL with a host (the producer POSTs to
/// it; whether it may is the producer's allow-list's business).
fn webhook_url(url: &str) -> Result<String, String> {
    let uri: tonic::codegen::http::Uri = url
        .parse()
        .map_err(|err| format!("not a URL ({err}); expected http://host:port/webhook"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err("expected an http:// or https:// URL with a host".into());
    }
    Ok(url.to_owned())
}

/// A webhook signing secret, `whsec_` + standard base64 of its key. `Debug` never shows it, so
/// a logged configuration does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

/// Parses `--webhook-secret` into a [`WebhookSecret`] with an error of its own: clap's usual
/// "invalid value '<value>'" would print the secret.
#[derive(Debug, Clone, Copy)]
struct SecretParser;

impl clap::builder::TypedValueParser for SecretParser {
    type Value = WebhookSecret;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<WebhookSecret, clap::Error> {
        let refused = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("--webhook-secret (value not shown): {why}\n"),
            )
            .with_cmd(cmd)
        };
        value
            .to_str()
            .ok_or_else(|| refused("not UTF-8".into()))?
            .parse()
            .map_err(refused)
    }
}

/// The key lengths the producer accepts (webhook.proto, `CreateWebhookRequest.secret`).
const WEBHOOK_KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// What [`WebhookSecret::generate`] draws, as the Standard Webhooks reference libraries do.
const GENERATED_KEY_BYTES: usize = 32;
const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

impl WebhookSecret {
    /// A new secret of 32 random bytes.
    pub fn generate() -> Self {
        use base64::Engine as _;
        use rand::RngCore as _;
        let mut key = [0u8; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self(format!(
            "{WEBHOOK_SECRET_PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        ))
    }

    /// The `whsec_…` text, for the registration and the signature check; never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

impl FromStr for WebhookSecret {
    type Err = String;

    /// The error says what is wrong without echoing the secret.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        use base64::Engine as _;
        let encoded = text
            .strip_prefix(WEBHOOK_SECRET_PREFIX)
            .ok_or_else(|| format!("a secret starts with {WEBHOOK_SECRET_PREFIX:?}"))?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|err| {
                format!("after {WEBHOOK_SECRET_PREFIX:?} a secret is standard base64 ({err})")
            })?;
        if !WEBHOOK_KEY_BYTES.contains(&key.len()) {
            return Err(format!(
                "a secret's key is {} to {} bytes, this one is {}",
                WEBHOOK_KEY_BYTES.start(),
                WEBHOOK_KEY_BYTES.end(),
                key.len()
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

/// Why webhook mode cannot start without an HTTP listener: said by [`Config::validate`] and by
/// `run` when a caller passes no listener.
pub const WEBHOOK_NEEDS_HTTP: &str = "--mode webhook receives webhooks on the HTTP listener: give it --metrics-listen (e.g. 0.0.0.0:9464)";

impl Config {
    /// Checks values clap cannot: refused at start rather than misbehaving later.
    pub fn validate(&self) -> Result<(), String> {
        self.serving.validate()?;
        // tonic would connect to an http:// address in plaintext and ignore the TLS settings.
        if self.producer_tls().is_set()
            && let Some(plain) = self.producer.iter().find(|url| url.starts_with("http://"))
        {
            return Err(format!(
                "--producer {plain} is plaintext but TLS settings ({}) are given: use https://{}, \
                 or drop the TLS flags",
                PRODUCER_TLS_FLAGS.join(", "),
                plain.trim_start_matches("http://")
            ));
        }
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
        if self.mode == Mode::Webhook {
            if self.metrics_listen.is_none() {
                return Err(WEBHOOK_NEEDS_HTTP.into());
            }
            if self.backfill_interval.is_zero() {
                return Err("--backfill-interval must be greater than zero".into());
            }
            if self.webhook_tolerance.is_zero() {
                return Err("--webhook-tolerance must be greater than zero".into());
            }
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
        assert_eq!(names, ["push", "poll", "long-poll", "webhook"]);
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

    #[test]
    fn tls_settings_with_a_plaintext_producer_are_refused_not_ignored() {
        // tonic would connect to http:// in plaintext and never use the CA: a silent downgrade.
        let err = parse(&[
            "--producer",
            "https://a:1,http://b:2",
            "--producer-ca",
            "ca.pem",
        ])
        .unwrap_err();
        assert!(
            err.contains("--producer http://b:2 is plaintext") && err.contains("use https://b:2"),
            "{err}"
        );
        assert!(
            parse(&[
                "--producer",
                "https://a:1,https://b:2",
                "--producer-ca",
                "ca.pem"
            ])
            .is_ok()
        );
        assert!(parse(&["--producer", "https://a:1"]).is_ok());
        let err = parse(&["--tls-client-ca", "ca.pem"]).unwrap_err();
        assert!(err.contains("--tls-client-ca needs --tls-cert"), "{err}");
        let err = parse(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(err.contains("--tls-cert needs --tls-key"), "{err}");
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let config =
            Config::try_parse_from(std::iter::once("consumer").chain(args.iter().copied()))
                .map_err(|err| err.to_string())?;
        config.validate()?;
        Ok(config)
    }

    #[test]
    fn webhook_flags_parse_with_defaults_and_their_env_twins() {
        let config = parse(&["--mode", "webhook", "--metrics-listen", "127.0.0.1:9464"]).unwrap();
        assert_eq!(config.mode, Mode::Webhook);
        assert_eq!(config.webhook_id, "consumer");
        assert_eq!(config.webhook_url, None);
        assert_eq!(config.webhook_secret, None);
        assert_eq!(config.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(config.backfill_interval, Duration::from_secs(10));

        let secret = WebhookSecret::generate();
        let config = parse(&[
            "--mode=webhook",
            "--metrics-listen=0.0.0.0:9464",
            "--webhook-url=http://consumer-webhook:9464/webhook",
            "--webhook-id=c-1",
            &format!("--webhook-secret={}", secret.expose()),
            "--webhook-tolerance=30s",
            "--backfill-interval=250ms",
        ])
        .unwrap();
        assert_eq!(
            config.webhook_url.as_deref(),
            Some("http://consumer-webhook:9464/webhook")
        );
        assert_eq!(config.webhook_id, "c-1");
        assert_eq!(config.webhook_secret, Some(secret));
        assert_eq!(config.webhook_tolerance, Duration::from_secs(30));
        assert_eq!(config.backfill_interval, Duration::from_millis(250));

        let command = <Config as clap::CommandFactory>::command();
        for flag in [
            "webhook_url",
            "webhook_id",
            "webhook_secret",
            "webhook_tolerance",
            "backfill_interval",
        ] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == flag)
                .unwrap();
            let env = arg.get_env().unwrap().to_str().unwrap();
            assert_eq!(env, format!("CONSUMER_{}", flag.to_uppercase()));
        }
    }

    #[test]
    fn webhook_mode_without_an_http_listener_is_refused_naming_the_flag() {
        let err = parse(&["--mode", "webhook"]).unwrap_err();
        assert_eq!(err, WEBHOOK_NEEDS_HTTP);
        assert!(err.contains("--metrics-listen"), "{err}");
        // The other modes do without.
        parse(&["--mode", "poll"]).unwrap();
        let http = ["--mode", "webhook", "--metrics-listen", "127.0.0.1:0"];
        for (flag, value) in [("--backfill-interval", "0s"), ("--webhook-tolerance", "0s")] {
            let mut args = http.to_vec();
            args.extend([flag, value]);
            let err = parse(&args).unwrap_err();
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn bad_webhook_ids_urls_and_secrets_are_refused_without_echoing_the_secret() {
        for id in ["", "a_b", "a b", "é", &"x".repeat(65)] {
            assert!(parse(&["--webhook-id", id]).is_err(), "{id:?}");
        }
        assert!(parse(&["--webhook-id", &"x".repeat(64)]).is_ok());
        for url in [
            "consumer:9464/webhook",
            "ftp://h/webhook",
            "http:///webhook",
        ] {
            assert!(parse(&["--webhook-url", url]).is_err(), "{url:?}");
        }
        for (secret, why) in [
            ("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "starts with \"whsec_\""),
            ("whsec_not base64!", "standard base64"),
            ("whsec_c2hvcnQ=", "this one is 5"),
        ] {
            let err = parse(&["--webhook-secret", secret]).unwrap_err();
            assert!(err.contains(why), "{secret}: {err}");
            assert!(
                !err.contains(secret.trim_start_matches("whsec_")),
                "the secret is echoed: {err}"
            );
        }
        let secret = WebhookSecret::generate();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(redacted)");
        assert_eq!(secret.expose().parse(), Ok(secret.clone()));
        assert_ne!(WebhookSecret::generate(), secret);
    }
}
