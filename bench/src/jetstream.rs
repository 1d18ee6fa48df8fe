//! The jetstream scenario (issue 10): what `--store jetstream` costs, next to the file and
//! memory stores and next to JetStream itself (raw `async-nats`, the engine's own ceiling), in
//! one run on the same payloads.
//!
//! 1. [`publish`]: Publish flat out, 1,000 events per call, 1 and 4 callers, to producers on
//!    JetStream (replicas 1 on one node, replicas 3 on a three-node loopback cluster), on the
//!    file store (fsync always) and on the memory store; and raw JetStream: (a) the same bytes
//!    as one message per 1,000-event batch, each acknowledged before the caller sends its next
//!    (as many in flight as callers), (a′) the same as the store publishes them (its headers,
//!    a message id, the expected last sequence: one in flight), (b) one message per event,
//!    many acknowledgements in flight.
//! 2. [`catch_up`]: one Subscribe stream reading a filled stream from sequence 0, from a
//!    producer that did not write it (every read a direct get), and from the one that did (its
//!    tail cache); next to a raw ordered consumer reading the same messages.
//! 3. [`latency`]: Publish and push latency at a fixed rate ([`storage::publish_latency_on`]),
//!    JetStream replicas 3 and 1 next to the file store.
//! 4. [`fanout`]: two producers on one stream, subscribers on both, events published through
//!    one: does every subscriber of both get every event, and how late.
//!
//! Every run gets a stream of its own, deleted afterwards; servers are started once per
//! scenario run. Without `nats-server` the scenario fails under `CI=true` and is reported as
//! not run otherwise.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{DeliverPolicy, pull::OrderedConfig},
        context::PublishAckFuture,
        message::PublishMessage,
    },
};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt as _, stream::FuturesUnordered};

use crate::{
    Progress,
    child::{Proc, Role},
    load::{
        ConsumerStats, PAYLOAD_BYTES, Subscribers, TOPIC, channel, producer_client,
        publish_at_rate, publish_at_rate_isolated, publish_flat_out,
    },
    nats::{self, Nats},
    report::Results,
    scenarios::{Mode, Settings, consumer_args, micros, ms, strings},
    storage::{self, Backend, CACHE_READS, LatencyRun, PublishRun, Replicas, STORE_READS, scrape},
};

/// How big and long the jetstream scenario's runs are.
#[derive(Debug, Clone)]
pub struct JetStreamSettings {
    /// Events per publish-throughput run, and per raw run of one message per event (slower,
    /// so fewer: the rate is what is compared).
    pub publish_events: u64,
    pub per_event_events: u64,
    /// Events per Publish, and per raw message of a batch.
    pub publish_batch: usize,
    pub publishers: Vec<usize>,
    /// Raw one-message-per-event publishing: acknowledgements in flight at most.
    pub per_event_window: usize,
    /// Events in the stream a catch-up reads.
    pub catchup_events: u64,
    /// Events/s of the latency runs, and their window.
    pub rate: u64,
    pub window: Duration,
    /// Fan-out: producers on the stream, subscribers on each, the rate and how long.
    pub fanout_producers: usize,
    pub fanout_subscribers: usize,
    pub fanout_rate: u64,
    pub fanout_window: Duration,
}

impl JetStreamSettings {
    pub fn full() -> Self {
        Self {
            publish_events: 1_000_000,
            per_event_events: 250_000,
            publish_batch: 1_000,
            publishers: vec![1, 4],
            per_event_window: 4_096,
            catchup_events: 1_000_000,
            rate: 10_000,
            window: Duration::from_secs(6),
            fanout_producers: 2,
            fanout_subscribers: 5_000,
            fanout_rate: 1_000,
            fanout_window: Duration::from_secs(5),
        }
    }

    pub fn quick() -> Self {
        Self {
            publish_events: 20_000,
            per_event_events: 5_000,
            publish_batch: 1_000,
            publishers: vec![1, 4],
            per_event_window: 1_024,
            catchup_events: 20_000,
            rate: 1_000,
            window: Duration::from_millis(1000),
            fanout_producers: 2,
            fanout_subscribers: 200,
            fanout_rate: 1_000,
            fanout_window: Duration::from_secs(1),
        }
    }
}

/// Steps [`run`] reports, for the progress count.
pub fn steps(s: &JetStreamSettings) -> usize {
    1 + s.publishers.len() + 2 + LATENCY_STORES.len() + 1
}

/// The stores whose latency is measured, replicas 3 first (the goal is for it).
const LATENCY_STORES: [Backend; 3] = [
    Backend::JetStream(Replicas::Three),
    Backend::JetStream(Replicas::One),
    Backend::FileAlways,
];

/// Who publishes in a throughput run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publisher {
    /// A producer on this store, through gRPC.
    Producer(Backend),
    /// `async-nats` straight into a stream of these replicas.
    Raw(Raw, Replicas),
}

/// How raw JetStream publishing is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    /// (a) one message per batch, the same bytes as the store's; each caller awaits its
    /// acknowledgement before sending the next.
    Batch,
    /// (a′) as the store publishes: its headers, a message id and the expected last sequence,
    /// so one message in flight.
    AsTheStore,
    /// (a″) as (a′), and the next sent only once an ordered consumer on the same connection
    /// has read the message back: the store's whole protocol (its follower commits a message
    /// before the Publish is answered), without the producer.
    ReadBack,
    /// (b) one message per event, many acknowledgements in flight.
    PerEvent,
}

impl Publisher {
    pub fn name(&self) -> String {
        match self {
            Publisher::Producer(b) => format!("producer, {}", b.name()),
            Publisher::Raw(raw, r) => {
                let how = match raw {
                    Raw::Batch => "(a) one message per batch, acknowledged",
                    Raw::AsTheStore => {
                        "(a′) one message per batch as the store sends it (msg id, expected last sequence)"
                    }
                    Raw::ReadBack => {
                        "(a″) as (a′), each read back by an ordered consumer before the next"
                    }
                    Raw::PerEvent => "(b) one message per event, async",
                };
                format!("raw JetStream, replicas {}: {how}", r.count())
            }
        }
    }

    fn replicas(&self) -> Option<Replicas> {
        match self {
            Publisher::Producer(Backend::JetStream(r)) | Publisher::Raw(_, r) => Some(*r),
            Publisher::Producer(_) => None,
        }
    }
}

/// One publish-throughput run.
#[derive(Debug, Clone)]
pub struct PublishJsRun {
    pub publisher: Publisher,
    pub publishers: usize,
    /// Events per Publish, or per raw message (1 for one per event).
    pub batch: usize,
    pub events: u64,
    /// JetStream messages stored (0 for the memory and file stores).
    pub messages: u64,
    pub elapsed: Duration,
    /// The producer's CPU (none for raw runs), and every nats-server's.
    pub producer_cpu: Option<Duration>,
    pub nats_cpu: Duration,
    pub tries: Vec<f64>,
}

impl PublishJsRun {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Per-event cost, µs: the time one event takes at this run's throughput.
    pub fn cost_us(&self) -> f64 {
        1e6 / self.rate().max(1e-9)
    }

    fn from_producer(run: PublishRun, nats_cpu: Duration) -> Self {
        Self {
            publisher: Publisher::Producer(run.backend),
            publishers: run.publishers,
            batch: run.batch,
            events: run.events,
            messages: run.messages,
            elapsed: run.elapsed,
            producer_cpu: Some(run.producer_cpu),
            nats_cpu,
            tries: vec![],
        }
    }
}

/// Where a catch-up reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A producer started after the stream was filled: nothing in its tail cache, every read
    /// a direct get.
    FreshProducer,
    /// The producer that filled the stream, its tail cache holding it all.
    WriterProducer,
    /// A raw ordered consumer on the stream, in the benchmark process.
    RawOrdered,
    /// Raw direct gets of consecutive messages, [`DIRECT_GET_WINDOW`] in flight: the store's
    /// read mechanism without the producer.
    RawDirectGets,
}

/// The store's `read::WINDOW`: direct gets in flight in the raw direct-get reader.
pub const DIRECT_GET_WINDOW: usize = 4;

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::FreshProducer => "a fresh producer (direct gets)",
            Source::WriterProducer => "the producer that wrote it (tail cache)",
            Source::RawOrdered => "raw JetStream ordered consumer",
            Source::RawDirectGets => "raw JetStream direct gets, 4 in flight",
        }
    }
}

/// One catch-up.
#[derive(Debug, Clone)]
pub struct CatchUpJsRun {
    pub source: Source,
    pub replicas: Replicas,
    /// Events in the stream, and in each of its messages.
    pub log_events: u64,
    pub events_per_message: u64,
    /// Events counted from the first received to the last, and the time that took.
    pub events: u64,
    pub elapsed: Duration,
    /// The producer's `store_reads` and `cache_reads` over the run (raw: 0).
    pub store_reads: u64,
    pub cache_reads: u64,
    /// Bytes the reader received from NATS (TCP payload, from `ss`).
    pub nats_bytes: u64,
    pub producer_cpu: Option<Duration>,
    pub consumer_cpu: Duration,
    pub nats_cpu: Duration,
    pub tries: Vec<f64>,
}

impl CatchUpJsRun {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One side of the fan-out: the subscribers on one producer.
#[derive(Debug, Clone)]
pub struct FanoutSide {
    /// Whether the events were published through this producer.
    pub publishing: bool,
    pub subscribers: usize,
    pub delivered: u64,
    pub expected: u64,
    pub all_delivered: bool,
    /// Until every subscriber of this producer had every event (or the time limit).
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    pub rss_before: u64,
    pub rss_idle: u64,
    pub producer_cpu: Duration,
}

/// The fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutJsRun {
    pub replicas: Replicas,
    pub rate: u64,
    pub published: u64,
    pub sides: Vec<FanoutSide>,
    pub nats_cpu: Duration,
}

/// Everything the jetstream scenario measured.
#[derive(Debug, Clone, Default)]
pub struct JetStreamResults {
    /// Why it did not run (nats-server missing, outside CI).
    pub skipped: Option<String>,
    pub publish: Vec<PublishJsRun>,
    pub catchup: Vec<CatchUpJsRun>,
    pub latency: Vec<LatencyRun>,
    pub fanout: Option<FanoutJsRun>,
    pub load_start: String,
    pub load_end: String,
}

/// The servers of one replica count, and a JetStream context on them for raw runs and for
/// deleting streams.
struct Site {
    replicas: Replicas,
    nats: Nats,
    js: jetstream::Context,
}

impl Site {
    async fn start(replicas: Replicas) -> Result<Site, String> {
        let nats = match replicas {
            Replicas::One => Nats::single().await?,
            Replicas::Three => Nats::cluster(3).await?,
        };
        let js = nats.jetstream().await?;
        Ok(Site { replicas, nats, js })
    }

    /// A new stream name: every run gets its own.
    fn stream() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(
            "BENCH_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn subject(stream: &str) -> String {
        format!("pushpull.{stream}")
    }

    /// Producer flags for a stream here, retention holding every event a run publishes.
    fn producer_args(&self, stream: &str, extra: &[&str]) -> Vec<String> {
        let mut args = strings(&[
            "--store",
            "jetstream",
            "--nats-urls",
            &self.nats.urls(),
            "--nats-stream",
            stream,
            "--nats-replicas",
            &self.replicas.count().to_string(),
            "--retention-events",
            "100000000",
            // The server reserves max_bytes against its storage for each stream: enough for
            // a run, not more.
            "--retention-bytes",
            "2147483648",
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    async fn producer(&self, stream: &str, extra: &[&str]) -> Result<Proc, String> {
        Proc::spawn(Role::Producer, &self.producer_args(stream, extra)).await
    }

    /// A stream as the store creates it, for raw runs.
    async fn create_stream(&self, stream: &str) -> Result<(), String> {
        self.js
            .create_stream(jetstream::stream::Config {
                name: stream.to_owned(),
                subjects: vec![Site::subject(stream)],
                num_replicas: self.replicas.count(),
                storage: jetstream::stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("create stream {stream}: {e}"))
    }

    async fn delete_stream(&self, stream: &str) {
        if let Err(err) = self.js.delete_stream(stream).await {
            eprintln!("      (could not delete stream {stream}: {err})");
        }
    }

    /// The client addresses, for socket byte counts.
    fn addrs(&self) -> Vec<SocketAddr> {
        self.nats
            .urls()
            .split(',')
            .filter_map(|u| u.trim_start_matches("nats://").parse().ok())
            .collect()
    }

    /// TCP payload bytes `proc` has received from these servers so far.
    fn bytes_received_by(&self, proc: &Proc) -> u64 {
        self.addrs()
            .into_iter()
            .map(|a| proc.usage_towards(a).read_bytes)
            .sum()
    }
}

/// Runs every jetstream measurement into `results.jetstream`.
pub async fn run(settings: &Settings, progress: &mut Progress, results: &mut Results) {
    let s = &settings.jetstream;
    results.jetstream.load_start = crate::report::loadavg();
    progress.start("jetstream: start one NATS node and a three-node cluster");
    if let Some(why) = nats::missing() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            results.failed(progress, format!("jetstream scenario: {why}"));
        } else {
            eprintln!("      NOT RUN: {why}");
            results.jetstream.skipped = Some(why);
        }
        return;
    }
    let sites = match tokio::try_join!(Site::start(Replicas::One), Site::start(Replicas::Three)) {
        Ok((one, three)) => [one, three],
        Err(err) => {
            results.failed(progress, format!("jetstream: {err}"));
            return;
        }
    };
    progress.done(&format!(
        "one node at {}, a cluster at {}",
        sites[0].nats.urls(),
        sites[1].nats.urls()
    ));

    for &publishers in &s.publishers {
        progress.start(&format!(
            "jetstream: publish, {publishers} × {} events per call, producers and raw JetStream",
            s.publish_batch
        ));
        match publish(&sites, publishers, settings).await {
            Ok((runs, errors)) => {
                for err in errors {
                    results.failed(progress, err);
                }
                progress.done(
                    &runs
                        .iter()
                        .map(|r| format!("{} {:.2} M/s", r.publisher.name(), r.rate() / 1e6))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                results.jetstream.publish.extend(runs);
            }
            Err(err) => results.failed(progress, err),
        }
    }

    for site in &sites {
        progress.start(&format!(
            "jetstream: catch-up of {} events, replicas {}",
            s.catchup_events,
            site.replicas.count()
        ));
        match catch_up(site, settings, progress).await {
            Ok(runs) => {
                progress.done(
                    &runs
                        .iter()
                        .map(|r| format!("{}: {:.2} M events/s", r.source.name(), r.rate() / 1e6))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
                results.jetstream.catchup.extend(runs);
            }
            Err(err) => results.failed(progress, err),
        }
    }

    for backend in LATENCY_STORES {
        progress.start(&format!(
            "jetstream: latency, {} at {} events/s",
            backend.name(),
            s.rate
        ));
        match latency(&sites, backend, s, progress).await {
            Ok(r) => {
                progress.done(&format!(
                    "{}/{} delivered, publish p99 {:.3} ms, push p50 {:.3} ms, p99 {:.3} ms",
                    r.received,
                    r.published,
                    ms(r.publish_p99),
                    ms(r.push_p50),
                    ms(r.push_p99)
                ));
                results.jetstream.latency.push(r);
            }
            Err(err) => results.failed(progress, err),
        }
    }

    progress.start(&format!(
        "jetstream: fan-out, {} producers × {} subscribers on one stream (replicas 3) at {} events/s",
        s.fanout_producers, s.fanout_subscribers, s.fanout_rate
    ));
    match fanout(&sites[1], settings, progress).await {
        Ok(r) => {
            progress.done(
                &r.sides
                    .iter()
                    .map(|side| {
                        format!(
                            "{}/{} delivered, p99 {:.2} ms",
                            side.delivered,
                            side.expected,
                            ms(side.p99)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            );
            results.jetstream.fanout = Some(r);
        }
        Err(err) => results.failed(progress, err),
    }
    results.jetstream.load_end = crate::report::loadavg();
}

/// Every publisher of one caller count, tried `throughput_tries` times with the tries
/// interleaved (so a change in the machine's load falls on all alike), the fastest kept.
async fn publish(
    sites: &[Site; 2],
    publishers: usize,
    settings: &Settings,
) -> Result<(Vec<PublishJsRun>, Vec<String>), String> {
    let mut who = vec![
        Publisher::Producer(Backend::Memory),
        Publisher::Producer(Backend::FileAlways),
        Publisher::Producer(Backend::JetStream(Replicas::One)),
        Publisher::Producer(Backend::JetStream(Replicas::Three)),
        Publisher::Raw(Raw::Batch, Replicas::One),
        Publisher::Raw(Raw::Batch, Replicas::Three),
    ];
    if publishers == 1 {
        // One in flight whatever the callers, and one publishing task: once is enough.
        who.extend([
            Publisher::Raw(Raw::AsTheStore, Replicas::One),
            Publisher::Raw(Raw::AsTheStore, Replicas::Three),
            Publisher::Raw(Raw::ReadBack, Replicas::One),
            Publisher::Raw(Raw::ReadBack, Replicas::Three),
            Publisher::Raw(Raw::PerEvent, Replicas::One),
            Publisher::Raw(Raw::PerEvent, Replicas::Three),
        ]);
    }
    let mut tries: Vec<Vec<PublishJsRun>> = vec![vec![]; who.len()];
    let mut errors = vec![];
    for _ in 0..settings.throughput_tries {
        for (i, publisher) in who.iter().enumerate() {
            let site = publisher
                .replicas()
                .map(|r| &sites[usize::from(r == Replicas::Three)]);
            match publish_once(*publisher, site, publishers, &settings.jetstream).await {
                Ok(run) => {
                    eprintln!(
                        "      try ({}): {:.3} M events/s, {} messages",
                        publisher.name(),
                        run.rate() / 1e6,
                        run.messages
                    );
                    tries[i].push(run);
                }
                Err(err) => errors.push(format!("{}: {err}", publisher.name())),
            }
        }
    }
    let mut fastest = vec![];
    for runs in tries {
        let rates: Vec<f64> = runs.iter().map(PublishJsRun::rate).collect();
        if let Some(mut best) = runs
            .into_iter()
            .max_by(|a, b| a.rate().total_cmp(&b.rate()))
        {
            best.tries = rates;
            fastest.push(best);
        }
    }
    Ok((fastest, errors))
}

async fn publish_once(
    publisher: Publisher,
    site: Option<&Site>,
    publishers: usize,
    s: &JetStreamSettings,
) -> Result<PublishJsRun, String> {
    let batch = s.publish_batch;
    match (publisher, site) {
        (Publisher::Producer(backend), None) => {
            let dir = backend.is_file().then(storage::data_dir).transpose()?;
            let producer = storage::spawn(backend, dir.as_ref().map(|d| d.path()), &[]).await?;
            let run = storage::publish_throughput_on(
                &producer,
                backend,
                publishers,
                s.publish_events,
                batch,
            )
            .await;
            producer.stop().await;
            Ok(PublishJsRun::from_producer(run?, Duration::ZERO))
        }
        (Publisher::Producer(backend), Some(site)) => {
            let stream = Site::stream();
            let producer = site.producer(&stream, &[]).await?;
            let n0 = nats::servers_cpu();
            let run = storage::publish_throughput_on(
                &producer,
                backend,
                publishers,
                s.publish_events,
                batch,
            )
            .await;
            // The warm-up is in the nats-server CPU too: a twentieth more, which is noted.
            let nats_cpu = nats::servers_cpu().saturating_sub(n0);
            producer.stop().await;
            site.delete_stream(&stream).await;
            Ok(PublishJsRun::from_producer(run?, nats_cpu))
        }
        (Publisher::Raw(raw, _), Some(site)) => {
            let stream = Site::stream();
            site.create_stream(&stream).await?;
            let subject = Site::subject(&stream);
            let (events, per) = match raw {
                Raw::PerEvent => (s.per_event_events, 1),
                Raw::Batch | Raw::AsTheStore | Raw::ReadBack => (s.publish_events, batch),
            };
            let payload = message_body(per);
            let go = |total: u64| {
                let (js, subject, payload) = (site.js.clone(), subject.clone(), payload.clone());
                let stream = stream.clone();
                async move {
                    match raw {
                        Raw::Batch => {
                            raw_batches(&js, &subject, payload, total, per, publishers).await
                        }
                        Raw::AsTheStore => {
                            raw_as_the_store(&js, &stream, payload, total, per, false).await
                        }
                        Raw::ReadBack => {
                            raw_as_the_store(&js, &stream, payload, total, per, true).await
                        }
                        Raw::PerEvent => {
                            raw_per_event(&js, &subject, payload, total, s.per_event_window).await
                        }
                    }
                }
            };
            go(events / 20).await?;
            let n0 = nats::servers_cpu();
            let (messages, elapsed) = go(events).await?;
            let nats_cpu = nats::servers_cpu().saturating_sub(n0);
            site.delete_stream(&stream).await;
            Ok(PublishJsRun {
                publisher,
                publishers: if raw == Raw::Batch { publishers } else { 1 },
                batch: per,
                events,
                messages,
                elapsed,
                producer_cpu: None,
                nats_cpu,
                tries: vec![],
            })
        }
        (Publisher::Raw(..), None) => Err("raw JetStream needs servers".into()),
    }
}

/// The body the store would write for `events` benchmark events: each event's encoding,
/// sequence and `produced_at` included, after its length.
fn message_body(events: usize) -> Bytes {
    let payload = [b'x'; PAYLOAD_BYTES];
    let now = SystemTime::now();
    let (mut body, mut one) = (BytesMut::new(), BytesMut::new());
    for i in 0..events {
        one.clear();
        pushpull::wire::encode_event(1 + i as u64, TOPIC, &payload, now, &mut one);
        prost::encoding::encode_varint(one.len() as u64, &mut body);
        body.extend_from_slice(&one);
    }
    body.freeze()
}

/// (a): `parallel` callers, each publishing one message of `per` events and awaiting its
/// acknowledgement before the next, until `total` events are stored. Returns (messages, time).
async fn raw_batches(
    js: &jetstream::Context,
    subject: &str,
    payload: Bytes,
    total: u64,
    per: usize,
    parallel: usize,
) -> Result<(u64, Duration), String> {
    let messages = total.div_ceil(per as u64);
    let left = Arc::new(AtomicU64::new(messages));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..parallel {
        let (js, subject, payload, left) = (
            js.clone(),
            subject.to_owned(),
            payload.clone(),
            left.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                js.publish(subject.clone(), payload.clone())
                    .await
                    .map_err(|e| format!("publish: {e}"))?
                    .await
                    .map_err(|e| format!("acknowledgement: {e}"))?;
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok((messages, start.elapsed()))
}

/// (a′): one message of `per` events at a time with what the store adds: its two headers, a
/// `Nats-Msg-Id` (the duplicate window checks it) and `Nats-Expected-Last-Sequence`. With
/// `read_back` (a″), each is also waited for at an ordered consumer, as the store's Publish
/// waits for its follower.
async fn raw_as_the_store(
    js: &jetstream::Context,
    stream: &str,
    payload: Bytes,
    total: u64,
    per: usize,
    read_back: bool,
) -> Result<(u64, Duration), String> {
    static INSTANCE: AtomicU64 = AtomicU64::new(0);
    let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
    let subject = Site::subject(stream);
    let messages = total.div_ceil(per as u64);
    // The expected last sequence of the first: whatever the stream holds (the warm-up's).
    let mut last = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?
        .get_info()
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?
        .state
        .last_sequence;
    if last == 0 {
        // The header cannot say "empty" (as the store's genesis message works around).
        last = js
            .publish(subject.clone(), Bytes::new())
            .await
            .map_err(|e| format!("publish: {e}"))?
            .await
            .map_err(|e| format!("acknowledgement: {e}"))?
            .sequence;
    }
    let follower = if read_back {
        Some(Follower::start(js, stream, last + 1).await?)
    } else {
        None
    };
    let start = Instant::now();
    for i in 0..messages {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Pushpull-First-Sequence",
            (1 + i * per as u64).to_string().as_str(),
        );
        headers.insert("Pushpull-Events", per.to_string().as_str());
        let publish = PublishMessage::build()
            .headers(headers)
            .message_id(format!("bench-{instance}-{i}"))
            .expected_last_sequence(last)
            .payload(payload.clone());
        last = js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| format!("publish: {e}"))?
            .await
            .map_err(|e| format!("acknowledgement: {e}"))?
            .sequence;
        if let Some(follower) = &follower {
            follower.wait_for(last).await?;
        }
    }
    let elapsed = start.elapsed();
    if let Some(follower) = follower {
        follower.stop();
    }
    Ok((messages, elapsed))
}

/// An ordered consumer reading a stream from a sequence on, publishing the last stream
/// sequence it has read: what the store's follower does, without committing anything.
struct Follower {
    read: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    async fn start(js: &jetstream::Context, stream: &str, from: u64) -> Result<Follower, String> {
        let consumer = js
            .get_stream(stream)
            .await
            .map_err(|e| format!("stream {stream}: {e}"))?
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("ordered consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("ordered consumer: {e}"))?;
        let (tx, read) = tokio::sync::watch::channel(0);
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                if let Ok(info) = message.info() {
                    tx.send_replace(info.stream_sequence);
                }
            }
        });
        Ok(Follower { read, task })
    }

    async fn wait_for(&self, sequence: u64) -> Result<(), String> {
        let mut read = self.read.clone();
        tokio::time::timeout(Duration::from_secs(10), read.wait_for(|s| *s >= sequence))
            .await
            .map_err(|_| format!("the ordered consumer did not read message {sequence} in 10 s"))?
            .map(|_| ())
            .map_err(|_| "the ordered consumer ended".to_string())
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// (b): one message per event from one task, up to `window` acknowledgements in flight
/// (async-nats's own bound, 5,000 by default, waits beyond that).
async fn raw_per_event(
    js: &jetstream::Context,
    subject: &str,
    payload: Bytes,
    total: u64,
    window: usize,
) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    let mut acks: FuturesUnordered<<PublishAckFuture as std::future::IntoFuture>::IntoFuture> =
        FuturesUnordered::new();
    for _ in 0..total {
        let ack = js
            .publish(subject.to_owned(), payload.clone())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        acks.push(std::future::IntoFuture::into_future(ack));
        while acks.len() >= window {
            if let Some(ack) = acks.next().await {
                ack.map_err(|e| format!("acknowledgement: {e}"))?;
            }
        }
    }
    while let Some(ack) = acks.next().await {
        ack.map_err(|e| format!("acknowledgement: {e}"))?;
    }
    Ok((total, start.elapsed()))
}

/// A stream filled with `catchup_events` through a producer (one caller, 1,000 events per
/// Publish: one message each), then read from sequence 0 by a push consumer process on a fresh
/// producer and on the writer, and by a raw ordered consumer; each tried `throughput_tries`
/// times, interleaved, the fastest kept.
async fn catch_up(
    site: &Site,
    settings: &Settings,
    progress: &mut Progress,
) -> Result<Vec<CatchUpJsRun>, String> {
    let s = &settings.jetstream;
    let n = s.catchup_events;
    let stream = Site::stream();
    // A cache that holds the whole log (≈ 133 bytes an event here).
    let cache = (n * 200).max(64 << 20).to_string();
    let writer = site.producer(&stream, &["--cache-bytes", &cache]).await?;
    let filled = publish_flat_out(&writer.url(), n, 1, s.publish_batch).await?;
    progress.note(&format!(
        "replicas {}: {n} events published in {:.2} s",
        site.replicas.count(),
        filled.elapsed.as_secs_f64()
    ));
    let result = async {
        let sources = [
            Source::FreshProducer,
            Source::WriterProducer,
            Source::RawOrdered,
            Source::RawDirectGets,
        ];
        let mut runs: Vec<Vec<CatchUpJsRun>> = vec![vec![]; sources.len()];
        for _ in 0..settings.throughput_tries {
            for (i, source) in sources.into_iter().enumerate() {
                let run = match source {
                    Source::FreshProducer => {
                        let fresh = site.producer(&stream, &[]).await?;
                        let run = catch_up_once(site, &fresh, source, n, s).await;
                        fresh.stop().await;
                        run?
                    }
                    Source::WriterProducer => catch_up_once(site, &writer, source, n, s).await?,
                    Source::RawOrdered => raw_ordered(site, &stream, n, s).await?,
                    Source::RawDirectGets => raw_direct_gets(site, &stream, n, s).await?,
                };
                eprintln!(
                    "      try ({}): {:.2} M events/s, {} store reads, {:.0} bytes/event from NATS",
                    source.name(),
                    run.rate() / 1e6,
                    run.store_reads,
                    run.nats_bytes as f64 / run.events.max(1) as f64
                );
                runs[i].push(run);
            }
        }
        Ok::<_, String>(
            runs.into_iter()
                .filter_map(|tries| {
                    let rates: Vec<f64> = tries.iter().map(CatchUpJsRun::rate).collect();
                    let mut best = tries
                        .into_iter()
                        .max_by(|a, b| a.rate().total_cmp(&b.rate()))?;
                    best.tries = rates;
                    Some(best)
                })
                .collect(),
        )
    }
    .await;
    writer.stop().await;
    site.delete_stream(&stream).await;
    result
}

/// One push consumer process reads `producer`'s whole log from the oldest event.
async fn catch_up_once(
    site: &Site,
    producer: &Proc,
    source: Source,
    n: u64,
    s: &JetStreamSettings,
) -> Result<CatchUpJsRun, String> {
    let push = push_mode();
    let (m0, p0, b0, n0) = (
        scrape(producer).await?,
        producer.usage(),
        site.bytes_received_by(producer),
        nats::servers_cpu(),
    );
    let consumer = Proc::spawn(Role::Consumer, &consumer_args(producer, "earliest", &push)).await?;
    let c0 = consumer.usage();
    let mut stats = ConsumerStats::connect(&consumer.url()).await?;
    let (t0, t1, first) = stats
        .wait_received(
            n,
            Duration::from_millis(5),
            Duration::from_secs(300),
            |got| eprintln!("      … {got} of {n} events"),
        )
        .await?;
    let (m1, p1, c1) = (scrape(producer).await?, producer.usage(), consumer.usage());
    let (b1, n1) = (site.bytes_received_by(producer), nats::servers_cpu());
    consumer.stop().await;
    Ok(CatchUpJsRun {
        source,
        replicas: site.replicas,
        log_events: n,
        events_per_message: s.publish_batch as u64,
        events: n - first,
        elapsed: t1 - t0,
        store_reads: m1.grew(&m0, STORE_READS),
        cache_reads: m1.grew(&m0, CACHE_READS),
        nats_bytes: b1.saturating_sub(b0),
        producer_cpu: Some(p1.since(&p0).cpu),
        consumer_cpu: c1.since(&c0).cpu,
        nats_cpu: n1.saturating_sub(n0),
        tries: vec![],
    })
}

fn push_mode() -> Mode {
    Mode {
        name: consumer::Mode::Push.name(),
        args: strings(&["--mode", consumer::Mode::Push.name()]),
        interval: None,
    }
}

/// A raw ordered consumer (what the store's follower is) reads every message of `stream`,
/// counting events by the `Pushpull-Events` header, in the benchmark process.
async fn raw_ordered(
    site: &Site,
    stream: &str,
    n: u64,
    s: &JetStreamSettings,
) -> Result<CatchUpJsRun, String> {
    let handle = site
        .js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    let n0 = nats::servers_cpu();
    let cpu0 = crate::child::Usage::of(std::process::id());
    let consumer = handle
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("ordered consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("ordered consumer: {e}"))?;
    let (mut events, mut bytes, mut first) = (0u64, 0u64, None);
    let deadline = Instant::now() + Duration::from_secs(300);
    while events < n {
        let next = tokio::time::timeout_at(deadline.into(), messages.next())
            .await
            .map_err(|_| format!("the ordered consumer read {events} of {n} events in 300 s"))?;
        let message = next
            .ok_or("the ordered consumer ended")?
            .map_err(|e| format!("ordered consumer: {e}"))?;
        let count: u64 = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Pushpull-Events"))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap_or(0);
        if count > 0 && first.is_none() {
            // Counted as the consumer processes count: from the first events received.
            first = Some((Instant::now(), count));
        }
        events += count;
        bytes += message.payload.len() as u64;
    }
    let t1 = Instant::now();
    let cpu1 = crate::child::Usage::of(std::process::id());
    let (t0, first_count) = first.unwrap_or((t1, 0));
    Ok(CatchUpJsRun {
        source: Source::RawOrdered,
        replicas: site.replicas,
        log_events: n,
        events_per_message: s.publish_batch as u64,
        events: events - first_count,
        elapsed: t1 - t0,
        store_reads: 0,
        cache_reads: 0,
        nats_bytes: bytes,
        producer_cpu: None,
        consumer_cpu: cpu1.since(&cpu0).cpu,
        nats_cpu: nats::servers_cpu().saturating_sub(n0),
        tries: vec![],
    })
}

/// Direct gets of every message of `stream` in order, [`DIRECT_GET_WINDOW`] in flight, counting
/// events by the `Pushpull-Events` header: the store's reads with nothing wasted.
async fn raw_direct_gets(
    site: &Site,
    stream: &str,
    n: u64,
    s: &JetStreamSettings,
) -> Result<CatchUpJsRun, String> {
    let handle = site
        .js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    let last = handle
        .clone()
        .get_info()
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?
        .state
        .last_sequence;
    let n0 = nats::servers_cpu();
    let cpu0 = crate::child::Usage::of(std::process::id());
    let start = Instant::now();
    let (mut events, mut bytes, mut next) = (0u64, 0u64, 1u64);
    let mut inflight = futures_util::stream::FuturesOrdered::new();
    while events < n {
        while inflight.len() < DIRECT_GET_WINDOW && next <= last {
            let handle = handle.clone();
            inflight.push_back(async move { handle.direct_get(next).await });
            next += 1;
        }
        let Some(got) = inflight.next().await else {
            return Err(format!(
                "direct gets: {events} of {n} events in {last} messages"
            ));
        };
        let message = got.map_err(|e| format!("direct get: {e}"))?;
        events += message
            .headers
            .get("Pushpull-Events")
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or(0);
        bytes += message.payload.len() as u64;
    }
    let elapsed = start.elapsed();
    let cpu1 = crate::child::Usage::of(std::process::id());
    Ok(CatchUpJsRun {
        source: Source::RawDirectGets,
        replicas: site.replicas,
        log_events: n,
        events_per_message: s.publish_batch as u64,
        events,
        elapsed,
        store_reads: 0,
        cache_reads: 0,
        nats_bytes: bytes,
        producer_cpu: None,
        consumer_cpu: cpu1.since(&cpu0).cpu,
        nats_cpu: nats::servers_cpu().saturating_sub(n0),
        tries: vec![],
    })
}

/// Publish and push latency at `s.rate` on a producer on `backend`
/// ([`storage::publish_latency_on`], as the storage scenario measures the file store).
async fn latency(
    sites: &[Site; 2],
    backend: Backend,
    s: &JetStreamSettings,
    progress: &mut Progress,
) -> Result<LatencyRun, String> {
    match backend {
        Backend::JetStream(replicas) => {
            let site = &sites[usize::from(replicas == Replicas::Three)];
            let stream = Site::stream();
            let producer = site.producer(&stream, &[]).await?;
            let run =
                storage::publish_latency_on(&producer, backend, s.rate, s.window, progress).await;
            producer.stop().await;
            site.delete_stream(&stream).await;
            run
        }
        _ => {
            let dir = backend.is_file().then(storage::data_dir).transpose()?;
            let producer = storage::spawn(backend, dir.as_ref().map(|d| d.path()), &[]).await?;
            let run =
                storage::publish_latency_on(&producer, backend, s.rate, s.window, progress).await;
            producer.stop().await;
            run
        }
    }
}

/// `fanout_producers` producers on one stream, `fanout_subscribers` Subscribe streams on each
/// (from the same cursor), events published through the first at `fanout_rate`.
async fn fanout(
    site: &Site,
    settings: &Settings,
    progress: &mut Progress,
) -> Result<FanoutJsRun, String> {
    let s = &settings.jetstream;
    let stream = Site::stream();
    let mut producers = vec![];
    for _ in 0..s.fanout_producers {
        // One at a time, each once it serves: the first creates the stream, the next finds it.
        let started = match site.producer(&stream, &[]).await {
            Ok(p) => wait_for_head(&p, 0).await.map(|()| p),
            Err(err) => Err(err),
        };
        match started {
            Ok(p) => producers.push(p),
            Err(err) => {
                for p in producers {
                    p.stop().await;
                }
                return Err(err);
            }
        }
    }
    let result = fanout_on(site, &producers, settings, progress).await;
    for p in producers {
        p.stop().await;
    }
    site.delete_stream(&stream).await;
    result
}

async fn fanout_on(
    site: &Site,
    producers: &[Proc],
    settings: &Settings,
    progress: &mut Progress,
) -> Result<FanoutJsRun, String> {
    let s = &settings.jetstream;
    let mut publisher = producer_client(channel(&producers[0].url()).await?);
    // Warm up the code paths, and let every producer's follower reach the same head.
    let warm = publish_at_rate(&mut publisher, 1_000, Duration::from_millis(100)).await?;
    for p in producers {
        wait_for_head(p, warm.last_sequence).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before: Vec<u64> = producers.iter().map(|p| p.usage().rss_bytes).collect();
    let mut subs = vec![];
    for p in producers {
        subs.push(
            Subscribers::open(
                &p.url(),
                s.fanout_subscribers,
                settings.streams_per_connection,
                warm.last_sequence,
            )
            .await?,
        );
    }
    for sub in &subs {
        sub.wait_attached(s.fanout_subscribers, Duration::from_secs(120))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle: Vec<u64> = producers.iter().map(|p| p.usage().rss_bytes).collect();
    progress.note(&format!(
        "{} × {} subscribers attached",
        producers.len(),
        s.fanout_subscribers
    ));
    let cpu0: Vec<_> = producers.iter().map(Proc::usage).collect();
    let n0 = nats::servers_cpu();
    let started = Instant::now();
    let published =
        publish_at_rate_isolated(&producers[0].url(), s.fanout_rate, s.fanout_window).await?;
    let limit = Instant::now() + s.fanout_window * 4 + Duration::from_secs(10);
    let mut done: Vec<Option<Duration>> = vec![None; subs.len()];
    let mut last_note = Instant::now();
    while done.iter().any(Option::is_none) && Instant::now() < limit {
        for (i, sub) in subs.iter().enumerate() {
            if done[i].is_none() && sub.caught_up(published.last_sequence) == s.fanout_subscribers {
                done[i] = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        if last_note.elapsed() > Duration::from_secs(1) {
            progress.note(&format!(
                "subscribers with every event: {}",
                subs.iter()
                    .map(|sub| format!("{}", sub.caught_up(published.last_sequence)))
                    .collect::<Vec<_>>()
                    .join(" and ")
            ));
            last_note = Instant::now();
        }
    }
    let cpu1: Vec<_> = producers.iter().map(Proc::usage).collect();
    let nats_cpu = nats::servers_cpu().saturating_sub(n0);
    let mut sides = vec![];
    for (i, sub) in subs.into_iter().enumerate() {
        let h = sub.merged_histogram();
        let delivered = sub.received.load(Ordering::Relaxed);
        sides.push(FanoutSide {
            publishing: i == 0,
            subscribers: s.fanout_subscribers,
            delivered,
            expected: published.events * s.fanout_subscribers as u64,
            all_delivered: done[i].is_some() && published.complete,
            elapsed: done[i].unwrap_or_else(|| started.elapsed()),
            p50: micros(h.value_at_quantile(0.5)),
            p99: micros(h.value_at_quantile(0.99)),
            p999: micros(h.value_at_quantile(0.999)),
            max: micros(h.max()),
            rss_before: rss_before[i],
            rss_idle: rss_idle[i],
            producer_cpu: cpu1[i].since(&cpu0[i]).cpu,
        });
        sub.close().await;
    }
    Ok(FanoutJsRun {
        replicas: site.replicas,
        rate: s.fanout_rate,
        published: published.events,
        sides,
        nats_cpu,
    })
}

/// Polls `producer` until its head reaches `sequence` (its follower has read that far).
async fn wait_for_head(producer: &Proc, sequence: u64) -> Result<(), String> {
    let mut client = producer_client(channel(&producer.url()).await?);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let head = crate::load::head_sequence(&mut client).await?;
        if head >= sequence {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "producer {} reached head {head}, not {sequence}, within 20 s",
                producer.url()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
