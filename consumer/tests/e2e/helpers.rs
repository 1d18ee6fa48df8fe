//! Test helpers: a producer, a consumer, and a TCP proxy that can cut connections or switch
//! to another producer.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex, Once},
    time::Duration,
};

use bytes::Bytes;
use clap::Parser as _;
use pushpull::pb::{
    self, consumer_service_client::ConsumerServiceClient,
    producer_service_client::ProducerServiceClient,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::oneshot,
    task::{AbortHandle, JoinHandle},
};
use tonic::transport::Channel;

/// Bound for anything that should take well under a second: hitting it means a hang.
pub const PROMPTLY: Duration = Duration::from_secs(10);

pub fn init_test_log() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            pushpull::telemetry::init(pushpull::telemetry::LogFormat::Text);
        }
    });
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect")
}

/// A server task started with `run(config, listener, shutdown)`.
pub struct Running<E> {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), E>>,
}

impl<E: std::fmt::Debug> Running<E> {
    async fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        init_test_log();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(run(listener, rx));
        Self {
            addr,
            shutdown: Some(tx),
            handle,
        }
    }

    /// Triggers shutdown and waits for the task; panics if it fails or hangs.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(PROMPTLY, &mut self.handle)
            .await
            .expect("stops promptly")
            .expect("no panic")
            .expect("clean exit");
    }
}

pub struct TestProducer {
    pub server: Running<producer::RunError>,
    pub client: ProducerServiceClient<Channel>,
}

pub async fn spawn_producer(args: &[&str]) -> TestProducer {
    let config =
        producer::Config::parse_from(std::iter::once("producer").chain(args.iter().copied()));
    let server = Running::start(|listener, rx| {
        producer::run(config, listener, async move {
            let _ = rx.await;
        })
    })
    .await;
    let client = ProducerServiceClient::new(channel(server.addr).await);
    TestProducer { server, client }
}

impl TestProducer {
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
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

    pub async fn stop(self) {
        self.server.stop().await
    }
}

pub struct TestConsumer {
    pub server: Running<consumer::RunError>,
    pub stats: ConsumerServiceClient<Channel>,
}

/// Starts a consumer reading from `producer_url` with these extra flags.
pub async fn spawn_consumer(producer_url: &str, args: &[&str]) -> TestConsumer {
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
    let server = Running::start(|listener, rx| {
        consumer::run(config, listener, async move {
            let _ = rx.await;
        })
    })
    .await;
    let stats = ConsumerServiceClient::new(channel(server.addr).await);
    TestConsumer { server, stats }
}

impl TestConsumer {
    pub async fn stats(&self) -> pb::GetStatsResponse {
        self.stats
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
            let stats = self.stats().await;
            if done(&stats) {
                return stats;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; last stats: {stats:#?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_connected(&self) -> pb::GetStatsResponse {
        self.wait_for("connected with a cursor", |s| {
            s.connected && s.after_sequence.is_some()
        })
        .await
    }

    pub async fn stop(self) {
        self.server.stop().await
    }
}

/// A TCP proxy in front of a producer. `cut()` drops every open connection (the consumer sees
/// a broken transport, as when a network path or a load balancer fails); `retarget()` sends
/// new connections to another address (a producer restarted elsewhere).
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: AbortHandle,
}

struct ProxyState {
    target: SocketAddr,
    connections: Vec<AbortHandle>,
    accepted: usize,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState {
            target,
            connections: Vec::new(),
            accepted: 0,
        }));
        let accept_state = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let target = accept_state.lock().unwrap().target;
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                let mut state = accept_state.lock().unwrap();
                state.connections.push(task.abort_handle());
                state.accepted += 1;
            }
        })
        .abort_handle();
        Self {
            addr,
            state,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far: more than one means a client reconnected.
    pub fn accepted(&self) -> usize {
        self.state.lock().unwrap().accepted
    }

    /// Drops every open connection through the proxy.
    pub fn cut(&self) {
        for conn in self.state.lock().unwrap().connections.drain(..) {
            conn.abort();
        }
    }

    /// New connections go to `target`; open ones are cut.
    pub fn retarget(&self, target: SocketAddr) {
        self.state.lock().unwrap().target = target;
        self.cut();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
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
