//! The consumer's own API: GetStats, health, reflection, and a clean SIGTERM.

use std::time::Duration;

use pushpull::pb;
use testkit::ServiceProcess;

use crate::helpers::*;

#[tokio::test]
async fn stats_report_mode_producer_and_latency() {
    let producer = spawn_producer(&[]).await;
    let consumer = spawn_consumer(&producer.url(), &["--mode", "long-poll"]).await;
    consumer.wait_connected().await;
    producer.publish("t", 20).await;
    let stats = consumer
        .wait_for("20 events", |s| s.events_received >= 20)
        .await;
    assert_eq!(stats.mode, pb::ReadMode::LongPoll as i32);
    assert_eq!(stats.producer, producer.url());
    // One producer: it is the one in use, and there is nothing to fail over to.
    assert_eq!(stats.current_producer, producer.url());
    assert_eq!(stats.failovers, 0);
    assert!(!stats.log_id.is_empty());
    let p50 = pushpull::time::std_duration(&stats.latency_p50.unwrap()).unwrap();
    let max = pushpull::time::std_duration(&stats.latency_max.unwrap()).unwrap();
    assert!(
        p50 > Duration::ZERO && p50 <= max,
        "p50 {p50:?} max {max:?}"
    );
    assert!(stats.started_at.is_some());
}

#[tokio::test]
async fn consumer_serves_health_and_reflection() {
    let producer = spawn_producer(&[]).await;
    let consumer = spawn_consumer(&producer.url(), &[]).await;
    testkit::assert_serving(consumer.addr, "pushpull.v1.ConsumerService").await;
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel(consumer.addr).await);
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "pushpull.v1.ConsumerService")
    );
    // The descriptors are shared with the producer; only what this server serves is listed.
    assert!(
        !list
            .service
            .iter()
            .any(|s| s.name == "pushpull.v1.ProducerService"),
        "{:?}",
        list.service
    );
}

#[tokio::test]
async fn sigterm_stops_the_consumer_binary_promptly_and_saves_its_cursor() {
    let producer = spawn_producer(&["--heartbeat-interval", "1h"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cursor");
    let mut child = ServiceProcess::consumer(
        env!("CARGO_BIN_EXE_consumer"),
        &[
            "--producer",
            &producer.url(),
            "--mode",
            "push",
            "--from",
            "earliest",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--checkpoint-interval",
            "1h",
        ],
    )
    .await;
    let (_, last) = producer.publish("t", 25).await;
    StatsClient::connect(child.addr)
        .await
        .wait_for("25 events", |s| s.events_received == 25)
        .await;

    child.sigterm();
    let status = child
        .wait_exit(PROMPTLY)
        .await
        .unwrap_or_else(|| panic!("consumer still running {PROMPTLY:?} after SIGTERM"));

    assert!(status.success(), "{status:?}");
    let saved = std::fs::read_to_string(&checkpoint).expect("checkpoint written at shutdown");
    assert!(
        saved.contains(&format!("after_sequence={last}\n")),
        "{saved}"
    );
}
