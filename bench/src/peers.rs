//! The peers scenario (issue 13): the producer next to what a user could run instead, in one run
//! on the same 64-byte payloads, so each of our figures is a ratio to its peer's rather than a
//! number that depends on the machine.
//!
//! The peers:
//! - [`bare`]: a bare tonic server stream of the same service (a child process), one event per
//!   message and 256 per message, read by the generated client our Subscribe runs use;
//! - NATS core pub/sub: one `nats-server` (testkit's), one `async-nats` publisher publishing
//!   every event as a message flat out, one subscriber on its own connection.
//!
//! Ours, each against a fresh producer process (memory store) and with the same client code:
//! - live: one publisher, 1,000 events per unary Publish, one call in flight, and one Subscribe
//!   stream from the head: events/s at the subscriber, against NATS core;
//! - drain: the log prefilled with N events, then one poller (one Poll in flight, from the
//!   oldest) with `max_events` 1,000, again with 10,000, and one Subscribe stream catching up
//!   from the oldest: against the bare stream of 256 events per message.
//!
//! Every figure is tried `throughput_tries` times; a try runs the peers and ours in turn (bare 1,
//! bare 256, our drains, NATS core, our live), so a change in the shared machine's load falls on
//! both sides, and the fastest try of each figure is kept.

pub mod bare;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use pushpull::pb::{self, producer_service_client::ProducerServiceClient};
use tonic::{Streaming, transport::Channel};

use crate::{
    Progress,
    child::{Proc, Role, Usage},
    load::{self, MAX_PUBLISH, PAYLOAD_BYTES, channel, producer_client, publish_flat_out},
    nats::{self, Nats},
    report::Results,
    scenarios::{Settings, strings},
};

/// How big the peers scenario's runs are.
#[derive(Debug, Clone)]
pub struct PeerSettings {
    /// Events every figure moves (the drains' log, the live runs, the peers' streams).
    pub events: u64,
    /// Events per Publish of our live publisher.
    pub publish_batch: usize,
    /// A NATS subscriber that has received nothing for this long after the publisher flushed
    /// has had all it will get (the rest was dropped).
    pub nats_idle: Duration,
}

impl PeerSettings {
    pub fn full() -> Self {
        Self {
            events: 1_000_000,
            publish_batch: 1_000,
            nats_idle: Duration::from_secs(2),
        }
    }

    pub fn quick() -> Self {
        Self {
            events: 100_000,
            ..Self::full()
        }
    }
}

/// A throughput figure of the scenario: a peer's, or ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// The bare tonic stream, one event per message.
    BareOne,
    /// The bare tonic stream, [`BARE_BATCH`] events per message.
    BareBatch,
    NatsCore,
    Live,
    Poll1000,
    Poll10000,
    CatchUp,
}

impl Figure {
    pub const PEERS: [Figure; 3] = [Figure::BareOne, Figure::BareBatch, Figure::NatsCore];
    pub const ALL: [Figure; 7] = [
        Figure::BareOne,
        Figure::BareBatch,
        Figure::NatsCore,
        Figure::Live,
        Figure::Poll1000,
        Figure::Poll10000,
        Figure::CatchUp,
    ];

    /// The figure's key in results.json.
    pub fn key(self) -> &'static str {
        match self {
            Figure::BareOne => "bare_tonic_1",
            Figure::BareBatch => "bare_tonic_256",
            Figure::NatsCore => "nats_core",
            Figure::Live => "live",
            Figure::Poll1000 => "poll_1000",
            Figure::Poll10000 => "poll_10000",
            Figure::CatchUp => "catch_up",
        }
    }

    /// What was measured, for the report.
    pub fn name(self) -> &'static str {
        match self {
            Figure::BareOne => "bare tonic stream, 1 event per message",
            Figure::BareBatch => "bare tonic stream, 256 events per message",
            Figure::NatsCore => "NATS core pub/sub, 1 publisher → 1 subscriber",
            Figure::Live => "live: 1 publisher × 1,000 events per Publish → 1 Subscribe stream",
            Figure::Poll1000 => "Poll drain, max_events 1,000, one in flight",
            Figure::Poll10000 => "Poll drain, max_events 10,000, one in flight",
            Figure::CatchUp => "one Subscribe stream catching up from the oldest",
        }
    }

    pub fn is_peer(self) -> bool {
        Figure::PEERS.contains(&self)
    }

    /// Whether a run of this figure may deliver fewer events than were sent: NATS core drops
    /// messages for a consumer that falls behind.
    pub fn may_drop(self) -> bool {
        self == Figure::NatsCore
    }
}

/// One of our figures, the peer it is measured against, and the ratio issue 13 asks for.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub ours: Figure,
    pub peer: Figure,
    /// Our events/s over the peer's must be at least this.
    pub goal: f64,
    /// The target as the issue words it.
    pub target: &'static str,
}

/// Issue 13's throughput targets.
pub const COMPARISONS: [Comparison; 4] = [
    Comparison {
        ours: Figure::Live,
        peer: Figure::NatsCore,
        goal: 1.0,
        target: "1 publisher × 1,000 events per unary Publish, 1 subscriber from the head ≥ 1.0 × NATS core pub/sub (one publisher, one subscriber, 64-byte payloads)",
    },
    Comparison {
        ours: Figure::Poll1000,
        peer: Figure::BareBatch,
        goal: 0.7,
        target: "1 poller, one Poll in flight, max_events 1,000, draining the log ≥ 0.7 × a bare tonic server stream of 256-event batches",
    },
    Comparison {
        ours: Figure::Poll10000,
        peer: Figure::BareBatch,
        goal: 0.9,
        target: "1 poller, one Poll in flight, max_events 10,000, draining the log ≥ 0.9 × a bare tonic server stream of 256-event batches",
    },
    Comparison {
        ours: Figure::CatchUp,
        peer: Figure::BareBatch,
        goal: 1.0,
        target: "one Subscribe stream catching up ≥ 1.0 × the bare tonic batched stream (256 events per message)",
    },
];

/// One run of one figure.
#[derive(Debug, Clone)]
pub struct PeerRun {
    pub figure: Figure,
    /// Events the reader counted, and how many were sent (NATS core may drop some).
    pub events: u64,
    pub expected: u64,
    /// From the first request (publish, Poll or Subscribe) to the last event counted.
    pub elapsed: Duration,
    /// What the reader received them in: stream messages, Poll responses, NATS messages.
    pub messages: u64,
    /// CPU of the server over the run: the producer, the bare peer, or nats-server.
    pub server_cpu: Duration,
    /// CPU of the benchmark process, where the clients run.
    pub client_cpu: Duration,
    /// Events/s of every try; the run kept is the fastest.
    pub tries: Vec<f64>,
}

impl PeerRun {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Everything the peers scenario measured.
#[derive(Debug, Clone, Default)]
pub struct PeerResults {
    /// Events per run.
    pub events: u64,
    /// Why NATS core was not measured (nats-server missing, outside CI).
    pub nats_skipped: Option<String>,
    /// The fastest try of each figure that ran.
    pub runs: Vec<PeerRun>,
    pub load_start: String,
    pub load_end: String,
}

impl PeerResults {
    pub fn run(&self, figure: Figure) -> Option<&PeerRun> {
        self.runs.iter().find(|r| r.figure == figure)
    }
}

/// Steps [`run`] reports, for the progress count: starting NATS, then one per try.
pub fn steps(settings: &Settings) -> usize {
    1 + settings.throughput_tries
}

/// Events per message of the batched bare stream: the batch issue 13 compares with.
pub const BARE_BATCH: u64 = 256;

/// How long any one read may take before the run is given up: far beyond a slow machine's.
const READ_LIMIT: Duration = Duration::from_secs(120);

/// The subject NATS core runs publish on.
const SUBJECT: &str = "pushpull.bench.peers";

/// Producer flags: the memory store, retention for every event, and room for a Poll of 10,000
/// 64-byte events (the default `--max-batch-bytes`, 256 KiB, would cut it at about 3,800).
fn producer_args() -> Vec<String> {
    strings(&[
        "--store",
        "memory",
        "--retention-events",
        "10000000",
        "--retention-bytes",
        "4294967296",
        "--max-poll-events",
        "10000",
        "--max-batch-bytes",
        "1048576",
    ])
}

/// Runs every figure `throughput_tries` times into `results.peers`.
pub async fn run(settings: &Settings, progress: &mut Progress, results: &mut Results) {
    let s = &settings.peers;
    results.peers.events = s.events;
    results.peers.load_start = crate::report::loadavg();
    progress.start("peers: start nats-server for NATS core pub/sub");
    let server = match nats::missing() {
        Some(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            results.failed(progress, format!("peers: NATS core: {why}"));
            None
        }
        Some(why) => {
            eprintln!("      NATS core NOT RUN: nats-server not installed ({why})");
            results.peers.nats_skipped = Some(format!("nats-server not installed ({why})"));
            None
        }
        None => match Nats::single().await {
            Ok(server) => {
                progress.done(&format!("at {}", server.urls()));
                Some(server)
            }
            Err(err) => {
                results.failed(progress, format!("peers: {err}"));
                None
            }
        },
    };

    let mut tries: Vec<Vec<PeerRun>> = vec![vec![]; Figure::ALL.len()];
    for i in 1..=settings.throughput_tries {
        progress.start(&format!(
            "peers: try {i} of {}, {} events each: bare tonic streams, our Poll drains and catch-up, NATS core, our live",
            settings.throughput_tries, s.events
        ));
        let mut record =
            |outcome: Result<Vec<PeerRun>, String>, results: &mut Results| match outcome {
                Ok(runs) => {
                    for run in runs {
                        eprintln!(
                            "      {}: {:.2} M events/s{}",
                            run.figure.name(),
                            run.rate() / 1e6,
                            if run.events < run.expected {
                                format!(" ({} of {} delivered)", run.events, run.expected)
                            } else {
                                String::new()
                            }
                        );
                        if let Some(i) = Figure::ALL.iter().position(|f| *f == run.figure) {
                            tries[i].push(run);
                        }
                    }
                }
                Err(err) => results.failed(progress, format!("peers: {err}")),
            };
        record(
            bare_stream(Figure::BareOne, 1, s.events)
                .await
                .map(|r| vec![r]),
            results,
        );
        record(
            bare_stream(Figure::BareBatch, BARE_BATCH, s.events)
                .await
                .map(|r| vec![r]),
            results,
        );
        record(drains(s.events).await, results);
        if let Some(server) = &server {
            record(
                nats_core(&server.urls(), s.events, s.nats_idle)
                    .await
                    .map(|r| vec![r]),
                results,
            );
        }
        record(
            live(s.events, s.publish_batch).await.map(|r| vec![r]),
            results,
        );
        progress.done(&format!("load average {}", crate::report::loadavg()));
    }
    for runs in tries {
        if let Some(best) = fastest(runs) {
            results.peers.runs.push(best);
        }
    }
    results.peers.load_end = crate::report::loadavg();
}

/// The fastest of several tries of one figure, remembering every try's rate.
pub fn fastest(runs: Vec<PeerRun>) -> Option<PeerRun> {
    let tries: Vec<f64> = runs.iter().map(PeerRun::rate).collect();
    let mut best = runs
        .into_iter()
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))?;
    best.tries = tries;
    Some(best)
}

/// CPU time of the benchmark process itself, where every client of the scenario runs.
fn own_cpu() -> Duration {
    Usage::of(std::process::id()).cpu
}

/// What a reader counted.
#[derive(Debug, Default)]
struct Read {
    events: u64,
    messages: u64,
    last_sequence: u64,
    /// When the last event counted arrived.
    last_at: Option<Instant>,
}

/// The CPU the server and this process had used when a measurement started.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    server: Duration,
    client: Duration,
}

impl CpuMark {
    /// Now, with `server` the server's CPU so far.
    fn now(server: Duration) -> Self {
        Self {
            server,
            client: own_cpu(),
        }
    }
}

impl Read {
    /// The figure this read makes: `expected` events asked for, timed from `start`, with the
    /// CPU used since `mark` (`server` is the server's CPU now).
    fn run(
        &self,
        figure: Figure,
        expected: u64,
        start: Instant,
        mark: CpuMark,
        server: Duration,
    ) -> PeerRun {
        PeerRun {
            figure,
            events: self.events,
            expected,
            elapsed: self.elapsed_since(start),
            messages: self.messages,
            server_cpu: server.saturating_sub(mark.server),
            client_cpu: own_cpu().saturating_sub(mark.client),
            tries: vec![],
        }
    }

    fn elapsed_since(&self, start: Instant) -> Duration {
        self.last_at
            .unwrap_or(start)
            .saturating_duration_since(start)
    }

    /// Counts one Subscribe response.
    fn take(&mut self, response: &pb::SubscribeResponse) {
        self.messages += 1;
        self.events += response.events.len() as u64;
        if let Some(last) = response.events.last() {
            self.last_sequence = last.sequence;
            self.last_at = Some(Instant::now());
        }
    }

    /// Checks that a reader from `after` counted `n` events and ended on `after + n`.
    fn complete(&self, after: u64, n: u64) -> Result<(), String> {
        if self.events != n || self.last_sequence != after + n {
            return Err(format!(
                "read {} events ending on sequence {}, expected {n} ending on {}",
                self.events,
                self.last_sequence,
                after + n
            ));
        }
        Ok(())
    }
}

/// Reads `stream` until `n` events have been counted in `read`.
async fn count_stream(
    stream: &mut Streaming<pb::SubscribeResponse>,
    n: u64,
    read: &mut Read,
) -> Result<(), String> {
    let counting = async {
        while read.events < n {
            match stream.message().await {
                Ok(Some(response)) => read.take(&response),
                Ok(None) => {
                    return Err(format!("stream ended after {} of {n} events", read.events));
                }
                Err(status) => return Err(format!("stream: {status}")),
            }
        }
        Ok(())
    };
    tokio::time::timeout(READ_LIMIT, counting)
        .await
        .map_err(|_| format!("{} of {n} events within {READ_LIMIT:?}", read.events))?
}

/// Opens one Subscribe stream after `after` and counts `n` events: (what it read, its start).
async fn subscribe_and_count(
    client: &mut ProducerServiceClient<Channel>,
    after: u64,
    n: u64,
) -> Result<(Read, Instant), String> {
    let start = Instant::now();
    let mut stream = client
        .subscribe(pb::SubscribeRequest {
            after_sequence: Some(after),
            topics: vec![],
        })
        .await
        .map_err(|s| format!("subscribe: {s}"))?
        .into_inner();
    let mut read = Read::default();
    count_stream(&mut stream, n, &mut read).await?;
    read.complete(after, n)?;
    Ok((read, start))
}

/// The bare tonic peer streaming `n` events, `per_message` to a message, to one reader.
async fn bare_stream(figure: Figure, per_message: u64, n: u64) -> Result<PeerRun, String> {
    let peer = Proc::spawn(
        Role::PeerStream,
        &strings(&[
            "--events",
            &n.to_string(),
            "--events-per-message",
            &per_message.to_string(),
        ]),
    )
    .await?;
    let mut client = producer_client(channel(&peer.url()).await?);
    let mark = CpuMark::now(peer.usage().cpu);
    let run = subscribe_and_count(&mut client, 0, n)
        .await
        .map(|(read, start)| read.run(figure, n, start, mark, peer.usage().cpu));
    peer.stop().await;
    run.map_err(|e| format!("{}: {e}", figure.name()))
}

/// One producer prefilled with `n` events (not timed), then drained by one poller with
/// `max_events` 1,000, again with 10,000, and read by one Subscribe stream from the oldest.
async fn drains(n: u64) -> Result<Vec<PeerRun>, String> {
    let producer = Proc::spawn(Role::Producer, &producer_args()).await?;
    let prefill = publish_flat_out(&producer.url(), n, 2, MAX_PUBLISH).await?;
    if !prefill.complete || prefill.last_sequence != n {
        return Err(format!(
            "prefill: {} events published, head {}",
            prefill.events, prefill.last_sequence
        ));
    }
    let mut runs = Vec::new();
    for (figure, max_events) in [(Figure::Poll1000, 1_000), (Figure::Poll10000, 10_000)] {
        let mut client = producer_client(channel(&producer.url()).await?);
        let mark = CpuMark::now(producer.usage().cpu);
        let start = Instant::now();
        let read = poll_drain(&mut client, n, max_events)
            .await
            .map_err(|e| format!("{}: {e}", figure.name()))?;
        runs.push(read.run(figure, n, start, mark, producer.usage().cpu));
    }
    let mut client = producer_client(channel(&producer.url()).await?);
    let mark = CpuMark::now(producer.usage().cpu);
    let (read, start) = subscribe_and_count(&mut client, 0, n)
        .await
        .map_err(|e| format!("{}: {e}", Figure::CatchUp.name()))?;
    runs.push(read.run(Figure::CatchUp, n, start, mark, producer.usage().cpu));
    producer.stop().await;
    Ok(runs)
}

/// One Poll in flight from the oldest event until `n` events have been read.
async fn poll_drain(
    client: &mut ProducerServiceClient<Channel>,
    n: u64,
    max_events: u32,
) -> Result<Read, String> {
    let draining = async {
        let mut read = Read::default();
        while read.events < n {
            let answer = client
                .poll(pb::PollRequest {
                    after_sequence: Some(read.last_sequence),
                    max_events,
                    ..Default::default()
                })
                .await
                .map_err(|s| format!("poll: {s}"))?
                .into_inner();
            if answer.events.is_empty() {
                return Err(format!(
                    "a Poll after {} returned nothing (head {})",
                    read.last_sequence, answer.head_sequence
                ));
            }
            read.messages += 1;
            read.events += answer.events.len() as u64;
            read.last_sequence = answer.next_after_sequence;
        }
        read.last_at = Some(Instant::now());
        read.complete(0, n)?;
        Ok(read)
    };
    tokio::time::timeout(READ_LIMIT, draining)
        .await
        .map_err(|_| format!("not drained within {READ_LIMIT:?}"))?
}

/// Ours live: one Subscribe stream at the head of a fresh producer, then one publisher sending
/// `n` events, `batch` per Publish, one call in flight; from the first Publish to the last
/// event at the subscriber.
async fn live(n: u64, batch: usize) -> Result<PeerRun, String> {
    let name = Figure::Live.name();
    let producer = Proc::spawn(Role::Producer, &producer_args()).await?;
    let mut subscriber = producer_client(channel(&producer.url()).await?);
    let mut stream = subscriber
        .subscribe(pb::SubscribeRequest {
            after_sequence: Some(0),
            topics: vec![],
        })
        .await
        .map_err(|s| format!("{name}: subscribe: {s}"))?
        .into_inner();
    // The producer answers a new stream at once, even with nothing to send: then it is attached.
    let mut read = Read::default();
    match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
        Ok(Ok(Some(first))) => read.take(&first),
        _ => return Err(format!("{name}: no first response within 10 s")),
    }
    let reader =
        tokio::spawn(async move { count_stream(&mut stream, n, &mut read).await.map(|()| read) });
    let mut publisher = producer_client(channel(&producer.url()).await?);
    let events = load::events(batch.clamp(1, MAX_PUBLISH));
    let mark = CpuMark::now(producer.usage().cpu);
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let take = (n - sent).min(events.len() as u64);
        publisher
            .publish(pb::PublishRequest {
                events: events[..take as usize].to_vec(),
            })
            .await
            .map_err(|s| format!("{name}: publish: {s}"))?;
        sent += take;
    }
    let read = reader
        .await
        .map_err(|e| format!("{name}: reader: {e}"))?
        .map_err(|e| format!("{name}: {e}"))?;
    let run = read.run(Figure::Live, n, start, mark, producer.usage().cpu);
    producer.stop().await;
    read.complete(0, n).map_err(|e| format!("{name}: {e}"))?;
    Ok(run)
}

/// NATS core pub/sub on the server at `url`: one subscriber (its own connection, a capacity of
/// every message, so the client never drops), then one publisher sending `n` 64-byte messages
/// flat out and flushing; events/s of what the subscriber got, from the first publish to its
/// last message. NATS core drops messages for a consumer that falls behind: the subscriber
/// stops once it has all `n`, or has received nothing for `idle` after the flush.
async fn nats_core(url: &str, n: u64, idle: Duration) -> Result<PeerRun, String> {
    let name = Figure::NatsCore.name();
    let subscriber = async_nats::ConnectOptions::new()
        .name("pushpull-bench peers subscriber")
        .subscription_capacity(n.clamp(65_536, 1 << 24) as usize)
        .connect(url)
        .await
        .map_err(|e| format!("{name}: connect {url}: {e}"))?;
    let mut subscription = subscriber
        .subscribe(SUBJECT)
        .await
        .map_err(|e| format!("{name}: subscribe: {e}"))?;
    // The server has the subscription once a flush (a PING answered) has gone through.
    subscriber
        .flush()
        .await
        .map_err(|e| format!("{name}: flush: {e}"))?;
    let publisher = async_nats::ConnectOptions::new()
        .name("pushpull-bench peers publisher")
        .connect(url)
        .await
        .map_err(|e| format!("{name}: connect {url}: {e}"))?;
    // The reader's count so far, for the watcher below when messages were dropped.
    let seen = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn({
        let seen = seen.clone();
        async move {
            let mut count = 0;
            while count < n {
                if subscription.next().await.is_none() {
                    break;
                }
                count += 1;
                seen.store(count, Ordering::Relaxed);
            }
            (count, Instant::now())
        }
    });
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let (s0, c0) = (nats::servers_cpu(), own_cpu());
    let start = Instant::now();
    for _ in 0..n {
        publisher
            .publish(SUBJECT, payload.clone())
            .await
            .map_err(|e| format!("{name}: publish: {e}"))?;
    }
    publisher
        .flush()
        .await
        .map_err(|e| format!("{name}: flush: {e}"))?;
    // Wait for the reader; if the count stops moving for `idle`, the rest was dropped and the
    // last message came when the count last moved.
    let (mut last, mut moved) = (seen.load(Ordering::Relaxed), Instant::now());
    let (events, last_at) = loop {
        if reader.is_finished() {
            break reader.await.map_err(|e| format!("{name}: reader: {e}"))?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = seen.load(Ordering::Relaxed);
        if now != last {
            (last, moved) = (now, Instant::now());
        } else if moved.elapsed() > idle || start.elapsed() > READ_LIMIT {
            reader.abort();
            break (now, moved);
        }
    };
    let (s1, c1) = (nats::servers_cpu(), own_cpu());
    drop(publisher);
    drop(subscriber);
    if events == 0 {
        return Err(format!("{name}: the subscriber received nothing"));
    }
    Ok(PeerRun {
        figure: Figure::NatsCore,
        events,
        expected: n,
        elapsed: last_at.saturating_duration_since(start),
        messages: events,
        server_cpu: s1.saturating_sub(s0),
        client_cpu: c1.saturating_sub(c0),
        tries: vec![],
    })
}

#[cfg(test)]
impl PeerRun {
    /// A run of `figure` at `rate` events/s, every event delivered.
    pub fn example(figure: Figure, rate: f64) -> PeerRun {
        PeerRun {
            figure,
            events: 1_000_000,
            expected: 1_000_000,
            elapsed: Duration::from_secs_f64(1e6 / rate),
            messages: 1_000,
            server_cpu: Duration::from_millis(500),
            client_cpu: Duration::from_millis(400),
            tries: vec![rate],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_comparison_sets_one_of_ours_against_a_peer() {
        for c in COMPARISONS {
            assert!(!c.ours.is_peer() && c.peer.is_peer(), "{c:?}");
            assert!(c.goal > 0.0);
        }
        let keys: std::collections::BTreeSet<_> = Figure::ALL.iter().map(|f| f.key()).collect();
        assert_eq!(keys.len(), Figure::ALL.len(), "keys are distinct");
        let batch = BARE_BATCH.to_string();
        assert!(Figure::BareBatch.key().ends_with(&batch));
        assert!(Figure::BareBatch.name().contains(&batch));
    }

    #[test]
    fn the_fastest_try_is_kept_with_every_try_listed() {
        let runs = vec![
            PeerRun::example(Figure::Live, 1e6),
            PeerRun::example(Figure::Live, 3e6),
            PeerRun::example(Figure::Live, 2e6),
        ];
        let best = fastest(runs).expect("three tries");
        assert!((best.rate() - 3e6).abs() < 1.0);
        assert_eq!(best.tries.len(), 3);
        assert!(fastest(vec![]).is_none());
    }

    #[test]
    fn a_read_is_complete_only_with_every_event_up_to_the_last() {
        let read = Read {
            events: 10,
            messages: 1,
            last_sequence: 15,
            last_at: None,
        };
        assert_eq!(read.complete(5, 10), Ok(()));
        assert!(read.complete(0, 10).is_err(), "ended on the wrong sequence");
        assert!(read.complete(5, 11).is_err(), "short");
    }
}
