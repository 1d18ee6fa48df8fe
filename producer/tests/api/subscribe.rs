use pushpull::pb;
use testkit::ServiceProcess;
use tokio::time::timeout;
use tonic::{Code, Streaming};

use crate::helpers::*;

async fn next(stream: &mut Streaming<pb::SubscribeResponse>) -> pb::SubscribeResponse {
    timeout(PROMPTLY, stream.message())
        .await
        .expect("a response within the bound")
        .expect("no error")
        .expect("stream still open")
}

/// Reads responses until `n` events have arrived; returns them in arrival order.
async fn collect(stream: &mut Streaming<pb::SubscribeResponse>, n: usize) -> Vec<pb::Event> {
    let mut events = Vec::new();
    while events.len() < n {
        events.extend(next(stream).await.events);
    }
    events
}

#[tokio::test]
async fn first_response_is_immediate_even_on_an_empty_log() {
    let producer = spawn_producer(&["--heartbeat-interval", "1h"]).await;
    let mut stream = subscribe(&producer.client, None, &[]).await;
    let first = next(&mut stream).await;
    assert!(first.events.is_empty());
    assert_eq!(first.head_sequence, 0);
    assert!(!first.log_id.is_empty());
}

#[tokio::test]
async fn subscribe_sends_the_backlog_then_live_events_in_order() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("a", 2500).await;
    let mut stream = subscribe(&producer.client, Some(0), &[]).await;

    let backlog = collect(&mut stream, 2500).await;
    producer.publish("b", &["live1", "live2"]).await;
    let live = collect(&mut stream, 2).await;

    let all: Vec<u64> = backlog.iter().chain(&live).map(|e| e.sequence).collect();
    assert_eq!(all, (1..=2502).collect::<Vec<_>>());
    assert_eq!(&live[1].payload[..], b"live2");
}

#[tokio::test]
async fn a_subscriber_behind_gets_batches_of_many_events() {
    let producer = spawn_producer(&["--max-batch-events", "500"]).await;
    producer.publish_n("a", 2000).await;
    let mut stream = subscribe(&producer.client, Some(0), &[]).await;
    let first = next(&mut stream).await;
    assert_eq!(first.events.len(), 500);
    assert_eq!(first.next_after_sequence, 500);
    assert_eq!(first.head_sequence, 2000);
}

#[tokio::test]
async fn unset_cursor_streams_only_new_events() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("old", 5).await;
    let mut stream = subscribe(&producer.client, None, &[]).await;
    let first = next(&mut stream).await;
    assert!(first.events.is_empty());
    assert_eq!(first.next_after_sequence, 5);

    producer.publish("new", &["x"]).await;
    let events = collect(&mut stream, 1).await;
    assert_eq!(sequences(&events), vec![6]);
}

#[tokio::test]
async fn cursor_resumes_exactly_after_the_given_sequence() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("a", 10).await;
    let mut stream = subscribe(&producer.client, Some(7), &[]).await;
    assert_eq!(sequences(&collect(&mut stream, 3).await), vec![8, 9, 10]);
}

#[tokio::test]
async fn topic_filter_streams_only_matching_events() {
    let producer = spawn_producer(&[]).await;
    let mut stream = subscribe(&producer.client, Some(0), &["quotes.AAPL"]).await;
    next(&mut stream).await; // the immediate first response
    producer.publish("quotes.MSFT", &["m1"]).await;
    producer.publish("quotes.AAPL", &["a1"]).await;
    producer.publish("quotes.MSFT", &["m2"]).await;
    producer.publish("quotes.AAPL", &["a2"]).await;
    let events = collect(&mut stream, 2).await;
    assert_eq!(sequences(&events), vec![2, 4]);
    assert!(events.iter().all(|e| e.topic == "quotes.AAPL"));
}

#[tokio::test]
async fn idle_streams_get_heartbeats_carrying_the_head() {
    let producer = spawn_producer(&["--heartbeat-interval", "50ms"]).await;
    producer.publish_n("a", 3).await;
    let mut stream = subscribe(&producer.client, None, &[]).await;
    next(&mut stream).await;
    for _ in 0..3 {
        let heartbeat = next(&mut stream).await;
        assert!(heartbeat.events.is_empty());
        assert_eq!(heartbeat.head_sequence, 3);
        assert_eq!(heartbeat.next_after_sequence, 3);
    }
}

#[tokio::test]
async fn a_subscriber_overtaken_by_retention_ends_with_out_of_range() {
    // The client stops reading while 10 MB are published into a 10-event log. HTTP/2 windows
    // and the stream's small channel hold far less than that, so the subscriber's cursor falls
    // behind the oldest retained event.
    let producer = spawn_producer(&["--retention-events", "10", "--max-batch-events", "1"]).await;
    producer.publish_n("a", 1).await;
    let mut stream = subscribe(&producer.client, Some(0), &[]).await;
    let payload = "x".repeat(100_000);
    let batch: Vec<&str> = vec![&payload; 10];
    for _ in 0..10 {
        producer.publish("a", &batch).await;
    }
    let status = loop {
        match timeout(PROMPTLY, stream.message()).await.expect("bounded") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("oldest_sequence is 92"),
        "{}",
        status.message()
    );
}

/// A subscriber that leaves while its stream is idle (no event to send, no heartbeat due, so no
/// failed send to notice it by) ends its task at once; then publishing and stopping do not wait
/// for it. Run as the binary, whose log shows the task ending.
#[tokio::test]
async fn a_departed_subscriber_does_not_hold_the_producer() {
    // A grace period three times PROMPTLY: anything still held open for the departed
    // subscriber would keep the producer from exiting until the grace ran out.
    let mut producer = ServiceProcess::producer(
        env!("CARGO_BIN_EXE_producer"),
        &["--heartbeat-interval", "1h", "--shutdown-grace", "30s"],
    )
    .await;
    let client = client(producer.addr).await;
    let mut stream = subscribe(&client, None, &[]).await;
    next(&mut stream).await;

    drop(stream);

    producer
        .wait_for_log("the subscriber's task ending", |line| {
            line["message"] == "subscriber left"
        })
        .await;
    let events = (0..10).map(|i| new_event("a", &[i])).collect();
    client
        .clone()
        .publish(pb::PublishRequest { events })
        .await
        .expect("publish with a departed subscriber");
    producer.sigterm();
    let status = producer
        .wait_exit(PROMPTLY)
        .await
        .expect("exits well within the 30 s grace period");
    assert!(status.success(), "{status:?}");
}

/// A client that sends and accepts gzip (as grpcio's and grpc-js's can) gets every call served
/// compressed: Publish, a Subscribe stream's backlog and live events, and Poll.
#[tokio::test]
async fn a_client_that_accepts_gzip_is_served_compressed_on_every_call() {
    use tonic::codec::CompressionEncoding::Gzip;
    let producer = spawn_producer(&[]).await;
    let gzip = client(producer.addr)
        .await
        .send_compressed(Gzip)
        .accept_compressed(Gzip);
    let payload = vec![b'z'; 4096];
    let events = (0..50).map(|_| new_event("a", &payload)).collect();
    let published = gzip
        .clone()
        .publish(pb::PublishRequest { events })
        .await
        .expect("a compressed Publish")
        .into_inner();
    assert_eq!((published.first_sequence, published.last_sequence), (1, 50));

    let mut stream = subscribe(&gzip, Some(0), &[]).await;
    let backlog = collect(&mut stream, 50).await;
    assert_eq!(sequences(&backlog), (1..=50).collect::<Vec<_>>());
    assert!(backlog.iter().all(|e| e.payload == payload));
    producer.publish("a", &["live"]).await;
    assert_eq!(sequences(&collect(&mut stream, 1).await), vec![51]);

    let polled = gzip
        .clone()
        .poll(pb::PollRequest {
            after_sequence: Some(0),
            max_events: 10,
            ..Default::default()
        })
        .await
        .expect("a compressed Poll")
        .into_inner();
    assert_eq!(polled.events.len(), 10);
    assert_eq!(polled.events[9].payload, payload);
}
