//! Webhook mode: the producer POSTs signed batches of its log to `POST /webhook` on the
//! consumer's HTTP listener, and the consumer Polls for whatever the webhooks missed.
//!
//! Three things share one [`Reader`] (its cursor, stats, checkpoint and producers), behind one
//! async mutex so a batch and a poll never interleave and nothing reaches the application twice
//! or is skipped:
//! - the handler ([`Receiver::receive`]): checks the signature and timestamp ([`Verifier`]),
//!   reads the batch ([`parse_batch`]), fills a gap before it with Polls when it starts past the
//!   cursor ([`plan`]), accepts it through [`Reader::accept`], waits for the checkpoint to hold
//!   the new cursor, and only then answers 2xx: only a 2xx moves the producer's cursor;
//! - the backfill ([`run`]): Polls from the cursor until caught up at start, before
//!   registering, and whenever no webhook has come for `--backfill-interval`;
//! - the registration ([`run`]): CreateWebhook with `replace` and the consumer's own cursor,
//!   at start once the backfill caught up (so the producer does not push again what the Polls
//!   fetched), and again after a failover; retried with backoff; a producer without
//!   WebhookService, or one that refuses the URL, is logged and retried while polling goes on.
//!
//! The decisions ([`Verifier::verify`], [`parse_batch`], [`plan`]) have no I/O, so tests drive
//! them directly.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use pushpull::{errors::ErrorReason, pb};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::Mutex,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};
use tracing::{debug, info, warn};

use crate::{
    backoff::Backoff,
    checkpoint::NotSaved,
    config::{Config, WebhookSecret},
    reader::{Accepted, Cursor, Next, Reader, Source},
    stats::Stats,
};

/// The path the producer POSTs to.
pub const PATH: &str = "/webhook";
/// The envelope `type` of a batch of events (webhook.proto).
pub const EVENT_TYPE: &str = "pushpull.events";
/// Deadline of one CreateWebhook call.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often one delivery may be planned again after [`Reader::accept`] found another log: once
/// to start over on the batch's log, once more in case a backfill Poll went to a producer of
/// yet another log; past that the delivery is answered 503 and retried by the producer.
const MAX_PLANS: usize = 4;
/// What a 503 asks the producer to wait before redelivering.
const RETRY_AFTER_SECS: u32 = 1;

/// Webhook mode's settings, from [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub webhook_id: String,
    /// Where the producer POSTs.
    pub url: String,
    pub secret: WebhookSecret,
    pub tolerance: Duration,
    pub backfill_interval: Duration,
    /// Registration retries after the producer refused it (retries after a connection failure
    /// use the reader's backoff, as the other modes do).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The largest body accepted.
    pub max_body_bytes: usize,
}

impl Settings {
    /// The settings of `config`, the URL defaulting to this consumer's HTTP port on loopback
    /// (`https://` when it serves TLS),
    /// the secret to a fresh random one.
    pub fn new(config: &Config, http_port: u16) -> Self {
        Self {
            webhook_id: config.webhook_id.clone(),
            url: config
                .webhook_url
                .clone()
                // Its own port, https:// when it serves TLS (the producer needs the CA:
                // its --webhook-ca).
                .unwrap_or_else(|| {
                    let scheme = if config.serving.tls_cert.is_some() {
                        "https"
                    } else {
                        "http"
                    };
                    format!("{scheme}://127.0.0.1:{http_port}{PATH}")
                }),
            secret: config
                .webhook_secret
                .clone()
                .unwrap_or_else(WebhookSecret::generate),
            tolerance: config.webhook_tolerance,
            backfill_interval: config.backfill_interval,
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
            // JSON (payloads as text or base64) is larger than the gRPC messages the producer
            // is limited to.
            max_body_bytes: config.max_message_bytes.saturating_mul(2),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Signature and timestamp.

/// Why a delivery was refused with 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {0} header is not valid")]
    InvalidHeader(&'static str),
    #[error("webhook-timestamp is {0:?} old, more than --webhook-tolerance")]
    TooOld(Duration),
    #[error(
        "webhook-timestamp is {0:?} ahead of this consumer's clock, more than --webhook-tolerance"
    )]
    TooNew(Duration),
    #[error("no webhook-signature matches the body with this consumer's secret")]
    BadSignature,
}

/// Checks deliveries against the secret and `--webhook-tolerance`.
///
/// `standardwebhooks::Webhook::verify` checks the timestamp against a fixed 5 minutes, so the
/// tolerance is checked here and the signature through the crate's own `sign`, compared in
/// constant time as `verify` compares it.
pub struct Verifier {
    signer: standardwebhooks::Webhook,
    tolerance: Duration,
}

impl Verifier {
    pub fn new(secret: &WebhookSecret, tolerance: Duration) -> Self {
        let signer = standardwebhooks::Webhook::new(secret.expose())
            .expect("a WebhookSecret is whsec_ and base64, checked when it was made");
        Self { signer, tolerance }
    }

    /// Verifies a delivery received at `now`: the headers are present, the timestamp within the
    /// tolerance either way, and one of the `v1` signatures is the body's.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<(), Refusal> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .ok_or(Refusal::MissingHeader(name))?
                .to_str()
                .map_err(|_| Refusal::InvalidHeader(name))
        };
        let id = header(standardwebhooks::HEADER_WEBHOOK_ID)?;
        let signatures = header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE)?;
        let timestamp: i64 = header(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP)?
            .parse()
            .map_err(|_| Refusal::InvalidHeader(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP))?;
        let sent = u64::try_from(timestamp)
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
            .map_err(|_| Refusal::InvalidHeader(standardwebhooks::HEADER_WEBHOOK_TIMESTAMP))?;
        match now.duration_since(sent) {
            Ok(age) if age > self.tolerance => return Err(Refusal::TooOld(age)),
            Err(ahead) if ahead.duration() > self.tolerance => {
                return Err(Refusal::TooNew(ahead.duration()));
            }
            _ => {}
        }
        // `sign` refuses a body that is not UTF-8: no signer could have signed it either.
        let expected = self
            .signer
            .sign(id, timestamp, body)
            .map_err(|_| Refusal::BadSignature)?;
        let expected = expected
            .split_once(',')
            .map(|(_, signature)| signature)
            .ok_or(Refusal::BadSignature)?;
        let matches = signatures
            .split(' ')
            .filter_map(|s| s.split_once(','))
            .any(|(version, signature)| version == "v1" && constant_time_eq(signature, expected));
        if matches {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }
}

/// Compares without returning early, so the time taken says nothing of where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ---------------------------------------------------------------------------------------------
// The batch.

/// A delivery's body, as webhook.proto describes it. Unknown fields are ignored, so a producer
/// may add some.
#[derive(Debug, Deserialize)]
struct EnvelopeJson {
    r#type: String,
    data: BatchJson,
}

#[derive(Debug, Deserialize)]
struct BatchJson {
    webhook_id: String,
    events: Vec<EventJson>,
    after_sequence: u64,
    next_after_sequence: u64,
    head_sequence: u64,
    log_id: String,
}

#[derive(Debug, Deserialize)]
struct EventJson {
    sequence: u64,
    topic: String,
    payload: String,
    #[serde(default)]
    encoding: Encoding,
    produced_at: String,
}

/// How a payload is written in JSON (as the producer's `GET /poll` writes it).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// One delivered batch, its events as the gRPC API has them, so [`Reader::accept`] takes them
/// as it takes a Poll's.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub webhook_id: String,
    pub log_id: String,
    /// The subscription's cursor before this batch.
    pub after: u64,
    /// The cursor once this batch is processed.
    pub next_after: u64,
    pub head: u64,
    pub events: Vec<pb::Event>,
}

/// Why a body with a good signature cannot be used: answered 400, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Malformed {
    pub field: String,
    pub message: String,
}

fn malformed(field: impl Into<String>, message: impl Into<String>) -> Malformed {
    Malformed {
        field: field.into(),
        message: message.into(),
    }
}

/// Reads a delivery's body, checking what the contract promises: the envelope type, payloads
/// that decode, timestamps that parse, and sequences that rise strictly within
/// (`after_sequence`, `next_after_sequence`].
pub fn parse_batch(body: &[u8]) -> Result<Batch, Malformed> {
    let envelope: EnvelopeJson =
        serde_json::from_slice(body).map_err(|err| malformed("body", err.to_string()))?;
    if envelope.r#type != EVENT_TYPE {
        return Err(malformed(
            "type",
            format!("{:?} is not {EVENT_TYPE:?}", envelope.r#type),
        ));
    }
    let data = envelope.data;
    if data.next_after_sequence < data.after_sequence {
        return Err(malformed(
            "data.next_after_sequence",
            format!(
                "{} is below after_sequence {}",
                data.next_after_sequence, data.after_sequence
            ),
        ));
    }
    let mut previous = data.after_sequence;
    let mut events = Vec::with_capacity(data.events.len());
    for (i, event) in data.events.into_iter().enumerate() {
        let field = |name: &str| format!("data.events[{i}].{name}");
        if event.sequence <= previous || event.sequence > data.next_after_sequence {
            return Err(malformed(
                field("sequence"),
                format!(
                    "{} is not after {previous} and at most next_after_sequence {}",
                    event.sequence, data.next_after_sequence
                ),
            ));
        }
        previous = event.sequence;
        let payload = match event.encoding {
            Encoding::Utf8 => event.payload.into_bytes(),
            Encoding::Base64 => BASE64
                .decode(&event.payload)
                .map_err(|err| malformed(field("payload"), format!("not base64: {err}")))?,
        };
        let produced_at = humantime::parse_rfc3339(&event.produced_at)
            .map_err(|err| malformed(field("produced_at"), format!("not RFC 3339: {err}")))?;
        events.push(pb::Event {
            sequence: event.sequence,
            topic: event.topic,
            payload: payload.into(),
            produced_at: Some(pushpull::time::timestamp(produced_at)),
        });
    }
    Ok(Batch {
        webhook_id: data.webhook_id,
        log_id: data.log_id,
        after: data.after_sequence,
        next_after: data.next_after_sequence,
        head: data.head_sequence,
        events,
    })
}

// ---------------------------------------------------------------------------------------------
// What to do with a batch.

/// What [`plan`] decided for a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Hand the batch to [`Reader::accept`], which drops what is at or below the cursor as
    /// duplicates (a redelivery, or events a Poll got first) and moves the cursor.
    Accept,
    /// The batch starts past the cursor: the producer's subscription skipped ahead (it was
    /// recreated at the head, or is another consumer's cursor). Poll from `from` until the
    /// cursor reaches `to` (the batch's `after_sequence`), then plan again.
    FillGap { from: u64, to: u64 },
}

/// Decides what a batch of log `log_id` with `after_sequence` `after` needs, given the cursor.
///
/// A batch of another log than the cursor's is [`Plan::Accept`]: [`Reader::accept`] holds the
/// rule for that (start over from the new log's oldest event, discarding the response), after
/// which the batch is planned again against the new cursor. A cursor with no sequence yet
/// (`--from latest`) takes the batch as the start.
pub fn plan(cursor: &Cursor, log_id: &str, after: u64) -> Plan {
    match (cursor.log_id.as_deref(), cursor.after) {
        (Some(ours), _) if ours != log_id => Plan::Accept,
        (_, Some(cursor)) if after > cursor => Plan::FillGap {
            from: cursor,
            to: after,
        },
        _ => Plan::Accept,
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state: the handler's and the backfill loop's.

/// Why a delivery with a good signature and body was not processed: answered 503, and the
/// producer delivers it again after its backoff (or our Retry-After).
#[derive(Debug, thiserror::Error)]
pub enum Unprocessed {
    #[error("the consumer is stopping")]
    Stopping,
    #[error("a Poll for the events before the batch failed: {}: {}", pushpull::errors::code_name(.0.code()), .0.message())]
    Poll(Status),
    #[error("Polls do not bring the cursor from {cursor} to the batch's after_sequence {to}")]
    Short { cursor: u64, to: u64 },
    #[error("the log changed under the cursor again and again while processing the batch")]
    Unsettled,
    #[error("the cursor was not saved: {0}")]
    NotSaved(#[from] NotSaved),
}

/// The reader and when it was last caught up: what the mutex guards.
struct Inbox {
    reader: Reader,
    /// When a webhook was last processed or a backfill last caught up; `None` asks the backfill
    /// loop to poll at once (at start, before registering).
    caught_up_at: Option<Instant>,
    /// Set when a Poll failed or the log changed: the producer may have restarted and lost our
    /// subscription, so the loop registers it again (with `replace`, that is harmless).
    register_again: bool,
}

impl Inbox {
    /// Polls from the cursor until it reaches `to` or, without `to`, until the producer has
    /// nothing more. An expired cursor or a new log is dealt with as the other modes do
    /// ([`Reader::out_of_range`]) and polling goes on.
    async fn catch_up(
        &mut self,
        stop: &CancellationToken,
        to: Option<u64>,
    ) -> Result<(), Unprocessed> {
        loop {
            let before = self.reader.cursor().clone();
            // Without a topic filter sequences are consecutive, so a gap is filled exactly: the
            // batch's own events then come from the batch, not twice.
            let limit = match (to, before.after) {
                (Some(to), Some(after)) if self.reader.topics().is_empty() => {
                    Some(u32::try_from(to.saturating_sub(after)).unwrap_or(u32::MAX))
                }
                _ => None,
            };
            let polled = match self
                .reader
                .poll_once(stop, None, limit, Source::Backfill)
                .await
            {
                Ok(Some(polled)) => polled,
                Ok(None) => return Err(Unprocessed::Stopping),
                Err(status)
                    if status.code() == Code::OutOfRange
                        && self.reader.out_of_range(&status) == Next::Now =>
                {
                    continue;
                }
                Err(status) => return Err(Unprocessed::Poll(status)),
            };
            if polled.accepted == Accepted::LogChanged {
                self.register_again = true;
            }
            let after = self.reader.cursor().after;
            let done = match to {
                Some(to) => after.is_some_and(|a| a >= to),
                None => !polled.more_waiting,
            };
            if done {
                return Ok(());
            }
            if polled.accepted == Accepted::Processed && self.reader.cursor() == &before {
                return Err(Unprocessed::Short {
                    cursor: after.unwrap_or_default(),
                    to: to.unwrap_or_default(),
                });
            }
        }
    }

    /// Processes one batch: fills the gap before it, accepts it, and returns once the cursor
    /// is saved (on disk with `--checkpoint`).
    async fn deliver(
        &mut self,
        stop: &CancellationToken,
        batch: &Batch,
    ) -> Result<(), Unprocessed> {
        for _ in 0..MAX_PLANS {
            match plan(self.reader.cursor(), &batch.log_id, batch.after) {
                Plan::FillGap { from, to } => {
                    info!(
                        after_sequence = from,
                        batch_after_sequence = to,
                        "the webhook batch starts past the cursor; polling for the events in between"
                    );
                    self.catch_up(stop, Some(to)).await?;
                }
                Plan::Accept => {
                    let accepted =
                        self.reader
                            .accept(&batch.log_id, batch.events.clone(), batch.next_after);
                    if accepted == Accepted::LogChanged {
                        self.register_again = true;
                    }
                    if accepted == Accepted::Processed {
                        self.reader.saved().await?;
                        self.caught_up_at = Some(Instant::now());
                        return Ok(());
                    }
                }
            }
        }
        Err(Unprocessed::Unsettled)
    }

    /// A backfill Poll failed: as a failed session in the other modes, the reader is no longer
    /// connected and moves on to the next producer; returns how long to wait before the next
    /// attempt.
    fn poll_failed(&mut self, status: &Status, stats: &Stats) -> Duration {
        self.register_again = true;
        self.reader.set_connected(false);
        stats.reconnected();
        match self.reader.move_on(status) {
            Next::Now => Duration::ZERO,
            Next::Backoff => self.reader.backoff_delay(status),
        }
    }
}

/// The webhook endpoint and the loop behind it: a cheap `Clone` handle, one per request.
#[derive(Clone)]
pub struct Receiver {
    shared: Arc<Shared>,
}

struct Shared {
    /// A tokio mutex, not a std one: it is held across the Polls that fill a gap and the wait
    /// for the checkpoint, which is the point: one batch or backfill at a time, in order.
    inbox: Mutex<Inbox>,
    verifier: Verifier,
    settings: Settings,
    stats: Stats,
    /// Cancelled at shutdown: a delivery in progress is then answered 503 rather than holding
    /// the HTTP server up.
    stop: CancellationToken,
}

/// What a delivery is answered: the status and JSON body of each case, in one place.
#[derive(Debug)]
pub enum Answer {
    /// 200: processed, the cursor saved.
    Processed { log_id: String, after_sequence: u64 },
    /// 401: the signature or timestamp did not verify.
    Refused(Refusal),
    /// 400: a good signature on a body that cannot be used.
    Malformed(Malformed),
    /// 410: a batch of another subscription than this consumer's; 410 tells the producer to
    /// stop delivering it (a subscription left from an earlier --webhook-id).
    NotOurs { webhook_id: String },
    /// 503: not processed now; the producer retries.
    Unprocessed(Unprocessed),
}

#[derive(Debug, Serialize)]
struct ProcessedJson<'a> {
    log_id: &'a str,
    after_sequence: u64,
}

/// An error as JSON, in the fields the producer's HTTP side uses.
#[derive(Debug, Serialize)]
struct ErrorJson {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    message: String,
}

impl Answer {
    pub fn status(&self) -> StatusCode {
        match self {
            Answer::Processed { .. } => StatusCode::OK,
            Answer::Refused(_) => StatusCode::UNAUTHORIZED,
            Answer::Malformed(_) => StatusCode::BAD_REQUEST,
            Answer::NotOurs { .. } => StatusCode::GONE,
            Answer::Unprocessed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let status = self.status();
        let error = |code, reason, field, message| ErrorJson {
            code,
            reason,
            field,
            message,
        };
        let body = match self {
            Answer::Processed {
                log_id,
                after_sequence,
            } => {
                return (
                    status,
                    Json(ProcessedJson {
                        log_id: &log_id,
                        after_sequence,
                    }),
                )
                    .into_response();
            }
            Answer::Refused(refusal) => error("unauthenticated", None, None, refusal.to_string()),
            Answer::Malformed(m) => error(
                "invalid_argument",
                Some(ErrorReason::MalformedRequest.as_str_name()),
                Some(m.field),
                m.message,
            ),
            Answer::NotOurs { webhook_id } => error(
                "gone",
                None,
                Some("data.webhook_id".into()),
                format!("this consumer receives the subscription {webhook_id:?} only"),
            ),
            Answer::Unprocessed(why) => error("unavailable", None, None, why.to_string()),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl Receiver {
    /// The receiver for `reader`, which it owns from now on (its cursor, checkpoint and
    /// producers).
    pub fn new(reader: Reader, settings: Settings, stats: Stats, stop: CancellationToken) -> Self {
        let verifier = Verifier::new(&settings.secret, settings.tolerance);
        Self {
            shared: Arc::new(Shared {
                inbox: Mutex::new(Inbox {
                    reader,
                    caught_up_at: None,
                    register_again: false,
                }),
                verifier,
                settings,
                stats,
                stop,
            }),
        }
    }

    /// `POST /webhook`, bodies up to the settings' limit.
    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, post(receive))
            .layer(DefaultBodyLimit::max(self.shared.settings.max_body_bytes))
            .with_state(self.clone())
    }

    /// Handles one delivery received at `now`: the whole of `POST /webhook` but the HTTP.
    pub async fn receive(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Answer {
        let shared = &self.shared;
        let message_id = headers
            .get(standardwebhooks::HEADER_WEBHOOK_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if let Err(refusal) = shared.verifier.verify(headers, body, now) {
            shared.stats.webhook_refused();
            warn!(webhook_message_id = message_id, %refusal, "webhook refused (401)");
            return Answer::Refused(refusal);
        }
        let batch = match parse_batch(body) {
            Ok(batch) => batch,
            Err(m) => {
                shared.stats.webhook_refused();
                warn!(webhook_message_id = message_id, field = %m.field, detail = %m.message, "webhook body malformed (400)");
                return Answer::Malformed(m);
            }
        };
        if batch.webhook_id != shared.settings.webhook_id {
            shared.stats.webhook_refused();
            warn!(
                webhook_id = %batch.webhook_id,
                ours = %shared.settings.webhook_id,
                "webhook of another subscription refused (410, the producer disables it)"
            );
            return Answer::NotOurs {
                webhook_id: shared.settings.webhook_id.clone(),
            };
        }
        let stop = &shared.stop;
        let result = tokio::select! {
            _ = stop.cancelled() => Err(Unprocessed::Stopping),
            result = async {
                let mut inbox = shared.inbox.lock().await;
                let result = inbox.deliver(stop, &batch).await;
                if let Err(Unprocessed::Poll(status)) = &result {
                    inbox.poll_failed(status, &shared.stats);
                }
                result.map(|()| inbox.reader.cursor().clone())
            } => result,
        };
        match result {
            Ok(cursor) => {
                shared.stats.webhook_received();
                debug!(
                    webhook_message_id = message_id,
                    events = batch.events.len(),
                    after_sequence = cursor.after,
                    "webhook processed"
                );
                Answer::Processed {
                    log_id: cursor.log_id.unwrap_or_default(),
                    after_sequence: cursor.after.unwrap_or_default(),
                }
            }
            Err(why) => {
                warn!(webhook_message_id = message_id, %why, "webhook not processed (503); the producer will deliver it again");
                Answer::Unprocessed(why)
            }
        }
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Answer {
    receiver.receive(&headers, &body, SystemTime::now()).await
}

// ---------------------------------------------------------------------------------------------
// Registration and backfill.

/// What one registration attempt came to.
enum Registered {
    /// The producer has the subscription.
    Yes,
    /// Try again at once (the cursor was fixed, or another producer is next).
    Again,
    /// Try again after this long.
    Later(Duration),
}

/// Registers the subscription and backfills until `stop` is cancelled; the handler does the
/// rest. Returning drops this task's handle on the reader.
pub async fn run(receiver: Receiver, stop: CancellationToken) {
    let shared = &receiver.shared;
    info!(
        webhook_id = %shared.settings.webhook_id,
        url = %shared.settings.url,
        path = PATH,
        backfill_interval = ?shared.settings.backfill_interval,
        "receiving webhooks"
    );
    let mut refused_backoff =
        Backoff::new(shared.settings.backoff_initial, shared.settings.backoff_max);
    // The producer (its index) that has our subscription; a failover, a failed Poll or a new
    // log registers it again.
    let mut registered_on: Option<usize> = None;
    let mut register_at = Instant::now();
    let mut backfill_at = Instant::now();
    // The last refusal logged at WARN: repeats go to DEBUG until the registration succeeds.
    let mut last_refusal: Option<(Code, Option<ErrorReason>)> = None;
    loop {
        let now = Instant::now();
        let current = {
            let mut inbox = shared.inbox.lock().await;
            if std::mem::take(&mut inbox.register_again) {
                registered_on = None;
            }
            inbox.reader.producers().current_index()
        };
        // Backfill first, register after, both at start: the subscription then begins at the
        // cursor the Polls reached, and the producer does not push again what they fetched.
        if backfill_at <= now {
            backfill_at = backfill(shared, &stop).await;
        }
        if stop.is_cancelled() {
            break;
        }
        let now = Instant::now();
        if registered_on != Some(current) && register_at <= now {
            match register(shared, &stop, &mut refused_backoff, &mut last_refusal).await {
                Registered::Yes => registered_on = Some(current),
                Registered::Again => register_at = now,
                Registered::Later(delay) => register_at = now + delay,
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let wake = if registered_on == Some(current) {
            backfill_at
        } else {
            backfill_at.min(register_at)
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until(wake) => {}
        }
    }
    info!("webhook receiver stopped");
}

/// One CreateWebhook with the cursor, on the producer in use.
async fn register(
    shared: &Shared,
    stop: &CancellationToken,
    refused_backoff: &mut Backoff,
    last_refusal: &mut Option<(Code, Option<ErrorReason>)>,
) -> Registered {
    let settings = &shared.settings;
    let (mut client, request, producer) = {
        let inbox = shared.inbox.lock().await;
        let reader = &inbox.reader;
        let request = pb::CreateWebhookRequest {
            webhook_id: settings.webhook_id.clone(),
            url: settings.url.clone(),
            topics: reader.topics().to_vec(),
            after_sequence: reader.cursor().after,
            secret: settings.secret.expose().to_owned(),
            replace: true,
        };
        let producers = reader.producers();
        (
            producers.webhook_client(),
            request,
            producers.current().to_owned(),
        )
    };
    let after_sequence = request.after_sequence;
    let mut request = Request::new(request);
    request.set_timeout(REGISTER_TIMEOUT);
    shared.stats.rpc_sent();
    let result = tokio::select! {
        _ = stop.cancelled() => return Registered::Later(Duration::ZERO),
        result = client.create_webhook(request) => result,
    };
    let mut guard = shared.inbox.lock().await;
    let inbox = &mut *guard;
    let reader = &mut inbox.reader;
    let status = match result {
        Ok(response) => {
            let response = response.into_inner();
            // The producer answered: connected again (after a failed Poll, webhooks may keep
            // every backfill Poll from running, so no Poll would say so).
            reader.set_connected(true);
            reader.set_registered(true);
            // Poll at once: what the producer's subscription was behind on, or what arrived
            // while no subscription existed, comes now rather than at the next interval.
            inbox.caught_up_at = None;
            refused_backoff.reset();
            *last_refusal = None;
            info!(
                webhook_id = %settings.webhook_id,
                url = %settings.url,
                after_sequence,
                replaced = response.replaced,
                producer = %producer,
                "webhook subscription registered"
            );
            return Registered::Yes;
        }
        Err(status) => status,
    };
    reader.set_registered(false);
    if status.code() == Code::OutOfRange {
        return match reader.out_of_range(&status) {
            Next::Now => Registered::Again,
            Next::Backoff => Registered::Later(refused_backoff.next_delay()),
        };
    }
    // Unreachable: a failed session, as in the other modes (failover, the reader's backoff).
    if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded) {
        reader.set_connected(false);
        shared.stats.reconnected();
        return match reader.move_on(&status) {
            Next::Now => Registered::Again,
            Next::Backoff => Registered::Later(reader.backoff_delay(&status)),
        };
    }
    // The producer answered and refused (no WebhookService, a URL outside its allow-list...):
    // ask it again later, reading by Poll meanwhile.
    let kind = (status.code(), pushpull::errors::reason(&status));
    let first = *last_refusal != Some(kind);
    *last_refusal = Some(kind);
    let delay = refused_backoff.next_delay();
    let (code, reason) = (
        pushpull::errors::code_name(status.code()),
        kind.1.map(|r| tracing::field::display(r.as_str_name())),
    );
    let message = "the producer refused the webhook subscription; retrying with backoff and polling every --backfill-interval meanwhile (repeats are logged at DEBUG)";
    if first {
        warn!(code, reason, detail = status.message(), producer = %producer, url = %settings.url, "{message}");
    } else {
        debug!(code, reason, detail = status.message(), producer = %producer, "{message}");
    }
    Registered::Later(delay)
}

/// Polls until caught up if no webhook has come for the backfill interval (or one is asked
/// for at once); returns when to look again.
async fn backfill(shared: &Shared, stop: &CancellationToken) -> Instant {
    let interval = shared.settings.backfill_interval;
    let mut inbox = shared.inbox.lock().await;
    let now = Instant::now();
    if let Some(at) = inbox.caught_up_at
        && at + interval > now
    {
        return at + interval;
    }
    let before = inbox.reader.cursor().after;
    match inbox.catch_up(stop, None).await {
        Ok(()) => {
            let after = inbox.reader.cursor().after;
            if after != before {
                info!(
                    from_after_sequence = before,
                    after_sequence = after,
                    "backfilled by Poll what no webhook brought"
                );
            }
            let now = Instant::now();
            inbox.caught_up_at = Some(now);
            now + interval
        }
        Err(Unprocessed::Poll(status)) => {
            let delay = inbox.poll_failed(&status, &shared.stats);
            Instant::now() + delay
        }
        Err(why) => {
            if !stop.is_cancelled() {
                warn!(%why, "backfill stopped short; trying again after --backfill-interval");
            }
            Instant::now() + interval
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::Mode,
        producers::Producers,
        reader::{Cursor, ReaderSettings},
    };

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn secret() -> WebhookSecret {
        SECRET.parse().unwrap()
    }

    fn verifier(tolerance: Duration) -> Verifier {
        Verifier::new(&secret(), tolerance)
    }

    /// The headers the producer sends for `body`, signed with `secret` at `sent`.
    fn signed(secret: &str, id: &str, sent: SystemTime, body: &[u8]) -> HeaderMap {
        let ts = sent.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let signature = standardwebhooks::Webhook::new(secret)
            .unwrap()
            .sign(id, ts, body)
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", id.parse().unwrap());
        headers.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        headers.insert("webhook-signature", signature.parse().unwrap());
        headers
    }

    /// A body as the producer writes it (`WebhookBatch::body`).
    fn body(webhook_id: &str, log_id: &str, after: u64, seqs: &[u64], next_after: u64) -> Vec<u8> {
        let events: Vec<serde_json::Value> = seqs
            .iter()
            .map(|s| {
                serde_json::json!({
                    "sequence": s, "topic": "t", "payload": format!("p{s}"), "encoding": "utf8",
                    "produced_at": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "type": "pushpull.events",
            "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            "data": {
                "webhook_id": webhook_id, "events": events, "after_sequence": after,
                "next_after_sequence": next_after, "head_sequence": next_after, "log_id": log_id,
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let now = SystemTime::now();
        let body = body("c", "L", 3, &[4, 5], 5);
        let headers = signed(SECRET, "c_3_5", now, &body);
        assert_eq!(
            verifier(Duration::from_secs(300)).verify(&headers, &body, now),
            Ok(())
        );
        // One good signature among several (a producer rotating its secret) is enough.
        let mut several = headers.clone();
        let good = headers["webhook-signature"].to_str().unwrap();
        several.insert(
            "webhook-signature",
            format!("v1,AAAA {good}").parse().unwrap(),
        );
        assert_eq!(
            verifier(Duration::from_secs(300)).verify(&several, &body, now),
            Ok(())
        );
    }

    #[test]
    fn tampering_a_wrong_secret_a_stale_or_future_timestamp_and_missing_headers_are_refused() {
        let v = verifier(Duration::from_secs(60));
        let now = SystemTime::now();
        let body = body("c", "L", 3, &[4, 5], 5);
        let headers = signed(SECRET, "c_3_5", now, &body);

        let mut tampered = body.clone();
        let at = tampered.iter().position(|&b| b == b'4').unwrap();
        tampered[at] = b'9';
        assert_eq!(
            v.verify(&headers, &tampered, now),
            Err(Refusal::BadSignature)
        );

        let other = WebhookSecret::generate();
        let wrong = signed(other.expose(), "c_3_5", now, &body);
        assert_eq!(v.verify(&wrong, &body, now), Err(Refusal::BadSignature));

        // The id is signed too: a batch's signature does not fit another id.
        let mut moved = headers.clone();
        moved.insert("webhook-id", "c_5_9".parse().unwrap());
        assert_eq!(v.verify(&moved, &body, now), Err(Refusal::BadSignature));

        let stale = signed(SECRET, "c_3_5", now - Duration::from_secs(61), &body);
        assert!(matches!(
            v.verify(&stale, &body, now),
            Err(Refusal::TooOld(_))
        ));
        let future = signed(SECRET, "c_3_5", now + Duration::from_secs(61), &body);
        assert!(matches!(
            v.verify(&future, &body, now),
            Err(Refusal::TooNew(_))
        ));
        // Within the tolerance either way: fine. A tolerance beyond the crate's fixed 5
        // minutes works too.
        let recent = signed(SECRET, "c_3_5", now - Duration::from_secs(59), &body);
        assert_eq!(v.verify(&recent, &body, now), Ok(()));
        let old = signed(SECRET, "c_3_5", now - Duration::from_secs(600), &body);
        assert_eq!(
            verifier(Duration::from_secs(900)).verify(&old, &body, now),
            Ok(())
        );

        for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let mut missing = headers.clone();
            missing.remove(name);
            assert_eq!(
                v.verify(&missing, &body, now),
                Err(Refusal::MissingHeader(name)),
                "{name}"
            );
        }
        let mut garbled = headers.clone();
        garbled.insert("webhook-timestamp", "soon".parse().unwrap());
        assert_eq!(
            v.verify(&garbled, &body, now),
            Err(Refusal::InvalidHeader("webhook-timestamp"))
        );
        let mut unversioned = headers.clone();
        let bare = headers["webhook-signature"]
            .to_str()
            .unwrap()
            .replace("v1,", "v2,");
        unversioned.insert("webhook-signature", bare.parse().unwrap());
        assert_eq!(
            v.verify(&unversioned, &body, now),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn a_batch_parses_into_events_with_payloads_and_times() {
        let batch = parse_batch(&body("c", "L", 3, &[4, 6], 7)).unwrap();
        assert_eq!(
            (batch.webhook_id.as_str(), batch.log_id.as_str()),
            ("c", "L")
        );
        assert_eq!((batch.after, batch.next_after, batch.head), (3, 7, 7));
        let seqs: Vec<u64> = batch.events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, [4, 6]);
        assert_eq!(&batch.events[0].payload[..], b"p4");
        assert!(batch.events[0].produced_at.is_some());

        let binary = br#"{"type":"pushpull.events","timestamp":"2027-01-15T08:00:01Z","extra":1,
            "data":{"webhook_id":"c","after_sequence":0,"next_after_sequence":1,"head_sequence":9,
            "log_id":"L","events":[{"sequence":1,"topic":"t","payload":"AP8=","encoding":"base64",
            "produced_at":"2027-01-15T08:00:01.000000Z"}]}}"#;
        let batch = parse_batch(binary).unwrap();
        assert_eq!(&batch.events[0].payload[..], [0u8, 255]);
    }

    #[test]
    fn malformed_bodies_name_the_field_at_fault() {
        let good = String::from_utf8(body("c", "L", 3, &[4, 5], 5)).unwrap();
        for (bad, field) in [
            ("not json".to_owned(), "body"),
            (r#"{"type":"pushpull.events"}"#.to_owned(), "body"),
            (good.replace("pushpull.events", "other"), "type"),
            (
                good.replace("\"encoding\":\"utf8\"", "\"encoding\":\"base64\""),
                "data.events[0].payload",
            ),
            (
                good.replace("\"sequence\":5", "\"sequence\":4"),
                "data.events[1].sequence",
            ),
            (
                good.replace("\"sequence\":4", "\"sequence\":3"),
                "data.events[0].sequence",
            ),
            (
                good.replace("\"sequence\":5", "\"sequence\":6"),
                "data.events[1].sequence",
            ),
            (
                good.replace("\"next_after_sequence\":5", "\"next_after_sequence\":2"),
                "data.next_after_sequence",
            ),
        ] {
            let err = parse_batch(bad.as_bytes()).expect_err(&bad);
            assert_eq!(err.field, field, "{bad}: {err}");
        }
        let mut times = good.clone();
        let at = times.find("\"produced_at\":\"").unwrap() + "\"produced_at\":\"".len();
        times.replace_range(at..at + 4, "yyyy");
        assert_eq!(
            parse_batch(times.as_bytes()).unwrap_err().field,
            "data.events[0].produced_at"
        );
    }

    fn cursor(log_id: Option<&str>, after: Option<u64>) -> Cursor {
        Cursor {
            log_id: log_id.map(str::to_owned),
            after,
        }
    }

    #[test]
    fn a_batch_past_the_cursor_fills_the_gap_first_and_others_are_accepted() {
        // The batch continues the cursor, or overlaps it (a redelivery): accept; duplicates are
        // dropped by Reader::accept.
        assert_eq!(plan(&cursor(Some("L"), Some(3)), "L", 3), Plan::Accept);
        assert_eq!(plan(&cursor(Some("L"), Some(9)), "L", 3), Plan::Accept);
        // It starts past the cursor: poll from the cursor to its after_sequence first.
        assert_eq!(
            plan(&cursor(Some("L"), Some(3)), "L", 10),
            Plan::FillGap { from: 3, to: 10 }
        );
        // `--from earliest` / `--from N` before any response: the same, the log is adopted.
        assert_eq!(
            plan(&cursor(None, Some(0)), "L", 10),
            Plan::FillGap { from: 0, to: 10 }
        );
        // `--from latest` before any response: the batch is where reading starts.
        assert_eq!(plan(&cursor(None, None), "L", 10), Plan::Accept);
        // Another log: accept, which starts the cursor over on it; planned again after that,
        // the gap from its oldest event is filled.
        assert_eq!(
            plan(&cursor(Some("old"), Some(500)), "new", 10),
            Plan::Accept
        );
        assert_eq!(
            plan(&cursor(Some("new"), Some(0)), "new", 10),
            Plan::FillGap { from: 0, to: 10 }
        );
    }

    /// A receiver whose reader starts at `start`, its producer unreachable (these tests never
    /// poll).
    fn receiver(start: Cursor) -> (Receiver, Stats) {
        receiver_saving(start, None)
    }

    /// [`receiver`], offering its cursors to `checkpoints`.
    fn receiver_saving(
        start: Cursor,
        checkpoints: Option<crate::checkpoint::Latest>,
    ) -> (Receiver, Stats) {
        let urls = vec!["http://127.0.0.1:9".to_owned()];
        let stats = Stats::new(Mode::Webhook, urls.clone(), vec![]);
        let settings = ReaderSettings {
            mode: Mode::Webhook,
            topics: vec![],
            poll_interval: Duration::from_secs(1),
            max_wait: Duration::from_secs(1),
            max_events: 100,
            stream_idle_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
        };
        let reader = Reader::new(
            Producers::new(&urls, 1024).unwrap(),
            settings,
            start,
            stats.clone(),
            checkpoints,
        );
        let settings = Settings {
            webhook_id: "c".into(),
            url: "http://127.0.0.1:1/webhook".into(),
            secret: secret(),
            tolerance: Duration::from_secs(60),
            backfill_interval: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            max_body_bytes: 1 << 20,
        };
        let receiver = Receiver::new(reader, settings, stats.clone(), CancellationToken::new());
        (receiver, stats)
    }

    async fn post(r: &Receiver, body: &[u8], headers: HeaderMap) -> StatusCode {
        r.receive(&headers, body, SystemTime::now()).await.status()
    }

    async fn deliver(r: &Receiver, after: u64, seqs: &[u64], next_after: u64) -> StatusCode {
        let body = body("c", "L", after, seqs, next_after);
        let headers = signed(
            SECRET,
            &format!("c_{after}_{next_after}"),
            SystemTime::now(),
            &body,
        );
        post(r, &body, headers).await
    }

    #[tokio::test]
    async fn batches_are_accepted_in_order_and_redeliveries_dropped_as_duplicates() {
        let (r, stats) = receiver(cursor(Some("L"), Some(3)));
        assert_eq!(deliver(&r, 3, &[4, 5], 5).await, StatusCode::OK);
        // The same batch again (the producer missed our 2xx), then one overlapping it.
        assert_eq!(deliver(&r, 3, &[4, 5], 5).await, StatusCode::OK);
        assert_eq!(deliver(&r, 4, &[5, 6], 6).await, StatusCode::OK);
        let s = stats.snapshot();
        assert_eq!((s.events_received, s.duplicates_dropped), (3, 3));
        assert_eq!((s.last_sequence, s.after_sequence), (6, Some(6)));
        assert_eq!((s.webhooks_received, s.webhooks_refused), (3, 0));
        assert_eq!((s.events_backfilled, s.events_missed), (0, 0));
    }

    #[tokio::test]
    async fn refused_deliveries_are_401_or_400_counted_and_change_nothing() {
        let (r, stats) = receiver(cursor(Some("L"), Some(3)));
        let good = body("c", "L", 3, &[4, 5], 5);
        let now = SystemTime::now();
        let mut tampered = good.clone();
        let at = tampered.iter().position(|&b| b == b'4').unwrap();
        tampered[at] = b'9';
        let headers = signed(SECRET, "c_3_5", now, &good);
        assert_eq!(
            post(&r, &tampered, headers.clone()).await,
            StatusCode::UNAUTHORIZED
        );
        let stale = signed(SECRET, "c_3_5", now - Duration::from_secs(3600), &good);
        assert_eq!(post(&r, &good, stale).await, StatusCode::UNAUTHORIZED);
        let other = signed(WebhookSecret::generate().expose(), "c_3_5", now, &good);
        assert_eq!(post(&r, &good, other).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            post(&r, &good, HeaderMap::new()).await,
            StatusCode::UNAUTHORIZED
        );
        let junk = b"{\"type\":\"pushpull.events\"}";
        let junk_headers = signed(SECRET, "c_3_5", now, junk);
        assert_eq!(post(&r, junk, junk_headers).await, StatusCode::BAD_REQUEST);
        let theirs = body("someone-else", "L", 3, &[4, 5], 5);
        let theirs_headers = signed(SECRET, "someone-else_3_5", now, &theirs);
        assert_eq!(post(&r, &theirs, theirs_headers).await, StatusCode::GONE);

        let s = stats.snapshot();
        assert_eq!((s.webhooks_refused, s.webhooks_received), (6, 0));
        assert_eq!((s.events_received, s.after_sequence), (0, Some(3)));
        // The genuine delivery still goes through.
        assert_eq!(post(&r, &good, headers).await, StatusCode::OK);
        assert_eq!(stats.snapshot().events_received, 2);
    }

    #[tokio::test]
    async fn a_gap_the_producer_cannot_be_asked_about_is_503_and_nothing_is_accepted() {
        let (r, stats) = receiver(cursor(Some("L"), Some(3)));
        // The batch starts at 10: events 4..=10 must come by Poll first, and the producer is
        // unreachable.
        let answer = {
            let body = body("c", "L", 10, &[11], 11);
            let headers = signed(SECRET, "c_10_11", SystemTime::now(), &body);
            r.receive(&headers, &body, SystemTime::now()).await
        };
        assert!(
            matches!(answer, Answer::Unprocessed(Unprocessed::Poll(_))),
            "{answer:?}"
        );
        let response = answer.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let s = stats.snapshot();
        assert_eq!((s.events_received, s.after_sequence), (0, Some(3)));
        assert_eq!(
            (s.webhooks_received, s.webhooks_refused, s.rpcs_sent),
            (0, 0, 1)
        );
    }

    #[tokio::test]
    async fn with_a_checkpoint_the_2xx_comes_after_the_file_holds_the_batch_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor");
        let (latest, writer) =
            crate::checkpoint::writer(path.clone(), None, Duration::from_secs(3600));
        let writer = tokio::spawn(writer);
        // The hour-long interval would hold every save after the first back.
        let (r, _stats) = receiver_saving(cursor(Some("L"), Some(3)), Some(latest));
        for (after, seqs, next) in [(3, &[4, 5][..], 5), (5, &[6][..], 6), (6, &[7, 8][..], 8)] {
            assert_eq!(deliver(&r, after, seqs, next).await, StatusCode::OK);
            let saved = crate::checkpoint::load(&path).unwrap().unwrap();
            assert_eq!(saved.after_sequence, next);
        }
        drop(r);
        writer.await.unwrap();
    }
}

#[cfg(test)]
mod proptests {
    use std::{sync::Arc, time::UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    /// A delivery body as anyone might send it with a good signature: random bytes, or an
    /// envelope with any sequences, encodings, payloads and timestamps.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let event = (
            0u64..12,
            prop_oneof![Just("utf8"), Just("base64"), Just("rot13")],
            prop_oneof!["[A-Za-z0-9+/=]{0,8}", any::<String>()],
            prop_oneof![
                Just("2024-01-02T03:04:05.000006Z".to_owned()),
                "[0-9TZ:.-]{0,27}",
            ],
        )
            .prop_map(|(sequence, encoding, payload, at)| {
                serde_json::json!({"sequence": sequence, "topic": "t", "payload": payload,
                    "encoding": encoding, "produced_at": at})
            });
        let envelope = (
            prop_oneof![Just(EVENT_TYPE.to_owned()), "[a-z.]{0,16}"],
            0u64..6,
            0u64..12,
            prop::collection::vec(event, 0..4),
        )
            .prop_map(|(kind, after, next_after, events)| {
                serde_json::to_vec(&serde_json::json!({
                    "type": kind,
                    "data": {"webhook_id": "w", "events": events, "after_sequence": after,
                        "next_after_sequence": next_after, "head_sequence": 20, "log_id": "L"},
                }))
                .unwrap()
            });
        prop_oneof![prop::collection::vec(any::<u8>(), 0..64), envelope]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A batch that parses keeps the contract the reader counts on (sequences rising
        /// strictly within (after, next_after]); anything else is refused naming the field.
        #[test]
        fn any_body_is_a_batch_within_its_bounds_or_refused_by_field(body in body()) {
            match parse_batch(&body) {
                Ok(batch) => {
                    prop_assert!(batch.after <= batch.next_after);
                    let mut previous = batch.after;
                    for event in &batch.events {
                        prop_assert!(previous < event.sequence && event.sequence <= batch.next_after);
                        previous = event.sequence;
                    }
                }
                Err(err) => {
                    let field = err.field.as_str();
                    let known = matches!(field, "body" | "type" | "data.next_after_sequence")
                        || field.starts_with("data.events[");
                    prop_assert!(known, "{}", field);
                }
            }
        }

        /// What the producer sends (`WebhookBatch::body`) reads back as the same events, any
        /// payload bytes, text or not.
        #[test]
        fn a_producer_batch_reads_back(
            after in 0u64..1000,
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..5),
            micros in 0u64..4_000_000_000_000_000,
        ) {
            let at = UNIX_EPOCH + Duration::from_micros(micros);
            let events: Vec<producer::log::Event> = payloads
                .iter()
                .enumerate()
                .map(|(i, p)| producer::log::Event {
                    sequence: after + 1 + i as u64,
                    topic: Arc::from("t.x"),
                    payload: p.clone().into(),
                    produced_at: at,
                })
                .collect();
            let head = after + events.len() as u64;
            let log_batch = producer::log::Batch { events, next_after: head, head, oldest: 1 };
            let sent = producer::webhook::delivery::WebhookBatch::new("wh-1", after, &log_batch, "L");

            let got = parse_batch(&sent.body(SystemTime::now())).unwrap();

            prop_assert_eq!((got.after, got.next_after, got.head), (after, head, head));
            prop_assert_eq!((got.webhook_id.as_str(), got.log_id.as_str()), ("wh-1", "L"));
            let expected: Vec<pb::Event> = log_batch.events.into_iter().map(pb::Event::from).collect();
            prop_assert_eq!(got.events, expected);
        }
    }
}
