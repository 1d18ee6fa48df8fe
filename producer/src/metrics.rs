//! The producer's Prometheus metrics, served at `GET /metrics` on the HTTP port.
//!
//! One [`Metrics`] per producer (not a process-global recorder), so tests that run several
//! producers in one process each see their own numbers. Values the log already knows (head,
//! oldest, retained bytes, events appended) are read from it at scrape time by [`LogCollector`]
//! instead of being mirrored on every append; everything about readers and requests is counted
//! where it happens, labelled by `transport`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use pushpull::{errors::ErrorReason, serve::ConnStats};

use crate::{
    capacity::{Capacity, Resource},
    log::EventLog,
    store::StoreMetrics,
};

/// How events leave the producer. The label values are part of the metrics' contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// gRPC `Subscribe` (push).
    GrpcStream,
    /// gRPC `Poll`, short or long.
    GrpcPoll,
    /// `GET /events`, Server-Sent Events.
    Sse,
    /// `GET /ws`.
    WebSocket,
    /// `GET /poll`, HTTP (long) polling.
    HttpPoll,
    /// Webhook deliveries (POSTs answered 2xx).
    Webhook,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::GrpcStream => "grpc_stream",
            Transport::GrpcPoll => "grpc_poll",
            Transport::Sse => "sse",
            Transport::WebSocket => "websocket",
            Transport::HttpPoll => "http_poll",
            Transport::Webhook => "webhook",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// `grpc` or `http`.
    protocol: &'static str,
    /// `publish`, `poll`, `subscribe` …
    method: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    /// `delivered`, `retry` or `gone`.
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    /// `enabled` or `disabled`.
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    protocol: &'static str,
    reason: &'static str,
}

/// A cheap `Clone` handle to the producer's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    subscribers: Family<TransportLabels, Gauge>,
    pollers: Family<TransportLabels, Gauge>,
    delivered: Family<TransportLabels, Counter>,
    lagged: Family<TransportLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    webhook_attempts: Family<OutcomeLabels, Histogram>,
    webhook_subscriptions: Family<StateLabels, Gauge>,
    store: StoreMetrics,
    /// The servers' connection counters (gRPC and HTTP ports), read at scrape time.
    connections: Arc<Mutex<Vec<(&'static str, ConnStats)>>>,
}

impl Metrics {
    /// Metrics for one producer serving `log`, within `capacity`.
    pub fn new(log: EventLog, store: &StoreMetrics, capacity: Capacity) -> Self {
        let mut registry = Registry::with_prefix("pushpull_producer");
        let subscribers = Family::<TransportLabels, Gauge>::default();
        let pollers = Family::<TransportLabels, Gauge>::default();
        let delivered = Family::<TransportLabels, Counter>::default();
        let lagged = Family::<TransportLabels, Counter>::default();
        let rejected = Family::<RejectLabels, Counter>::default();
        // 100 µs to ~100 s: a poll returns in a fraction of a millisecond, a long poll in up
        // to --max-poll-wait (60 s by default).
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.0001, 4.0, 11))) as fn() -> Histogram,
        );
        registry.register(
            "subscribers",
            "Open push streams, by transport (grpc_stream, sse, websocket)",
            subscribers.clone(),
        );
        registry.register(
            "pollers",
            "Poll requests in progress (long polls waiting), by transport (grpc_poll, http_poll)",
            pollers.clone(),
        );
        registry.register(
            "events_delivered",
            "Events sent to readers, by transport",
            delivered.clone(),
        );
        registry.register(
            "subscribers_lagged",
            "Push streams ended because retention overtook their cursor, by transport",
            lagged.clone(),
        );
        registry.register(
            "rejected_requests",
            "Requests refused, by protocol and reason (the google.rpc.ErrorInfo reason: \
             CURSOR_EXPIRED, INVALID_TOPIC, SHUTTING_DOWN, ...)",
            rejected.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request/response call (publish, poll), by protocol and method",
            durations.clone(),
        );
        // 1 ms to ~65 s: a receiver on the same host answers in a millisecond, the default
        // --webhook-timeout is 10 s.
        let webhook_attempts = Family::<OutcomeLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 4.0, 9))) as fn() -> Histogram,
        );
        let webhook_subscriptions = Family::<StateLabels, Gauge>::default();
        registry.register(
            "webhook_attempt_seconds",
            "Webhook POSTs and how long each took, by outcome: delivered (2xx), retry (timeout, \
             connection error, any other status) or gone (410, the subscription is disabled)",
            webhook_attempts.clone(),
        );
        registry.register(
            "webhook_subscriptions",
            "Webhook subscriptions, by state (enabled, disabled)",
            webhook_subscriptions.clone(),
        );
        registry.register(
            "fsync_seconds",
            "Time the file store's fdatasync calls take: one per group commit, shared by the \
             Publish calls that arrived while the previous one ran",
            store.fsync_seconds.clone(),
        );
        registry.register(
            "jetstream_messages_published",
            "Messages the JetStream store published: one per group of whole Publish calls",
            store.jetstream_messages.clone(),
        );
        registry.register(
            "jetstream_publish_conflicts",
            "Messages the JetStream store renumbered and published again because another \
             producer had published first (wrong last sequence)",
            store.jetstream_conflicts.clone(),
        );
        registry.register(
            "jetstream_publish_retries",
            "JetStream publishes tried again after a timeout or a broken connection",
            store.jetstream_retries.clone(),
        );
        registry.register_collector(Box::new(LogCollector { log }));
        let connections = Arc::new(Mutex::new(Vec::new()));
        registry.register_collector(Box::new(ConnCollector {
            servers: connections.clone(),
        }));
        registry.register_collector(Box::new(CapacityCollector { capacity }));
        registry.register_collector(Box::new(RuntimeCollector));
        // Every series exists from the start at 0, so a scrape lists them all and `rate()`
        // has a starting point.
        const PUSH: [Transport; 3] = [Transport::GrpcStream, Transport::Sse, Transport::WebSocket];
        const PULL: [Transport; 2] = [Transport::GrpcPoll, Transport::HttpPoll];
        for t in PUSH {
            let _ = subscribers.get_or_create(&labels(t));
            let _ = lagged.get_or_create(&labels(t));
        }
        for t in PULL {
            let _ = pollers.get_or_create(&labels(t));
        }
        for t in PUSH.into_iter().chain(PULL).chain([Transport::Webhook]) {
            let _ = delivered.get_or_create(&labels(t));
        }
        for outcome in ["delivered", "retry", "gone"] {
            let _ = webhook_attempts.get_or_create(&OutcomeLabels { outcome });
        }
        for state in ["enabled", "disabled"] {
            let _ = webhook_subscriptions.get_or_create(&StateLabels { state });
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                subscribers,
                pollers,
                delivered,
                lagged,
                rejected,
                durations,
                webhook_attempts,
                webhook_subscriptions,
                store: store.clone(),
                connections,
            }),
        }
    }

    /// The Prometheus / OpenMetrics text exposition of every metric.
    /// fdatasync calls so far and the seconds they took in all.
    pub fn fsyncs(&self) -> (u64, f64) {
        let (count, took) = self.inner.store.fsyncs();
        (count, took.as_secs_f64())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a metric that fails to encode is a bug worth seeing.
        if let Err(err) = encode(&mut out, &self.inner.registry) {
            tracing::error!(%err, "cannot encode metrics");
        }
        out
    }

    /// Reports the connections of the server on `port` (`grpc`, `http`).
    pub fn watch_connections(&self, port: &'static str, stats: ConnStats) {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((port, stats));
    }

    /// Counts an open push stream until the guard is dropped.
    pub fn subscriber(&self, transport: Transport) -> GaugeGuard {
        GaugeGuard::new(
            self.inner
                .subscribers
                .get_or_create(&labels(transport))
                .clone(),
        )
    }

    /// Counts a poll in progress until the guard is dropped.
    pub fn poller(&self, transport: Transport) -> GaugeGuard {
        GaugeGuard::new(self.inner.pollers.get_or_create(&labels(transport)).clone())
    }

    pub fn delivered(&self, transport: Transport, events: usize) {
        if events > 0 {
            self.inner
                .delivered
                .get_or_create(&labels(transport))
                .inc_by(events as u64);
        }
    }

    /// The delivered-events counter of `transport`, for a stream to count into without a
    /// lookup per response (with 10,000 subscribers, one per response was a hash and a lock a
    /// million times a second).
    pub fn delivered_counter(&self, transport: Transport) -> Counter {
        self.inner
            .delivered
            .get_or_create(&labels(transport))
            .clone()
    }

    pub fn lagged(&self, transport: Transport) {
        self.inner.lagged.get_or_create(&labels(transport)).inc();
    }

    /// Counts a refused request; `reason` is its `ErrorInfo` reason (`CURSOR_EXPIRED`, ...).
    pub fn rejected(&self, protocol: &'static str, reason: ErrorReason) {
        self.inner
            .rejected
            .get_or_create(&RejectLabels {
                protocol,
                reason: reason.as_str_name(),
            })
            .inc();
    }

    /// One webhook POST: its outcome (`delivered`, `retry`, `gone`) and how long it took.
    pub fn webhook_attempt(&self, outcome: &'static str, took: Duration) {
        self.inner
            .webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .observe(took.as_secs_f64());
    }

    /// How many webhook subscriptions there are, enabled and disabled.
    pub fn webhook_subscriptions(&self, enabled: i64, disabled: i64) {
        for (state, count) in [("enabled", enabled), ("disabled", disabled)] {
            self.inner
                .webhook_subscriptions
                .get_or_create(&StateLabels { state })
                .set(count);
        }
    }

    pub fn observe(&self, protocol: &'static str, method: &'static str, took: Duration) {
        self.inner
            .durations
            .get_or_create(&RequestLabels { protocol, method })
            .observe(took.as_secs_f64());
    }

    /// Starts timing a request; [`Timer::finish`] records it.
    pub fn timer(&self, protocol: &'static str, method: &'static str) -> Timer {
        Timer {
            metrics: self.clone(),
            protocol,
            method,
            started: Instant::now(),
        }
    }
}

/// Times one request.
pub struct Timer {
    metrics: Metrics,
    protocol: &'static str,
    method: &'static str,
    started: Instant,
}

impl Timer {
    pub fn finish(self) {
        self.metrics
            .observe(self.protocol, self.method, self.started.elapsed());
    }
}

fn labels(transport: Transport) -> TransportLabels {
    TransportLabels {
        transport: transport.label(),
    }
}

/// Adds one to a gauge for as long as it lives, so a stream that ends by any path (client
/// gone, error, shutdown, panic) is never left counted.
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads the servers' connection counters at scrape time.
#[derive(Debug)]
struct ConnCollector {
    servers: Arc<Mutex<Vec<(&'static str, ConnStats)>>>,
}

impl Collector for ConnCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Copied out, so the lock is not held while encoding.
        let servers: Vec<_> = self
            .servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(port, stats)| (*port, stats.counts()))
            .collect();
        let mut open = encoder.encode_descriptor(
            "connections_open",
            "Connections being served, by port (grpc, http)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (port, counts) in &servers {
            ConstGauge::new(counts.open as i64).encode(open.encode_family(&[("port", *port)])?)?;
        }
        let mut accepted = encoder.encode_descriptor(
            "connections_accepted",
            "Connections accepted and served, by port",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (port, counts) in &servers {
            ConstCounter::new(counts.accepted)
                .encode(accepted.encode_family(&[("port", *port)])?)?;
        }
        let mut closed = encoder.encode_descriptor(
            "connections_refused",
            "Connections refused or closed unserved, by port and reason: max_connections \
             (over --max-connections, answered RESOURCE_EXHAUSTED / 503), no_request (nothing \
             within --first-request-timeout), tls_handshake (failed or timed out)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (port, counts) in &servers {
            for (reason, value) in [
                ("max_connections", counts.refused_over_limit),
                ("no_request", counts.closed_before_request),
                ("tls_handshake", counts.tls_failed),
            ] {
                ConstCounter::new(value)
                    .encode(closed.encode_family(&[("port", *port), ("reason", reason)])?)?;
            }
        }
        Ok(())
    }
}

/// Reads the capacity counters at scrape time: the slots are counted where they are taken
/// ([`Capacity`]), so the numbers here are the ones the limits are enforced on.
#[derive(Debug)]
struct CapacityCollector {
    capacity: Capacity,
}

impl Collector for CapacityCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, help, value) in [
            (
                "limit_in_use",
                "Clients counted against a capacity limit now, by resource: subscribers (gRPC \
                 Subscribe streams, --max-subscribers), long_polls (long polls waiting, \
                 --max-long-polls), http_streams (SSE streams and WebSocket connections, \
                 --max-http-streams)",
                Capacity::in_use as fn(&Capacity, Resource) -> usize,
            ),
            (
                "limit_max",
                "The capacity limits, by resource (see limit_in_use): one client more is \
                 refused (rejected_requests, reason TOO_MANY_*)",
                Capacity::max,
            ),
        ] {
            let gauge = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for resource in Resource::ALL {
                let gauge = ConstGauge::new(value(&self.capacity, resource) as i64);
                gauge.encode(family.encode_family(&[("resource", resource.name())])?)?;
            }
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "subscribers_stalled",
            "Push streams ended because their client took nothing for --stall-timeout while a \
             response waited (reason SUBSCRIBER_STALLED), by transport",
            None,
            counter.metric_type(),
        )?;
        for (transport, count) in self.capacity.stalled() {
            ConstCounter::new(count)
                .encode(family.encode_family(&[("transport", transport.label())])?)?;
        }
        Ok(())
    }
}

/// The tokio runtime's live task count, read at scrape time. Every stream, long poll and
/// connection holds a task, so a count that keeps rising after its clients have gone is a
/// leak (the soak benchmark watches it).
#[derive(Debug)]
struct RuntimeCollector;

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A scrape is served on the runtime; outside one (a bare `render()`) there is nothing
        // to count.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        let tasks = ConstGauge::new(runtime.metrics().num_alive_tasks() as i64);
        tasks.encode(encoder.encode_descriptor(
            "runtime_tasks",
            "Tasks alive on the producer's tokio runtime now (streams, polls, connections, \
             background work)",
            None,
            tasks.metric_type(),
        )?)
    }
}

/// Reads the log's own numbers at scrape time.
#[derive(Debug)]
struct LogCollector {
    log: EventLog,
}

impl Collector for LogCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (oldest, head) = self.log.bounds();
        let store = self.log.store_stats();
        let cache = self.log.cache_stats();
        // Sequences start at 1 with no gaps, so the head is the number of events appended to
        // this log (a producer restart starts a new log, and the counter resets with it).
        let appended = ConstCounter::new(head);
        appended.encode(encoder.encode_descriptor(
            "events_appended",
            "Events appended to the log since the producer started",
            None,
            appended.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "head_sequence",
                "Newest sequence in the log (0 before the first event)",
                head,
            ),
            (
                "oldest_sequence",
                "Oldest retained sequence (head_sequence + 1 when the log is empty)",
                oldest,
            ),
            (
                "retained_events",
                "Events the log retains now",
                store.events,
            ),
            (
                "retained_bytes",
                "Bytes the log retains now: on disk for --store file; topics + payloads + 64 \
                 per event for --store memory",
                store.bytes,
            ),
            (
                "store_segments",
                "Segment files of the log on disk (0 for --store memory)",
                store.segments,
            ),
            (
                "cache_events",
                "Events in the tail cache (--cache-bytes), which serves live readers",
                cache.events,
            ),
            (
                "store_available",
                "1 while the store can serve; 0 while it cannot (--store jetstream: NATS \
                 unreachable, or the stream without a leader), when health is NOT_SERVING",
                u64::from(self.log.store().unavailable().is_none()),
            ),
            (
                "cache_bytes",
                "Bytes in the tail cache (topics + payloads + 64 per event)",
                cache.bytes,
            ),
        ] {
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        for (name, help, value) in [
            (
                "cache_reads",
                "Reads served from the tail cache",
                cache.hits,
            ),
            (
                "store_reads",
                "Reads the tail cache could not serve, served by the store (every read with \
                 --store memory, which is its own cache)",
                cache.misses,
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
        let info = ConstGauge::new(1i64);
        let labels = [("store", self.log.store().kind().name())];
        info.encode(
            encoder
                .encode_descriptor(
                    "store_info",
                    "The log's backend (--store), as the label `store`",
                    None,
                    info.metric_type(),
                )?
                .encode_family(&labels)?,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).expect("a String takes any text");
        out
    }

    #[tokio::test(flavor = "current_thread")]
    async fn runtime_tasks_counts_the_tasks_alive_at_scrape_time() {
        let mut registry = Registry::with_prefix("pushpull_producer");
        registry.register_collector(Box::new(RuntimeCollector));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = released.await;
        });
        let text = render(&registry);
        assert!(
            text.contains("# TYPE pushpull_producer_runtime_tasks gauge\n")
                && text.contains("\npushpull_producer_runtime_tasks 1\n"),
            "{text}"
        );
        let _ = release.send(());
        task.await.expect("the task ends");
        let text = render(&registry);
        assert!(
            text.contains("\npushpull_producer_runtime_tasks 0\n"),
            "{text}"
        );
    }

    #[test]
    fn outside_a_runtime_there_is_no_task_count() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RuntimeCollector));
        assert!(!render(&registry).contains("runtime_tasks"));
    }
}
