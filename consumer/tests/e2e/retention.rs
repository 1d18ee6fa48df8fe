//! An expired cursor: the consumer counts exactly what it missed and carries on, and the refused
//! call is the only extra RPC it costs: the OUT_OF_RANGE status itself says where the log now
//! starts and how much is gone, so nothing is asked twice.

use std::time::Duration;

use crate::helpers::*;

/// Long enough for a wrongly sent extra RPC to be counted before the count is judged.
const SETTLE: Duration = Duration::from_millis(150);

/// A producer retaining 21..=30 of 30 events, and a consumer starting after 3 (expired).
async fn expired_start(mode_args: &[&str]) -> (TestProducer, TestConsumer) {
    let producer = spawn_producer(&["--retention-events", "10"]).await;
    producer.publish("t", 30).await;
    let mut args = vec!["--from", "3"];
    args.extend_from_slice(mode_args);
    let consumer = spawn_consumer(&producer.url(), &args).await;
    (producer, consumer)
}

/// Waits until the retained events and `rpcs` RPCs have been seen, lets any extra RPC happen,
/// and checks the counts are exact.
async fn assert_after_expiry(consumer: &TestConsumer, rpcs: u64) {
    consumer
        .wait_for("the retained events", |s| {
            s.events_received >= 10 && s.rpcs_sent >= rpcs
        })
        .await;
    tokio::time::sleep(SETTLE).await;
    let stats = consumer.stats().await;
    assert_eq!(stats.events_missed, 17, "events 4..=20 expired: {stats:#?}");
    assert_eq!(stats.events_received, 10, "{stats:#?}");
    assert_eq!(stats.last_sequence, 30, "{stats:#?}");
    assert_eq!(stats.duplicates_dropped, 0, "{stats:#?}");
    assert_eq!(stats.log_changes, 0, "{stats:#?}");
    assert_eq!(
        stats.rpcs_sent, rpcs,
        "the refused call, then reading on from the oldest, and nothing else: {stats:#?}"
    );
}

/// After the expiry, 5 more events arrive on the same reader.
async fn assert_carries_on(producer: &TestProducer, consumer: &TestConsumer, rpcs: u64) {
    producer.publish("t", 5).await;
    consumer
        .wait_for("5 more", |s| s.events_received >= 15 && s.rpcs_sent >= rpcs)
        .await;
    tokio::time::sleep(SETTLE).await;
    let stats = consumer.stats().await;
    assert_eq!(stats.events_received, 15, "{stats:#?}");
    assert_eq!(stats.events_missed, 17, "{stats:#?}");
    assert_eq!(stats.duplicates_dropped, 0, "{stats:#?}");
    assert_eq!(stats.last_sequence, 35, "{stats:#?}");
    assert_eq!(stats.rpcs_sent, rpcs, "{stats:#?}");
}

#[tokio::test]
async fn push_counts_exactly_the_expired_events_with_one_refused_subscribe() {
    let (producer, consumer) = expired_start(&["--mode", "push"]).await;
    // Subscribe(after 3) refused; Subscribe(after 20) streams 21..=30 and stays open.
    assert_after_expiry(&consumer, 2).await;
    // The same stream delivers what comes next.
    assert_carries_on(&producer, &consumer, 2).await;
}

#[tokio::test]
async fn long_poll_counts_exactly_the_expired_events_with_one_refused_poll() {
    let (producer, consumer) = expired_start(&["--mode", "long-poll", "--max-wait", "30s"]).await;
    // Poll(after 3) refused; Poll(after 20) returns 21..=30; Poll(after 30) waits.
    assert_after_expiry(&consumer, 3).await;
    // The waiting poll returns the 5; the next one waits.
    assert_carries_on(&producer, &consumer, 4).await;
}

#[tokio::test]
async fn poll_counts_exactly_the_expired_events_with_one_refused_poll() {
    // An interval of an hour: every RPC counted comes from the expiry and the catch-up.
    let (_producer, consumer) = expired_start(&[
        "--mode",
        "poll",
        "--poll-interval",
        "1h",
        "--max-events",
        "4",
    ])
    .await;
    // Poll(after 3) refused; then 21..=24, 25..=28, 29..=30 back to back, as each batch was
    // full with more waiting.
    assert_after_expiry(&consumer, 4).await;
}
