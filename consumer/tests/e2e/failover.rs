//! Failover: one producer behind two proxies, A and B, stands for two producers of one log
//! (the same log_id, the same sequences), and the consumer is given both, `--producer A,B`.
//! When the one it reads from goes away (its connections cut, new ones refused), the consumer
//! goes on from the other with its cursor, missing and repeating nothing; when that one goes
//! away in turn, the list wraps around to the first.

use pushpull::pb;

use crate::helpers::*;

/// Publishes `n` events, then waits until the consumer has read up to the last of them, is
/// connected and reads through `via`; checks it has every event of the log exactly once (so
/// nothing read before went missing or came again on the way) and returns its stats.
async fn read_through(
    producer: &TestProducer,
    consumer: &TestConsumer,
    n: usize,
    via: &Proxy,
) -> pb::GetStatsResponse {
    let (_, last) = producer.publish("t", n).await;
    let url = via.url();
    let stats = consumer
        .wait_for(&format!("event {last}, read through {url}"), |s| {
            s.after_sequence == Some(last) && s.connected && s.current_producer == url
        })
        .await;
    assert_exact(&stats, last, last);
    assert_eq!(stats.log_changes, 0, "{stats:#?}");
    stats
}

async fn starts_on_a(mode_args: &[&str]) -> (TestProducer, Proxy, Proxy, TestConsumer) {
    let producer = spawn_producer(&[]).await;
    let a = Proxy::start(producer.addr).await;
    let b = Proxy::start(producer.addr).await;
    let list = format!("{},{}", a.url(), b.url());
    let mut args = vec!["--from", "earliest"];
    args.extend_from_slice(mode_args);
    let consumer = spawn_consumer(&list, &args).await;
    let stats = consumer.wait_connected().await;
    assert_eq!(stats.producer, list);
    assert_eq!(stats.current_producer, a.url(), "{stats:#?}");
    (producer, a, b, consumer)
}

async fn fails_over_and_wraps_around(mode_args: &[&str]) {
    let (producer, a, b, consumer) = starts_on_a(mode_args).await;

    let stats = read_through(&producer, &consumer, 100, &a).await;
    assert_eq!(stats.failovers, 0, "{stats:#?}");
    assert_eq!(b.accepted(), 0, "B is not asked while A answers");

    // A goes away: its connections are cut and new ones refused. B takes over.
    a.close().await;
    let stats = read_through(&producer, &consumer, 100, &b).await;
    assert!(stats.failovers >= 1, "{stats:#?}");
    assert!(b.accepted() >= 1, "the consumer read through B");

    // A comes back and B goes away: round the list, back to A.
    a.open().await;
    b.close().await;
    let stats = read_through(&producer, &consumer, 100, &a).await;
    assert!(stats.failovers >= 2, "{stats:#?}");

    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test]
async fn push_fails_over_to_the_next_producer_and_wraps_around_without_loss_or_repeats() {
    fails_over_and_wraps_around(&["--mode", "push"]).await;
}

#[tokio::test]
async fn poll_fails_over_to_the_next_producer_and_wraps_around_without_loss_or_repeats() {
    fails_over_and_wraps_around(&["--mode", "poll", "--poll-interval", "5ms"]).await;
}

#[tokio::test]
async fn long_poll_fails_over_to_the_next_producer_and_wraps_around_without_loss_or_repeats() {
    fails_over_and_wraps_around(&["--mode", "long-poll", "--max-wait", "2s"]).await;
}

#[tokio::test]
async fn with_every_producer_gone_the_consumer_keeps_trying_and_resumes_on_the_first_back() {
    let (producer, a, b, consumer) = starts_on_a(&["--mode", "push"]).await;
    read_through(&producer, &consumer, 10, &a).await;

    a.close().await;
    b.close().await;
    // Both refuse: the consumer goes round the list, backing off once per round.
    let stats = consumer
        .wait_for("a failed round of both producers", |s| {
            !s.connected && s.failovers >= 2
        })
        .await;
    assert_eq!(stats.events_received, 10, "{stats:#?}");

    // Events published meanwhile are read once B is back.
    producer.publish("t", 10).await;
    b.open().await;
    let stats = read_through(&producer, &consumer, 10, &b).await;
    assert_eq!(stats.events_received, 30, "{stats:#?}");

    consumer.stop().await;
    producer.stop().await;
}
