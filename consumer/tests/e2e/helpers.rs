//! Test helpers: a producer and a consumer in this process. What both crates' tests share
//! (`PROMPTLY`, the gRPC channel, servers on port 0, the binaries as child processes, the TCP
//! proxy that cuts connections or switches to another producer) is in `testkit`.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use clap::Parser as _;
use pushpull::pb::{
    self, consumer_service_client::ConsumerServiceClient,
    producer_service_client::ProducerServiceClient,
};
use testkit::{Served, bind, bind_if, producer_flags};
use tonic::transport::Channel;

pub use testkit::{PROMPTLY, Proxy, channel};

/// A producer serving gRPC on 127.0.0.1:0 (no HTTP side), in this process, on the memory store
/// unless `args` choose (see [`producer_flags`]).
pub struct TestProducer {
    pub addr: SocketAddr,
    pub client: ProducerServiceClient<Channel>,
    server: Served<producer::RunError>,
}

pub async fn spawn_producer(args: &[&str]) -> TestProducer {
    let flags = producer_flags(args);
    let config = producer::Config::parse_from(std::iter::once("producer").chain(flags));
    let (listener, addr) = bind().await;
    let server = Served::spawn(|shutdown| producer::run(config, listener, shutdown));
    let client = ProducerServiceClient::new(channel(addr).await);
    TestProducer {
        addr,
        client,
        server,
    }
}

impl TestProducer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Publishes `n` events on `topic` in one call; returns (first, last).
    pub async fn publish(&self, topic: &str, n: usize) -> (u64, u64) {
        let events = (0..n)
            .map(|i| pb::NewEvent {
                topic: topic.into(),
                payload: Bytes::from(format!("{topic}-{i}")),
            })
            .collect();
        let r = self
            .client
            .clone()
            .publish(pb::PublishRequest { events })
            .await
            .expect("publish")
            .into_inner();
        (r.first_sequence, r.last_sequence)
    }

    /// Triggers shutdown; panics unless the producer stops cleanly within `PROMPTLY`.
    pub async fn stop(self) {
        self.server
            .stop()
            .await
            .expect("the producer stops cleanly");
    }
}

/// A consumer serving GetStats on 127.0.0.1:0 (and `/metrics` when asked), in this process.
pub struct TestConsumer {
    pub addr: SocketAddr,
    /// The `/metrics` listener's address, when started with [`spawn_consumer_with_metrics`].
    pub metrics: Option<SocketAddr>,
    pub stats: StatsClient,
    server: Served<consumer::RunError>,
}

/// Starts a consumer reading from `producer_url` with these extra flags.
pub async fn spawn_consumer(producer_url: &str, args: &[&str]) -> TestConsumer {
    start_consumer(producer_url, args, false).await
}

/// [`spawn_consumer`], with the metrics listener on port 0 too.
pub async fn spawn_consumer_with_metrics(producer_url: &str, args: &[&str]) -> TestConsumer {
    start_consumer(producer_url, args, true).await
}

async fn start_consumer(producer_url: &str, args: &[&str], with_metrics: bool) -> TestConsumer {
    let base = [
        "consumer",
        "--producer",
        producer_url,
        "--summary-interval",
        "0s",
        "--backoff-initial",
        "10ms",
        "--backoff-max",
        "100ms",
    ];
    let config = consumer::Config::parse_from(base.iter().chain(args.iter()).copied());
    let (grpc, addr) = bind().await;
    let (metrics, metrics_addr) = bind_if(with_metrics).await;
    let listeners = consumer::Listeners { grpc, metrics };
    let server = Served::spawn(|shutdown| consumer::run_with(config, listeners, shutdown));
    TestConsumer {
        addr,
        metrics: metrics_addr,
        stats: StatsClient::connect(addr).await,
        server,
    }
}

/// GetStats on a consumer, however it was started.
#[derive(Clone)]
pub struct StatsClient(ConsumerServiceClient<Channel>);

impl StatsClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self(ConsumerServiceClient::new(channel(addr).await))
    }

    pub async fn get(&self) -> pb::GetStatsResponse {
        self.0
            .clone()
            .get_stats(pb::GetStatsRequest {})
            .await
            .expect("GetStats")
            .into_inner()
    }

    /// Polls GetStats until `done` holds; panics with the last stats after `PROMPTLY`.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&pb::GetStatsResponse) -> bool,
    ) -> pb::GetStatsResponse {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let stats = self.get().await;
            if done(&stats) {
                return stats;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; last stats: {stats:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl TestConsumer {
    pub async fn stats(&self) -> pb::GetStatsResponse {
        self.stats.get().await
    }

    /// See [`StatsClient::wait_for`].
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&pb::GetStatsResponse) -> bool,
    ) -> pb::GetStatsResponse {
        self.stats.wait_for(what, done).await
    }

    pub async fn wait_connected(&self) -> pb::GetStatsResponse {
        self.wait_for("connected with a cursor", |s| {
            s.connected && s.after_sequence.is_some()
        })
        .await
    }

    /// Triggers shutdown; panics unless the consumer stops cleanly within `PROMPTLY`.
    pub async fn stop(self) {
        self.server
            .stop()
            .await
            .expect("the consumer stops cleanly");
    }
}

/// The checks every delivery test ends with: exactly `received` events, the last one `last`,
/// nothing missed, nothing twice.
pub fn assert_exact(stats: &pb::GetStatsResponse, received: u64, last: u64) {
    assert_eq!(stats.events_received, received, "{stats:#?}");
    assert_eq!(stats.last_sequence, last, "{stats:#?}");
    assert_eq!(stats.events_missed, 0, "{stats:#?}");
    assert_eq!(stats.duplicates_dropped, 0, "{stats:#?}");
}
