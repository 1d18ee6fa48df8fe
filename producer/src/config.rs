//! The producer's settings: every flag has an environment-variable twin (`PRODUCER_*`), so the
//! same binary is configured by hand, by docker compose or by a test.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use pushpull::telemetry::LogFormat;

use crate::{
    log::DEFAULT_CACHE_BYTES,
    store::{StoreKind, file::FsyncPolicy},
    webhook,
};

/// Serves an ordered event log by push (gRPC Subscribe) and by pull (gRPC Poll / long poll).
#[derive(Debug, Clone, Parser)]
#[command(name = "producer", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for gRPC.
    #[arg(long, env = "PRODUCER_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Where the log lives: `file` (segments under --data-dir; survives restarts and crashes)
    /// or `memory` (gone when the producer stops; for tests and benchmarks).
    #[arg(long, env = "PRODUCER_STORE", value_enum, default_value_t = StoreKind::File)]
    pub store: StoreKind,

    /// NATS servers of the JetStream store (`--store jetstream`), a comma list: the client
    /// connects to one and fails over to the others.
    #[arg(
        long,
        env = "PRODUCER_NATS_URLS",
        value_delimiter = ',',
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_urls: Vec<String>,

    /// The JetStream stream holding the log (`--store jetstream`). Created if missing (subject
    /// `pushpull.<stream>`, limits from the --retention-* flags); an existing one must match.
    /// Every producer pointed at the same stream serves the same log.
    #[arg(long, env = "PRODUCER_NATS_STREAM", default_value = "PUSHPULL")]
    pub nats_stream: String,

    /// Replicas of the stream when the producer creates it (1, 3 or 5; at most the cluster's
    /// size).
    #[arg(long, env = "PRODUCER_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,

    /// Directory of the file store's log (created if missing). One producer at a time: a
    /// second one on the same directory refuses to start.
    #[arg(long, env = "PRODUCER_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// When the file store syncs: `always` (a Publish is answered, and its events are
    /// readable, only once they are on disk; concurrent Publish calls share one fdatasync), or
    /// `never` (written to the OS at once, synced when a segment is full and at shutdown:
    /// survives a producer crash, not a machine crash).
    #[arg(long, env = "PRODUCER_FSYNC", value_enum, default_value_t = FsyncPolicy::Always)]
    pub fsync: FsyncPolicy,

    /// The file store starts a new segment file once the current one holds this many bytes.
    /// Retention drops whole segments, so disk use stays within retention plus one segment.
    #[arg(long, env = "PRODUCER_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,

    /// At start, if the file store finds a corrupt record before the end of its log (a bad
    /// checksum, not a torn last write), truncate the log there instead of refusing to start.
    /// Events after the corruption are lost; the producer logs how many bytes it dropped.
    #[arg(long, env = "PRODUCER_TRUNCATE_CORRUPT")]
    pub truncate_corrupt: bool,

    /// Bytes of the newest events (topics + payloads + 64 per event) kept in memory in front
    /// of the file store: live subscribers and short catch-ups are served from it, older reads
    /// go to the disk. (The memory store is its own cache.)
    #[arg(long, env = "PRODUCER_CACHE_BYTES", default_value_t = DEFAULT_CACHE_BYTES)]
    pub cache_bytes: usize,

    /// Most events the log retains; the oldest are dropped first.
    #[arg(long, env = "PRODUCER_RETENTION_EVENTS", default_value_t = 1_000_000)]
    pub retention_events: usize,

    /// Most bytes the log retains: on disk for --store file, topics + payloads + 64 bytes per
    /// event for --store memory.
    #[arg(long, env = "PRODUCER_RETENTION_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub retention_bytes: usize,

    /// Events older than this are dropped (`off`: kept whatever their age), e.g. `7d`, `1h`.
    #[arg(long, env = "PRODUCER_RETENTION_AGE", default_value = "off", value_parser = parse_age)]
    pub retention_age: Age,

    /// Largest payload accepted in Publish, in bytes.
    #[arg(long, env = "PRODUCER_MAX_PAYLOAD_BYTES", default_value_t = 1024 * 1024)]
    pub max_payload_bytes: usize,

    /// Most events accepted in one Publish.
    #[arg(long, env = "PRODUCER_MAX_PUBLISH_EVENTS", default_value_t = 10_000)]
    pub max_publish_events: usize,

    /// Largest `max_events` a Poll may ask for.
    #[arg(long, env = "PRODUCER_MAX_POLL_EVENTS", default_value_t = 10_000)]
    pub max_poll_events: u32,

    /// `max_events` used when a Poll asks for 0.
    #[arg(long, env = "PRODUCER_DEFAULT_POLL_EVENTS", default_value_t = 1_000)]
    pub default_poll_events: u32,

    /// Longest `max_wait` a long poll may ask for.
    #[arg(long, env = "PRODUCER_MAX_POLL_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_poll_wait: Duration,

    /// Most events in one Subscribe response (a subscriber catching up gets full batches).
    #[arg(long, env = "PRODUCER_MAX_BATCH_EVENTS", default_value_t = 1_000)]
    pub max_batch_events: usize,

    /// A Subscribe or Poll response stops growing at this many topic + payload bytes (it always
    /// holds at least one event). A client that stops reading holds one encoded response in the
    /// producer's memory per stream, so this is what a stalled subscriber costs; 256 KiB still
    /// fits a full batch of small events.
    #[arg(long, env = "PRODUCER_MAX_BATCH_BYTES", default_value_t = 256 * 1024)]
    pub max_batch_bytes: usize,

    /// gRPC message size limit, both directions. Must exceed the payload and batch limits so
    /// oversize input gets the producer's own INVALID_ARGUMENT, not a transport error.
    #[arg(long, env = "PRODUCER_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// An idle Subscribe stream gets an empty response this often, carrying head_sequence.
    #[arg(long, env = "PRODUCER_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// Most gRPC Subscribe streams open at once. One more is refused with RESOURCE_EXHAUSTED
    /// (reason TOO_MANY_SUBSCRIBERS, with a RetryInfo delay) and everyone already subscribed
    /// is served as before. Each stream costs a task, a cursor and up to two prepared
    /// responses; the default leaves room for the benchmark's 10,000 subscribers.
    #[arg(long, env = "PRODUCER_MAX_SUBSCRIBERS", default_value_t = 16_384)]
    pub max_subscribers: usize,

    /// Most long polls waiting at once (gRPC Poll with max_wait, HTTP GET /poll?wait=). One
    /// more that would have to wait is refused with RESOURCE_EXHAUSTED / HTTP 503 (reason
    /// TOO_MANY_LONG_POLLS); a long poll that finds events at once is answered anyway, and
    /// polls without a wait are never counted.
    #[arg(long, env = "PRODUCER_MAX_LONG_POLLS", default_value_t = 4_096)]
    pub max_long_polls: usize,

    /// Most SSE streams (GET /events) and WebSocket connections (GET /ws) open at once,
    /// together. One more is refused with HTTP 503 and Retry-After (reason
    /// TOO_MANY_HTTP_STREAMS).
    #[arg(long, env = "PRODUCER_MAX_HTTP_STREAMS", default_value_t = 4_096)]
    pub max_http_streams: usize,

    /// A push stream (gRPC Subscribe, SSE, WebSocket) whose client has taken nothing for this
    /// long while a response waits for it is ended: RESOURCE_EXHAUSTED (reason
    /// SUBSCRIBER_STALLED) on gRPC, an `end` event on SSE, a close frame on WebSocket. The
    /// client resumes from the last event it received. Bounds what a client that stopped
    /// reading costs: its cursor and place under --max-subscribers / --max-http-streams are
    /// freed (and an SSE stream's task); what sits in socket and HTTP/2 buffers (at most
    /// --stream-send-buffer and one response on gRPC, two prepared responses on SSE) waits for
    /// the client to read or leave (a WebSocket is closed at once).
    #[arg(long, env = "PRODUCER_STALL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,

    /// After SIGTERM, how long open connections get to finish before the process exits anyway.
    #[arg(long, env = "PRODUCER_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Demo source: publish this many readable events per second (JSON stock quotes on topics
    /// quotes.AAPL, quotes.MSFT, ...). 0 turns it off.
    #[arg(long, env = "PRODUCER_DEMO_RATE", default_value_t = 0)]
    pub demo_rate: u32,

    /// Address for the HTTP side: SSE (/events), WebSocket (/ws), HTTP long polling (/poll),
    /// POST /publish, /metrics and the dashboard (/). `off` turns it off.
    #[arg(long, env = "PRODUCER_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: HttpListen,

    /// Consumers whose GetStats the dashboard shows (comma-separated gRPC URLs, e.g.
    /// http://127.0.0.1:50061); served as JSON at /consumers.
    #[arg(long, env = "PRODUCER_CONSUMERS", value_delimiter = ',')]
    pub consumers: Vec<String>,

    /// Hosts and networks webhook URLs may point to, comma-separated: names (`hooks.example`),
    /// addresses, networks (`10.0.0.0/8`), or `*` for anywhere. The default allows loopback
    /// only, for a producer and its receivers on one machine; a deployment lists its
    /// receivers. Checked when a subscription is made and again at every connection.
    #[arg(long, env = "PRODUCER_WEBHOOK_ALLOW", default_value = webhook::allow::DEFAULT)]
    pub webhook_allow: String,

    /// How long one webhook POST may take before it counts as failed and is retried.
    #[arg(long, env = "PRODUCER_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// The step of a webhook's retries: after the first failed attempt the next comes after
    /// this (jittered down to as little as half of it), and the step doubles with each failure
    /// in a row, up to --webhook-retry-max. A `Retry-After` answer is honoured within
    /// [--webhook-retry-min, --webhook-retry-max].
    #[arg(long, env = "PRODUCER_WEBHOOK_RETRY_MIN", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub webhook_retry_min: Duration,

    /// The longest delay between two attempts at a webhook batch.
    #[arg(long, env = "PRODUCER_WEBHOOK_RETRY_MAX", default_value = "60s", value_parser = humantime::parse_duration)]
    pub webhook_retry_max: Duration,

    /// A webhook subscription whose deliveries have failed for this long without a success is
    /// disabled (its state says why; replace it to start again).
    #[arg(long, env = "PRODUCER_WEBHOOK_DISABLE_AFTER", default_value = "24h", value_parser = humantime::parse_duration)]
    pub webhook_disable_after: Duration,

    /// Most events in one webhook batch.
    #[arg(long, env = "PRODUCER_WEBHOOK_MAX_BATCH_EVENTS", default_value_t = 500)]
    pub webhook_max_batch_events: usize,

    /// A webhook batch stops growing at this many topic + payload bytes (it always holds at
    /// least one event).
    #[arg(long, env = "PRODUCER_WEBHOOK_MAX_BATCH_BYTES", default_value_t = 1024 * 1024)]
    pub webhook_max_batch_bytes: usize,

    /// Log output format.
    #[arg(long, env = "PRODUCER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// TLS and connection limits, the same on the gRPC and HTTP ports.
    #[command(flatten)]
    pub serving: ServingFlags,

    /// Bearer tokens, one per line: `<token> <scope>[,<scope>…]` with scopes `publish`,
    /// `read`, `metrics`; `#` comments (or the same text in `PRODUCER_TOKENS`). With tokens, every call but health, reflection and the
    /// dashboard page needs one (UNAUTHENTICATED / HTTP 401 without, PERMISSION_DENIED / 403
    /// without the scope). Without any, anyone may publish and read.
    #[arg(long, env = "PRODUCER_TOKENS_FILE", value_name = "PATH")]
    pub tokens_file: Option<PathBuf>,

    /// Bearer tokens from the environment variable `PRODUCER_TOKENS`, as in --tokens-file
    /// (`;` also separates entries); they add to the file's. There is no flag on purpose: a
    /// command line shows in every process listing.
    #[arg(skip = std::env::var("PRODUCER_TOKENS").ok())]
    pub tokens: Option<String>,

    /// With tokens configured, `GET /metrics` needs a token with the `metrics` scope too.
    /// Off: metrics stay open to scrapers without one.
    #[arg(long, env = "PRODUCER_METRICS_AUTH")]
    pub metrics_auth: bool,

    /// CA (PEM) to trust, beside the system's roots, for `https://` webhook receivers (a
    /// consumer serving TLS with a private CA). The producer's --tls-cert/--tls-key are
    /// presented to receivers that ask for a client certificate.
    #[arg(long, env = "PRODUCER_WEBHOOK_CA", value_name = "PATH")]
    pub webhook_ca: Option<PathBuf>,

    /// CA (PEM) to trust for `https://` addresses in --consumers (the dashboard's link to
    /// their GetStats); the system's roots without it. The producer's --tls-cert/--tls-key are
    /// presented if a consumer asks for a client certificate.
    #[arg(long, env = "PRODUCER_CONSUMERS_CA", value_name = "PATH")]
    pub consumers_ca: Option<PathBuf>,
}

pushpull::serving_flags!("PRODUCER_");

/// `--retention-age`: a duration, or `off`.
pub type Age = Option<Duration>;

fn parse_age(s: &str) -> Result<Age, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match humantime::parse_duration(s) {
        Ok(age) if age.is_zero() => Err("use `off` for no age limit, or a duration above 0".into()),
        Ok(age) => Ok(Some(age)),
        Err(err) => Err(format!(
            "{s:?} is not a duration like 7d or 1h, or `off`: {err}"
        )),
    }
}

/// `--http-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpListen {
    Off,
    On(SocketAddr),
}

impl HttpListen {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            HttpListen::Off => None,
            HttpListen::On(addr) => Some(addr),
        }
    }
}

impl std::str::FromStr for HttpListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(HttpListen::Off);
        }
        s.parse()
            .map(HttpListen::On)
            .map_err(|_| format!("{s:?} is not an address like 0.0.0.0:8080, or `off`"))
    }
}

/// Headroom, on top of the largest payload or batch, for the protobuf framing around it.
const FRAMING_HEADROOM: usize = 64 * 1024;

impl Config {
    /// Checks that the limits fit together; a bad combination is refused at start, not found
    /// in production.
    pub fn validate(&self) -> Result<(), String> {
        self.serving.validate()?;
        let need = self.max_batch_bytes + self.max_payload_bytes + FRAMING_HEADROOM;
        if self.max_message_bytes < need {
            return Err(format!(
                "--max-message-bytes {} is too small: it must be at least --max-batch-bytes + \
                 --max-payload-bytes + 64 KiB = {need}",
                self.max_message_bytes
            ));
        }
        if self.retention_bytes < self.max_payload_bytes + 4096 {
            return Err(format!(
                "--retention-bytes {} must exceed --max-payload-bytes {} (plus 4 KiB)",
                self.retention_bytes, self.max_payload_bytes
            ));
        }
        if self.retention_events == 0 || self.max_publish_events == 0 || self.max_batch_events == 0
        {
            return Err(
                "--retention-events, --max-publish-events and --max-batch-events must be at least 1"
                    .into(),
            );
        }
        if self.default_poll_events == 0 || self.default_poll_events > self.max_poll_events {
            return Err(format!(
                "--default-poll-events {} must be in 1..={} (--max-poll-events)",
                self.default_poll_events, self.max_poll_events
            ));
        }
        if self.segment_bytes < 4096 {
            return Err(format!(
                "--segment-bytes {} is too small: at least 4096",
                self.segment_bytes
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be greater than zero".into());
        }
        if self.max_subscribers == 0 || self.max_long_polls == 0 || self.max_http_streams == 0 {
            return Err(
                "--max-subscribers, --max-long-polls and --max-http-streams must be at least 1"
                    .into(),
            );
        }
        if self.stall_timeout.is_zero() {
            return Err("--stall-timeout must be greater than zero".into());
        }
        webhook::allow::AllowList::parse(&self.webhook_allow)
            .map_err(|err| format!("--webhook-allow: {err}"))?;
        if self.webhook_retry_min.is_zero() || self.webhook_retry_min > self.webhook_retry_max {
            return Err(format!(
                "--webhook-retry-min {} must be above zero and at most --webhook-retry-max {}",
                humantime::format_duration(self.webhook_retry_min),
                humantime::format_duration(self.webhook_retry_max)
            ));
        }
        if self.webhook_timeout.is_zero() || self.webhook_max_batch_events == 0 {
            return Err(
                "--webhook-timeout and --webhook-max-batch-events must be above zero".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_meet_the_promised_limits() {
        let config = Config::parse_from(["producer"]);
        config.validate().unwrap();
        assert!(config.max_publish_events >= 1_000);
        assert!(config.max_poll_events >= 10_000);
        assert!(config.max_poll_wait >= Duration::from_secs(30));
        assert!(config.heartbeat_interval <= Duration::from_secs(10));
        assert!(config.retention_events >= 100_000);
        assert_eq!(config.demo_rate, 0, "the demo source is off by default");
        assert!(config.max_message_bytes > config.max_payload_bytes);
        assert_eq!(config.http_listen.addr(), Some(([0, 0, 0, 0], 8080).into()));
        assert_eq!(
            config.store,
            StoreKind::File,
            "durable unless asked otherwise"
        );
        assert_eq!(config.fsync, FsyncPolicy::Always);
        assert_eq!(config.retention_age, None);
        assert!(
            config.max_subscribers >= 10_000,
            "the benchmark runs 10,000 subscribers"
        );
        assert!(config.stall_timeout > config.heartbeat_interval);
    }

    #[test]
    fn retention_age_is_a_duration_or_off() {
        let config = Config::parse_from(["producer", "--retention-age", "2h"]);
        assert_eq!(config.retention_age, Some(Duration::from_secs(7200)));
        for bad in ["0s", "soon"] {
            let err = Config::try_parse_from(["producer", "--retention-age", bad]).unwrap_err();
            assert!(err.to_string().contains("--retention-age"), "{err}");
        }
    }

    #[test]
    fn webhook_flags_are_checked_together() {
        let config = Config::parse_from(["producer"]);
        assert!(
            config.webhook_allow.contains("127.0.0.0/8"),
            "loopback by default"
        );
        let bad = Config::parse_from(["producer", "--webhook-allow", "10.0.0.0/99"]);
        let err = bad.validate().unwrap_err();
        assert!(err.starts_with("--webhook-allow:"), "{err}");
        let bad = Config::parse_from([
            "producer",
            "--webhook-retry-min",
            "2m",
            "--webhook-retry-max",
            "1m",
        ]);
        let err = bad.validate().unwrap_err();
        assert!(err.contains("--webhook-retry-min 2m"), "{err}");
    }

    #[test]
    fn http_can_be_turned_off() {
        let config = Config::parse_from(["producer", "--http-listen", "off"]);
        assert_eq!(config.http_listen, HttpListen::Off);
    }

    #[test]
    fn message_limit_below_payload_limit_is_refused() {
        let config = Config::parse_from(["producer", "--max-message-bytes", "1000"]);
        let err = config.validate().unwrap_err();
        assert!(err.contains("--max-message-bytes 1000"), "{err}");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// `--retention-age`: any text is an age, `off`, or an error quoting it; what humantime
        /// prints reads back.
        #[test]
        fn any_age_is_read_or_refused(text in prop_oneof![
            any::<String>(),
            "[0-9]{1,22}(ns|ms|s|m|h|d|w|y|[a-z]{1,3})?",
            "(off|OFF|Off|0s|0)",
        ]) {
            match parse_age(&text) {
                Ok(None) => prop_assert!(text.eq_ignore_ascii_case("off")),
                Ok(Some(age)) => prop_assert!(!age.is_zero()),
                Err(err) => prop_assert!(!err.is_empty()),
            }
        }

        #[test]
        fn a_printed_age_reads_back(secs in 1u64..10_000_000_000, nanos in 0u32..1_000_000_000) {
            let age = Duration::new(secs, nanos);
            prop_assert_eq!(parse_age(&humantime::format_duration(age).to_string()), Ok(Some(age)));
        }

        #[test]
        fn any_http_listen_is_an_address_off_or_refused(text in prop_oneof![
            any::<String>(),
            "[0-9.:]{0,24}",
            any::<SocketAddr>().prop_map(|a| a.to_string()),
        ]) {
            match text.parse::<HttpListen>() {
                Ok(HttpListen::On(addr)) => prop_assert_eq!(addr.to_string().parse::<SocketAddr>(), Ok(addr)),
                Ok(HttpListen::Off) => prop_assert!(text.eq_ignore_ascii_case("off")),
                Err(err) => {
                    let quoted = format!("{text:?}");
                    prop_assert!(err.contains(&quoted), "{}", err);
                }
            }
        }
    }
}
