//! Resumption: after a cut connection, a consumer restart with a checkpoint (switching mode on
//! the way), and a producer restart with a new log.

use std::time::Duration;

use crate::helpers::*;

async fn survives_cut_connections(mode_args: &[&str]) {
    let producer = spawn_producer(&[]).await;
    let proxy = Proxy::start(producer.addr).await;
    let mut args = vec!["--from", "earliest"];
    args.extend_from_slice(mode_args);
    let consumer = spawn_consumer(&proxy.url(), &args).await;
    consumer.wait_connected().await;

    let mut last = 0;
    for round in 0..40 {
        last = producer.publish("t", 50).await.1;
        if round % 10 == 5 {
            proxy.cut();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let stats = consumer
        .wait_for("all 2000 events", |s| s.events_received >= 2000)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats_after = consumer.stats().await;
    assert_exact(&stats_after, 2000, last);
    // A cut between two polls is healed by the channel itself (no failed call, so no counted
    // reconnect); the proxy sees the new connections either way.
    assert!(
        proxy.accepted() >= 2,
        "the cuts must have forced new connections: {stats:#?}"
    );
    consumer.stop().await;
}

#[tokio::test]
async fn push_resumes_after_cut_connections_without_loss_or_repeats() {
    survives_cut_connections(&["--mode", "push"]).await;
}

#[tokio::test]
async fn poll_resumes_after_cut_connections_without_loss_or_repeats() {
    survives_cut_connections(&["--mode", "poll", "--poll-interval", "5ms"]).await;
}

#[tokio::test]
async fn long_poll_resumes_after_cut_connections_without_loss_or_repeats() {
    survives_cut_connections(&["--mode", "long-poll", "--max-wait", "2s"]).await;
}

#[tokio::test]
async fn a_restarted_consumer_continues_from_its_checkpoint_in_another_mode() {
    let producer = spawn_producer(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cursor");
    let checkpoint_arg = checkpoint.to_str().unwrap();
    producer.publish("t", 100).await;

    let modes: [&[&str]; 3] = [
        &["--mode", "push"],
        &["--mode", "poll", "--poll-interval", "10ms"],
        &["--mode", "long-poll", "--max-wait", "2s"],
    ];
    let mut last = 0;
    for (i, mode) in modes.into_iter().enumerate() {
        let mut args = vec!["--from", "earliest", "--checkpoint", checkpoint_arg];
        args.extend_from_slice(mode);
        let consumer = spawn_consumer(&producer.url(), &args).await;
        // While the consumer is down, more events arrive; it must get exactly those.
        last = producer.publish("t", 100).await.1;
        let expected = if i == 0 { 200 } else { 100 };
        consumer
            .wait_for("the events since the checkpoint", |s| {
                s.events_received >= expected
            })
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_exact(&consumer.stats().await, expected, last);
        consumer.stop().await;
        let saved = std::fs::read_to_string(&checkpoint).unwrap();
        assert!(
            saved.contains(&format!("after_sequence={last}\n")),
            "checkpoint after {mode:?}: {saved}"
        );
    }
    assert_eq!(last, 400);
}

#[tokio::test]
async fn a_new_producer_log_is_detected_and_read_from_its_start() {
    let first = spawn_producer(&[]).await;
    let proxy = Proxy::start(first.addr).await;
    let consumer = spawn_consumer(&proxy.url(), &["--mode", "push", "--from", "earliest"]).await;
    first.publish("t", 30).await;
    consumer
        .wait_for("30 events from the first log", |s| s.events_received >= 30)
        .await;
    let old_log = consumer.stats().await.log_id;

    // The producer "restarts": a new process with a new, shorter log at the same address.
    let second = spawn_producer(&[]).await;
    second.publish("t", 10).await;
    proxy.retarget(second.addr);
    first.stop().await;

    let stats = consumer
        .wait_for("the second log's 10 events", |s| s.events_received >= 40)
        .await;
    assert_ne!(stats.log_id, old_log);
    assert_eq!(stats.log_changes, 1, "{stats:#?}");
    assert_exact(&stats, 40, 10);

    // A long new log (head beyond the old cursor) is caught too: the log_id, not the
    // cursor, decides.
    let third = spawn_producer(&[]).await;
    third.publish("t", 100).await;
    proxy.retarget(third.addr);
    let stats = consumer
        .wait_for("the third log's 100 events", |s| s.events_received >= 140)
        .await;
    assert_eq!(stats.log_changes, 2, "{stats:#?}");
    assert_exact(&stats, 140, 100);
}
