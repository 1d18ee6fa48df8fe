//! The consumer's Prometheus metrics, on its own small HTTP listener (`--metrics-listen`, off by
//! default): the same counters as GetStats, read from [`Stats`] at scrape time, and the
//! end-to-end latency as a histogram. Every series carries `mode="push|poll|long-poll|webhook"`
//! (the mode's [`Mode::name`](crate::config::Mode::name)), so one Prometheus query compares them.
//! In webhook mode the same listener also receives the webhooks ([`crate::webhook`]).
//!
//! Each metric is named after its GetStats field (`rpcs_sent` → `pushpull_consumer_rpcs_sent_total`;
//! counters get the `_total` suffix), so the two views of one counter are found by one name.
//! `current_producer` is a string in GetStats; here it is a gauge with a `producer` label for
//! each address of `--producer`, 1 for the one in use and 0 for the others, so its series
//! exist from the first scrape on and a failover changes values, not series.

use std::sync::Arc;

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet, text::encode},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

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
        let mode = stats.mode().name();
        let mut registry = Registry::with_prefix_and_labels(
            "pushpull_consumer",
            [("mode".into(), mode.into())].into_iter(),
        );
        let producers = stats.producers();
        registry.register_collector(Box::new(StatsCollector { stats, producers }));
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
    /// `--producer`, asked once: fixed for the consumer's life.
    producers: Vec<String>,
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
                "rpcs_sent",
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
            (
                "failovers",
                "Moves to the next producer of --producer, with the cursor, after the one in use failed",
                s.failovers,
            ),
            (
                "webhooks_received",
                "Webhook mode: deliveries processed and answered 2xx, redeliveries included",
                s.webhooks_received,
            ),
            (
                "webhooks_refused",
                "Webhook mode: deliveries refused (bad signature or timestamp, unusable body)",
                s.webhooks_refused,
            ),
            (
                "events_backfilled",
                "Webhook mode: events fetched by Poll because no webhook brought them",
                s.events_backfilled,
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
        let mut current = encoder.encode_descriptor(
            "current_producer",
            "1 for the producer (of --producer) the consumer reads from now, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for producer in &self.producers {
            let labels = [("producer", producer.as_str())];
            let gauge = ConstGauge::new(i64::from(*producer == s.current_producer));
            gauge.encode(current.encode_family(&labels)?)?;
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

/// `GET /metrics`, as a router the HTTP listener merges with the others it serves.
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(metrics)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message as _;

    use super::*;
    use crate::config::Mode;

    /// The field names of `pushpull.v1.GetStatsResponse`, read from the compiled descriptors
    /// rather than typed again here.
    fn get_stats_fields() -> HashSet<String> {
        let set = prost_types::FileDescriptorSet::decode(pushpull::FILE_DESCRIPTOR_SET)
            .expect("the crate's own descriptor set decodes");
        set.file
            .iter()
            .filter(|f| f.package() == "pushpull.v1")
            .flat_map(|f| &f.message_type)
            .filter(|m| m.name() == "GetStatsResponse")
            .flat_map(|m| &m.field)
            .map(|f| f.name().to_owned())
            .collect()
    }

    #[test]
    fn every_metric_is_named_after_a_get_stats_field_and_labelled_with_the_mode_name() {
        let fields = get_stats_fields();
        assert!(fields.contains("rpcs_sent"), "{fields:?}");
        let text = Metrics::new(Stats::new(Mode::LongPoll, vec!["p".into()], vec![])).render();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect();
        assert!(families.len() >= 9, "{text}");
        for family in families {
            let name = family
                .strip_prefix("pushpull_consumer_")
                .unwrap_or_else(|| panic!("{family} lacks the prefix"));
            // The histogram behind the latency_p50 / p99 / p999 / max fields.
            if name == "latency_seconds" {
                continue;
            }
            assert!(
                fields.contains(name),
                "{family}: no GetStatsResponse field {name:?}"
            );
        }
        assert!(
            text.contains("pushpull_consumer_rpcs_sent_total{mode=\"long-poll\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn the_current_producer_is_the_one_labelled_series_at_1_and_failovers_are_counted() {
        let stats = Stats::new(
            Mode::Push,
            vec!["http://a:1".into(), "http://b:2".into()],
            vec![],
        );
        let metrics = Metrics::new(stats.clone());
        let series = |text: &str, producer: &str| {
            let prefix = format!(
                "pushpull_consumer_current_producer{{mode=\"push\",producer=\"{producer}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
        };
        let text = metrics.render();
        assert_eq!(series(&text, "http://a:1"), "1", "{text}");
        assert_eq!(series(&text, "http://b:2"), "0", "{text}");
        assert!(
            text.contains("pushpull_consumer_failovers_total{mode=\"push\"} 0"),
            "{text}"
        );
        stats.failed_over("http://b:2");
        let text = metrics.render();
        assert_eq!(series(&text, "http://a:1"), "0", "{text}");
        assert_eq!(series(&text, "http://b:2"), "1", "{text}");
        assert!(
            text.contains("pushpull_consumer_failovers_total{mode=\"push\"} 1"),
            "{text}"
        );
    }
}
