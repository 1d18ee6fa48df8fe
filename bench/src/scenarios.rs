//! The five measurements of issue 4, each on a fresh producer process so one run's memory and CPU
//! never leak into the next.
//!
//! 1. [`latency`]: one consumer process per read mode, events at a fixed rate; end-to-end latency
//!    from the consumer's own HDR histogram (GetStats), and the cost per event (RPCs, socket
//!    bytes, CPU of both processes).
//! 2. [`throughput`]: one consumer draining a full log (push and poll), and live publish→receive.
//! 3. [`fanout`]: many Subscribe streams, each count at its own rate (10,000 at 100 events/s,
//!    issue 13's case; fewer at 1,000); producer memory per subscriber, p99 and worst latency.
//! 4. [`slow_consumer`]: one subscriber stops reading; do the others notice?
//! 5. [`outage`]: the consumer (push, or a webhook receiver) is down for a while under load;
//!    the backlog, and how long the restarted one takes to catch up.
//!
//! Every producer here uses the memory store; [`crate::storage`] and [`crate::jetstream`]
//! measure the stores.

use std::time::{Duration, Instant};

use crate::{
    Progress,
    child::{Proc, Role, Usage},
    jetstream::JetStreamSettings,
    load::{
        self, ConsumerStats, MAX_PUBLISH, Subscribers, channel, channel_with, duration_of,
        producer_client, publish_at_rate, publish_at_rate_isolated, publish_flat_out,
    },
    peers::PeerSettings,
    soak::SoakSettings,
    storage::StorageSettings,
};

/// How long and how big each measurement is.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub rates: Vec<u64>,
    pub window: Duration,
    pub catchup_events: u64,
    pub live_events: u64,
    pub fanout: Vec<FanoutCase>,
    pub fanout_window: Duration,
    pub streams_per_connection: usize,
    /// Each throughput measurement runs this many times; the fastest is reported.
    pub throughput_tries: usize,
    pub slow_subscribers: usize,
    /// Events/s the slow-consumer phases publish.
    pub slow_rate: u64,
    pub slow_window: Duration,
    /// The receiver-down scenario: events/s published throughout, how long before the consumer
    /// stops, how long it stays down, and how long publishing goes on after it is back.
    pub outage_rate: u64,
    pub outage_before: Duration,
    pub outage_down: Duration,
    pub outage_after: Duration,
    pub storage: StorageSettings,
    pub jetstream: JetStreamSettings,
    pub peers: PeerSettings,
    pub soak: SoakSettings,
}

/// One fan-out run: how many subscribers, and the events/s published to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutCase {
    pub subscribers: usize,
    pub rate: u64,
}

impl FanoutCase {
    const fn new(subscribers: usize, rate: u64) -> Self {
        Self { subscribers, rate }
    }
}

impl std::str::FromStr for FanoutCase {
    type Err = String;

    /// `SUBSCRIBERS@RATE`, e.g. `10000@100` (`--fanout`).
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, rate) = s
            .split_once('@')
            .ok_or_else(|| format!("{s:?}: expected SUBSCRIBERS@RATE, e.g. 10000@100"))?;
        let number = |what: &str, v: &str| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("{s:?}: {what} must be a whole number above 0"))
        };
        Ok(Self::new(
            number("SUBSCRIBERS", n)? as usize,
            number("RATE", rate)?,
        ))
    }
}

impl Settings {
    pub fn full() -> Self {
        Self {
            quick: false,
            rates: vec![100, 10_000, 100_000],
            window: Duration::from_secs(6),
            catchup_events: 3_000_000,
            live_events: 3_000_000,
            // Issue 13's case is 10,000 subscribers at 100 events/s each (a million deliveries
            // a second); the smaller counts run at 1,000 events/s, as they always have.
            fanout: vec![
                FanoutCase::new(1, 1_000),
                FanoutCase::new(100, 1_000),
                FanoutCase::new(1_000, 1_000),
                FanoutCase::new(10_000, 100),
            ],
            fanout_window: Duration::from_secs(5),
            streams_per_connection: 100,
            throughput_tries: 3,
            slow_subscribers: 100,
            slow_rate: 1_000,
            slow_window: Duration::from_secs(5),
            outage_rate: 10_000,
            outage_before: Duration::from_secs(2),
            outage_down: Duration::from_secs(5),
            outage_after: Duration::from_secs(3),
            storage: StorageSettings::full(),
            jetstream: JetStreamSettings::full(),
            peers: PeerSettings::full(),
            soak: SoakSettings::full(),
        }
    }

    pub fn quick() -> Self {
        Self {
            quick: true,
            rates: vec![1_000],
            window: Duration::from_millis(1200),
            catchup_events: 100_000,
            live_events: 100_000,
            fanout: vec![FanoutCase::new(1, 1_000), FanoutCase::new(100, 1_000)],
            fanout_window: Duration::from_secs(1),
            streams_per_connection: 100,
            throughput_tries: 1,
            slow_subscribers: 20,
            slow_rate: 1_000,
            slow_window: Duration::from_secs(1),
            outage_rate: 1_000,
            outage_before: Duration::from_millis(500),
            outage_down: Duration::from_secs(1),
            outage_after: Duration::from_secs(1),
            storage: StorageSettings::quick(),
            jetstream: JetStreamSettings::quick(),
            peers: PeerSettings::quick(),
            soak: SoakSettings::quick(),
        }
    }
}

/// A consumer read mode as the consumer's flags express it. Push and long poll are named by
/// the consumer's own [`consumer::Mode::name`]; interval polls add their interval.
#[derive(Debug, Clone)]
pub struct Mode {
    pub name: &'static str,
    pub args: Vec<String>,
    /// The poll interval, for interval polling.
    pub interval: Option<Duration>,
}

pub fn modes() -> Vec<Mode> {
    let poll = |name, ms: u64| Mode {
        name,
        args: strings(&[
            "--mode",
            consumer::Mode::Poll.name(),
            "--poll-interval",
            &format!("{ms}ms"),
            "--max-events",
            "1000",
        ]),
        interval: Some(Duration::from_millis(ms)),
    };
    vec![
        Mode {
            name: consumer::Mode::Push.name(),
            args: strings(&["--mode", consumer::Mode::Push.name()]),
            interval: None,
        },
        poll("poll 10ms", 10),
        poll("poll 100ms", 100),
        poll("poll 1s", 1000),
        Mode {
            name: consumer::Mode::LongPoll.name(),
            args: strings(&[
                "--mode",
                consumer::Mode::LongPoll.name(),
                "--max-wait",
                "30s",
                "--max-events",
                "1000",
            ]),
            interval: None,
        },
        webhook(),
    ]
}

/// The webhook consumer: the producer POSTs to the HTTP port the bench child binds for it
/// (`--metrics-listen` only satisfies the flag check; the child passes its own listener).
pub fn webhook() -> Mode {
    Mode {
        name: consumer::Mode::Webhook.name(),
        args: strings(&[
            "--mode",
            consumer::Mode::Webhook.name(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--max-events",
            "1000",
        ]),
        interval: None,
    }
}

pub fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

pub fn consumer_args(producer: &Proc, from: &str, mode: &Mode) -> Vec<String> {
    let mut args = strings(&[
        "--producer",
        &producer.url(),
        "--from",
        from,
        "--summary-interval",
        "0s",
    ]);
    args.extend(mode.args.iter().cloned());
    args
}

/// One (mode, rate) latency measurement.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    pub mode: String,
    pub rate: u64,
    pub published: u64,
    pub received: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    /// Calls during the window: RPCs the consumer sent (push: 0, its one stream was opened
    /// before), plus the webhook POSTs the producer made to it.
    pub rpcs: u64,
    /// Responses with no events (empty polls, heartbeats, expired long polls).
    pub empty_responses: u64,
    pub consumer_read_bytes: u64,
    pub consumer_written_bytes: u64,
    pub producer_cpu: Duration,
    pub consumer_cpu: Duration,
    pub window: Duration,
}

impl LatencyRun {
    pub fn per_event(&self, x: f64) -> f64 {
        if self.received == 0 {
            0.0
        } else {
            x / self.received as f64
        }
    }
}

pub async fn latency(
    mode: &Mode,
    rate: u64,
    settings: &Settings,
    progress: &mut Progress,
) -> Result<LatencyRun, String> {
    let producer = Proc::spawn(Role::Producer, &memory_store()).await?;
    let consumer = Proc::spawn(Role::Consumer, &consumer_args(&producer, "latest", mode)).await?;
    let mut stats = ConsumerStats::connect(&consumer.url()).await?;
    let ready = stats.wait_ready().await?;
    let (p0, c0) = (
        producer.usage(),
        consumer.usage_towards_and_http(producer.addr),
    );
    let started = Instant::now();
    let published = publish_at_rate_isolated(&producer.url(), rate, settings.window).await?;
    // Let the last events arrive: a poller may be a whole interval away from its next call.
    tokio::time::sleep(mode.interval.unwrap_or_default() + Duration::from_millis(300)).await;
    let s = stats.wait_for_events(published.events, progress).await?;
    let (p1, c1) = (
        producer.usage(),
        consumer.usage_towards_and_http(producer.addr),
    );
    let (p, c) = (p1.since(&p0), c1.since(&c0));
    consumer.stop().await;
    producer.stop().await;
    Ok(LatencyRun {
        mode: mode.name.to_owned(),
        rate,
        published: published.events,
        received: s.events_received,
        p50: duration_of(&s.latency_p50),
        p99: duration_of(&s.latency_p99),
        p999: duration_of(&s.latency_p999),
        max: duration_of(&s.latency_max),
        rpcs: (s.rpcs_sent + s.webhooks_received) - (ready.rpcs_sent + ready.webhooks_received),
        empty_responses: s.empty_responses - ready.empty_responses,
        consumer_read_bytes: c.read_bytes,
        consumer_written_bytes: c.written_bytes,
        producer_cpu: p.cpu,
        consumer_cpu: c.cpu,
        window: started.elapsed(),
    })
}

/// Producer CPU with the publisher alone (no reader), at `rate` for the latency window: the
/// part of the latency runs' producer CPU that is not delivery.
pub async fn publish_baseline(rate: u64, settings: &Settings) -> Result<(u64, Duration), String> {
    let producer = Proc::spawn(Role::Producer, &memory_store()).await?;
    let p0 = producer.usage();
    let published = publish_at_rate_isolated(&producer.url(), rate, settings.window).await?;
    let p1 = producer.usage();
    producer.stop().await;
    Ok((published.events, p1.since(&p0).cpu))
}

/// One throughput measurement.
#[derive(Debug, Clone)]
pub struct ThroughputRun {
    pub name: String,
    pub events: u64,
    pub elapsed: Duration,
    pub producer_cpu: Duration,
    pub consumer_cpu: Duration,
    pub consumer_read_bytes: u64,
    pub rpcs: u64,
    /// Events/s of every try; the run reported is the fastest (the machine is shared, and
    /// interference only ever slows a run down).
    pub tries: Vec<f64>,
}

impl ThroughputRun {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The store of every producer outside the storage scenario. Named, not left to the default
/// (the file store, whose default `data/` directory two producers would share).
pub fn memory_store() -> Vec<String> {
    strings(&["--store", "memory"])
}

/// Producer flags for runs that hold millions of events at once.
fn big_log() -> Vec<String> {
    strings(&[
        "--store",
        "memory",
        "--retention-events",
        "10000000",
        "--retention-bytes",
        "4294967296",
    ])
}

/// Catch-up: the log already holds `n` events; one consumer (push, or poll with max_events 1000)
/// reads them all from the oldest. Also returns the prefill as "publish only".
pub async fn catch_up(
    mode: &Mode,
    settings: &Settings,
    progress: &mut Progress,
) -> Result<(ThroughputRun, ThroughputRun), String> {
    let n = settings.catchup_events;
    let producer = Proc::spawn(Role::Producer, &big_log()).await?;
    let p0 = producer.usage();
    let prefill = publish_flat_out(&producer.url(), n, 2, MAX_PUBLISH).await?;
    let p1 = producer.usage();
    let publish = ThroughputRun {
        name: "Publish only, no readers (2 callers, 10,000 per call)".into(),
        events: prefill.events,
        elapsed: prefill.elapsed,
        producer_cpu: p1.since(&p0).cpu,
        consumer_cpu: Duration::ZERO,
        consumer_read_bytes: 0,
        rpcs: prefill.rpcs,
        tries: vec![],
    };
    progress.note(&format!("log prefilled with {n} events"));
    let consumer = Proc::spawn(Role::Consumer, &consumer_args(&producer, "earliest", mode)).await?;
    let c0 = Usage::default();
    let mut stats = ConsumerStats::connect(&consumer.url()).await?;
    let (t0, t1, n0) = stats
        .wait_received(
            n,
            Duration::from_millis(5),
            Duration::from_secs(120),
            |got| eprintln!("      … {got} of {n} events"),
        )
        .await?;
    let (p2, c1) = (producer.usage(), consumer.usage_towards(producer.addr));
    let s = stats.get().await?;
    consumer.stop().await;
    producer.stop().await;
    let run = ThroughputRun {
        name: format!("{} catching up (from the oldest of {n} events)", mode.name),
        events: n - n0,
        elapsed: t1 - t0,
        producer_cpu: p2.since(&p1).cpu,
        consumer_cpu: c1.since(&c0).cpu,
        consumer_read_bytes: c1.read_bytes,
        rpcs: s.rpcs_sent,
        tries: vec![],
    };
    Ok((run, publish))
}

/// Live: the consumer is at the head; publishers append `n` events flat out; measured from the
/// first publish to the last event received.
pub async fn live(
    mode: &Mode,
    settings: &Settings,
    progress: &mut Progress,
) -> Result<ThroughputRun, String> {
    let n = settings.live_events;
    let producer = Proc::spawn(Role::Producer, &big_log()).await?;
    let consumer = Proc::spawn(Role::Consumer, &consumer_args(&producer, "latest", mode)).await?;
    let mut stats = ConsumerStats::connect(&consumer.url()).await?;
    let ready = stats.wait_ready().await?;
    let (p0, c0) = (
        producer.usage(),
        consumer.usage_towards_and_http(producer.addr),
    );
    let url = producer.url();
    let started = Instant::now();
    let publishers = tokio::spawn(async move { publish_flat_out(&url, n, 2, MAX_PUBLISH).await });
    let (_, t1, _) = stats
        .wait_received(
            n,
            Duration::from_millis(5),
            Duration::from_secs(120),
            |got| eprintln!("      … {got} of {n} events"),
        )
        .await?;
    let published = publishers.await.map_err(|e| e.to_string())??;
    let (p1, c1) = (producer.usage(), consumer.usage_towards(producer.addr));
    let s = stats.get().await?;
    progress.note(&format!(
        "publishers took {:.2} s for {} events",
        published.elapsed.as_secs_f64(),
        published.events
    ));
    consumer.stop().await;
    producer.stop().await;
    Ok(ThroughputRun {
        name: format!(
            "{} live, publish → receive (2 publishers flat out)",
            mode.name
        ),
        events: n,
        elapsed: t1 - started,
        producer_cpu: p1.since(&p0).cpu,
        consumer_cpu: c1.since(&c0).cpu,
        consumer_read_bytes: c1.since(&c0).read_bytes,
        rpcs: (s.rpcs_sent + s.webhooks_received) - (ready.rpcs_sent + ready.webhooks_received),
        tries: vec![],
    })
}

/// One fan-out measurement.
#[derive(Debug, Clone)]
pub struct FanoutRun {
    pub subscribers: usize,
    /// Events/s published.
    pub rate: u64,
    pub rss_before: u64,
    pub rss_idle: u64,
    pub rss_peak: u64,
    pub published: u64,
    pub delivered: u64,
    pub all_delivered: bool,
    /// From the first publish until every subscriber had every event (or the time limit).
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// The slowest delivery of all: `produced_at` to receipt.
    pub max: Duration,
    pub producer_cpu: Duration,
    /// Responses with events the subscribers received: `delivered / responses` events each.
    pub responses: u64,
    /// CPU of the benchmark process over the same time: the subscribers' decoding, mostly (and
    /// the publisher's thread).
    pub client_cpu: Duration,
}

impl FanoutRun {
    pub fn idle_bytes_per_subscriber(&self) -> f64 {
        self.rss_idle.saturating_sub(self.rss_before) as f64 / self.subscribers as f64
    }
}

pub async fn fanout(
    case: FanoutCase,
    settings: &Settings,
    progress: &mut Progress,
) -> Result<FanoutRun, String> {
    let subscribers = case.subscribers;
    let producer = Proc::spawn(Role::Producer, &memory_store()).await?;
    let mut publisher = producer_client(channel(&producer.url()).await?);
    // Warm up the code paths (and the allocator) before the baseline.
    let warm = publish_at_rate(&mut publisher, 1_000, Duration::from_millis(100)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = producer.usage().rss_bytes;
    let subs = Subscribers::open(
        &producer.url(),
        subscribers,
        settings.streams_per_connection,
        warm.last_sequence,
    )
    .await?;
    subs.wait_attached(subscribers, Duration::from_secs(120))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = producer.usage().rss_bytes;
    progress.note(&format!(
        "{subscribers} subscribers attached; producer RSS {:.1} → {:.1} MiB",
        mib(rss_before),
        mib(rss_idle)
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let peak = load::sample_peak_rss(producer.pid, stop.clone());
    let p0 = producer.usage();
    let me0 = Usage::of(std::process::id());
    let started = Instant::now();
    // From a thread of its own: this runtime is busy with every subscriber's decoding.
    let published =
        publish_at_rate_isolated(&producer.url(), case.rate, settings.fanout_window).await?;
    let limit = Instant::now() + settings.fanout_window * 2 + Duration::from_secs(5);
    let mut last_note = Instant::now();
    while subs.caught_up(published.last_sequence) < subscribers && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if last_note.elapsed() > Duration::from_secs(1) {
            progress.note(&format!(
                "{} of {subscribers} subscribers have every event",
                subs.caught_up(published.last_sequence)
            ));
            last_note = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    // A publisher that fell behind its rate gave up early: fewer events, not all delivered.
    let all_delivered =
        published.complete && subs.caught_up(published.last_sequence) == subscribers;
    let p1 = producer.usage();
    let me1 = Usage::of(std::process::id());
    stop.cancel();
    let rss_peak = peak.await.map_err(|e| e.to_string())?;
    let histogram = subs.merged_histogram();
    let delivered = subs.received.load(std::sync::atomic::Ordering::Relaxed);
    let responses = subs.responses.load(std::sync::atomic::Ordering::Relaxed);
    subs.close().await;
    producer.stop().await;
    Ok(FanoutRun {
        subscribers,
        rate: case.rate,
        rss_before,
        rss_idle,
        rss_peak,
        published: published.events,
        delivered,
        all_delivered,
        elapsed,
        p50: micros(histogram.value_at_quantile(0.5)),
        p99: micros(histogram.value_at_quantile(0.99)),
        max: micros(histogram.max()),
        producer_cpu: p1.since(&p0).cpu,
        responses,
        client_cpu: me1.since(&me0).cpu,
    })
}

/// The slow-consumer measurement: the same load before and after one subscriber stops reading.
#[derive(Debug, Clone)]
pub struct SlowRun {
    pub subscribers: usize,
    pub p99_before: Duration,
    pub p99_after: Duration,
    pub rss_peak_before: u64,
    pub rss_peak_after: u64,
    pub delivered_before: bool,
    pub delivered_after: bool,
    /// Events in the log the stalled subscriber never read.
    pub stalled_lag: u64,
}

pub async fn slow_consumer(
    settings: &Settings,
    progress: &mut Progress,
) -> Result<SlowRun, String> {
    let m = settings.slow_subscribers;
    let producer = Proc::spawn(Role::Producer, &memory_store()).await?;
    let subs = Subscribers::open(&producer.url(), m, settings.streams_per_connection, 0).await?;
    subs.wait_attached(m, Duration::from_secs(60)).await?;

    let phase = async |label: &str| -> Result<(Duration, u64, bool), String> {
        subs.reset_histograms();
        let stop = tokio_util::sync::CancellationToken::new();
        let peak = load::sample_peak_rss(producer.pid, stop.clone());
        let published =
            publish_at_rate_isolated(&producer.url(), settings.slow_rate, settings.slow_window)
                .await?;
        let limit = Instant::now() + Duration::from_secs(10);
        while subs.caught_up(published.last_sequence) < m && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        let rss = peak.await.map_err(|e| e.to_string())?;
        let p99 = micros(subs.merged_histogram().value_at_quantile(0.99));
        let ok = published.complete && subs.caught_up(published.last_sequence) == m;
        eprintln!(
            "      {label}: p99 {:.2} ms, producer RSS peak {:.1} MiB, all delivered: {ok}",
            ms(p99),
            mib(rss)
        );
        Ok((p99, rss, ok))
    };

    // The first phase warms the producer up (allocator arenas, HTTP/2 buffers); the second is the
    // baseline the stalled phase is compared with.
    phase("warm-up, all reading").await?;
    let (p99_before, rss_peak_before, delivered_before) = phase("all reading").await?;
    progress.note("one more subscriber, on its own connection, that never reads");
    // A 64 KiB HTTP/2 window: the stalled stream fills it at once and the producer must hold
    // the rest back (or not).
    let mut stalled_client = producer_client(channel_with(&producer.url(), Some(65_535)).await?);
    let stalled = stalled_client
        .subscribe(pushpull::pb::SubscribeRequest {
            after_sequence: Some(0),
            topics: vec![],
        })
        .await
        .map_err(|s| format!("stalled subscribe: {s}"))?;
    let (p99_after, rss_peak_after, delivered_after) = phase("one subscriber stalled").await?;
    let head = {
        let mut c = producer_client(channel(&producer.url()).await?);
        c.poll(pushpull::pb::PollRequest {
            after_sequence: None,
            ..Default::default()
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner()
        .head_sequence
    };
    drop(stalled);
    subs.close().await;
    producer.stop().await;
    Ok(SlowRun {
        subscribers: m,
        p99_before,
        p99_after,
        rss_peak_before,
        rss_peak_after,
        delivered_before,
        delivered_after,
        stalled_lag: head,
    })
}

pub fn micros(us: u64) -> Duration {
    Duration::from_micros(us)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The fastest of several tries, remembering every try's rate.
pub fn fastest(runs: Vec<ThroughputRun>) -> Option<ThroughputRun> {
    let tries: Vec<f64> = runs.iter().map(ThroughputRun::rate).collect();
    let mut best = runs
        .into_iter()
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))?;
    best.tries = tries;
    Some(best)
}

/// One receiver-down measurement.
#[derive(Debug, Clone)]
pub struct OutageRun {
    pub mode: String,
    pub rate: u64,
    pub down: Duration,
    /// Events the restarted consumer had to catch up on: published after its checkpoint and
    /// before it started again.
    pub backlog: u64,
    /// From the restarted consumer's spawn until it had every event of the backlog.
    pub recovery: Duration,
    /// Of what the restarted consumer received, events fetched by Poll (webhook: backfill).
    pub backfilled: u64,
    /// Webhook POSTs the restarted consumer accepted.
    pub webhooks: u64,
    /// Webhook POSTs the producer tried while the consumer was down (retried with backoff).
    pub retries_while_down: u64,
    /// Events published in all, and what the restarted consumer ended on.
    pub published: u64,
    pub last_sequence: u64,
    pub received: u64,
    pub missed: u64,
    pub duplicates: u64,
}

/// The producer's webhook POSTs that failed and will be retried (a `retry` outcome).
const WEBHOOK_RETRIES: &str = "pushpull_producer_webhook_attempt_seconds_count{outcome=\"retry\"}";

/// Publishes at `outage_rate` throughout; the consumer (with a checkpoint) runs for
/// `outage_before`, stops (gracefully), stays down for `outage_down`, and starts again from
/// its checkpoint while publishing goes on for `outage_after`. Measures the backlog it came
/// back to and how long it took to have all of it; then checks it ends with every event once.
pub async fn outage(mode: &Mode, settings: &Settings) -> Result<OutageRun, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let checkpoint = dir.path().join("cursor");
    let producer = Proc::spawn(Role::Producer, &memory_store()).await?;
    let mut args = consumer_args(&producer, "latest", mode);
    args.extend(strings(&[
        "--checkpoint",
        &checkpoint.display().to_string(),
        "--checkpoint-interval",
        "100ms",
    ]));
    let consumer = Proc::spawn(Role::Consumer, &args).await?;
    ConsumerStats::connect(&consumer.url())
        .await?
        .wait_ready()
        .await?;
    let total = settings.outage_before + settings.outage_down + settings.outage_after;
    let publisher = tokio::spawn({
        let url = producer.url();
        let rate = settings.outage_rate;
        async move { publish_at_rate_isolated(&url, rate, total).await }
    });
    tokio::time::sleep(settings.outage_before).await;
    consumer.stop().await;
    let metrics = producer.http.ok_or("the producer serves no /metrics")?;
    let before = crate::scrape::Scrape::get(metrics).await?;
    tokio::time::sleep(settings.outage_down).await;

    let head = load::head_sequence(&mut producer_client(channel(&producer.url()).await?)).await?;
    let restarted = Instant::now();
    let after = crate::scrape::Scrape::get(metrics).await?;
    let consumer = Proc::spawn(Role::Consumer, &args).await?;
    let mut stats = ConsumerStats::connect(&consumer.url()).await?;
    let limit = Instant::now() + Duration::from_secs(60);
    let recovery = loop {
        let s = stats.get().await?;
        if s.last_sequence >= head {
            break restarted.elapsed();
        }
        if Instant::now() > limit {
            return Err(format!(
                "{}: the restarted consumer reached {} of {head} in 60 s",
                mode.name, s.last_sequence
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let published = publisher.await.map_err(|e| format!("publisher: {e}"))??;
    let limit = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = stats.get().await?;
        if s.last_sequence >= published.last_sequence || Instant::now() > limit {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    consumer.stop().await;
    producer.stop().await;
    let resumed_from = s.last_sequence - s.events_received;
    Ok(OutageRun {
        mode: mode.name.to_owned(),
        rate: settings.outage_rate,
        down: settings.outage_down,
        backlog: head.saturating_sub(resumed_from),
        recovery,
        backfilled: s.events_backfilled,
        webhooks: s.webhooks_received,
        retries_while_down: after.grew(&before, WEBHOOK_RETRIES),
        published: published.last_sequence,
        last_sequence: s.last_sequence,
        received: s.events_received,
        missed: s.events_missed,
        duplicates: s.duplicates_dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fanout_case_is_subscribers_at_rate() {
        assert_eq!(
            "10000@100".parse::<FanoutCase>(),
            Ok(FanoutCase::new(10_000, 100))
        );
        for bad in ["10000", "@100", "0@100", "10@0", "x@1", "10@-1"] {
            let err = bad.parse::<FanoutCase>().unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }
}
