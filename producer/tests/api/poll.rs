use std::time::Duration;

use pushpull::{pb, time::proto_duration};
use tokio::time::Instant;

use crate::helpers::*;

#[tokio::test]
async fn poll_reads_after_the_cursor_and_returns_the_next_cursor() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("a", 5).await;
    let mut client = producer.client.clone();

    let response = client
        .poll(pb::PollRequest {
            after_sequence: Some(2),
            max_events: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(sequences(&response.events), vec![3, 4]);
    assert_eq!(response.next_after_sequence, 4);
    assert_eq!(response.head_sequence, 5);
    assert_eq!(response.oldest_sequence, 1);
    let rest = client
        .poll(poll_request(Some(response.next_after_sequence)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sequences(&rest.events), vec![5]);
}

#[tokio::test]
async fn unset_cursor_starts_at_the_head() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("a", 3).await;
    let response = producer
        .client
        .clone()
        .poll(poll_request(None))
        .await
        .unwrap()
        .into_inner();
    assert!(response.events.is_empty());
    assert_eq!(response.next_after_sequence, 3);
}

#[tokio::test]
async fn topic_filter_returns_matching_events_and_advances_past_the_rest() {
    let producer = spawn_producer(&[]).await;
    producer.publish("a", &["1"]).await;
    producer.publish("b", &["2", "3"]).await;
    producer.publish("c", &["4"]).await;
    producer.publish("b", &["5"]).await;
    let mut client = producer.client.clone();

    let response = client
        .poll(pb::PollRequest {
            after_sequence: Some(0),
            topics: vec!["a".into(), "c".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    assert_eq!(sequences(&response.events), vec![1, 4]);
    assert_eq!(
        response.next_after_sequence, 5,
        "the cursor skips the filtered-out tail so it is never rescanned"
    );
}

#[tokio::test]
async fn zero_max_events_means_the_default_of_1000() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("a", 1000).await;
    producer.publish_n("a", 500).await;
    let response = producer
        .client
        .clone()
        .poll(poll_request(Some(0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.events.len(), 1000);
    assert_eq!(response.next_after_sequence, 1000);
}

#[tokio::test]
async fn poll_accepts_ten_thousand_max_events() {
    let producer = spawn_producer(&[]).await;
    for _ in 0..10 {
        producer.publish_n("a", 1000).await;
    }
    let response = producer
        .client
        .clone()
        .poll(pb::PollRequest {
            after_sequence: Some(0),
            max_events: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.events.len(), 10_000);
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_an_event_arrives() {
    let producer = spawn_producer(&[]).await;
    let mut client = producer.client.clone();
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let response = client
            .poll(pb::PollRequest {
                after_sequence: Some(0),
                max_wait: Some(proto_duration(Duration::from_secs(30))),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (response, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "a long poll on an empty log must wait"
    );

    producer.publish("a", &["hello"]).await;

    let (response, elapsed) = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("long poll returned promptly after the publish")
        .unwrap();
    assert_eq!(sequences(&response.events), vec![1]);
    assert!(elapsed < Duration::from_secs(30));
}

#[tokio::test]
async fn long_poll_with_filter_ignores_other_topics_until_a_match() {
    let producer = spawn_producer(&[]).await;
    let mut client = producer.client.clone();
    let waiting = tokio::spawn(async move {
        client
            .poll(pb::PollRequest {
                after_sequence: Some(0),
                topics: vec!["wanted".into()],
                max_wait: Some(proto_duration(Duration::from_secs(30))),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    });
    producer.publish_n("noise", 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiting.is_finished(),
        "non-matching events must not end a long poll"
    );
    producer.publish("wanted", &["yes"]).await;
    let response = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sequences(&response.events), vec![11]);
    assert_eq!(response.next_after_sequence, 11);
}

#[tokio::test]
async fn long_poll_returns_empty_when_max_wait_elapses_and_not_much_later() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("a", 2).await;
    let started = Instant::now();
    let response = producer
        .client
        .clone()
        .poll(pb::PollRequest {
            after_sequence: Some(2),
            max_wait: Some(proto_duration(Duration::from_millis(300))),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let elapsed = started.elapsed();
    assert!(response.events.is_empty());
    assert_eq!(response.next_after_sequence, 2);
    assert!(
        elapsed >= Duration::from_millis(300),
        "returned early: {elapsed:?}"
    );
    assert!(elapsed < PROMPTLY, "returned late: {elapsed:?}");
}

#[tokio::test]
async fn responses_stop_growing_at_the_batch_byte_limit() {
    let producer = spawn_producer(&["--max-batch-bytes", "1000"]).await;
    let payload = "x".repeat(400);
    producer
        .publish("a", &[&payload, &payload, &payload, &payload])
        .await;
    let response = producer
        .client
        .clone()
        .poll(poll_request(Some(0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sequences(&response.events), vec![1, 2, 3]);
    assert_eq!(response.next_after_sequence, 3);
}
