//! An expired cursor: the consumer counts exactly what it missed and carries on.

use crate::helpers::*;

async fn counts_missed_events_and_continues(mode_args: &[&str]) {
    let producer = spawn_producer(&["--retention-events", "10"]).await;
    producer.publish("t", 30).await; // retained: 21..=30

    let mut args = vec!["--from", "3"];
    args.extend_from_slice(mode_args);
    let consumer = spawn_consumer(&producer.url(), &args).await;
    let stats = consumer
        .wait_for("the retained events", |s| s.events_received >= 10)
        .await;
    assert_eq!(stats.events_missed, 17, "events 4..=20 expired: {stats:#?}");
    assert_eq!(stats.last_sequence, 30);

    producer.publish("t", 5).await;
    let stats = consumer
        .wait_for("5 more", |s| s.events_received >= 15)
        .await;
    assert_eq!(stats.events_received, 15);
    assert_eq!(stats.events_missed, 17);
    assert_eq!(stats.duplicates_dropped, 0);
    assert_eq!(stats.last_sequence, 35);
}

#[tokio::test]
async fn poll_counts_exactly_the_expired_events() {
    counts_missed_events_and_continues(&["--mode", "poll", "--poll-interval", "10ms"]).await;
}

#[tokio::test]
async fn push_counts_exactly_the_expired_events() {
    counts_missed_events_and_continues(&["--mode", "push"]).await;
}

#[tokio::test]
async fn long_poll_counts_exactly_the_expired_events() {
    counts_missed_events_and_continues(&["--mode", "long-poll", "--max-wait", "2s"]).await;
}
