//! Whatever ends the consumer's gRPC server, the reader stops and the checkpoint holds the last
//! event processed: here the listener goes away while nobody asked the consumer to stop.

use std::time::Duration;

use clap::Parser as _;
use pushpull::{
    grpc::ServeError,
    pb::{self, consumer_service_client::ConsumerServiceClient},
};
use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::*;

/// Consumer flags: a checkpoint interval of an hour, so only the final save can hold the last
/// sequence.
fn config(producer_url: &str, checkpoint: &str) -> consumer::Config {
    consumer::Config::parse_from([
        "consumer",
        "--producer",
        producer_url,
        "--mode",
        "push",
        "--from",
        "earliest",
        "--checkpoint",
        checkpoint,
        "--checkpoint-interval",
        "1h",
        "--summary-interval",
        "0s",
    ])
}

#[tokio::test]
async fn a_listener_that_closes_stops_the_reader_and_saves_the_final_checkpoint() {
    testkit::init_test_log();
    let producer = spawn_producer(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cursor");

    // The consumer's connections come through a channel, so the test can end the stream the
    // way a dead listener would, without the shutdown future.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (incoming, acceptor) = testkit::closable_incoming(listener);
    let running = tokio::spawn(consumer::run_incoming(
        config(&producer.url(), checkpoint.to_str().unwrap()),
        incoming,
        None,
        std::future::pending(),
    ));

    let mut stats = ConsumerServiceClient::new(channel(addr).await);
    // A health Watch is a stream that never ends by itself: the consumer must stop reading
    // and save its checkpoint without waiting for it (only the shutdown grace period, 5 s,
    // ends it).
    let mut watch = HealthClient::new(channel(addr).await)
        .watch(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().is_some());
    producer.publish("t", 10).await;
    let (_, last) = producer.publish("t", 15).await;
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let s = stats
            .get_stats(pb::GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if s.events_received == 25 {
            assert_eq!(s.after_sequence, Some(last));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    acceptor.abort();
    let result = tokio::time::timeout(PROMPTLY, running)
        .await
        .expect("run returns within the grace period once its listener is gone")
        .expect("no panic");
    assert!(
        matches!(
            result,
            Err(consumer::RunError::Serve(ServeError::ListenerClosed))
        ),
        "{result:?}"
    );
    let saved = std::fs::read_to_string(&checkpoint).expect("a checkpoint was written");
    assert!(
        saved.contains(&format!("after_sequence={last}\n")),
        "the final cursor was saved: {saved}"
    );
    // The watcher heard the consumer go NOT_SERVING.
    let next = tokio::time::timeout(PROMPTLY, watch.message())
        .await
        .expect("a status change")
        .unwrap()
        .expect("a status")
        .status;
    assert_eq!(
        next,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
}
