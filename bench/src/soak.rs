//! The soak (`--only soak`): one producer under a bounded, mixed load for minutes (CI: 60 s),
//! watched for leaks and for lost or repeated events.
//!
//! The load, every client in the benchmark process and every one of them bounded in count and
//! time:
//! - publishers: gRPC `Publish` (two), `POST /publish`, WebSocket `publish`;
//! - well-behaved readers, each checking it sees every event once and in order: gRPC
//!   `Subscribe`, gRPC `Poll` every 100 ms, gRPC and HTTP long polls, SSE and WebSocket; half of
//!   them come and go (a fresh connection each time, resuming after their last sequence);
//! - stallers: a `Subscribe`, an SSE and a WebSocket stream opened from the oldest event and
//!   never read (small receive windows), held for a while and dropped;
//! - garbage: raw bytes and HTTP/1 to the gRPC port, junk and a 64 KiB request line to the HTTP
//!   port, gRPC messages with a bad length prefix, a cut body, a compressed flag with no
//!   encoding, bytes that are no protobuf, WebSocket text that is no JSON; and connections that
//!   send half a preface or half a header and wait.
//!
//! A warm-up round of the same load (a tenth of the duration, 3 to 10 s) runs first, after the
//! log was filled to its retention, so the start sample already holds a full log, warm allocator
//! arenas and connection buffers. The producer's RSS, open file descriptors and live tokio tasks
//! are sampled when the warm-up's clients have left (start) and when the measured round's have
//! (end). A server that refuses or cuts off a staller or a piece of garbage is doing its job:
//! that is reported, never a failure; a well-behaved reader the server cuts off resumes from
//! its last sequence, and only what it then missed or saw twice counts.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use pushpull::pb;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    task::JoinHandle,
    time::{MissedTickBehavior, sleep, sleep_until, timeout},
};
use tokio_tungstenite::{connect_async, tungstenite::Message as WsMessage};
use tonic::{client::GrpcService as _, codegen::http};

use crate::{
    Progress,
    child::{Proc, Role},
    load::{self, PAYLOAD_BYTES, TOPIC, channel, channel_with, producer_client},
    scenarios::{mib, strings},
    scrape::Scrape,
};

/// The producer's live-task gauge (`producer/src/metrics.rs`).
const TASKS: &str = "pushpull_producer_runtime_tasks";
/// The log's retention: filled before the warm-up, so the log's size is flat from the start.
pub const RETENTION_EVENTS: u64 = 20_000;
/// Every publisher sends one call every 100 ms: gRPC ones this many events each, the HTTP and
/// WebSocket ones [`JSON_BATCH`].
pub const GRPC_BATCH: usize = 15;
pub const JSON_BATCH: usize = 10;
/// A reader's cursor is checked this often while it waits for events.
const TICK: Duration = Duration::from_millis(100);
/// How long readers may take, after publishing stopped, to reach the final head.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(30);
/// A long poll's wait (gRPC `max_wait`, HTTP `wait`).
const LONG_POLL: Duration = Duration::from_secs(2);
/// How long a staller holds its stream unread, and a half-open connection its half.
pub const STALL: Duration = Duration::from_secs(8);
pub const HALF_OPEN: Duration = Duration::from_secs(5);
/// How long a piece of garbage waits for the producer's reaction.
const GARBAGE_ANSWER: Duration = Duration::from_secs(3);
/// How long the producer may take, once every client has left, to be back within the margins.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// The margins the end sample must be within of the start sample.
pub const RSS_GROWTH_SHARE: f64 = 0.20;
pub const RSS_GROWTH_BYTES: u64 = 16 * 1024 * 1024;
pub const FDS_MARGIN: u64 = 8;
pub const TASKS_MARGIN: u64 = 16;

/// How long the soak runs.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// The measured round (`--soak-secs`); the warm-up comes on top.
    pub duration: Duration,
}

impl SoakSettings {
    pub fn full() -> Self {
        Self {
            duration: Duration::from_secs(180),
        }
    }

    pub fn quick() -> Self {
        Self {
            duration: Duration::from_secs(20),
        }
    }

    /// A tenth of the round, 3 to 10 s: long enough for every kind of client to have come and
    /// gone at least once.
    pub fn warm_up(&self) -> Duration {
        (self.duration / 10).clamp(Duration::from_secs(3), Duration::from_secs(10))
    }
}

/// The producer's resources at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub rss_bytes: u64,
    pub open_fds: u64,
    /// Live tasks on its tokio runtime (its `/metrics`).
    pub tasks: u64,
}

/// What one publisher did.
#[derive(Debug, Clone, Default)]
pub struct PublisherTally {
    pub kind: &'static str,
    pub calls: u64,
    pub events: u64,
    /// Calls that failed (no answer, or an error): a well-behaved publisher expects none.
    pub errors: u64,
}

/// What one well-behaved reader saw, judged as it went: each sequence must be the one after
/// the last (no topic filter, so every event is for every reader).
#[derive(Debug, Clone, Default)]
pub struct ReaderTally {
    pub kind: &'static str,
    /// Whether it left and came back (a fresh connection) during the round.
    pub comes_and_goes: bool,
    /// The cursor it started after, and the last sequence it saw.
    pub from: u64,
    pub last: u64,
    pub events: u64,
    pub missed: u64,
    pub duplicates: u64,
    /// Connections (or streams) it opened; for pollers, the calls it made.
    pub sessions: u64,
    /// Sessions the producer refused or ended before the reader meant to leave (then it resumed
    /// from `last`).
    pub interrupted: u64,
}

impl ReaderTally {
    fn new(kind: &'static str, comes_and_goes: bool, from: u64) -> Self {
        Self {
            kind,
            comes_and_goes,
            from,
            last: from,
            ..Default::default()
        }
    }

    /// One event received: the next one, a gap (missed), or one already seen.
    pub fn see(&mut self, sequence: u64) {
        if sequence <= self.last {
            self.duplicates += 1;
            return;
        }
        self.missed += sequence - self.last - 1;
        self.last = sequence;
        self.events += 1;
    }

    /// The round is over: what it never reached of the final head is missed too.
    pub fn finish(&mut self, head: u64) {
        self.missed += head.saturating_sub(self.last);
    }

    pub fn every_event_once(&self, head: u64) -> bool {
        self.missed == 0 && self.duplicates == 0 && self.last == head
    }
}

/// What one misbehaving client did, and how the producer reacted each time.
#[derive(Debug, Clone, Default)]
pub struct HostileTally {
    pub kind: &'static str,
    pub attempts: u64,
    /// Reaction → count: `HTTP 400`, `grpc-status 13`, `closed`, `held 8 s`, `refused` …
    pub outcomes: BTreeMap<String, u64>,
}

impl HostileTally {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            ..Default::default()
        }
    }

    fn record(&mut self, outcome: impl Into<String>) {
        self.attempts += 1;
        *self.outcomes.entry(outcome.into()).or_default() += 1;
    }

    pub fn outcomes(&self) -> String {
        self.outcomes
            .iter()
            .map(|(what, n)| format!("{what} × {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The soak's result.
#[derive(Debug, Clone)]
pub struct SoakRun {
    pub duration: Duration,
    pub warm_up: Duration,
    /// After the warm-up's clients left, and after the measured round's.
    pub start: Sample,
    pub end: Sample,
    /// How long after the last client left the end sample was within the margins (or
    /// [`SETTLE_LIMIT`], when it never was).
    pub settled_in: Duration,
    /// Highest of each, sampled every second during the round.
    pub peak: Sample,
    /// (seconds into the round, sample), every second.
    pub series: Vec<(f64, Sample)>,
    pub head_start: u64,
    pub head_end: u64,
    pub publishers: Vec<PublisherTally>,
    pub readers: Vec<ReaderTally>,
    pub stallers: Vec<HostileTally>,
    pub garbage: Vec<HostileTally>,
}

impl SoakRun {
    /// How much the RSS may grow: 20 % of the start, or 16 MiB, whichever is larger.
    pub fn rss_allowance(&self) -> u64 {
        ((self.start.rss_bytes as f64 * RSS_GROWTH_SHARE) as u64).max(RSS_GROWTH_BYTES)
    }

    pub fn rss_flat(&self) -> bool {
        self.end.rss_bytes <= self.start.rss_bytes + self.rss_allowance()
    }

    pub fn fds_back(&self) -> bool {
        self.end.open_fds.abs_diff(self.start.open_fds) <= FDS_MARGIN
    }

    pub fn tasks_back(&self) -> bool {
        self.end.tasks.abs_diff(self.start.tasks) <= TASKS_MARGIN
    }

    /// Events the publishers had accepted in the round.
    pub fn published(&self) -> u64 {
        self.publishers.iter().map(|p| p.events).sum()
    }

    /// Every publish accepted and in the log, every reader with every event once.
    pub fn every_event_once(&self) -> bool {
        self.publishers.iter().all(|p| p.errors == 0)
            && self.published() == self.head_end - self.head_start
            && self.published() > 0
            && self
                .readers
                .iter()
                .all(|r| r.every_event_once(self.head_end))
    }

    pub fn passed(&self) -> bool {
        self.rss_flat() && self.fds_back() && self.tasks_back() && self.every_event_once()
    }
}

/// Runs the soak on a producer of its own.
pub async fn run(settings: &SoakSettings, progress: &mut Progress) -> Result<SoakRun, String> {
    let mut args = strings(&["--store", "memory", "--retention-events"]);
    args.push(RETENTION_EVENTS.to_string());
    let producer = Proc::spawn(Role::Producer, &args).await?;
    let filled = load::publish_flat_out(&producer.url(), RETENTION_EVENTS, 2, 1_000).await?;
    progress.note(&format!(
        "log filled to its retention ({} events); warm-up round of {:.0} s",
        filled.events,
        settings.warm_up().as_secs_f64()
    ));
    let warm = round(&producer, settings.warm_up(), None).await?;
    let start = steady_sample(&producer).await?;
    eprintln!(
        "      warm-up done ({} events); start: RSS {:.1} MiB, {} fds, {} tasks",
        warm.head_end - warm.head_start,
        mib(start.rss_bytes),
        start.open_fds,
        start.tasks
    );
    let measured = round(&producer, settings.duration, Some(progress)).await?;
    let left = Instant::now();
    let end = loop {
        let s = sample(&producer).await?;
        let back = s.open_fds.abs_diff(start.open_fds) <= FDS_MARGIN
            && s.tasks.abs_diff(start.tasks) <= TASKS_MARGIN;
        if back || left.elapsed() >= SETTLE_LIMIT {
            break s;
        }
        sleep(Duration::from_millis(250)).await;
    };
    let settled_in = left.elapsed();
    producer.stop().await;
    let peak = measured
        .series
        .iter()
        .fold(Sample::default(), |p, (_, s)| Sample {
            rss_bytes: p.rss_bytes.max(s.rss_bytes),
            open_fds: p.open_fds.max(s.open_fds),
            tasks: p.tasks.max(s.tasks),
        });
    Ok(SoakRun {
        duration: settings.duration,
        warm_up: settings.warm_up(),
        start,
        end,
        settled_in,
        peak,
        series: measured.series,
        head_start: measured.head_start,
        head_end: measured.head_end,
        publishers: measured.publishers,
        readers: measured.readers,
        stallers: measured.stallers,
        garbage: measured.garbage,
    })
}

/// The producer's resources now: `/proc` for RSS and descriptors, `/metrics` for tasks.
async fn sample(producer: &Proc) -> Result<Sample, String> {
    let rss_bytes = producer.usage().rss_bytes;
    // Counted before the scrape, so the scrape's own connection is not in it.
    let open_fds = producer
        .open_fds()
        .ok_or_else(|| format!("cannot read /proc/{}/fd", producer.pid))?;
    let http = producer.http.ok_or("the producer serves no HTTP")?;
    let tasks = Scrape::get(http)
        .await?
        .value(TASKS)
        .ok_or_else(|| format!("no {TASKS} in the producer's /metrics"))?;
    Ok(Sample {
        rss_bytes,
        open_fds,
        tasks: tasks as u64,
    })
}

/// A sample once descriptors and tasks have stopped moving (two equal readings 250 ms apart,
/// within [`SETTLE_LIMIT`]): the producer noticing that the warm-up's clients left.
async fn steady_sample(producer: &Proc) -> Result<Sample, String> {
    let started = Instant::now();
    let mut last = sample(producer).await?;
    loop {
        sleep(Duration::from_millis(250)).await;
        let now = sample(producer).await?;
        let steady = (now.open_fds, now.tasks) == (last.open_fds, last.tasks);
        if steady || started.elapsed() >= SETTLE_LIMIT {
            return Ok(now);
        }
        last = now;
    }
}

/// What the clients of one round share.
struct Round {
    grpc: String,
    grpc_addr: SocketAddr,
    http: SocketAddr,
    /// Publishing, stalling and garbage stop here.
    end: Instant,
    /// Readers give up catching up here.
    hard_end: Instant,
    /// The head once every publisher stopped (0 until then).
    final_head: AtomicU64,
}

impl Round {
    /// A reader is done once it has the final head, or at the hard end.
    fn finished(&self, last: u64) -> bool {
        let head = self.final_head.load(Ordering::Acquire);
        (head != 0 && last >= head) || Instant::now() >= self.hard_end
    }

    fn running(&self) -> bool {
        Instant::now() < self.end
    }
}

/// What one round's clients did.
struct RoundResult {
    head_start: u64,
    head_end: u64,
    publishers: Vec<PublisherTally>,
    readers: Vec<ReaderTally>,
    stallers: Vec<HostileTally>,
    garbage: Vec<HostileTally>,
    series: Vec<(f64, Sample)>,
}

/// One round of the mixed load for `length`; with `progress`, the producer is sampled every
/// second meanwhile.
async fn round(
    producer: &Proc,
    length: Duration,
    progress: Option<&mut Progress>,
) -> Result<RoundResult, String> {
    let head_start = load::head_sequence(&mut producer_client(channel(&producer.url()).await?))
        .await
        .map_err(|e| format!("head: {e}"))?;
    let end = Instant::now() + length;
    let round = Arc::new(Round {
        grpc: producer.url(),
        grpc_addr: producer.addr,
        http: producer.http.ok_or("the producer serves no HTTP")?,
        end,
        hard_end: end + CATCH_UP_LIMIT,
        final_head: AtomicU64::new(0),
    });

    let r = &round;
    let publishers: Vec<JoinHandle<PublisherTally>> = vec![
        tokio::spawn(grpc_publisher(r.clone(), GRPC_BATCH)),
        tokio::spawn(grpc_publisher(r.clone(), GRPC_BATCH)),
        tokio::spawn(http_publisher(r.clone(), JSON_BATCH)),
        tokio::spawn(ws_publisher(r.clone(), JSON_BATCH)),
    ];
    let from = head_start;
    let mut readers: Vec<JoinHandle<ReaderTally>> = Vec::new();
    for (i, comes_and_goes) in [false, false, true, true].into_iter().enumerate() {
        readers.push(tokio::spawn(grpc_subscriber(
            r.clone(),
            comes_and_goes,
            from,
            i as u64,
        )));
    }
    for (i, (wait, comes_and_goes)) in [
        (Duration::ZERO, false),
        (LONG_POLL, false),
        (LONG_POLL, true),
    ]
    .into_iter()
    .enumerate()
    {
        readers.push(tokio::spawn(grpc_poller(
            r.clone(),
            wait,
            comes_and_goes,
            from,
            10 + i as u64,
        )));
    }
    for (i, comes_and_goes) in [false, true].into_iter().enumerate() {
        let seed = 20 + i as u64;
        readers.push(tokio::spawn(http_poller(
            r.clone(),
            comes_and_goes,
            from,
            seed,
        )));
        readers.push(tokio::spawn(sse_reader(
            r.clone(),
            comes_and_goes,
            from,
            seed,
        )));
        readers.push(tokio::spawn(ws_reader(
            r.clone(),
            comes_and_goes,
            from,
            seed,
        )));
    }
    let stallers: Vec<JoinHandle<HostileTally>> = [Stall::Subscribe, Stall::Sse, Stall::WebSocket]
        .into_iter()
        .map(|kind| tokio::spawn(staller(r.clone(), kind)))
        .collect();
    let garbage = tokio::spawn(garbage(r.clone()));
    let half_open = tokio::spawn(half_open(r.clone()));

    let mut series = Vec::new();
    if let Some(progress) = progress {
        let started = Instant::now();
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while round.running() {
            every.tick().await;
            let s = sample(producer).await?;
            let at = started.elapsed().as_secs_f64();
            series.push((at, s));
            if series.len() % 10 == 1 {
                progress.note(&format!(
                    "{at:.0} s: producer RSS {:.1} MiB, {} fds, {} tasks",
                    mib(s.rss_bytes),
                    s.open_fds,
                    s.tasks
                ));
            }
        }
    }

    let mut published = Vec::new();
    for p in publishers {
        published.push(p.await.map_err(|e| format!("publisher: {e}"))?);
    }
    let head_end = load::head_sequence(&mut producer_client(channel(&producer.url()).await?))
        .await
        .map_err(|e| format!("head: {e}"))?;
    round.final_head.store(head_end, Ordering::Release);
    let mut tallies = Vec::new();
    for reader in readers {
        let mut t = reader.await.map_err(|e| format!("reader: {e}"))?;
        t.finish(head_end);
        tallies.push(t);
    }
    let mut stalled = Vec::new();
    for s in stallers {
        stalled.push(s.await.map_err(|e| format!("staller: {e}"))?);
    }
    let garbage = vec![
        garbage.await.map_err(|e| format!("garbage: {e}"))?,
        half_open.await.map_err(|e| format!("half-open: {e}"))?,
    ]
    .into_iter()
    .flatten()
    .collect();
    Ok(RoundResult {
        head_start,
        head_end,
        publishers: published,
        readers: tallies,
        stallers: stalled,
        garbage,
        series,
    })
}

/// Pauses and session lengths that differ from client to client but not from run to run.
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A duration from `low` to `high` milliseconds (xorshift64).
    fn between(&mut self, low: u64, high: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(low + self.0 % (high - low + 1))
    }

    /// When a session that started now ends: a come-and-go reader leaves after 0.3 to 3 s,
    /// the others stay until they are done.
    fn session_end(&mut self, comes_and_goes: bool, round: &Round) -> Instant {
        if comes_and_goes {
            Instant::now() + self.between(300, 3_000)
        } else {
            round.hard_end
        }
    }
}

fn payload() -> String {
    "x".repeat(PAYLOAD_BYTES)
}

fn json_events(n: usize) -> Value {
    let event = json!({"topic": TOPIC, "payload": payload()});
    json!(vec![event; n])
}

/// A publisher sends `batch` events every 100 ms, one call in flight, until the round ends.
fn publish_ticker() -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

async fn grpc_publisher(round: Arc<Round>, batch: usize) -> PublisherTally {
    let mut t = PublisherTally {
        kind: "gRPC Publish",
        ..Default::default()
    };
    let mut client = None;
    let mut ticker = publish_ticker();
    while round.running() {
        ticker.tick().await;
        if client.is_none() {
            client = channel(&round.grpc).await.ok().map(producer_client);
        }
        t.calls += 1;
        let Some(c) = client.as_mut() else {
            t.errors += 1;
            continue;
        };
        let request = pb::PublishRequest {
            events: load::events(batch),
        };
        match c.publish(request).await {
            Ok(_) => t.events += batch as u64,
            Err(_) => {
                t.errors += 1;
                client = None;
            }
        }
    }
    t
}

async fn http_publisher(round: Arc<Round>, batch: usize) -> PublisherTally {
    let mut t = PublisherTally {
        kind: "POST /publish",
        ..Default::default()
    };
    let client = reqwest::Client::new();
    let url = format!("http://{}/publish", round.http);
    let body = json!({ "events": json_events(batch) });
    let mut ticker = publish_ticker();
    while round.running() {
        ticker.tick().await;
        t.calls += 1;
        let sent = client
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => t.events += batch as u64,
            _ => t.errors += 1,
        }
    }
    t
}

async fn ws_publisher(round: Arc<Round>, batch: usize) -> PublisherTally {
    let mut t = PublisherTally {
        kind: "WebSocket publish",
        ..Default::default()
    };
    let url = format!("ws://{}/ws", round.http);
    let message = json!({"type": "publish", "events": json_events(batch)}).to_string();
    let mut socket = None;
    let mut ticker = publish_ticker();
    while round.running() {
        ticker.tick().await;
        if socket.is_none() {
            socket = connect_async(&url).await.ok().map(|(ws, _)| ws);
        }
        t.calls += 1;
        let Some(ws) = socket.as_mut() else {
            t.errors += 1;
            continue;
        };
        let answered = async {
            ws.send(WsMessage::text(message.clone())).await.ok()?;
            loop {
                match ws.next().await? {
                    Ok(WsMessage::Text(text)) => {
                        let reply: Value = serde_json::from_str(text.as_str()).ok()?;
                        return Some(reply["type"] == "published");
                    }
                    Ok(WsMessage::Close(_)) | Err(_) => return None,
                    Ok(_) => continue,
                }
            }
        };
        match timeout(Duration::from_secs(10), answered).await {
            Ok(Some(true)) => t.events += batch as u64,
            Ok(Some(false)) => t.errors += 1,
            _ => {
                t.errors += 1;
                socket = None;
            }
        }
    }
    t
}

/// A gRPC `Subscribe` reader; one that comes and goes opens a fresh connection each time.
async fn grpc_subscriber(
    round: Arc<Round>,
    comes_and_goes: bool,
    from: u64,
    seed: u64,
) -> ReaderTally {
    let mut t = ReaderTally::new("gRPC Subscribe", comes_and_goes, from);
    let mut jitter = Jitter::new(seed);
    let mut kept = None;
    while !round.finished(t.last) {
        let session_end = jitter.session_end(comes_and_goes, &round);
        let client = match kept.clone() {
            Some(c) => c,
            None => match channel(&round.grpc).await {
                Ok(ch) => producer_client(ch),
                Err(_) => {
                    t.interrupted += 1;
                    sleep(jitter.between(100, 500)).await;
                    continue;
                }
            },
        };
        if !comes_and_goes {
            kept = Some(client.clone());
        }
        let request = pb::SubscribeRequest {
            after_sequence: Some(t.last),
            topics: vec![],
        };
        t.sessions += 1;
        let mut stream = match client.clone().subscribe(request).await {
            Ok(r) => r.into_inner(),
            Err(_) => {
                t.interrupted += 1;
                kept = None;
                sleep(jitter.between(100, 500)).await;
                continue;
            }
        };
        while !round.finished(t.last) && Instant::now() < session_end {
            match timeout(TICK, stream.message()).await {
                Err(_) => {}
                Ok(Ok(Some(response))) => response.events.iter().for_each(|e| t.see(e.sequence)),
                Ok(_) => {
                    t.interrupted += 1;
                    kept = None;
                    break;
                }
            }
        }
        drop(stream);
        if comes_and_goes {
            sleep(jitter.between(0, 500)).await;
        }
    }
    t
}

/// A gRPC `Poll` reader: every 100 ms (`wait` zero) or a long poll; one that comes and goes
/// opens a fresh connection each time.
async fn grpc_poller(
    round: Arc<Round>,
    wait: Duration,
    comes_and_goes: bool,
    from: u64,
    seed: u64,
) -> ReaderTally {
    let kind = if wait.is_zero() {
        "gRPC Poll every 100 ms"
    } else {
        "gRPC long Poll (2 s)"
    };
    let mut t = ReaderTally::new(kind, comes_and_goes, from);
    let mut jitter = Jitter::new(seed);
    while !round.finished(t.last) {
        let session_end = jitter.session_end(comes_and_goes, &round);
        let Ok(mut client) = channel(&round.grpc).await.map(producer_client) else {
            t.interrupted += 1;
            sleep(jitter.between(100, 500)).await;
            continue;
        };
        while !round.finished(t.last) && Instant::now() < session_end {
            t.sessions += 1;
            let request = pb::PollRequest {
                after_sequence: Some(t.last),
                topics: vec![],
                max_events: 1_000,
                max_wait: (!wait.is_zero()).then(|| pushpull::time::proto_duration(wait)),
            };
            match client.poll(request).await {
                Ok(r) => r.into_inner().events.iter().for_each(|e| t.see(e.sequence)),
                Err(_) => {
                    t.interrupted += 1;
                    sleep(jitter.between(100, 500)).await;
                    break;
                }
            }
            if wait.is_zero() {
                sleep(Duration::from_millis(100)).await;
            }
        }
        if comes_and_goes {
            sleep(jitter.between(0, 500)).await;
        }
    }
    t
}

/// `GET /poll?wait=2s`; one that comes and goes drops its HTTP client (and connection) each
/// time.
async fn http_poller(round: Arc<Round>, comes_and_goes: bool, from: u64, seed: u64) -> ReaderTally {
    let mut t = ReaderTally::new("HTTP long poll (wait=2s)", comes_and_goes, from);
    let mut jitter = Jitter::new(seed);
    while !round.finished(t.last) {
        let session_end = jitter.session_end(comes_and_goes, &round);
        let client = reqwest::Client::new();
        while !round.finished(t.last) && Instant::now() < session_end {
            t.sessions += 1;
            let url = format!(
                "http://{}/poll?after={}&max_events=1000&wait=2s",
                round.http, t.last
            );
            let answer = async {
                let r = client.get(&url).timeout(Duration::from_secs(10)).send();
                let r = r.await.ok()?;
                if !r.status().is_success() {
                    return None;
                }
                r.json::<Value>().await.ok()
            };
            match answer.await {
                Some(batch) => sequences(&batch["events"]).for_each(|s| t.see(s)),
                None => {
                    t.interrupted += 1;
                    sleep(jitter.between(100, 500)).await;
                    break;
                }
            }
        }
        if comes_and_goes {
            sleep(jitter.between(0, 500)).await;
        }
    }
    t
}

fn sequences(events: &Value) -> impl Iterator<Item = u64> + '_ {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["sequence"].as_u64())
}

/// `GET /events?after=`: an event counts when its blank line arrives; `id:` is its sequence.
async fn sse_reader(round: Arc<Round>, comes_and_goes: bool, from: u64, seed: u64) -> ReaderTally {
    let mut t = ReaderTally::new("SSE", comes_and_goes, from);
    let mut jitter = Jitter::new(seed);
    let client = reqwest::Client::new();
    while !round.finished(t.last) {
        let session_end = jitter.session_end(comes_and_goes, &round);
        t.sessions += 1;
        let url = format!("http://{}/events?after={}", round.http, t.last);
        let mut response = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r,
            _ => {
                t.interrupted += 1;
                sleep(jitter.between(100, 500)).await;
                continue;
            }
        };
        let (mut pending, mut id) = (String::new(), None::<u64>);
        while !round.finished(t.last) && Instant::now() < session_end {
            let chunk = match timeout(TICK, response.chunk()).await {
                Err(_) => continue,
                Ok(Ok(Some(chunk))) => chunk,
                Ok(_) => {
                    t.interrupted += 1;
                    break;
                }
            };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(newline) = pending.find('\n') {
                let line: String = pending.drain(..=newline).collect();
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(value) = line.strip_prefix("id:") {
                    id = value.trim().parse().ok();
                } else if line.is_empty()
                    && let Some(sequence) = id.take()
                {
                    t.see(sequence);
                }
            }
        }
        drop(response);
        if comes_and_goes {
            sleep(jitter.between(0, 500)).await;
        }
    }
    t
}

/// `GET /ws?after=`: `events` messages; an `error` ends the subscription (the socket stays
/// open), so the reader leaves and comes back after its last sequence.
async fn ws_reader(round: Arc<Round>, comes_and_goes: bool, from: u64, seed: u64) -> ReaderTally {
    let mut t = ReaderTally::new("WebSocket", comes_and_goes, from);
    let mut jitter = Jitter::new(seed);
    while !round.finished(t.last) {
        let session_end = jitter.session_end(comes_and_goes, &round);
        t.sessions += 1;
        let url = format!("ws://{}/ws?after={}", round.http, t.last);
        let Ok((mut ws, _)) = connect_async(&url).await else {
            t.interrupted += 1;
            sleep(jitter.between(100, 500)).await;
            continue;
        };
        while !round.finished(t.last) && Instant::now() < session_end {
            let message = match timeout(TICK, ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(message))) => message,
                Ok(_) => {
                    t.interrupted += 1;
                    break;
                }
            };
            match message {
                WsMessage::Text(text) => {
                    let Ok(m) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    match m["type"].as_str() {
                        Some("events") => sequences(&m["events"]).for_each(|s| t.see(s)),
                        Some("error") => {
                            t.interrupted += 1;
                            break;
                        }
                        _ => {}
                    }
                }
                WsMessage::Close(_) => {
                    t.interrupted += 1;
                    break;
                }
                _ => {}
            }
        }
        drop(ws);
        if comes_and_goes {
            sleep(jitter.between(0, 500)).await;
        }
    }
    t
}

/// A stream opened from the oldest event and never read.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// gRPC `Subscribe` on a connection with a 64 KiB HTTP/2 window.
    Subscribe,
    /// `GET /events?after=0` on a socket with a 4 KiB receive buffer.
    Sse,
    /// `GET /ws?after=0`, upgraded, on a socket with a 4 KiB receive buffer; it answers no
    /// ping, so the producer may close it as silent.
    WebSocket,
}

impl Stall {
    fn name(self) -> &'static str {
        match self {
            Stall::Subscribe => "gRPC Subscribe, never read",
            Stall::Sse => "SSE, never read",
            Stall::WebSocket => "WebSocket, never read",
        }
    }
}

/// Held unread for [`STALL`] (or to the round's end), dropped, and again.
async fn staller(round: Arc<Round>, kind: Stall) -> HostileTally {
    let mut t = HostileTally::new(kind.name());
    while round.running() {
        let until = (Instant::now() + STALL).min(round.end);
        let held = match kind {
            Stall::Subscribe => stall_subscribe(&round, until).await,
            Stall::Sse => {
                let request = format!(
                    "GET /events?after=0 HTTP/1.1\r\nHost: {}\r\n\r\n",
                    round.http
                );
                stall_raw(round.http, &request, until).await
            }
            Stall::WebSocket => {
                let request = format!(
                    "GET /ws?after=0 HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n",
                    round.http
                );
                stall_raw(round.http, &request, until).await
            }
        };
        t.record(held);
        sleep(Duration::from_millis(500)).await;
    }
    t
}

async fn stall_subscribe(round: &Round, until: Instant) -> String {
    let Ok(ch) = channel_with(&round.grpc, Some(65_535)).await else {
        return "no connection".into();
    };
    let request = pb::SubscribeRequest {
        after_sequence: Some(0),
        topics: vec![],
    };
    match producer_client(ch).subscribe(request).await {
        Ok(stream) => {
            sleep_until(until.into()).await;
            drop(stream);
            "held, then dropped".into()
        }
        Err(status) => format!("refused: {:?}", status.code()),
    }
}

/// Sends `request` on a socket with a small receive buffer, reads nothing until `until`.
async fn stall_raw(addr: SocketAddr, request: &str, until: Instant) -> String {
    let Ok(mut stream) = small_socket(addr).await else {
        return "no connection".into();
    };
    if stream.write_all(request.as_bytes()).await.is_err() {
        return "closed".into();
    }
    sleep_until(until.into()).await;
    "held, then dropped".into()
}

async fn small_socket(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    socket.connect(addr).await
}

/// One piece of garbage.
#[derive(Debug, Clone, Copy)]
enum Garbage {
    GrpcPortNoise,
    GrpcPortHttp1,
    HttpPortNoise,
    HttpHugeRequestLine,
    GrpcLengthTooLarge,
    GrpcBodyCut,
    GrpcCompressedNoEncoding,
    GrpcNotProtobuf,
    WsNotJson,
}

impl Garbage {
    const ALL: [Garbage; 9] = [
        Garbage::GrpcPortNoise,
        Garbage::GrpcPortHttp1,
        Garbage::HttpPortNoise,
        Garbage::HttpHugeRequestLine,
        Garbage::GrpcLengthTooLarge,
        Garbage::GrpcBodyCut,
        Garbage::GrpcCompressedNoEncoding,
        Garbage::GrpcNotProtobuf,
        Garbage::WsNotJson,
    ];

    fn name(self) -> &'static str {
        match self {
            Garbage::GrpcPortNoise => "gRPC port: 4 KiB of noise, no HTTP/2 preface",
            Garbage::GrpcPortHttp1 => "gRPC port: an HTTP/1.1 request",
            Garbage::HttpPortNoise => "HTTP port: a TLS hello and noise",
            Garbage::HttpHugeRequestLine => "HTTP port: a 64 KiB request line",
            Garbage::GrpcLengthTooLarge => "gRPC Publish: length prefix 2 GiB",
            Garbage::GrpcBodyCut => "gRPC Publish: length prefix beyond the body",
            Garbage::GrpcCompressedNoEncoding => "gRPC Publish: compressed flag, no encoding",
            Garbage::GrpcNotProtobuf => "gRPC Publish: bytes that are no protobuf",
            Garbage::WsNotJson => "WebSocket: text that is no JSON",
        }
    }
}

/// Every kind of garbage in turn, one at a time, until the round ends.
async fn garbage(round: Arc<Round>) -> Vec<HostileTally> {
    let mut tallies: Vec<HostileTally> = Garbage::ALL
        .iter()
        .map(|g| HostileTally::new(g.name()))
        .collect();
    let mut noise = Jitter::new(99);
    'round: loop {
        for (i, kind) in Garbage::ALL.into_iter().enumerate() {
            if !round.running() {
                break 'round;
            }
            let outcome = match kind {
                Garbage::GrpcPortNoise => {
                    let bytes: Vec<u8> = (0..4096)
                        .map(|_| noise.between(0, 255).as_millis() as u8)
                        .collect();
                    raw_exchange(round.grpc_addr, &bytes).await
                }
                Garbage::GrpcPortHttp1 => {
                    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", round.grpc_addr);
                    raw_exchange(round.grpc_addr, request.as_bytes()).await
                }
                Garbage::HttpPortNoise => {
                    let mut bytes = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec();
                    bytes.extend((0..500).map(|_| noise.between(0, 255).as_millis() as u8));
                    raw_exchange(round.http, &bytes).await
                }
                Garbage::HttpHugeRequestLine => {
                    let request =
                        format!("GET /poll?after={} HTTP/1.1\r\n\r\n", "9".repeat(65_536));
                    raw_exchange(round.http, request.as_bytes()).await
                }
                Garbage::GrpcLengthTooLarge => {
                    grpc_frame(&round.grpc, &[0, 0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4]).await
                }
                Garbage::GrpcBodyCut => grpc_frame(&round.grpc, &[0, 0, 0, 1, 0, 10, 3]).await,
                Garbage::GrpcCompressedNoEncoding => {
                    grpc_frame(&round.grpc, &[1, 0, 0, 0, 3, 1, 2, 3]).await
                }
                Garbage::GrpcNotProtobuf => {
                    grpc_frame(
                        &round.grpc,
                        &[0, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                    )
                    .await
                }
                Garbage::WsNotJson => ws_not_json(round.http).await,
            };
            tallies[i].record(outcome);
            sleep(Duration::from_millis(100)).await;
        }
    }
    tallies
}

/// Sends `bytes` on a fresh connection; what came back first (a status line, or other bytes:
/// an HTTP/2 server's SETTINGS), and whether the producer then closed the connection within
/// [`GARBAGE_ANSWER`].
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return "no connection".into();
    };
    // A server may close before it has read everything; that is an answer too.
    let _ = stream.write_all(bytes).await;
    let deadline = tokio::time::Instant::now() + GARBAGE_ANSWER;
    let mut first: Option<String> = None;
    let mut answer = [0u8; 1024];
    loop {
        let said = first.clone().unwrap_or_else(|| "nothing".into());
        match tokio::time::timeout_at(deadline, stream.read(&mut answer)).await {
            Err(_) => return format!("{said}, not closed in {} s", GARBAGE_ANSWER.as_secs()),
            Ok(Ok(0)) | Ok(Err(_)) => return format!("{said}, then closed"),
            Ok(Ok(n)) if first.is_none() => {
                let text = String::from_utf8_lossy(&answer[..n]);
                first = Some(match text.strip_prefix("HTTP/1.1 ") {
                    Some(rest) => format!("HTTP {}", &rest[..rest.len().min(3)]),
                    None => "HTTP/2 frames".into(),
                });
            }
            Ok(Ok(_)) => {}
        }
    }
}

/// A gRPC `Publish` whose body is `frame` as given (flag, length prefix, bytes): the
/// grpc-status it got.
async fn grpc_frame(url: &str, frame: &[u8]) -> String {
    let Ok(mut channel) = channel(url).await else {
        return "no connection".into();
    };
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("{url}/pushpull.v1.ProducerService/Publish"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Full::new(Bytes::copy_from_slice(
            frame,
        ))))
        .expect("a constant request is valid");
    let call = async {
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
        let response = channel.call(request).await?;
        let status = response.status();
        if let Some(code) = response.headers().get("grpc-status") {
            return Ok(format!("grpc-status {}", code.to_str().unwrap_or("?")));
        }
        let trailers = response.into_body().collect().await?.trailers().cloned();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            match trailers.as_ref().and_then(|t| t.get("grpc-status")) {
                Some(code) => format!("grpc-status {}", code.to_str().unwrap_or("?")),
                None => format!("HTTP {} without grpc-status", status.as_u16()),
            },
        )
    };
    match timeout(GARBAGE_ANSWER, call).await {
        Err(_) => format!("no answer in {} s", GARBAGE_ANSWER.as_secs()),
        Ok(Err(_)) => "stream reset or connection closed".into(),
        Ok(Ok(outcome)) => outcome,
    }
}

/// A WebSocket that sends text that is no JSON: the producer's `error` message, or not.
async fn ws_not_json(http: SocketAddr) -> String {
    let Ok((mut ws, _)) = connect_async(format!("ws://{http}/ws")).await else {
        return "no connection".into();
    };
    if ws
        .send(WsMessage::text("{\"type\": subscribe"))
        .await
        .is_err()
    {
        return "closed".into();
    }
    let answer = async {
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    let m: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    return format!("{} message", m["type"].as_str().unwrap_or("unreadable"));
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => return "closed".into(),
                Some(Ok(_)) => continue,
            }
        }
    };
    timeout(GARBAGE_ANSWER, answer)
        .await
        .unwrap_or_else(|_| format!("no answer in {} s", GARBAGE_ANSWER.as_secs()))
}

/// Connections that send half an opening and wait: half the HTTP/2 preface to the gRPC port,
/// half a request's headers to the HTTP port. Held up to [`HALF_OPEN`]; the producer closing
/// them first is what a server should do.
async fn half_open(round: Arc<Round>) -> Vec<HostileTally> {
    let mut preface = HostileTally::new("gRPC port: half the HTTP/2 preface, then nothing");
    let mut headers = HostileTally::new("HTTP port: half a request's headers, then nothing");
    while round.running() {
        for (addr, bytes, t) in [
            (round.grpc_addr, &b"PRI * HTTP/2.0\r\n"[..], &mut preface),
            (
                round.http,
                &b"GET /poll HTTP/1.1\r\nHost: x\r\nX-Slow: "[..],
                &mut headers,
            ),
        ] {
            t.record(hold_half_open(addr, bytes, round.end).await);
        }
    }
    vec![preface, headers]
}

async fn hold_half_open(addr: SocketAddr, bytes: &[u8], end: Instant) -> String {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return "no connection".into();
    };
    if stream.write_all(bytes).await.is_err() {
        return "closed".into();
    }
    let limit = HALF_OPEN.min(end.saturating_duration_since(Instant::now()));
    let started = Instant::now();
    let mut sink = [0u8; 256];
    loop {
        match timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut sink),
        )
        .await
        {
            Err(_) => return format!("held {} s, then dropped", HALF_OPEN.as_secs()),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return format!(
                    "closed by the producer after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
            // An answer (a 408, or a SETTINGS frame) before the close: keep waiting for it.
            Ok(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
impl SoakRun {
    /// A run that passed: one publisher, one reader with events 101 to 110, flat samples.
    pub fn example() -> SoakRun {
        let mut reader = ReaderTally::new("test", false, 100);
        (101..=110).for_each(|s| reader.see(s));
        let sample = Sample {
            rss_bytes: 40 * 1024 * 1024,
            open_fds: 20,
            tasks: 30,
        };
        let mut stalled = HostileTally::new("stall");
        stalled.record("held");
        SoakRun {
            duration: Duration::from_secs(60),
            warm_up: Duration::from_secs(6),
            start: sample,
            end: sample,
            settled_in: Duration::ZERO,
            peak: sample,
            series: vec![(1.0, sample)],
            head_start: 100,
            head_end: 110,
            publishers: vec![PublisherTally {
                kind: "test",
                calls: 1,
                events: 10,
                errors: 0,
            }],
            readers: vec![reader],
            stallers: vec![stalled.clone()],
            garbage: vec![stalled],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_counts_gaps_as_missed_and_repeats_as_duplicates() {
        let mut t = ReaderTally::new("test", false, 10);
        for s in [11, 12, 12, 15, 14, 16] {
            t.see(s);
        }
        assert_eq!((t.events, t.missed, t.duplicates, t.last), (4, 2, 2, 16));
        t.finish(20);
        assert_eq!(t.missed, 6);
        assert!(!t.every_event_once(20));
    }

    #[test]
    fn a_reader_with_every_event_once_passes() {
        let mut t = ReaderTally::new("test", true, 0);
        (1..=5).for_each(|s| t.see(s));
        t.finish(5);
        assert!(t.every_event_once(5));
        assert!(!t.every_event_once(6), "short of the head");
    }

    fn run(start: Sample, end: Sample) -> SoakRun {
        SoakRun {
            start,
            end,
            peak: end,
            ..SoakRun::example()
        }
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_margins_are_the_stated_ones() {
        let start = Sample {
            rss_bytes: 40 * MIB,
            open_fds: 20,
            tasks: 30,
        };
        assert!(run(start, start).passed());
        // 20 % of 40 MiB is less than 16 MiB: 16 MiB it is.
        let grown = |rss_bytes| Sample { rss_bytes, ..start };
        assert!(run(start, grown(56 * MIB)).rss_flat());
        assert!(!run(start, grown(56 * MIB + 1)).rss_flat());
        // Of 200 MiB, 20 % (40 MiB) is the larger.
        let big = Sample {
            rss_bytes: 200 * MIB,
            ..start
        };
        assert!(
            run(
                big,
                Sample {
                    rss_bytes: 240 * MIB,
                    ..big
                }
            )
            .rss_flat()
        );
        assert!(
            !run(
                big,
                Sample {
                    rss_bytes: 241 * MIB,
                    ..big
                }
            )
            .rss_flat()
        );
        let fds = |open_fds| Sample { open_fds, ..start };
        assert!(run(start, fds(28)).fds_back() && run(start, fds(12)).fds_back());
        assert!(!run(start, fds(29)).fds_back() && !run(start, fds(11)).fds_back());
        let tasks = |tasks| Sample { tasks, ..start };
        assert!(run(start, tasks(46)).tasks_back() && run(start, tasks(14)).tasks_back());
        assert!(!run(start, tasks(47)).passed() && !run(start, tasks(13)).passed());
    }

    #[test]
    fn a_lost_publish_or_a_reader_short_of_the_head_fails_it() {
        let s = Sample::default();
        let mut r = run(s, s);
        assert!(r.every_event_once());
        r.publishers[0].errors = 1;
        assert!(!r.every_event_once());
        let mut r = run(s, s);
        r.head_end = 111;
        assert!(
            !r.every_event_once(),
            "the log holds an event no publisher counted"
        );
        let mut r = run(s, s);
        r.readers[0].duplicates = 1;
        assert!(!r.passed());
    }
}
