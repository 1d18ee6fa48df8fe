//! The consumer's Prometheus metrics, on its own small HTTP listener (`--metrics-listen`, off by
//! default): the same counters as GetStats, read from [`Stats`] at scrape time, and the
//! end-to-end latency as a histogram. Every series carries `mode="push|poll|long-poll"`, so one
//! Prometheus query compares the three.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use pushpull::pb::ReadMode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// Histogram bucket upper bounds, in microseconds: 100 µs to 10 s. Push lands in the first
/// buckets, interval polling around half the poll interval.
const LATENCY_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// The consumer's metrics registry.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
}

impl Metrics {
    pub fn new(stats: Stats) -> Self {
        let mode = match stats.snapshot().mode() {
            ReadMode::Push => "push",
            ReadMode::Poll => "poll",
            ReadMode::LongPoll => "long-poll",
            ReadMode::Unspecified => "unspecified",
        };
        let mut registry = Registry::with_prefix_and_labels(
            "pushpull_consumer",
            [("mode".into(), mode.into())].into_iter(),
        );
        registry.register_collector(Box::new(StatsCollector { stats }));
        Self {
            registry: Arc::new(registry),
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = encode(&mut out, &self.registry) {
            tracing::error!(%err, "cannot encode metrics");
        }
        out
    }
}

#[derive(Debug)]
struct StatsCollector {
    stats: Stats,
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.stats.snapshot();
        for (name, help, value) in [
            (
                "events_received",
                "Events processed, each once, in sequence order",
                s.events_received,
            ),
            (
                "events_missed",
                "Events known to be lost (expired cursor, or a gap without a topic filter)",
                s.events_missed,
            ),
            (
                "duplicates_dropped",
                "Events received again at or below the cursor and dropped",
                s.duplicates_dropped,
            ),
            (
                "reconnects",
                "Reconnections after an error or a broken stream",
                s.reconnects,
            ),
            (
                "rpcs",
                "RPCs sent to the producer (Subscribe and Poll calls)",
                s.rpcs_sent,
            ),
            (
                "empty_responses",
                "Responses with no events: empty polls, expired long polls, heartbeats",
                s.empty_responses,
            ),
            (
                "log_changes",
                "Times the producer's log changed (a producer restart)",
                s.log_changes,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                "connected",
                "1 while the consumer has a working connection to the producer",
                i64::from(s.connected),
            ),
            (
                "last_sequence",
                "Sequence of the last event processed on the current log",
                s.last_sequence as i64,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let (counts, sum, count) = self.stats.latency_buckets(LATENCY_BOUNDS_US);
        let mut buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
            .iter()
            .zip(&counts)
            .map(|(&us, &n)| (us as f64 / 1e6, n))
            .collect();
        buckets.push((f64::MAX, counts.last().copied().unwrap_or(0)));
        encoder
            .encode_descriptor(
                "latency_seconds",
                "End-to-end latency, from the event's produced_at to receipt",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(metrics);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

async fn render(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
