//! What a subscriber that never reads costs the producer, in memory. Such a client holds its
//! HTTP/2 flow-control window shut, so whatever the producer has prepared for it stays in the
//! producer's memory: HTTP/2's per-stream send buffer, and the encoded response being written.
//! Measured on the real binary (its resident set, from `/proc`), as an operator would see it.

use std::time::Duration;

use pushpull::pb::{self, producer_service_client::ProducerServiceClient};
use testkit::ServiceProcess;
use tokio::time::{Instant, timeout};
use tonic::transport::Channel;

use crate::helpers::*;

const PRODUCER: &str = env!("CARGO_BIN_EXE_producer");

/// Events as large as the default `--max-payload-bytes` allows, halved: the case where a
/// response carries the most bytes.
const EVENT_BYTES: usize = 512 * 1024;
const EVENTS: usize = 16;
const CONNECTIONS: usize = 10;
const STREAMS_PER_CONNECTION: usize = 20;
const STREAMS: usize = CONNECTIONS * STREAMS_PER_CONNECTION;

/// The budget per stalled subscriber (issue 11).
const MAX_BYTES_PER_STREAM: u64 = 1024 * 1024;

/// The process's resident set, in bytes (`VmRSS` of `/proc/<pid>/status`, Linux).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|err| panic!("read /proc/{pid}/status: {err}"));
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
    kib * 1024
}

/// The resident set once it stops moving: three samples 100 ms apart within 1 MiB of each
/// other (the streams' buffers fill in the background, with nothing to signal when they are
/// done). After 10 s, whatever it is then.
async fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut samples = vec![rss(pid)];
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        samples.push(rss(pid));
        if let [.., a, b, c] = samples[..]
            && a.max(b).max(c) - a.min(b).min(c) < 1024 * 1024
        {
            return c;
        }
    }
    *samples.last().expect("sampled at least once")
}

/// Opens [`STREAMS`] Subscribes from the start of the log, `per_connection` on each raw HTTP/2
/// connection with the default 64 KiB windows, and never reads a byte of their DATA; returns the
/// producer's resident set growth per stream, once it has settled, and the handles that keep
/// the streams open.
async fn stalled_subscribers(
    producer: &ServiceProcess,
    per_connection: usize,
) -> (u64, Vec<impl Sized>) {
    let pid = producer.pid();
    let before = settled_rss(pid).await;

    let mut held = Vec::new();
    for _ in 0..STREAMS / per_connection {
        let (mut h2, connection) = h2_connect(producer.addr).await;
        let mut answers = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..per_connection {
            h2 = h2.ready().await.expect("the connection takes a call");
            let (response, mut request) = h2.send_request(grpc_head("Subscribe"), false).unwrap();
            let subscribe = pb::SubscribeRequest {
                after_sequence: Some(0),
                topics: vec![],
            };
            request.send_data(grpc_frame(&subscribe), true).unwrap();
            answers.push(response);
        }
        for response in answers {
            // The response's head says the subscriber exists; its body is never read.
            let response = timeout(PROMPTLY, response)
                .await
                .expect("a Subscribe answered within PROMPTLY")
                .expect("a Subscribe answered");
            assert_eq!(response.status(), 200);
            streams.push(response);
        }
        held.push((h2, connection, streams));
    }

    let after = settled_rss(pid).await;
    let per_stream = after.saturating_sub(before) / STREAMS as u64;
    eprintln!(
        "stalled subscribers, {per_connection} per connection: resident set {} MiB -> {} MiB \
         for {STREAMS} streams of {EVENTS} x {} KiB events: {} KiB per stream",
        before >> 20,
        after >> 20,
        EVENT_BYTES >> 10,
        per_stream >> 10
    );
    (per_stream, held)
}

/// A producer binary whose log holds [`EVENTS`] events of [`EVENT_BYTES`], and a client.
async fn producer_with_big_events() -> (ServiceProcess, ProducerServiceClient<Channel>) {
    let producer = ServiceProcess::producer(PRODUCER, &["--store", "memory"]).await;
    let client = client(producer.addr).await;
    let payload = vec![b'x'; EVENT_BYTES];
    for _ in 0..EVENTS / 4 {
        client
            .clone()
            .publish(pb::PublishRequest {
                events: (0..4).map(|_| new_event("big", &payload)).collect(),
            })
            .await
            .expect("publish");
    }
    (producer, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_at_most_1_mib() {
    // Many streams share a connection's 64 KiB window, so most get no window at all; alone on
    // its connection, a stream gets a whole window and the producer writes into it.
    for per_connection in [20, 1] {
        let (producer, client) = producer_with_big_events().await;

        let (per_stream, _streams) = stalled_subscribers(&producer, per_connection).await;

        let started = Instant::now();
        let polled = timeout(
            PROMPTLY,
            client.clone().poll(pb::PollRequest {
                after_sequence: Some(EVENTS as u64 - 1),
                ..Default::default()
            }),
        )
        .await
        .expect("a Poll answered within PROMPTLY beside the stalled subscribers")
        .expect("poll")
        .into_inner();
        assert_eq!(sequences(&polled.events), [EVENTS as u64]);
        eprintln!("a Poll beside them took {:?}", started.elapsed());
        assert!(
            per_stream <= MAX_BYTES_PER_STREAM,
            "{per_connection} per connection: each stalled subscriber costs {} KiB, over the \
             {} KiB budget",
            per_stream >> 10,
            MAX_BYTES_PER_STREAM >> 10
        );
    }
}
