//! Webhook mode's receiver, with deliveries the tests make themselves: batches signed as
//! webhook.proto describes, POSTed to the consumer, while it backfills by Poll from an
//! in-process producer. That producer's `--webhook-allow` ([`NO_WEBHOOKS`]) refuses the
//! consumer's loopback URL, so every registration fails (PERMISSION_DENIED) and is retried,
//! and no delivery but the tests' own reaches the consumer. Deliveries by the producer itself
//! are tested in `webhook_delivery.rs`.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::Parser as _;
use serde_json::{Value, json};
use testkit::bind;

use crate::helpers::*;

/// A producer that delivers no webhooks to loopback: only to a documentation network
/// (192.0.2.0/24, RFC 5737), which nothing here registers.
const NO_WEBHOOKS: &[&str] = &["--webhook-allow", "192.0.2.0/24"];

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WEBHOOK_ID: &str = "e2e";

/// A webhook-mode consumer of `producer`, with the HTTP listener on port 0 and `args` added;
/// returns it and its HTTP address.
async fn spawn_webhook_consumer(
    producer: &TestProducer,
    args: &[&str],
) -> (TestConsumer, SocketAddr) {
    let mut all = vec![
        "--mode",
        "webhook",
        // Required by the configuration; the listener actually used is the test's own.
        "--metrics-listen",
        "127.0.0.1:0",
        "--webhook-id",
        WEBHOOK_ID,
        "--webhook-secret",
        SECRET,
    ];
    all.extend_from_slice(args);
    let consumer = spawn_consumer_with_metrics(&producer.url(), &all).await;
    let http = consumer.metrics.expect("an HTTP listener");
    (consumer, http)
}

/// A delivery as the producer writes it: the body of events `seqs` (payloads "p<seq>") after
/// `after`, and its Standard Webhooks headers signed with `secret` at `sent`.
struct Delivery {
    body: Vec<u8>,
    id: String,
    sent: SystemTime,
    secret: &'static str,
}

impl Delivery {
    fn new(log_id: &str, after: u64, seqs: &[u64], next_after: u64) -> Self {
        let now = || humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        let events: Vec<Value> = seqs
            .iter()
            .map(|s| {
                json!({"sequence": s, "topic": "t", "payload": format!("p{s}"),
                       "encoding": "utf8", "produced_at": now()})
            })
            .collect();
        let body = json!({
            "type": "pushpull.events",
            "timestamp": now(),
            "data": {"webhook_id": WEBHOOK_ID, "events": events, "after_sequence": after,
                     "next_after_sequence": next_after, "head_sequence": next_after,
                     "log_id": log_id},
        });
        Self {
            body: serde_json::to_vec(&body).unwrap(),
            id: format!("{WEBHOOK_ID}_{after}_{next_after}"),
            sent: SystemTime::now(),
            secret: SECRET,
        }
    }

    /// POSTs it to the consumer at `http`; returns the status and the JSON answer.
    async fn post(&self, http: SocketAddr) -> (u16, Value) {
        let ts = self.sent.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let signature = standardwebhooks::Webhook::new(self.secret)
            .unwrap()
            .sign(&self.id, ts, &self.body)
            .unwrap();
        let response = reqwest::Client::new()
            .post(format!("http://{http}/webhook"))
            .header("content-type", "application/json")
            .header("webhook-id", &self.id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(self.body.clone())
            .timeout(PROMPTLY)
            .send()
            .await
            .expect("POST /webhook");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn at_start_it_backfills_by_poll_and_keeps_retrying_the_registration() {
    let producer = spawn_producer(NO_WEBHOOKS).await;
    producer.publish("t", 20).await;
    let (consumer, _http) = spawn_webhook_consumer(
        &producer,
        &["--from", "earliest", "--backfill-interval", "1h"],
    )
    .await;

    let stats = consumer
        .wait_for("20 events backfilled", |s| s.events_received >= 20)
        .await;
    assert_exact(&stats, 20, 20);
    assert_eq!(stats.events_backfilled, 20, "{stats:#?}");
    assert_eq!(stats.mode, pushpull::pb::ReadMode::Webhook as i32);
    // The registration keeps failing (PERMISSION_DENIED): retried, and not "connected".
    let stats = consumer
        .wait_for("registration retried", |s| s.rpcs_sent >= 4)
        .await;
    assert!(!stats.connected, "{stats:#?}");
    consumer.stop().await;
}

#[tokio::test]
async fn without_webhooks_it_polls_every_backfill_interval() {
    let producer = spawn_producer(NO_WEBHOOKS).await;
    let (consumer, _http) = spawn_webhook_consumer(
        &producer,
        &["--from", "earliest", "--backfill-interval", "100ms"],
    )
    .await;
    consumer
        .wait_for("the cursor fixed", |s| s.after_sequence.is_some())
        .await;
    producer.publish("t", 7).await;
    let stats = consumer
        .wait_for("7 events by Poll", |s| s.events_received >= 7)
        .await;
    assert_exact(&stats, 7, 7);
    assert_eq!(stats.events_backfilled, 7);
    consumer.stop().await;
}

#[tokio::test]
async fn a_batch_past_the_cursor_is_preceded_by_a_poll_for_the_gap_and_redeliveries_are_dropped() {
    let producer = spawn_producer(NO_WEBHOOKS).await;
    producer.publish("t", 10).await;
    let (consumer, http) = spawn_webhook_consumer(
        &producer,
        &["--from", "earliest", "--backfill-interval", "1h"],
    )
    .await;
    let stats = consumer
        .wait_for("the first 10 backfilled", |s| s.events_received >= 10)
        .await;
    let log_id = stats.log_id.clone();
    producer.publish("t", 10).await;

    // The producer's subscription skipped ahead: its batch starts after 15, the cursor is at
    // 10. Events 11..=15 must be polled for first, then the batch accepted.
    let batch = Delivery::new(&log_id, 15, &[16, 17, 18, 19, 20], 20);
    let (status, answer) = batch.post(http).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["after_sequence"], 20);
    let stats = consumer.stats().await;
    assert_exact(&stats, 20, 20);
    assert_eq!(stats.events_backfilled, 15, "10 at start, 5 for the gap");
    assert_eq!(stats.webhooks_received, 1);

    // The same batch again (the producer missed the 2xx): 2xx, its events dropped.
    let (status, _) = batch.post(http).await;
    assert_eq!(status, 200);
    let stats = consumer.stats().await;
    assert_eq!(stats.events_received, 20, "{stats:#?}");
    assert_eq!(stats.duplicates_dropped, 5, "{stats:#?}");
    assert_eq!(stats.webhooks_received, 2);
    assert_eq!(stats.events_missed, 0);
    consumer.stop().await;
}

#[tokio::test]
async fn tampered_stale_or_foreign_deliveries_are_refused_and_nothing_is_accepted() {
    let producer = spawn_producer(NO_WEBHOOKS).await;
    producer.publish("t", 3).await;
    let (consumer, http) = spawn_webhook_consumer(
        &producer,
        &["--from", "earliest", "--backfill-interval", "1h"],
    )
    .await;
    let stats = consumer
        .wait_for("3 events", |s| s.events_received >= 3)
        .await;
    let log_id = stats.log_id.clone();
    producer.publish("t", 2).await;

    let mut tampered = Delivery::new(&log_id, 3, &[4, 5], 5);
    let signed_body = tampered.body.clone();
    tampered.body = String::from_utf8(signed_body.clone())
        .unwrap()
        .replace("p4", "p9")
        .into_bytes();
    let mut stale = Delivery::new(&log_id, 3, &[4, 5], 5);
    stale.sent -= Duration::from_secs(301);
    let mut foreign_secret = Delivery::new(&log_id, 3, &[4, 5], 5);
    foreign_secret.secret = "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2Vj";
    for delivery in [&tampered, &stale, &foreign_secret] {
        // Sign the tampered one over the original body: the producer's signature, another body.
        let (status, answer) = if std::ptr::eq(delivery, &tampered) {
            post_signed_over(http, delivery, &signed_body).await
        } else {
            delivery.post(http).await
        };
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["code"], "unauthenticated", "{answer}");
    }
    let mut malformed = Delivery::new(&log_id, 3, &[4, 5], 5);
    malformed.body = br#"{"type":"pushpull.events","data":{}}"#.to_vec();
    let (status, answer) = malformed.post(http).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["reason"], "MALFORMED_REQUEST", "{answer}");

    let stats = consumer.stats().await;
    assert_exact(&stats, 3, 3);
    assert_eq!((stats.webhooks_refused, stats.webhooks_received), (4, 0));
    // The genuine batch still goes through.
    let (status, _) = Delivery::new(&log_id, 3, &[4, 5], 5).post(http).await;
    assert_eq!(status, 200);
    assert_exact(&consumer.stats().await, 5, 5);
    consumer.stop().await;
}

/// POSTs `delivery`'s body with the signature of `signed_body` (as a man in the middle would).
async fn post_signed_over(
    http: SocketAddr,
    delivery: &Delivery,
    signed_body: &[u8],
) -> (u16, Value) {
    let ts = delivery.sent.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let signature = standardwebhooks::Webhook::new(delivery.secret)
        .unwrap()
        .sign(&delivery.id, ts, signed_body)
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{http}/webhook"))
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(delivery.body.clone())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn with_a_checkpoint_the_file_holds_the_batch_cursor_when_the_2xx_arrives() {
    let producer = spawn_producer(NO_WEBHOOKS).await;
    producer.publish("t", 5).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cursor");
    let (consumer, http) = spawn_webhook_consumer(
        &producer,
        &[
            "--from",
            "earliest",
            "--backfill-interval",
            "1h",
            "--checkpoint",
            path.to_str().unwrap(),
            // Without the wait for the save, a 2xx would come long before this.
            "--checkpoint-interval",
            "1h",
        ],
    )
    .await;
    let stats = consumer
        .wait_for("5 events", |s| s.events_received >= 5)
        .await;
    producer.publish("t", 4).await;
    for (after, seqs, next) in [(5, &[6, 7][..], 7), (7, &[8, 9][..], 9)] {
        let (status, answer) = Delivery::new(&stats.log_id, after, seqs, next)
            .post(http)
            .await;
        assert_eq!(status, 200, "{answer}");
        let saved = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            saved,
            format!("log_id={}\nafter_sequence={next}\n", stats.log_id)
        );
    }
    consumer.stop().await;
}

#[tokio::test]
async fn webhook_mode_without_an_http_listener_refuses_to_start() {
    let config = consumer::Config::parse_from([
        "consumer",
        "--mode",
        "webhook",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let (grpc, _) = bind().await;
    let result = consumer::run(config, grpc, std::future::pending()).await;
    match result {
        Err(consumer::RunError::Config(message)) => {
            assert!(message.contains("--metrics-listen"), "{message}")
        }
        other => panic!("started without an HTTP listener: {other:?}"),
    }
}
