//! Load and observation over real gRPC: a publisher at a fixed rate or flat out, push
//! subscribers made with the generated client (for fan-out, where 10,000 consumer processes would
//! measure the machine rather than the producer), and the consumer's GetStats.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use pushpull::pb::{
    self, consumer_service_client::ConsumerServiceClient,
    producer_service_client::ProducerServiceClient,
};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Topic of every benchmark event.
pub const TOPIC: &str = "bench";
/// Payload size of every benchmark event (the targets are for 64-byte payloads).
pub const PAYLOAD_BYTES: usize = 64;
/// Most events per Publish (the producer's default limit).
pub const MAX_PUBLISH: usize = 10_000;
/// Latencies are recorded in microseconds up to this (60 s).
const MAX_LATENCY_US: u64 = 60_000_000;
const MESSAGE_LIMIT: usize = 64 * 1024 * 1024;

/// A channel to a local service, set up as the consumer sets up its own.
pub async fn channel(url: &str) -> Result<Channel, String> {
    channel_with(url, None).await
}

/// As [`channel`], with an optional HTTP/2 stream window (a small one makes a stalled reader
/// stall fast).
pub async fn channel_with(url: &str, stream_window: Option<u32>) -> Result<Channel, String> {
    Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(stream_window)
        .connect()
        .await
        .map_err(|e| format!("connect {url}: {e}"))
}

pub fn producer_client(channel: Channel) -> ProducerServiceClient<Channel> {
    ProducerServiceClient::new(channel)
        .max_decoding_message_size(MESSAGE_LIMIT)
        .max_encoding_message_size(MESSAGE_LIMIT)
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid")
}

pub fn events(n: usize) -> Vec<pb::NewEvent> {
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    (0..n)
        .map(|_| pb::NewEvent {
            topic: TOPIC.into(),
            payload: payload.clone(),
        })
        .collect()
}

/// What a publisher did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub events: u64,
    pub rpcs: u64,
    /// Sequence of the last event published (0 if none).
    pub last_sequence: u64,
    pub elapsed: Duration,
    /// False when the publisher fell so far behind its rate that it gave up early.
    pub complete: bool,
    /// Microseconds from sending each Publish to its response ([`publish_at_rate`] only).
    pub call_latency: Option<Histogram<u64>>,
    /// The same, recorded once per event the call carried: comparable with end-to-end
    /// latencies, which are per event (a call late after a slow one carries more events).
    pub event_latency: Option<Histogram<u64>>,
}

/// Publishes `rate` events/s for `duration` from a thread and runtime of its own, so a busy
/// benchmark process (10,000 subscribers decoding) cannot starve it. See [`publish_at_rate`].
pub async fn publish_at_rate_isolated(
    url: &str,
    rate: u64,
    duration: Duration,
) -> Result<Published, String> {
    let url = url.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(async {
                        let mut client = producer_client(channel(&url).await?);
                        publish_at_rate(&mut client, rate, duration).await
                    })
                });
            let _ = tx.send(result);
        })
        .map_err(|e| e.to_string())?;
    rx.await
        .map_err(|_| "publisher thread panicked".to_string())?
}

/// Publishes `rate` events/s for `duration`: every millisecond (or every event, below 1,000/s)
/// it publishes what is due since the start, so the average rate is exact even when a tick is
/// late. One call in flight at a time, as a simple publisher would do. Gives up (with
/// `complete: false`) if it falls more than `duration` behind.
pub async fn publish_at_rate(
    client: &mut ProducerServiceClient<Channel>,
    rate: u64,
    duration: Duration,
) -> Result<Published, String> {
    let tick = Duration::from_secs_f64((1.0 / rate as f64).max(0.001));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let start = Instant::now();
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let mut out = Published::default();
    let (mut latency, mut by_event) = (new_histogram(), new_histogram());
    while out.events < total {
        if start.elapsed() > duration * 2 {
            out.elapsed = start.elapsed();
            out.call_latency = Some(latency);
            out.event_latency = Some(by_event);
            return Ok(out);
        }
        ticker.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let n = (due.saturating_sub(out.events) as usize).min(MAX_PUBLISH);
        if n == 0 {
            continue;
        }
        let request = pb::PublishRequest { events: events(n) };
        let sent = Instant::now();
        let response = client
            .publish(request)
            .await
            .map_err(|s| format!("publish: {s}"))?
            .into_inner();
        let us = (sent.elapsed().as_micros() as u64).clamp(1, MAX_LATENCY_US);
        latency.saturating_record(us);
        by_event.saturating_record_n(us, n as u64);
        out.events += n as u64;
        out.rpcs += 1;
        out.last_sequence = response.last_sequence;
    }
    out.elapsed = start.elapsed();
    out.complete = true;
    out.call_latency = Some(latency);
    out.event_latency = Some(by_event);
    Ok(out)
}

/// Publishes `total` events as fast as the producer takes them, from `parallel` concurrent
/// callers, each sending `batch` events per Publish (at most [`MAX_PUBLISH`]).
pub async fn publish_flat_out(
    url: &str,
    total: u64,
    parallel: usize,
    batch: usize,
) -> Result<Published, String> {
    let batch_len = batch.clamp(1, MAX_PUBLISH) as u64;
    let start = Instant::now();
    let remaining = Arc::new(AtomicU64::new(total));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let mut client = producer_client(channel(url).await?);
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let batch = Arc::new(events(batch_len as usize));
            let mut out = Published::default();
            loop {
                let take = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                        r.checked_sub(r.min(batch_len))
                    })
                    .map(|r| r.min(batch_len))
                    .unwrap_or(0);
                if take == 0 {
                    return Ok::<_, String>(out);
                }
                let events = batch[..take as usize].to_vec();
                let r = client
                    .publish(pb::PublishRequest { events })
                    .await
                    .map_err(|s| format!("publish: {s}"))?
                    .into_inner();
                out.events += take;
                out.rpcs += 1;
                out.last_sequence = out.last_sequence.max(r.last_sequence);
            }
        }));
    }
    let mut all = Published::default();
    for task in tasks {
        let p = task.await.map_err(|e| e.to_string())??;
        all.events += p.events;
        all.rpcs += p.rpcs;
        all.last_sequence = all.last_sequence.max(p.last_sequence);
    }
    all.elapsed = start.elapsed();
    all.complete = all.events == total;
    Ok(all)
}

/// The consumer's GetStats, for one consumer process.
pub struct ConsumerStats {
    client: ConsumerServiceClient<Channel>,
}

impl ConsumerStats {
    pub async fn connect(url: &str) -> Result<Self, String> {
        Ok(Self {
            client: ConsumerServiceClient::new(channel(url).await?),
        })
    }

    pub async fn get(&mut self) -> Result<pb::GetStatsResponse, String> {
        self.client
            .get_stats(pb::GetStatsRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("GetStats: {s}"))
    }

    /// Polls the stats until the consumer has received `events` or 15 s have passed (unlike
    /// [`Self::wait_received`], a shortfall is no error: the caller reports it), noting
    /// the wait in `progress`; returns the last stats read.
    pub async fn wait_for_events(
        &mut self,
        events: u64,
        progress: &mut crate::Progress,
    ) -> Result<pb::GetStatsResponse, String> {
        let mut s = self.get().await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.events_received < events && Instant::now() < deadline {
            progress.note(&format!(
                "waiting for the consumer: {} of {events}",
                s.events_received
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
            s = self.get().await?;
        }
        Ok(s)
    }

    /// Waits until the consumer has a cursor on the log (its first response arrived).
    pub async fn wait_ready(&mut self) -> Result<pb::GetStatsResponse, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.get().await?;
            if s.connected && s.after_sequence.is_some() {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err("consumer did not connect within 20 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `events_received` reaches `target`; returns (when it first moved, when it
    /// got there, the count when first seen moving). Polls every `every`.
    ///
    /// "When it first moved" is when the poll that first saw a count was *sent*: the consumer
    /// read that count at or after then, but a consumer busy catching up may answer long after
    /// it read it, and timing from the answer once made a 0.2 s catch-up look like 6 ms. So
    /// the window is never shorter than the true one. A consumer that got everything between
    /// two polls is timed from the last poll that saw nothing, with every event counted.
    pub async fn wait_received(
        &mut self,
        target: u64,
        every: Duration,
        limit: Duration,
        mut progress: impl FnMut(u64),
    ) -> Result<(Instant, Instant, u64), String> {
        let deadline = Instant::now() + limit;
        let mut first: Option<(Instant, u64)> = None;
        let mut last_report = Instant::now();
        let mut saw_none = Instant::now();
        loop {
            let sent = Instant::now();
            let s = self.get().await?;
            let now = Instant::now();
            if s.events_received == 0 {
                saw_none = sent;
            } else if first.is_none() {
                first = Some(if s.events_received >= target {
                    (saw_none, 0)
                } else {
                    (sent, s.events_received)
                });
            }
            if s.events_received >= target {
                let (t0, n0) = first.unwrap_or((now, 0));
                return Ok((t0, now, n0));
            }
            if now > deadline {
                return Err(format!(
                    "consumer received {} of {target} events within {limit:?}",
                    s.events_received
                ));
            }
            if last_report.elapsed() > Duration::from_secs(1) {
                progress(s.events_received);
                last_report = Instant::now();
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// The producer's head now, from a Poll that asks for no events after it.
pub async fn head_sequence(client: &mut ProducerServiceClient<Channel>) -> Result<u64, String> {
    let answer = client
        .poll(pb::PollRequest {
            after_sequence: None,
            max_events: 1,
            ..Default::default()
        })
        .await
        .map_err(|s| format!("poll: {s}"))?
        .into_inner();
    Ok(answer.head_sequence)
}

pub fn duration_of(d: &Option<prost_types::Duration>) -> Duration {
    d.as_ref()
        .and_then(|d| pushpull::time::std_duration(d).ok())
        .unwrap_or_default()
}

/// Push subscribers made with the generated client, spread over connections of at most
/// `per_connection` streams (HTTP/2 servers cap concurrent streams per connection; hyper's
/// default is 200).
pub struct Subscribers {
    /// Subscribers that received their first response.
    pub attached: Arc<AtomicUsize>,
    /// Events received by all subscribers (sequence > `after`).
    pub received: Arc<AtomicU64>,
    /// Responses that carried events, received by all subscribers: with `received`, how many
    /// events a response carried on average (the producer batches what a subscriber is behind).
    pub responses: Arc<AtomicU64>,
    /// One latency histogram per connection, so recording rarely contends.
    pub histograms: Vec<Arc<Mutex<Histogram<u64>>>>,
    /// Per subscriber: the last sequence received.
    pub last_seen: Arc<Vec<AtomicU64>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Subscribers {
    /// Opens `count` Subscribe streams from cursor `after`.
    pub async fn open(
        url: &str,
        count: usize,
        per_connection: usize,
        after: u64,
    ) -> Result<Self, String> {
        let connections = count.div_ceil(per_connection);
        let attached = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let responses = Arc::new(AtomicU64::new(0));
        let last_seen: Arc<Vec<AtomicU64>> =
            Arc::new((0..count).map(|_| AtomicU64::new(after)).collect());
        let stop = CancellationToken::new();
        let mut histograms = Vec::new();
        let mut tasks = Vec::new();
        for c in 0..connections {
            let client = producer_client(channel(url).await?);
            let histogram = Arc::new(Mutex::new(new_histogram()));
            histograms.push(histogram.clone());
            for i in (c * per_connection)..((c + 1) * per_connection).min(count) {
                let mut client = client.clone();
                let (attached, received, responses, last_seen, stop, histogram) = (
                    attached.clone(),
                    received.clone(),
                    responses.clone(),
                    last_seen.clone(),
                    stop.clone(),
                    histogram.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    let request = pb::SubscribeRequest {
                        after_sequence: Some(after),
                        topics: vec![],
                    };
                    let mut stream = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = client.subscribe(request) => match r {
                            Ok(r) => r.into_inner(),
                            Err(status) => {
                                eprintln!("subscriber {i}: {status}");
                                return;
                            }
                        },
                    };
                    let mut first = true;
                    let mut latencies: Vec<u64> = Vec::new();
                    loop {
                        let message = tokio::select! {
                            _ = stop.cancelled() => return,
                            m = stream.message() => m,
                        };
                        let Ok(Some(response)) = message else { return };
                        if first {
                            attached.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                        if response.events.is_empty() {
                            continue;
                        }
                        let now = SystemTime::now();
                        latencies.clear();
                        for event in &response.events {
                            let produced = event
                                .produced_at
                                .as_ref()
                                .and_then(pushpull::time::system_time);
                            let us = produced
                                .and_then(|p| now.duration_since(p).ok())
                                .map_or(1, |d| d.as_micros() as u64);
                            latencies.push(us.clamp(1, MAX_LATENCY_US));
                        }
                        let last = response.events.last().map_or(0, |e| e.sequence);
                        last_seen[i].store(last, Ordering::Relaxed);
                        received.fetch_add(response.events.len() as u64, Ordering::Relaxed);
                        responses.fetch_add(1, Ordering::Relaxed);
                        let mut h = histogram.lock().unwrap_or_else(|p| p.into_inner());
                        for &us in &latencies {
                            h.saturating_record(us);
                        }
                    }
                }));
            }
        }
        Ok(Self {
            attached,
            received,
            responses,
            histograms,
            last_seen,
            stop,
            tasks,
        })
    }

    /// Waits until every subscriber got its first response.
    pub async fn wait_attached(&self, count: usize, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while self.attached.load(Ordering::Relaxed) < count {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} of {count} subscribers attached within {limit:?}",
                    self.attached.load(Ordering::Relaxed)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// How many subscribers have seen `sequence`.
    pub fn caught_up(&self, sequence: u64) -> usize {
        self.last_seen
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) >= sequence)
            .count()
    }

    pub fn merged_histogram(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for h in &self.histograms {
            let h = h.lock().unwrap_or_else(|p| p.into_inner());
            let _ = all.add(&*h);
        }
        all
    }

    pub fn reset_histograms(&self) {
        for h in &self.histograms {
            h.lock().unwrap_or_else(|p| p.into_inner()).reset();
        }
    }

    pub async fn close(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Samples a process's RSS every 100 ms until stopped; returns the peak.
pub fn sample_peak_rss(pid: u32, stop: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(crate::child::Usage::of(pid).rss_bytes);
            tokio::select! {
                _ = stop.cancelled() => return peak,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    })
}
