//! Webhooks end to end: the producer delivers, the consumer (`--mode webhook`) receives,
//! verifies and backfills by Poll. Every event once, in order, through a consumer killed and
//! started again, a subscription recreated past the consumer's cursor, and a secret that does
//! not match.

use std::{net::SocketAddr, time::Duration};

use pushpull::pb::{self, webhook_service_client::WebhookServiceClient};
use testkit::ServiceProcess;
use tonic::transport::Channel;

use crate::helpers::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Retries come quickly, so a test waits for them in milliseconds.
const QUICK_RETRIES: &[&str] = &[
    "--webhook-retry-min",
    "20ms",
    "--webhook-retry-max",
    "100ms",
];

/// A webhook-mode consumer of `producer` with subscription `id`, its HTTP listener on port 0;
/// the backfill timer is off (1 h), so every event after the start comes by webhook unless a
/// gap makes the consumer Poll.
async fn webhook_consumer(producer: &TestProducer, id: &str, args: &[&str]) -> TestConsumer {
    let mut all = vec![
        "--mode",
        "webhook",
        "--metrics-listen",
        "127.0.0.1:0",
        "--webhook-id",
        id,
        "--webhook-secret",
        SECRET,
        "--backfill-interval",
        "1h",
    ];
    all.extend_from_slice(args);
    spawn_consumer_with_metrics(&producer.url(), &all).await
}

async fn webhooks(addr: SocketAddr) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(channel(addr).await)
}

async fn subscription(producer: &TestProducer, id: &str) -> pb::Webhook {
    webhooks(producer.addr)
        .await
        .get_webhook(pb::GetWebhookRequest {
            webhook_id: id.into(),
        })
        .await
        .expect("the consumer's subscription exists")
        .into_inner()
        .webhook
        .unwrap()
}

async fn wait_delivered(producer: &TestProducer, id: &str, sequence: u64) {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let state = subscription(producer, id).await;
        if state.delivered_sequence >= sequence {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sequence} not delivered: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_event_arrives_once_in_order_by_webhook() {
    let producer = spawn_producer(&["--webhook-max-batch-events", "10"]).await;
    let consumer = webhook_consumer(&producer, "all", &["--from", "earliest"]).await;
    consumer.wait_connected().await;

    for _ in 0..10 {
        producer.publish("t", 7).await;
    }
    let stats = consumer
        .wait_for("70 events", |s| s.events_received >= 70)
        .await;
    assert_exact(&stats, 70, 70);
    assert_eq!(
        stats.events_backfilled, 0,
        "all came by webhook: {stats:#?}"
    );
    assert!(
        stats.webhooks_received >= 7,
        "batches of 10 at most: {stats:#?}"
    );
    assert_eq!(stats.webhooks_refused, 0);
    assert_eq!(stats.mode, pb::ReadMode::Webhook as i32);
    wait_delivered(&producer, "all", 70).await;
    let state = subscription(&producer, "all").await;
    assert_eq!(
        state.url,
        format!("http://{}/webhook", consumer.metrics.unwrap())
    );
    consumer.stop().await;
}

#[tokio::test]
async fn a_consumer_killed_and_started_again_loses_nothing_while_the_producer_retries() {
    let producer = spawn_producer(QUICK_RETRIES).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cursor");
    let flags = [
        "--producer",
        &producer.url(),
        "--mode",
        "webhook",
        "--metrics-listen",
        "127.0.0.1:0",
        "--webhook-id",
        "killed",
        "--webhook-secret",
        SECRET,
        "--backfill-interval",
        "1h",
        "--from",
        "earliest",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
    ];
    let mut child = ServiceProcess::consumer(env!("CARGO_BIN_EXE_consumer"), &flags).await;
    producer.publish("t", 10).await;
    StatsClient::connect(child.addr)
        .await
        .wait_for("10 events", |s| s.events_received == 10)
        .await;
    // Answered 2xx: the consumer's checkpoint held 10 before it answered (events it may have
    // polled first at start came again by webhook, as duplicates, and were answered too).
    wait_delivered(&producer, "killed", 10).await;
    // When the startup Poll fetched all 10 before the consumer registered, no webhook was sent
    // and nothing waited for the checkpoint: let its writer catch up before the kill, so the
    // restart below resumes from 10 either way.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    while !std::fs::read_to_string(&checkpoint).is_ok_and(|s| s.contains("after_sequence=10\n")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the checkpoint never held 10"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    child.sigkill();
    child.wait_exit(PROMPTLY).await.expect("killed");
    producer.publish("t", 10).await;
    // The producer keeps trying the dead endpoint, with backoff.
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    let state = loop {
        let state = subscription(&producer, "killed").await;
        if state.consecutive_failures >= 2 {
            break state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retries: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        state.last_error.contains("cannot connect"),
        "{}",
        state.last_error
    );
    assert_eq!(state.delivered_sequence, 10, "nothing moves while it fails");
    assert!(state.next_attempt_at.is_some() && state.failing_since.is_some());

    // Every 2xx was answered after the checkpoint held its cursor: the file is where the
    // consumer resumes, whatever the kill cut short.
    let saved = std::fs::read_to_string(&checkpoint).expect("a checkpoint");
    assert!(saved.contains("after_sequence=10\n"), "{saved}");
    child.restart().await;
    let stats = StatsClient::connect(child.addr).await;
    stats.wait_for("registered again", |s| s.connected).await;
    producer.publish("t", 5).await;
    let after = stats
        .wait_for("the 15 events after the checkpoint", |s| {
            s.last_sequence == 25
        })
        .await;
    assert_exact(&after, 15, 25);
    // The consumer has the batch before the producer has its 2xx.
    wait_delivered(&producer, "killed", 25).await;
    let state = subscription(&producer, "killed").await;
    assert_eq!(state.consecutive_failures, 0, "{state:?}");
}

#[tokio::test]
async fn a_subscription_recreated_past_the_cursor_leaves_a_gap_that_one_poll_fills() {
    let producer = spawn_producer(&[]).await;
    let consumer = webhook_consumer(&producer, "gap", &["--from", "earliest"]).await;
    consumer.wait_connected().await;
    producer.publish("t", 5).await;
    consumer
        .wait_for("5 events", |s| s.events_received == 5)
        .await;

    // An operator deletes the subscription; events go on; it is created again from the head.
    let mut client = webhooks(producer.addr).await;
    client
        .delete_webhook(pb::DeleteWebhookRequest {
            webhook_id: "gap".into(),
        })
        .await
        .unwrap();
    producer.publish("t", 5).await;
    client
        .create_webhook(pb::CreateWebhookRequest {
            webhook_id: "gap".into(),
            url: format!("http://{}/webhook", consumer.metrics.unwrap()),
            secret: SECRET.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    producer.publish("t", 5).await;

    let stats = consumer
        .wait_for("15 events", |s| s.events_received >= 15)
        .await;
    assert_exact(&stats, 15, 15);
    assert_eq!(
        stats.events_backfilled, 5,
        "events 6..=10 came by Poll: {stats:#?}"
    );
    consumer.stop().await;
}

#[tokio::test]
async fn deliveries_signed_with_another_secret_are_refused_and_retried() {
    let producer = spawn_producer(QUICK_RETRIES).await;
    let consumer = webhook_consumer(&producer, "wrong", &["--from", "earliest"]).await;
    consumer.wait_connected().await;
    // Someone replaces the consumer's subscription with a secret of their own.
    webhooks(producer.addr)
        .await
        .create_webhook(pb::CreateWebhookRequest {
            webhook_id: "wrong".into(),
            url: format!("http://{}/webhook", consumer.metrics.unwrap()),
            replace: true,
            ..Default::default()
        })
        .await
        .unwrap();
    producer.publish("t", 3).await;

    let stats = consumer
        .wait_for("refusals", |s| s.webhooks_refused >= 3)
        .await;
    assert_eq!(stats.events_received, 0, "{stats:#?}");
    assert_eq!(stats.webhooks_received, 0, "{stats:#?}");
    let state = subscription(&producer, "wrong").await;
    assert!(state.last_error.contains("401"), "{state:?}");
    assert_eq!(state.delivered_sequence, 0);
    consumer.stop().await;
}

#[tokio::test]
async fn after_the_producer_was_out_of_reach_webhooks_flowing_again_mean_connected() {
    let producer = spawn_producer(&[]).await;
    let proxy = Proxy::start(producer.addr).await;
    let consumer = spawn_consumer_with_metrics(
        &proxy.url(),
        &[
            "--mode",
            "webhook",
            "--metrics-listen",
            "127.0.0.1:0",
            "--webhook-secret",
            SECRET,
            "--backfill-interval",
            "300ms",
            "--from",
            "earliest",
        ],
    )
    .await;
    consumer.wait_connected().await;
    // The consumer's way to the producer goes away: its next backfill Poll fails.
    proxy.close().await;
    consumer
        .wait_for("a failed Poll noticed", |s| !s.connected)
        .await;
    proxy.open().await;
    // Events every 50 ms: webhooks arrive more often than --backfill-interval, so no backfill
    // Poll runs; registering again is what must say the producer is back.
    let publishing = tokio::spawn({
        let client = producer.client.clone();
        async move {
            for _ in 0..200 {
                let events = vec![pb::NewEvent {
                    topic: "t".into(),
                    payload: "x".into(),
                }];
                let _ = client.clone().publish(pb::PublishRequest { events }).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    // Well before the publishing stops (10 s) and lets a backfill Poll run.
    let stats = tokio::time::timeout(
        Duration::from_secs(4),
        consumer.wait_for("connected again", |s| {
            s.connected && s.webhooks_received > 0
        }),
    )
    .await
    .expect("connected again within 4 s, while webhooks flow");
    assert_eq!(stats.events_missed, 0);
    publishing.abort();
    consumer.stop().await;
}
