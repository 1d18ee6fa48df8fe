//! The JetStream store: the log in a NATS JetStream stream, shared by every producer pointed at
//! it. Producers become stateless front ends: the stream (replicated by the NATS cluster's
//! Raft) holds the log, and each producer follows it.
//!
//! # The design, and why
//! - **One JetStream message per group of whole Publish calls** ([`body`]): the message
//!   carries the log sequence of its first event in a header, and the events' encodings in its
//!   body. A Publish is atomic because it is one message; its events are consecutive because
//!   the message's are. This works on any server with JetStream (CI runs 2.15.1; Debian's
//!   2.9.10 works but can let replicas diverge, see docs/jetstream.md), and costs one JetStream message per group commit rather than one
//!   per event. (Atomic batch publish, 2.12+, would store one message per event and needs a
//!   server that has to come from PyPI; it caps a batch at 1,000 messages, below our 10,000
//!   events per Publish.) The limit here is the server's `max_payload` (1 MiB by default; our
//!   configs set 8 MB): a Publish whose events do not fit is refused, whole.
//! - **Gapless across producers: optimistic concurrency.** A message is published with
//!   `Nats-Expected-Last-Sequence` set to the stream's last message as this producer knows it,
//!   and numbers its events after that message's last. If another producer got there first,
//!   the server refuses it (*wrong last sequence*); the writer reads the stream's new last
//!   message, renumbers and tries again. The stream's first message, the *genesis*
//!   ([`GENESIS_ID`]), holds no events: it exists so that every later publish has a last
//!   sequence to expect (the header cannot say "the stream is empty").
//! - **No duplicates from retries.** Each message has a `Nats-Msg-Id`, kept across the
//!   writer's retries of it: a retry after a lost acknowledgement lands in the stream's
//!   duplicate window and is acknowledged as the message already stored.
//! - **Fan-out stays local.** Each producer runs one ordered consumer on the stream (the
//!   follower), which commits every message, whoever published it, to the [`Tail`]: the
//!   cache and head watch that subscribers and long polls read. A Publish is answered once the
//!   follower has committed it, so a producer's readers see its own writes in log order.
//!   Reads older than the cache go to the stream with direct gets ([`read`]).
//! - `log_id` is the stream's name and creation time: the same from every producer, for as
//!   long as the stream exists.

mod body;
mod read;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use async_nats::{
    Client, ConnectOptions, HeaderMap,
    connection::State as ConnectionState,
    jetstream::{
        self, ErrorCode,
        consumer::{DeliverPolicy, pull::OrderedConfig},
        context::{GetStreamErrorKind, PublishErrorKind},
        message::PublishMessage,
        stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy, StorageType, Stream},
    },
};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use self::body::Span;
use super::{
    Bounds, NewBatch, ReadRange, Record, Retention, Store, StoreError, StoreFuture, StoreKind,
    StoreMetrics, StoreStats,
};
use crate::log::Tail;

/// The `Nats-Msg-Id` of the stream's first message, the genesis: every producer that finds the
/// stream empty publishes it, and the duplicate window keeps one.
pub const GENESIS_ID: &str = "pushpull-genesis";

/// How the producer reaches the stream.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// NATS server URLs; the client connects to one and fails over to the others.
    pub urls: Vec<String>,
    /// The stream's name; its subject is `pushpull.<name>`.
    pub stream: String,
    /// Replicas, when the producer creates the stream.
    pub replicas: usize,
    /// Mapped onto the stream's limits: events onto `max_msgs` (a message holds one or more
    /// events, so the stream keeps at least that many), bytes onto `max_bytes`, age onto
    /// `max_age`; the oldest are discarded.
    pub retention: Retention,
    /// How long to keep trying to reach NATS at start before giving up.
    pub connect_timeout: Duration,
}

/// How long the writer keeps retrying one message (leader elections take a few seconds)
/// before failing its Publish calls with UNAVAILABLE.
const APPEND_DEADLINE: Duration = Duration::from_secs(10);
/// How long one publish waits for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the store checks the connection and the stream (health, retention, sizes).
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long the follower may receive nothing while the stream has messages it has not had
/// before its consumer is recreated.
const STALLED: Duration = Duration::from_secs(2);
/// What the headers of a message take, at most, beside its body.
const HEADER_ALLOWANCE: usize = 1024;
/// Publish calls waiting for the writer.
const QUEUE: usize = 1024;
/// The index keeps at most this many messages' positions; above it, every other one goes
/// (a read then finds its message by a short binary search between two kept ones).
const INDEX_MAX: usize = 1 << 16;

/// See the module docs.
#[derive(Debug)]
pub struct JetStreamStore {
    log_id: String,
    shared: Arc<Shared>,
    appends: mpsc::Sender<Append>,
    /// Stops the writer (first, so what it has in flight is committed) and then the rest.
    stop_writer: CancellationToken,
    stop: CancellationToken,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Append {
    batch: NewBatch,
    done: oneshot::Sender<Result<(u64, u64), StoreError>>,
}

#[derive(Debug)]
struct Shared {
    stream_name: String,
    subject: String,
    urls: String,
    client: Client,
    js: jetstream::Context,
    stream: Stream,
    tail: Arc<Tail>,
    metrics: StoreMetrics,
    /// Largest body one message may carry: the server's `max_payload` less the headers.
    max_body: usize,
    position: Mutex<Position>,
    /// Where messages sit: what reads find a sequence's message by, and what the follower
    /// moves `oldest` by.
    index: Mutex<Index>,
    /// The stream's `max_msgs` (0: none): once the stream holds more, the server drops the
    /// oldest as it stores the new one.
    max_messages: u64,
    /// Why the store cannot serve, while it cannot.
    down: Mutex<Option<String>>,
    bytes: AtomicU64,
    messages: AtomicU64,
    /// The stream's last sequence as the last check saw it: the follower's watchdog.
    stream_last: AtomicU64,
    /// The last log sequence this producer published: what closing waits for the follower
    /// to commit, so the last Publish calls are answered.
    published: AtomicU64,
    /// Ids of this producer's messages: unique per process and stream.
    instance: String,
    next_message: AtomicU64,
}

/// What the follower has committed, and the stream's first message.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// Stream sequence of the last message committed (0: none yet).
    stream_seq: u64,
    /// The log's bounds as committed.
    bounds: Bounds,
    /// Stream sequence of the oldest message retained.
    first_stream_seq: u64,
}

impl JetStreamStore {
    /// Connects, creates the stream or checks the existing one, reads its bounds, and starts
    /// following it into `tail`.
    pub async fn open(
        options: JetStreamOptions,
        tail: Arc<Tail>,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        let urls = options.urls.join(",");
        let client = connect(&options).await?;
        let max_payload = client.server_info().max_payload;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(ACK_TIMEOUT);
        let subject = format!("pushpull.{}", options.stream);
        // A stream just created (by this producer or another) elects its leader first: its
        // API calls time out meanwhile. Retried until the connect timeout; a config that
        // does not match is not retried.
        let deadline = Instant::now() + options.connect_timeout;
        let (stream, info) = loop {
            let opened = async {
                let stream = match ensure_stream(&js, &options, &subject).await? {
                    Ok(stream) => stream,
                    Err(mismatch) => return Ok(Err(mismatch)),
                };
                let mut info = stream
                    .get_info()
                    .await
                    .map_err(|e| unavailable(format!("stream {}: {e}", options.stream)))?;
                if info.state.last_sequence == 0 {
                    publish_genesis(&js, &subject).await?;
                    info = stream
                        .get_info()
                        .await
                        .map_err(|e| unavailable(format!("stream {}: {e}", options.stream)))?;
                }
                Ok::<_, StoreError>(Ok((stream, info)))
            };
            match opened.await {
                Ok(Ok(opened)) => break opened,
                Ok(Err(mismatch)) => return Err(mismatch),
                Err(StoreError::Unavailable { detail }) if Instant::now() < deadline => {
                    warn!(reason = %detail, "the stream is not ready yet; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(err) => return Err(err),
            }
        };
        let log_id = format!("{}:{}", options.stream, info.created.unix_timestamp_nanos());
        let shared = Arc::new(Shared {
            stream_name: options.stream.clone(),
            subject,
            urls,
            client,
            js,
            stream,
            tail,
            metrics,
            max_body: max_payload.saturating_sub(HEADER_ALLOWANCE),
            position: Mutex::new(Position {
                stream_seq: 0,
                bounds: Bounds::EMPTY,
                first_stream_seq: 1,
            }),
            index: Mutex::default(),
            max_messages: u64::try_from(wanted_config(&options, "").max_messages).unwrap_or(0),
            down: Mutex::default(),
            bytes: AtomicU64::new(info.state.bytes),
            messages: AtomicU64::new(info.state.messages),
            stream_last: AtomicU64::new(info.state.last_sequence),
            published: AtomicU64::new(0),
            instance: format!(
                "{:x}-{:08x}",
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
                rand::random::<u32>()
            ),
            next_message: AtomicU64::new(1),
        });
        let last = shared.get(info.state.last_sequence).await?.ok_or_else(|| {
            // Age retention removed every message, the genesis too, so no message says
            // where the log's head is: numbering anew would reuse sequences.
            unavailable(format!(
                "stream {} holds no messages (age retention removed them all, last stream \
                     sequence {}), so the log's head cannot be read back; start with a new \
                     --nats-stream, or delete this stream to start a new log",
                options.stream, info.state.last_sequence
            ))
        })?;
        let first = shared.first_message(info.state.first_sequence).await?;
        let bounds = Bounds {
            oldest: first.1.first,
            head: last.1.last(),
        };
        *shared.lock_position() = Position {
            stream_seq: last.0,
            bounds,
            first_stream_seq: first.0,
        };
        shared.index_insert(first.0, first.1);
        shared.index_insert(last.0, last.1);
        shared.tail.set_bounds(bounds);
        info!(
            stream = %shared.stream_name,
            subject = %shared.subject,
            nats = %shared.urls,
            replicas = info.config.num_replicas,
            max_payload,
            messages = info.state.messages,
            oldest = bounds.oldest,
            head = bounds.head,
            "JetStream store opened"
        );

        let (stop, stop_writer) = (CancellationToken::new(), CancellationToken::new());
        let (appends, queue) = mpsc::channel(QUEUE);
        let tasks = vec![
            tokio::spawn(Arc::clone(&shared).follow(stop.clone())),
            tokio::spawn(Arc::clone(&shared).check(stop.clone())),
        ];
        let writer = tokio::spawn(Arc::clone(&shared).write(queue, stop_writer.clone()));
        Ok(Self {
            log_id,
            shared,
            appends,
            stop_writer,
            stop,
            writer: Mutex::new(Some(writer)),
            tasks: Mutex::new(tasks),
        })
    }
}

fn unavailable(detail: String) -> StoreError {
    StoreError::Unavailable { detail }
}

/// Connects to one of the URLs, retrying until `options.connect_timeout`: in a compose
/// file or a cluster start, NATS may come up after the producer.
async fn connect(options: &JetStreamOptions) -> Result<Client, StoreError> {
    let urls = options.urls.join(",");
    let deadline = Instant::now() + options.connect_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let connected = ConnectOptions::new()
            .name("pushpull-producer")
            .connection_timeout(Duration::from_secs(2))
            // After the first connection, reconnect for ever: the store reports itself
            // unavailable meanwhile, and resumes by itself.
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => info!("NATS connected"),
                    async_nats::Event::Disconnected => warn!("NATS disconnected; reconnecting"),
                    other => debug!(event = %other, "NATS"),
                }
            })
            .connect(options.urls.as_slice())
            .await;
        match connected {
            Ok(client) => return Ok(client),
            Err(err) if Instant::now() + delay < deadline => {
                warn!(nats = %urls, error = %err, "NATS not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(err) => {
                return Err(unavailable(format!(
                    "NATS unreachable at {urls} (tried for {}): {err}",
                    humantime::format_duration(options.connect_timeout)
                )));
            }
        }
    }
}

/// The stream's config as the flags ask for it.
fn wanted_config(options: &JetStreamOptions, subject: &str) -> StreamConfig {
    StreamConfig {
        name: options.stream.clone(),
        subjects: vec![subject.to_owned()],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage: StorageType::File,
        num_replicas: options.replicas,
        // -1: no limit (the server reserves max_bytes against its storage, so "everything"
        // is said that way, not as a huge number).
        max_messages: i64::try_from(options.retention.max_events).unwrap_or(-1),
        max_bytes: i64::try_from(options.retention.max_bytes).unwrap_or(-1),
        max_age: options.retention.max_age.unwrap_or_default(),
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    }
}

/// What differs between an existing stream's config and the one the flags ask for.
fn differences(have: &StreamConfig, want: &StreamConfig) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut differ = |what: &str, have: String, want: String, flag: &str| {
        if have != want {
            diffs.push(format!("{what} is {have}, {flag} asks for {want}"));
        }
    };
    differ(
        "subjects",
        format!("{:?}", have.subjects),
        format!("{:?}", want.subjects),
        "--nats-stream",
    );
    differ(
        "max_msgs",
        have.max_messages.to_string(),
        want.max_messages.to_string(),
        "--retention-events",
    );
    differ(
        "max_bytes",
        have.max_bytes.to_string(),
        want.max_bytes.to_string(),
        "--retention-bytes",
    );
    differ(
        "max_age",
        format!("{:?}", have.max_age),
        format!("{:?}", want.max_age),
        "--retention-age",
    );
    differ(
        "num_replicas",
        have.num_replicas.to_string(),
        want.num_replicas.to_string(),
        "--nats-replicas",
    );
    differ(
        "discard",
        format!("{:?}", have.discard),
        format!("{:?}", want.discard),
        "pushpull",
    );
    differ(
        "retention",
        format!("{:?}", have.retention),
        format!("{:?}", want.retention),
        "pushpull",
    );
    differ(
        "allow_direct",
        have.allow_direct.to_string(),
        want.allow_direct.to_string(),
        "pushpull",
    );
    diffs
}

/// Creates the stream, or checks that the existing one is what the flags ask for: the inner
/// error says how it differs (not worth retrying), the outer one that NATS did not answer.
async fn ensure_stream(
    js: &jetstream::Context,
    options: &JetStreamOptions,
    subject: &str,
) -> Result<Result<Stream, StoreError>, StoreError> {
    let want = wanted_config(options, subject);
    let name = &options.stream;
    let stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(err)
            if matches!(err.kind(), GetStreamErrorKind::JetStream(e)
                if e.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
        {
            info!(stream = %name, subject, replicas = options.replicas, "creating the JetStream stream");
            match js.create_stream(want.clone()).await {
                Ok(stream) => stream,
                // Another producer created it meanwhile: check it like any existing one.
                Err(create) => js
                    .get_stream(name)
                    .await
                    .map_err(|_| unavailable(format!("cannot create stream {name}: {create}")))?,
            }
        }
        Err(err) => return Err(unavailable(format!("stream {name}: {err}"))),
    };
    let diffs = differences(&stream.cached_info().config, &want);
    if !diffs.is_empty() {
        return Ok(Err(unavailable(format!(
            "stream {name} exists with a different config: {}; start with matching flags, or \
             delete the stream (its log with it) to have it created anew",
            diffs.join("; ")
        ))));
    }
    Ok(Ok(stream))
}

/// Publishes the genesis: no events, the first sequence 1. Two producers finding the stream
/// empty at once both publish it; the message id keeps one.
async fn publish_genesis(js: &jetstream::Context, subject: &str) -> Result<(), StoreError> {
    let mut headers = HeaderMap::new();
    Span {
        first: 1,
        events: 0,
    }
    .write_headers(&mut headers);
    // A stream another producer is creating this moment may not listen on its subject yet
    // (no responders): a few tries.
    let mut tries = 0;
    loop {
        let publish = PublishMessage::build()
            .headers(headers.clone())
            .message_id(GENESIS_ID)
            .payload(bytes::Bytes::new());
        let acked = async { js.send_publish(subject.to_owned(), publish).await?.await }.await;
        match acked {
            Ok(ack) => {
                info!(
                    sequence = ack.sequence,
                    duplicate = ack.duplicate,
                    "genesis message"
                );
                return Ok(());
            }
            Err(err) if tries < 50 && err.kind() == PublishErrorKind::StreamNotFound => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(unavailable(format!("cannot publish to {subject}: {err}"))),
        }
    }
}

impl Shared {
    fn lock_position(&self) -> MutexGuard<'_, Position> {
        self.position.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_down(&self, why: Option<String>) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if *down != why {
            match &why {
                Some(why) => warn!(reason = %why, "JetStream store unavailable"),
                None => info!("JetStream store available again"),
            }
            *down = why;
        }
    }

    fn index_insert(&self, stream_seq: u64, span: Span) {
        self.lock_index().insert(stream_seq, span);
    }

    /// The message at `stream_seq`, or `None` if the stream no longer holds it. Direct gets
    /// may be answered by a replica that lags; a miss is asked again of the leader.
    async fn get(&self, stream_seq: u64) -> Result<Option<(u64, Span, bytes::Bytes)>, StoreError> {
        use async_nats::jetstream::stream::{DirectGetErrorKind, RawMessageErrorKind};
        let message = match self.stream.direct_get(stream_seq).await {
            Ok(m) => m,
            Err(err) if err.kind() == DirectGetErrorKind::NotFound => {
                match self.stream.get_raw_message(stream_seq).await {
                    Ok(m) => m,
                    Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => {
                        return Ok(None);
                    }
                    Err(err) => {
                        return Err(unavailable(format!(
                            "stream {}: reading message {stream_seq}: {err}",
                            self.stream_name
                        )));
                    }
                }
            }
            Err(err) => {
                return Err(unavailable(format!(
                    "stream {}: reading message {stream_seq}: {err}",
                    self.stream_name
                )));
            }
        };
        let span = Span::from_headers(Some(&message.headers))
            .map_err(|detail| self.corrupt(message.sequence, detail))?;
        Ok(Some((message.sequence, span, message.payload)))
    }

    /// The oldest message still in the stream, at or after `from`.
    async fn first_message(&self, mut from: u64) -> Result<(u64, Span), StoreError> {
        // Retention may remove it between the stream's info and the get: move on.
        for _ in 0..100 {
            if let Some((seq, span, _)) = self.get(from).await? {
                return Ok((seq, span));
            }
            from += 1;
        }
        Err(unavailable(format!(
            "stream {}: no message found from stream sequence {from}",
            self.stream_name
        )))
    }

    fn corrupt(&self, stream_seq: u64, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: format!("stream {} ({})", self.stream_name, self.subject).into(),
            offset: stream_seq,
            detail: format!("message {stream_seq}: {detail}"),
        }
    }

    /// Where the writer numbers from: the last message it knows of, its own or the
    /// follower's.
    fn append_position(&self, own: Option<(u64, u64)>) -> (u64, u64) {
        let position = self.lock_position();
        let follower = (position.stream_seq, position.bounds.head);
        match own {
            Some(own) if own.0 > follower.0 => own,
            _ => follower,
        }
    }

    /// The writer: one message in flight at a time (each expects the last), carrying every
    /// Publish that queued while the previous one was out: the group commit.
    async fn write(self: Arc<Self>, mut queue: mpsc::Receiver<Append>, stop: CancellationToken) {
        let mut own: Option<(u64, u64)> = None;
        let mut carried: Option<Append> = None;
        loop {
            let first = match carried.take() {
                Some(append) => append,
                None => tokio::select! {
                    () = stop.cancelled() => break,
                    next = queue.recv() => match next {
                        Some(append) => append,
                        None => break,
                    },
                },
            };
            let size = body::encoded_len(&first.batch);
            if size > self.max_body {
                let _ = first.done.send(Err(StoreError::TooLarge {
                    size,
                    max: self.max_body,
                }));
                continue;
            }
            let mut group = vec![first];
            let mut bytes = size;
            while let Ok(next) = queue.try_recv() {
                let size = body::encoded_len(&next.batch);
                if bytes + size > self.max_body {
                    carried = Some(next);
                    break;
                }
                bytes += size;
                group.push(next);
            }
            let batches: Vec<NewBatch> = group.iter().map(|a| a.batch.clone()).collect();
            let stored = self.append_group(&batches, &mut own).await;
            // Answered once the follower has committed the message, while the writer
            // publishes the next one: the wait for the follower is off the writer's path.
            let shared = Arc::clone(&self);
            tokio::spawn(async move {
                let result = match stored {
                    Ok((spans, last)) => shared
                        .committed(last, Instant::now() + APPEND_DEADLINE)
                        .await
                        .map(|()| spans),
                    Err(err) => Err(err),
                };
                for (i, append) in group.into_iter().enumerate() {
                    let _ = append
                        .done
                        .send(result.as_ref().map(|spans| spans[i]).map_err(Clone::clone));
                }
            });
        }
        // Closed: whatever still queues is refused.
        queue.close();
        for append in carried
            .into_iter()
            .chain(std::iter::from_fn(|| queue.try_recv().ok()))
        {
            let _ = append.done.send(Err(StoreError::Closed));
        }
    }

    /// Publishes `batches` as one message, retrying until it is stored (or the deadline).
    /// Returns each batch's (first, last), and the message's last sequence.
    async fn append_group(
        &self,
        batches: &[NewBatch],
        own: &mut Option<(u64, u64)>,
    ) -> Result<(Vec<(u64, u64)>, u64), StoreError> {
        let deadline = Instant::now() + APPEND_DEADLINE;
        let id = format!(
            "{}-{}",
            self.instance,
            self.next_message.fetch_add(1, Ordering::Relaxed)
        );
        let events: u64 = batches.iter().map(|b| b.events.len() as u64).sum();
        let produced_at = SystemTime::now();
        let (mut expect, mut head) = self.append_position(*own);
        let (mut body, mut spans) = body::encode(head + 1, batches, produced_at);
        let mut last_error = String::new();
        let stored = loop {
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "stream {} on NATS {} did not take the Publish within {}: {last_error}",
                    self.stream_name,
                    self.urls,
                    humantime::format_duration(APPEND_DEADLINE)
                )));
            }
            if self.client.connection_state() != ConnectionState::Connected {
                // Fail fast rather than queue in the client: the caller hears what is down.
                return Err(unavailable(format!(
                    "NATS unreachable: not connected to any of {}",
                    self.urls
                )));
            }
            let mut headers = HeaderMap::new();
            Span {
                first: head + 1,
                events,
            }
            .write_headers(&mut headers);
            let publish = PublishMessage::build()
                .headers(headers)
                .message_id(&id)
                .expected_last_sequence(expect)
                .payload(body.clone());
            let acked = async {
                self.js
                    .send_publish(self.subject.clone(), publish)
                    .await?
                    .await
            }
            .await;
            match acked {
                Ok(ack) if !ack.duplicate => {
                    self.metrics.jetstream_messages.inc();
                    break (
                        ack.sequence,
                        Span {
                            first: head + 1,
                            events,
                        },
                    );
                }
                Ok(ack) => {
                    // An earlier try of this message was stored (its acknowledgement was
                    // lost), perhaps numbered before a renumbering: read how.
                    let (seq, span, _) = self.get(ack.sequence).await?.ok_or_else(|| {
                        unavailable(format!(
                            "stream {}: message {} acknowledged as a duplicate is gone",
                            self.stream_name, ack.sequence
                        ))
                    })?;
                    break (seq, span);
                }
                Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another producer published first: number after the stream's last.
                    let last = self.last_message().await?;
                    if last.2.as_deref() == Some(id.as_str()) {
                        break (last.0, last.1);
                    }
                    debug!(
                        expected = expect,
                        last = last.0,
                        "another producer published first; renumbering"
                    );
                    self.metrics.jetstream_conflicts.inc();
                    (expect, head) = (last.0, last.1.last());
                    (body, spans) = body::encode(head + 1, batches, produced_at);
                }
                Err(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(StoreError::TooLarge {
                        size: body.len(),
                        max: self.max_body,
                    });
                }
                Err(err) => {
                    // Timed out (a leader election, a lost ack), or the connection broke:
                    // try the same message again; the id makes a second copy a duplicate.
                    last_error = err.to_string();
                    debug!(error = %err, "publish failed; retrying");
                    self.metrics.jetstream_retries.inc();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let (stream_seq, span) = stored;
        if span.events != events {
            return Err(self.corrupt(
                stream_seq,
                format!(
                    "holds {} events where this Publish had {events}",
                    span.events
                ),
            ));
        }
        if span.first != head + 1 {
            // Stored by an earlier try, numbered then.
            let mut next = span.first;
            spans = batches
                .iter()
                .map(|b| {
                    let first = next;
                    next += b.events.len() as u64;
                    (first, next - 1)
                })
                .collect();
        }
        *own = Some((stream_seq, span.last()));
        self.published.fetch_max(span.last(), Ordering::Relaxed);
        Ok((spans, span.last()))
    }

    /// The stream's last message: its sequence, span and message id.
    async fn last_message(&self) -> Result<(u64, Span, Option<String>), StoreError> {
        let message = self
            .stream
            .direct_get_last_for_subject(self.subject.clone())
            .await
            .map_err(|e| {
                unavailable(format!(
                    "stream {}: reading the last message: {e}",
                    self.stream_name
                ))
            })?;
        let span = Span::from_headers(Some(&message.headers))
            .map_err(|detail| self.corrupt(message.sequence, detail))?;
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned());
        Ok((message.sequence, span, id))
    }

    /// Waits until the follower has committed through `last`: a Publish is answered once its
    /// events are visible here, as with every store.
    async fn committed(&self, last: u64, deadline: Instant) -> Result<(), StoreError> {
        let mut head = self.tail.watch_head();
        let reached = tokio::time::timeout_at(deadline.into(), head.wait_for(|h| *h >= last));
        match reached.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Closed),
            Err(_) => Err(unavailable(format!(
                "stored in stream {} through sequence {last}, but this producer's follower has \
                 not read it back yet",
                self.stream_name
            ))),
        }
    }

    /// The follower: one ordered consumer from the message after the last committed,
    /// recreated (from where it stopped) whenever it fails.
    async fn follow(self: Arc<Self>, stop: CancellationToken) {
        let mut delay = Duration::from_millis(50);
        loop {
            let start = self.lock_position().stream_seq + 1;
            let consumer = self
                .stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::ByStartSequence {
                        start_sequence: start,
                    },
                    ..Default::default()
                })
                .await;
            let messages = match consumer {
                Ok(consumer) => consumer.messages().await.map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            };
            match messages {
                Ok(mut messages) => loop {
                    // The watchdog: an ordered consumer whose server went away can go quiet
                    // without an error. Messages the stream has that did not arrive for
                    // STALLED mean it is stuck: recreate it.
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = messages.next() => next,
                        () = self.stalled() => {
                            warn!(
                                at = self.lock_position().stream_seq,
                                stream_last = self.stream_last.load(Ordering::Relaxed),
                                "the follower stopped receiving; recreating its consumer"
                            );
                            break;
                        }
                    };
                    match next {
                        Some(Ok(message)) => {
                            delay = Duration::from_millis(50);
                            if let Err(err) = self.apply(&message) {
                                error!(error = %err, "the stream holds a message that breaks the log; following stopped");
                                self.set_down(Some(err.to_string()));
                                stop.cancelled().await;
                                return;
                            }
                        }
                        Some(Err(err)) => {
                            debug!(error = %err, "the follower's consumer failed; recreating it");
                            break;
                        }
                        None => break,
                    }
                },
                Err(err) => debug!(error = %err, start, "cannot follow the stream yet"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Resolves once the stream has had messages the follower has not received for
    /// [`STALLED`].
    async fn stalled(&self) {
        let mut behind_since: Option<Instant> = None;
        let mut at = self.lock_position().stream_seq;
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            let now = self.lock_position().stream_seq;
            let behind = self.stream_last.load(Ordering::Relaxed) > now;
            if !behind || now != at {
                behind_since = None;
                at = now;
                continue;
            }
            let since = *behind_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= STALLED {
                return;
            }
        }
    }

    /// Commits one message of the stream to the tail.
    fn apply(&self, message: &jetstream::Message) -> Result<(), StoreError> {
        let stream_seq = message
            .info()
            .map_err(|e| unavailable(format!("a message without JetStream info: {e}")))?
            .stream_sequence;
        let span = Span::from_headers(message.headers.as_ref())
            .map_err(|detail| self.corrupt(stream_seq, detail))?;
        let mut position = self.lock_position();
        if stream_seq <= position.stream_seq {
            return Ok(()); // delivered again after a recreate
        }
        let head = position.bounds.head;
        let previous = position.stream_seq;
        position.stream_seq = stream_seq;
        if span.events == 0 {
            return Ok(());
        }
        if span.last() <= head {
            return Err(self.corrupt(
                stream_seq,
                format!(
                    "sequences {}..={} again, after the head {head}: two messages claim them",
                    span.first,
                    span.last()
                ),
            ));
        }
        let entries =
            body::entries(span, &message.payload).map_err(|d| self.corrupt(stream_seq, d))?;
        if span.first != head + 1 {
            if span.first <= head {
                return Err(self.corrupt(
                    stream_seq,
                    format!("starts at {} inside the log (head {head})", span.first),
                ));
            }
            // Retention removes whole messages, so events it took away leave a gap in the
            // stream's sequences too. Right after the message that ends at the head, there
            // is no message they could have been in: the log is broken (a replica whose
            // messages differ from the leader's has been seen to serve this), not shorter.
            if previous != 0 && stream_seq == previous + 1 {
                return Err(self.corrupt(
                    stream_seq,
                    format!(
                        "starts at {}, though it follows message {previous}, which ends at \
                         {head}: sequences {}..={} are in no message",
                        span.first,
                        head + 1,
                        span.first - 1
                    ),
                ));
            }
            // Retention removed messages this producer had not read yet.
            warn!(
                head,
                next = span.first,
                "messages were removed from the stream before this producer read them; the \
                 cache starts over"
            );
            position.bounds.oldest = position.bounds.oldest.max(span.first);
            self.tail.jump(Bounds {
                oldest: position.bounds.oldest,
                head: span.first - 1,
            });
        }
        position.bounds.head = span.last();
        self.index_insert(stream_seq, span);
        // The server dropped the oldest messages over `max_msgs` as it stored this one: the
        // oldest event is now the first of the message `max_msgs - 1` before it. (The index
        // may have been thinned: then a message before it, which only undercounts what is
        // gone until the next check.)
        if self.max_messages > 0 && stream_seq >= self.max_messages {
            let first_kept = stream_seq + 1 - self.max_messages;
            if first_kept > position.first_stream_seq
                && let Some(oldest) = self.lock_index().first_at_or_before(first_kept)
            {
                position.first_stream_seq = first_kept;
                position.bounds.oldest = position.bounds.oldest.max(oldest);
            }
        }
        self.tail.commit(entries, position.bounds);
        Ok(())
    }

    /// Checks the connection and the stream every [`CHECK_EVERY`]: health, the oldest
    /// retained sequence (the stream's limits drop messages on the server), sizes.
    async fn check(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.client.connection_state() != ConnectionState::Connected {
                self.set_down(Some(format!(
                    "NATS unreachable: not connected to any of {}",
                    self.urls
                )));
                continue;
            }
            let info = match tokio::time::timeout(ACK_TIMEOUT, self.stream.get_info()).await {
                Ok(Ok(info)) => info,
                Ok(Err(err)) => {
                    self.set_down(Some(format!("stream {}: {err}", self.stream_name)));
                    continue;
                }
                Err(_) => {
                    self.set_down(Some(format!(
                        "stream {}: no answer within {} (no leader?)",
                        self.stream_name,
                        humantime::format_duration(ACK_TIMEOUT)
                    )));
                    continue;
                }
            };
            if info.cluster.as_ref().is_some_and(|c| c.leader.is_none()) {
                self.set_down(Some(format!(
                    "stream {} has no leader (a NATS election is under way)",
                    self.stream_name
                )));
                continue;
            }
            self.set_down(None);
            self.bytes.store(info.state.bytes, Ordering::Relaxed);
            self.messages.store(info.state.messages, Ordering::Relaxed);
            self.stream_last
                .store(info.state.last_sequence, Ordering::Relaxed);
            if let Err(err) = self
                .retain(info.state.first_sequence, info.state.messages)
                .await
            {
                debug!(error = %err, "cannot read the stream's first message");
            }
        }
    }

    /// Moves `oldest` to the stream's first message once the server has dropped older ones.
    async fn retain(&self, first_stream_seq: u64, messages: u64) -> Result<(), StoreError> {
        let known = self.lock_position().first_stream_seq;
        if first_stream_seq <= known {
            return Ok(());
        }
        let oldest = if messages == 0 {
            self.lock_position().bounds.head + 1
        } else {
            self.first_message(first_stream_seq).await?.1.first
        };
        let mut position = self.lock_position();
        position.first_stream_seq = first_stream_seq;
        position.bounds.oldest = position.bounds.oldest.max(oldest);
        self.tail.set_bounds(position.bounds);
        drop(position);
        self.lock_index().prune(first_stream_seq);
        Ok(())
    }
}

impl Store for JetStreamStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Jetstream
    }

    fn log_id(&self) -> &str {
        &self.log_id
    }

    fn bounds(&self) -> Bounds {
        self.shared.lock_position().bounds
    }

    fn append(&self, batch: NewBatch) -> StoreFuture<'_, (u64, u64)> {
        Box::pin(async move {
            if self.stop_writer.is_cancelled() {
                return Err(StoreError::Closed);
            }
            let (done, result) = oneshot::channel();
            self.appends
                .send(Append { batch, done })
                .await
                .map_err(|_| StoreError::Closed)?;
            result.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn read(&self, range: ReadRange) -> StoreFuture<'_, Vec<Record>> {
        Box::pin(read::read(&self.shared, range))
    }

    fn enforce_retention(&self) {
        // The stream's limits are applied by the server; `check` follows them.
    }

    fn stats(&self) -> StoreStats {
        let bounds = self.bounds();
        StoreStats {
            events: (bounds.head + 1).saturating_sub(bounds.oldest),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            segments: 0,
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.stop_writer.cancel();
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(writer) = writer {
                let _ = writer.await;
            }
            // What was published gets committed, and its Publish calls answered, before the
            // follower stops (bounded: the stream may be out).
            let published = self.shared.published.load(Ordering::Relaxed);
            let _ = self
                .shared
                .committed(published, Instant::now() + Duration::from_secs(5))
                .await;
            self.stop.cancel();
            let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
            for task in tasks {
                let _ = task.await;
            }
            let _ = self.shared.client.flush().await;
            Ok(())
        })
    }

    fn unavailable(&self) -> Option<String> {
        self.shared
            .down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The known messages nearest a sequence no known message holds: the one below (its stream
/// sequence and span) and the one above (its stream sequence); either may be unknown.
type Nearest = (Option<(u64, Span)>, Option<u64>);

/// Positions of messages with events: log sequence of the first event → (stream sequence,
/// events), and stream sequence → first event. Both grow together, which is what makes a
/// binary search between two known messages work.
#[derive(Debug, Default)]
struct Index {
    by_sequence: BTreeMap<u64, (u64, u64)>,
    by_message: BTreeMap<u64, u64>,
}

impl Index {
    fn insert(&mut self, stream_seq: u64, span: Span) {
        if span.events == 0 {
            return;
        }
        self.by_sequence
            .insert(span.first, (stream_seq, span.events));
        self.by_message.insert(stream_seq, span.first);
        if self.by_sequence.len() > INDEX_MAX {
            // Keep every other one: memory stays bounded, and a lookup between two kept ones
            // is one more step of binary search.
            let kept: Vec<_> = self
                .by_sequence
                .iter()
                .step_by(2)
                .map(|(k, v)| (*k, *v))
                .collect();
            self.by_message = kept
                .iter()
                .map(|(first, (seq, _))| (*seq, *first))
                .collect();
            self.by_sequence = kept.into_iter().collect();
        }
    }

    /// The message holding `sequence` (its stream sequence and span), or the nearest known
    /// messages around it.
    fn find(&self, sequence: u64) -> Result<(u64, Span), Nearest> {
        let below = self
            .by_sequence
            .range(..=sequence)
            .next_back()
            .map(|(&first, &(stream_seq, events))| (stream_seq, Span { first, events }));
        if let Some((stream_seq, span)) = below
            && span.contains(sequence)
        {
            return Ok((stream_seq, span));
        }
        let above = self.by_sequence.range(sequence + 1..).next();
        Err((below, above.map(|(_, (s, _))| *s)))
    }

    /// The first event of the known message at or before `stream_seq`.
    fn first_at_or_before(&self, stream_seq: u64) -> Option<u64> {
        self.by_message
            .range(..=stream_seq)
            .next_back()
            .map(|(_, first)| *first)
    }

    /// Forgets messages retention removed.
    fn prune(&mut self, first_stream_seq: u64) {
        self.by_message = self.by_message.split_off(&first_stream_seq);
        if let Some(first) = self.by_message.values().next().copied() {
            self.by_sequence = self.by_sequence.split_off(&first);
        } else {
            self.by_sequence.clear();
        }
    }
}

#[cfg(test)]
mod tests;
