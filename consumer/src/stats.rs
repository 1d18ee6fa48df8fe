//! What the consumer has seen: counters, the cursor and an end-to-end latency histogram.
//!
//! One [`Stats`] handle is shared by the reader (which records), the gRPC service (which
//! snapshots) and the summary logger. A std `Mutex` guards it: every critical section is a few
//! additions or one histogram snapshot, never held across an `.await`, and recording takes it
//! once per response, not once per event.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use hdrhistogram::Histogram;
use pushpull::{
    pb,
    time::{proto_duration, system_time, timestamp},
};

use crate::config::Mode;

/// Latencies above this (one minute, in microseconds) are clamped: the histogram's range.
const MAX_TRACKED_LATENCY_US: u64 = 60_000_000;

/// Shared, cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct Stats {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    mode: Mode,
    /// `--producer`, in order: fixed for the consumer's life.
    producers: Vec<String>,
    /// The producer the reader uses now, one of `producers`.
    current_producer: String,
    /// Moves to another producer after the one in use failed.
    failovers: u64,
    topics: Vec<String>,
    started_at: SystemTime,
    events_received: u64,
    last_sequence: u64,
    events_missed: u64,
    duplicates_dropped: u64,
    rpcs_sent: u64,
    reconnects: u64,
    empty_responses: u64,
    log_changes: u64,
    log_id: String,
    after_sequence: Option<u64>,
    connected: bool,
    /// Webhook mode: deliveries answered 2xx, and deliveries refused (401, 400, 410).
    webhooks_received: u64,
    webhooks_refused: u64,
    /// Webhook mode: events fetched by Poll because no webhook brought them (also in
    /// `events_received`).
    events_backfilled: u64,
    /// Microseconds from `produced_at` to receipt, 3 significant digits.
    latency_us: Histogram<u64>,
    /// Exact sum of the recorded latencies, in microseconds (for Prometheus' `_sum`).
    latency_sum_us: u64,
}

/// What one response held, as far as the counters care.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub events: u64,
    pub duplicates: u64,
    pub missed: u64,
    /// Of `events`, those a webhook-mode consumer polled for (0 in the other modes).
    pub backfilled: u64,
}

/// Plain numbers for the periodic summary line.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub events_received: u64,
    pub last_sequence: u64,
    pub events_missed: u64,
    pub duplicates_dropped: u64,
    pub rpcs_sent: u64,
    pub reconnects: u64,
    pub failovers: u64,
    pub webhooks_received: u64,
    pub webhooks_refused: u64,
    pub events_backfilled: u64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Stats {
    /// Stats of a consumer reading from `producers` (the first in use), in this `mode`.
    pub fn new(mode: Mode, producers: Vec<String>, topics: Vec<String>) -> Self {
        let latency_us = Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 3)
            .expect("constant histogram bounds are valid");
        let current_producer = producers.first().cloned().unwrap_or_default();
        Self {
            inner: Arc::new(Mutex::new(Inner {
                mode,
                producers,
                current_producer,
                failovers: 0,
                topics,
                started_at: SystemTime::now(),
                events_received: 0,
                last_sequence: 0,
                events_missed: 0,
                duplicates_dropped: 0,
                rpcs_sent: 0,
                reconnects: 0,
                empty_responses: 0,
                log_changes: 0,
                log_id: String::new(),
                after_sequence: None,
                connected: false,
                webhooks_received: 0,
                webhooks_refused: 0,
                events_backfilled: 0,
                latency_us,
                latency_sum_us: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counters stay meaningful after a panic elsewhere; keep serving them.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How this consumer reads: fixed for its life, so callers may ask once.
    pub fn mode(&self) -> Mode {
        self.lock().mode
    }

    /// The producers of `--producer`, in order: fixed for its life too.
    pub fn producers(&self) -> Vec<String> {
        self.lock().producers.clone()
    }

    /// The reader moved on to the producer `to` after the one in use failed.
    pub fn failed_over(&self, to: &str) {
        let mut inner = self.lock();
        inner.failovers += 1;
        inner.current_producer = to.to_owned();
    }

    pub fn rpc_sent(&self) {
        self.lock().rpcs_sent += 1;
    }

    pub fn reconnected(&self) {
        self.lock().reconnects += 1;
    }

    pub fn set_connected(&self, connected: bool) {
        self.lock().connected = connected;
    }

    /// A webhook delivery was processed and answered 2xx.
    pub fn webhook_received(&self) {
        self.lock().webhooks_received += 1;
    }

    /// A webhook delivery was refused: its signature or timestamp did not verify, or its body
    /// could not be used.
    pub fn webhook_refused(&self) {
        self.lock().webhooks_refused += 1;
    }

    pub fn missed(&self, count: u64) {
        self.lock().events_missed += count;
    }

    /// The cursor now belongs to `log_id`; counts a log change when it replaces another id.
    pub fn set_log(&self, log_id: &str, changed: bool) {
        let mut inner = self.lock();
        inner.log_id = log_id.to_owned();
        if changed {
            inner.log_changes += 1;
            inner.last_sequence = 0;
        }
    }

    /// Records one response: its events (each with its receive time and `produced_at`), what
    /// was dropped or found missing, and the cursor after it.
    pub fn record(
        &self,
        received: Received,
        last_sequence: Option<u64>,
        latencies: impl IntoIterator<Item = Duration>,
        cursor: Option<u64>,
    ) {
        let mut inner = self.lock();
        inner.events_received += received.events;
        inner.duplicates_dropped += received.duplicates;
        inner.events_missed += received.missed;
        inner.events_backfilled += received.backfilled;
        if let Some(seq) = last_sequence {
            inner.last_sequence = seq;
        }
        if received.events == 0 && received.duplicates == 0 {
            inner.empty_responses += 1;
        }
        for latency in latencies {
            let us = (latency.as_micros() as u64).clamp(1, MAX_TRACKED_LATENCY_US);
            inner.latency_us.saturating_record(us);
            inner.latency_sum_us = inner.latency_sum_us.saturating_add(us);
        }
        inner.after_sequence = cursor;
    }

    pub fn set_cursor(&self, cursor: Option<u64>) {
        self.lock().after_sequence = cursor;
    }

    pub fn summary(&self) -> Summary {
        let inner = self.lock();
        Summary {
            events_received: inner.events_received,
            last_sequence: inner.last_sequence,
            events_missed: inner.events_missed,
            duplicates_dropped: inner.duplicates_dropped,
            rpcs_sent: inner.rpcs_sent,
            reconnects: inner.reconnects,
            failovers: inner.failovers,
            webhooks_received: inner.webhooks_received,
            webhooks_refused: inner.webhooks_refused,
            events_backfilled: inner.events_backfilled,
            p50: percentile(&inner.latency_us, 50.0),
            p99: percentile(&inner.latency_us, 99.0),
        }
    }

    /// The latency distribution as a Prometheus histogram: for each upper bound (microseconds,
    /// ascending) the number of latencies in that bucket alone, then the rest (`+Inf`); the sum
    /// in seconds; the count.
    pub fn latency_buckets(&self, bounds_us: &[u64]) -> (Vec<u64>, f64, u64) {
        let inner = self.lock();
        let h = &inner.latency_us;
        let mut counts = Vec::with_capacity(bounds_us.len() + 1);
        let mut below = 0u64;
        for &bound in bounds_us {
            // Every recorded value that hdrhistogram would report as at most `bound`.
            let cumulative: u64 = h
                .iter_recorded()
                .take_while(|v| v.value_iterated_to() <= bound)
                .map(|v| v.count_at_value())
                .sum();
            counts.push(cumulative.saturating_sub(below));
            below = below.max(cumulative);
        }
        counts.push(h.len().saturating_sub(below));
        (counts, inner.latency_sum_us as f64 / 1e6, h.len())
    }

    /// The GetStats response.
    pub fn snapshot(&self) -> pb::GetStatsResponse {
        let inner = self.lock();
        let h = &inner.latency_us;
        pb::GetStatsResponse {
            mode: pb::ReadMode::from(inner.mode).into(),
            events_received: inner.events_received,
            last_sequence: inner.last_sequence,
            events_missed: inner.events_missed,
            duplicates_dropped: inner.duplicates_dropped,
            rpcs_sent: inner.rpcs_sent,
            reconnects: inner.reconnects,
            log_id: inner.log_id.clone(),
            latency_p50: Some(proto_duration(percentile(h, 50.0))),
            latency_p99: Some(proto_duration(percentile(h, 99.0))),
            latency_p999: Some(proto_duration(percentile(h, 99.9))),
            latency_max: Some(proto_duration(Duration::from_micros(if h.is_empty() {
                0
            } else {
                h.max()
            }))),
            empty_responses: inner.empty_responses,
            log_changes: inner.log_changes,
            after_sequence: inner.after_sequence,
            connected: inner.connected,
            started_at: Some(timestamp(inner.started_at)),
            topics: inner.topics.clone(),
            producer: inner.producers.join(","),
            current_producer: inner.current_producer.clone(),
            failovers: inner.failovers,
            webhooks_received: inner.webhooks_received,
            webhooks_refused: inner.webhooks_refused,
            events_backfilled: inner.events_backfilled,
        }
    }
}

fn percentile(h: &Histogram<u64>, q: f64) -> Duration {
    if h.is_empty() {
        Duration::ZERO
    } else {
        Duration::from_micros(h.value_at_percentile(q))
    }
}

/// End-to-end latency of one event: receive time minus `produced_at`. Zero when the clocks
/// disagree (the producer's is ahead) or the timestamp is missing or invalid.
pub fn latency(event: &pb::Event, received_at: SystemTime) -> Duration {
    event
        .produced_at
        .as_ref()
        .and_then(system_time)
        .and_then(|produced| received_at.duration_since(produced).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_accumulates_and_snapshot_reports_percentiles() {
        let stats = Stats::new(Mode::Push, vec!["p".into()], vec![]);
        let ms = Duration::from_millis;
        stats.record(
            Received {
                events: 3,
                duplicates: 1,
                missed: 2,
                backfilled: 2,
            },
            Some(7),
            [ms(1), ms(2), ms(100)],
            Some(7),
        );
        stats.record(Received::default(), None, [], Some(9));
        let snap = stats.snapshot();
        assert_eq!(snap.events_received, 3);
        assert_eq!(snap.duplicates_dropped, 1);
        assert_eq!(snap.events_missed, 2);
        assert_eq!(snap.last_sequence, 7);
        assert_eq!(snap.after_sequence, Some(9));
        assert_eq!(snap.empty_responses, 1);
        let p50 = pushpull::time::std_duration(&snap.latency_p50.unwrap()).unwrap();
        let max = pushpull::time::std_duration(&snap.latency_max.unwrap()).unwrap();
        assert!(p50 >= ms(2) && p50 < ms(3), "{p50:?}");
        assert!(max >= ms(100) && max < ms(101), "{max:?}");
        assert_eq!(snap.mode, pb::ReadMode::Push as i32);
        assert_eq!(snap.events_backfilled, 2);
    }

    #[test]
    fn webhook_deliveries_are_counted_apart_from_events() {
        let stats = Stats::new(Mode::Webhook, vec!["p".into()], vec![]);
        stats.webhook_received();
        stats.webhook_received();
        stats.webhook_refused();
        let snap = stats.snapshot();
        assert_eq!((snap.webhooks_received, snap.webhooks_refused), (2, 1));
        assert_eq!((snap.events_received, snap.events_backfilled), (0, 0));
        assert_eq!(snap.mode, pb::ReadMode::Webhook as i32);
        let summary = stats.summary();
        assert_eq!(
            (summary.webhooks_received, summary.webhooks_refused),
            (2, 1)
        );
    }

    #[test]
    fn a_failover_is_counted_and_names_the_producer_now_in_use() {
        let stats = Stats::new(
            Mode::Push,
            vec!["http://a:1".into(), "http://b:2".into()],
            vec![],
        );
        let snap = stats.snapshot();
        assert_eq!(snap.producer, "http://a:1,http://b:2");
        assert_eq!(
            (snap.current_producer.as_str(), snap.failovers),
            ("http://a:1", 0)
        );
        stats.failed_over("http://b:2");
        stats.failed_over("http://a:1");
        stats.failed_over("http://b:2");
        let snap = stats.snapshot();
        assert_eq!(
            (snap.current_producer.as_str(), snap.failovers),
            ("http://b:2", 3)
        );
        assert_eq!(stats.summary().failovers, 3);
    }

    #[test]
    fn latency_buckets_count_each_latency_once() {
        let stats = Stats::new(Mode::Poll, vec!["p".into()], vec![]);
        let ms = Duration::from_millis;
        stats.record(
            Received {
                events: 4,
                ..Received::default()
            },
            Some(4),
            [ms(1), ms(3), ms(3), ms(2000)],
            Some(4),
        );
        let (counts, sum, count) = stats.latency_buckets(&[1_000, 5_000, 1_000_000]);
        assert_eq!(counts, vec![1, 2, 0, 1]);
        assert_eq!(count, 4);
        assert!((sum - 2.007).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn latency_is_zero_when_clocks_disagree() {
        let now = SystemTime::now();
        let event = pb::Event {
            produced_at: Some(timestamp(now + Duration::from_secs(5))),
            ..Default::default()
        };
        assert_eq!(latency(&event, now), Duration::ZERO);
        let event = pb::Event {
            produced_at: Some(timestamp(now - Duration::from_millis(3))),
            ..Default::default()
        };
        assert_eq!(latency(&event, now), Duration::from_millis(3));
    }
}
