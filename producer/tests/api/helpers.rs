//! `spawn_producer()` and typed helpers shared by the API tests.

use std::{net::SocketAddr, sync::Once, time::Duration};

use bytes::Bytes;
use clap::Parser as _;
use producer::{Config, RunError};
use pushpull::pb::{self, producer_service_client::ProducerServiceClient};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// Generous bound for anything that should take milliseconds: these machines are shared and
/// noisy, and a bound that is hit means a hang, not a slow run.
pub const PROMPTLY: Duration = Duration::from_secs(5);

/// A producer serving on 127.0.0.1:0, stopped by [`TestProducer::stop`] (or on drop).
pub struct TestProducer {
    pub addr: SocketAddr,
    /// The HTTP side's address, when started with [`spawn_http_producer`].
    pub http: Option<SocketAddr>,
    pub client: ProducerServiceClient<Channel>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), RunError>>,
}

/// Logs go to stderr only with `TEST_LOG=1`, so a failing run can be replayed verbosely.
pub fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            pushpull::telemetry::init(pushpull::telemetry::LogFormat::Text);
        }
    });
}

/// Starts a producer with these extra flags (as on the command line).
pub async fn spawn_producer(args: &[&str]) -> TestProducer {
    init_test_log();
    let config = Config::parse_from(std::iter::once("producer").chain(args.iter().copied()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(producer::run(config, listener, async move {
        let _ = rx.await;
    }));
    TestProducer {
        addr,
        http: None,
        client: client(addr).await,
        shutdown: Some(tx),
        handle,
    }
}

/// Starts a producer with its HTTP side too, both on port 0.
pub async fn spawn_http_producer(args: &[&str]) -> TestProducer {
    init_test_log();
    let config = Config::parse_from(std::iter::once("producer").chain(args.iter().copied()));
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = grpc.local_addr().expect("local addr");
    let http_addr = http.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = producer::Listeners {
        grpc,
        http: Some(http),
    };
    let handle = tokio::spawn(producer::run_with(config, listeners, async move {
        let _ = rx.await;
    }));
    TestProducer {
        addr,
        http: Some(http_addr),
        client: client(addr).await,
        shutdown: Some(tx),
        handle,
    }
}

/// A new HTTP/2 connection to `addr`.
pub async fn channel(addr: SocketAddr) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
}

/// A new client (a new HTTP/2 connection) to `addr`.
pub async fn client(addr: SocketAddr) -> ProducerServiceClient<Channel> {
    let channel = channel(addr).await.expect("connect to test producer");
    ProducerServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024)
}

impl TestProducer {
    /// Publishes `payloads` on `topic` in one call; returns (first, last) sequence.
    pub async fn publish(&self, topic: &str, payloads: &[&str]) -> (u64, u64) {
        let events = payloads
            .iter()
            .map(|p| new_event(topic, p.as_bytes()))
            .collect();
        let response = self
            .client
            .clone()
            .publish(pb::PublishRequest { events })
            .await
            .expect("publish")
            .into_inner();
        (response.first_sequence, response.last_sequence)
    }

    /// Publishes `n` events on `topic` with payloads "0", "1", …
    pub async fn publish_n(&self, topic: &str, n: usize) -> (u64, u64) {
        let payloads: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
        self.publish(topic, &refs).await
    }

    /// Triggers shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.handle)
            .await
            .expect("producer stops within 10 s")
            .expect("producer task did not panic")
    }
}

pub fn new_event(topic: &str, payload: &[u8]) -> pb::NewEvent {
    pb::NewEvent {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
    }
}

pub fn sequences(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

pub fn poll_request(after: Option<u64>) -> pb::PollRequest {
    pb::PollRequest {
        after_sequence: after,
        ..Default::default()
    }
}
