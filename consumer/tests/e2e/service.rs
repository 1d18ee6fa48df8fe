//! The consumer's own API: GetStats, health, reflection, and a clean SIGTERM.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use pushpull::pb::{self, consumer_service_client::ConsumerServiceClient};
use tokio::time::Instant;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

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
    let mut health = HealthClient::new(channel(consumer.server.addr).await);
    for service in ["", "pushpull.v1.ConsumerService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel(consumer.server.addr).await);
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn sigterm_stops_the_consumer_binary_promptly_and_saves_its_cursor() {
    let producer = spawn_producer(&["--heartbeat-interval", "1h"]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cursor");
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_consumer"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
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
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start consumer binary");
    let (_, last) = producer.publish("t", 25).await;

    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + PROMPTLY;
    loop {
        assert!(
            Instant::now() < deadline,
            "consumer never received the events"
        );
        assert!(child.try_wait().unwrap().is_none(), "consumer exited early");
        if let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            let stats = ConsumerServiceClient::new(channel)
                .get_stats(pb::GetStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            if stats.events_received == 25 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PROMPTLY {
            let _ = child.kill();
            panic!("consumer still running after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
    let saved = std::fs::read_to_string(&checkpoint).expect("checkpoint written at shutdown");
    assert!(
        saved.contains(&format!("after_sequence={last}\n")),
        "{saved}"
    );
}
