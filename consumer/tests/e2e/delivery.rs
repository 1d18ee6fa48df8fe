//! Each mode delivers exactly what was published, in order, with and without a topic filter.

use std::time::Duration;

use crate::helpers::*;

const TOPICS: [&str; 3] = ["quotes.AAPL", "quotes.MSFT", "news.tech"];

/// Publishes 5 rounds of 20 events on each topic, interleaved; returns the sequences of the
/// events on `wanted` topics (all topics when empty).
async fn publish_rounds(producer: &TestProducer, wanted: &[&str]) -> Vec<u64> {
    let mut matching = Vec::new();
    for _ in 0..5 {
        for topic in TOPICS {
            let (first, last) = producer.publish(topic, 20).await;
            if wanted.is_empty() || wanted.contains(&topic) {
                matching.extend(first..=last);
            }
        }
    }
    matching
}

async fn delivers_exactly(mode_args: &[&str], filter: &[&str]) {
    let producer = spawn_producer(&[]).await;
    let topics_arg = filter.join(",");
    let mut args = vec!["--from", "earliest"];
    args.extend_from_slice(mode_args);
    if !filter.is_empty() {
        args.extend(["--topics", &topics_arg]);
    }

    // Half the events exist before the consumer starts (catch-up), half come after (live).
    let mut expected = publish_rounds(&producer, filter).await;
    let consumer = spawn_consumer(&producer.url(), &args).await;
    consumer.wait_connected().await;
    expected.extend(publish_rounds(&producer, filter).await);

    let n = expected.len() as u64;
    let last = *expected.last().unwrap();
    consumer
        .wait_for("every matching event", |s| s.events_received >= n)
        .await;
    // Give a wrongly duplicated or extra event time to show up before judging.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stats = consumer.stats().await;
    assert_exact(&stats, n, last);
    assert!(stats.rpcs_sent >= 1);
    assert_eq!(stats.reconnects, 0, "{stats:#?}");
    let filter_owned: Vec<String> = filter.iter().map(|t| t.to_string()).collect();
    assert_eq!(stats.topics, filter_owned);
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test]
async fn push_delivers_every_event_once_in_order() {
    delivers_exactly(&["--mode", "push"], &[]).await;
}

#[tokio::test]
async fn push_with_a_topic_filter_delivers_exactly_the_matching_events() {
    delivers_exactly(&["--mode", "push"], &["quotes.AAPL", "news.tech"]).await;
}

#[tokio::test]
async fn poll_delivers_every_event_once_in_order() {
    delivers_exactly(
        &[
            "--mode",
            "poll",
            "--poll-interval",
            "20ms",
            "--max-events",
            "37",
        ],
        &[],
    )
    .await;
}

#[tokio::test]
async fn poll_with_a_topic_filter_delivers_exactly_the_matching_events() {
    delivers_exactly(
        &["--mode", "poll", "--poll-interval", "20ms"],
        &["quotes.MSFT"],
    )
    .await;
}

#[tokio::test]
async fn long_poll_delivers_every_event_once_in_order() {
    delivers_exactly(&["--mode", "long-poll", "--max-wait", "5s"], &[]).await;
}

#[tokio::test]
async fn long_poll_with_a_topic_filter_delivers_exactly_the_matching_events() {
    delivers_exactly(
        &[
            "--mode",
            "long-poll",
            "--max-wait",
            "5s",
            "--max-events",
            "7",
        ],
        &["quotes.AAPL", "quotes.MSFT"],
    )
    .await;
}

#[tokio::test]
async fn from_latest_skips_the_backlog() {
    let producer = spawn_producer(&[]).await;
    producer.publish("old", 50).await;
    let consumer = spawn_consumer(&producer.url(), &["--mode", "push"]).await;
    let stats = consumer.wait_connected().await;
    assert_eq!(stats.after_sequence, Some(50));
    let (_, last) = producer.publish("new", 5).await;
    let stats = consumer
        .wait_for("5 new events", |s| s.events_received >= 5)
        .await;
    assert_exact(&stats, 5, last);
}

#[tokio::test]
async fn interval_poll_costs_rpcs_when_idle_and_long_poll_does_not() {
    let producer = spawn_producer(&[]).await;
    let poll = spawn_consumer(
        &producer.url(),
        &["--mode", "poll", "--poll-interval", "10ms"],
    )
    .await;
    let long = spawn_consumer(
        &producer.url(),
        &["--mode", "long-poll", "--max-wait", "10s"],
    )
    .await;
    poll.wait_connected().await;
    long.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (p, l) = (poll.stats().await, long.stats().await);
    assert!(
        p.empty_responses >= 5,
        "interval polling asks again and again: {p:#?}"
    );
    assert!(
        l.rpcs_sent <= 2,
        "a long poll waits instead of asking: {l:#?}"
    );
}
