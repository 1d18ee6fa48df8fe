//! `spawn_producer()` and typed helpers shared by the API tests; what both crates' tests share
//! (`PROMPTLY`, the gRPC channel, servers on port 0) is in `testkit`.

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser as _;
use producer::{Config, RunError};
use pushpull::pb::{self, producer_service_client::ProducerServiceClient};
use testkit::{Served, bind, bind_if, producer_flags};
use tonic::{Streaming, transport::Channel};

pub use testkit::{PROMPTLY, channel};

/// A producer serving on 127.0.0.1:0, stopped by [`TestProducer::stop`] (or on drop).
pub struct TestProducer {
    pub addr: SocketAddr,
    /// The HTTP side's address, when started with [`spawn_http_producer`].
    pub http: Option<SocketAddr>,
    pub client: ProducerServiceClient<Channel>,
    server: Served<RunError>,
}

/// Starts a producer with these extra flags (as on the command line), on the memory store
/// unless they choose (see [`producer_flags`]).
pub async fn spawn_producer(args: &[&str]) -> TestProducer {
    start(args, false).await
}

/// Starts a producer with its HTTP side too, both on port 0.
pub async fn spawn_http_producer(args: &[&str]) -> TestProducer {
    start(args, true).await
}

async fn start(args: &[&str], with_http: bool) -> TestProducer {
    let flags = producer_flags(args);
    let config = Config::parse_from(std::iter::once("producer").chain(flags));
    let (grpc, addr) = bind().await;
    let (http, http_addr) = bind_if(with_http).await;
    let listeners = producer::Listeners { grpc, http };
    let server = Served::spawn(|shutdown| producer::run_with(config, listeners, shutdown));
    TestProducer {
        addr,
        http: http_addr,
        client: client(addr).await,
        server,
    }
}

/// A new client (a new HTTP/2 connection) to `addr`.
pub async fn client(addr: SocketAddr) -> ProducerServiceClient<Channel> {
    ProducerServiceClient::new(channel(addr).await)
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

    /// Triggers shutdown and waits for `run` to return; panics if that takes over `PROMPTLY`.
    pub async fn stop(self) -> Result<(), RunError> {
        self.server.stop().await
    }
}

/// Opens a Subscribe stream after `after` (unset: from the head) for `topics` (empty: all).
pub async fn subscribe(
    client: &ProducerServiceClient<Channel>,
    after: Option<u64>,
    topics: &[&str],
) -> Streaming<pb::SubscribeResponse> {
    client
        .clone()
        .subscribe(pb::SubscribeRequest {
            after_sequence: after,
            topics: topics.iter().map(|t| t.to_string()).collect(),
        })
        .await
        .expect("subscribe")
        .into_inner()
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

/// A raw HTTP/2 connection to `addr` through the `h2` crate, with no gRPC client on top, for
/// sending what no well-behaved client would. The connection's own task is returned too: its
/// result says how the producer ended the connection (a GOAWAY's reason, an I/O error).
pub async fn h2_connect(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    (send, tokio::spawn(connection))
}

/// The request head of a gRPC call to the producer's `method`, as a gRPC client sends it.
pub fn grpc_head(method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://pushpull/pushpull.v1.ProducerService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request head")
}

/// `message` as one gRPC frame: not compressed, its length in 4 big-endian bytes, its bytes.
pub fn grpc_frame(message: &impl prost::Message) -> Bytes {
    let encoded = message.encode_to_vec();
    grpc_frame_claiming(encoded.len(), &encoded)
}

/// A gRPC frame whose length prefix says `claimed` bytes, followed by `body` whatever its
/// length: an honest frame when they agree, a lie when they do not.
pub fn grpc_frame_claiming(claimed: usize, body: &[u8]) -> Bytes {
    let claimed = u32::try_from(claimed).expect("a length gRPC can state");
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(0);
    frame.extend_from_slice(&claimed.to_be_bytes());
    frame.extend_from_slice(body);
    frame.into()
}
