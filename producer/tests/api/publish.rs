use pushpull::pb;

use crate::helpers::*;

#[tokio::test]
async fn publish_assigns_consecutive_sequences_in_request_order() {
    let producer = spawn_producer(&[]).await;

    let first = producer.publish("a", &["x", "y", "z"]).await;
    let second = producer.publish("b", &["w"]).await;

    assert_eq!(first, (1, 3));
    assert_eq!(second, (4, 4));
    let batch = producer
        .client
        .clone()
        .poll(poll_request(Some(0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sequences(&batch.events), vec![1, 2, 3, 4]);
    let payloads: Vec<&[u8]> = batch.events.iter().map(|e| &e.payload[..]).collect();
    assert_eq!(payloads, vec![&b"x"[..], b"y", b"z", b"w"]);
    assert_eq!(batch.events[3].topic, "b");
    assert!(batch.events.iter().all(|e| e.produced_at.is_some()));
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn publish_response_names_the_log() {
    let producer = spawn_producer(&[]).await;
    let response = producer
        .client
        .clone()
        .publish(pb::PublishRequest {
            events: vec![new_event("a", b"")],
        })
        .await
        .unwrap()
        .into_inner();
    let poll = producer
        .client
        .clone()
        .poll(poll_request(None))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.log_id.is_empty());
    assert_eq!(response.log_id, poll.log_id);
}

#[tokio::test]
async fn each_producer_start_has_a_new_log_id() {
    let a = spawn_producer(&[]).await;
    let b = spawn_producer(&[]).await;
    let id = |p: &TestProducer| {
        let mut c = p.client.clone();
        async move {
            c.poll(poll_request(None))
                .await
                .unwrap()
                .into_inner()
                .log_id
        }
    };
    assert_ne!(id(&a).await, id(&b).await);
}

#[tokio::test]
async fn publish_accepts_a_thousand_events_and_a_full_size_payload() {
    let producer = spawn_producer(&[]).await;
    assert_eq!(producer.publish_n("bulk", 1000).await, (1, 1000));
    let big = vec![7u8; 1024 * 1024];
    let response = producer
        .client
        .clone()
        .publish(pb::PublishRequest {
            events: vec![new_event("big", &big)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.first_sequence, 1001);
}
