//! `GET /events`: Server-Sent Events with `id:` = sequence, resumable with `Last-Event-ID`.

use std::time::Duration;

use crate::{helpers::*, http_client::*};

#[tokio::test]
async fn sse_streams_each_event_with_its_sequence_as_id_and_resumes_from_last_event_id() {
    let producer = spawn_http_producer(&[]).await;
    let http = producer.http.unwrap();
    producer.publish("a", &["before"]).await; // 1

    let mut sse = SseClient::connect(http, "/events?after=0", None).await;
    assert_eq!(sse.status, 200);
    assert!(
        sse.content_type.starts_with("text/event-stream"),
        "{}",
        sse.content_type
    );
    let open = sse.next_data().await.unwrap();
    assert_eq!(open.event.as_deref(), Some("hello"));
    assert_eq!(open.retry, Some(1000), "a retry: hint comes first");
    let hello = open.json();
    assert_eq!(hello["after_sequence"], 0);
    assert_eq!(hello["head_sequence"], 1);

    http_publish(http, "a", &["one", "two", "three"]).await; // 2..=4
    let mut got = Vec::new();
    for _ in 0..4 {
        let frame = sse.next_data().await.unwrap();
        assert_eq!(frame.event, None, "events use the default `message` type");
        let event = frame.json();
        assert_eq!(
            frame.id.as_deref(),
            Some(event["sequence"].to_string().as_str())
        );
        got.push((
            event["sequence"].as_u64().unwrap(),
            event["payload"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        got,
        vec![
            (1, "before".into()),
            (2, "one".into()),
            (3, "two".into()),
            (4, "three".into())
        ]
    );
    drop(sse);

    // Events published while the client is away are not lost: a browser reconnects with the
    // original URL plus Last-Event-ID, and the header wins over `after`.
    producer.publish("a", &["five", "six"]).await;
    let mut sse = SseClient::connect(http, "/events?after=0", Some("4")).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.next_data().await.unwrap().json()["after_sequence"], 4);
    let ids: Vec<String> = [
        sse.next_data().await.unwrap(),
        sse.next_data().await.unwrap(),
    ]
    .into_iter()
    .map(|f| f.id.unwrap())
    .collect();
    assert_eq!(ids, vec!["5", "6"]);
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn sse_filters_topics_and_sends_keep_alive_comments_when_idle() {
    let producer = spawn_http_producer(&["--heartbeat-interval", "100ms"]).await;
    let http = producer.http.unwrap();
    let mut sse = SseClient::connect(http, "/events?topics=b", None).await;
    assert_eq!(
        sse.next_data().await.unwrap().event.as_deref(),
        Some("hello")
    );

    // Idle: keep-alive comments only.
    let idle = sse.next().await.unwrap();
    assert!(idle.comments.iter().any(|c| c == "keep-alive"), "{idle:?}");
    assert!(idle.data.is_empty());

    producer.publish("a", &["x"]).await;
    producer.publish("b", &["y"]).await;
    let frame = sse.next_data().await.unwrap();
    assert_eq!(frame.id.as_deref(), Some("2"));
    assert_eq!(frame.json()["topic"], "b");
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn sse_subscriber_overtaken_by_retention_gets_an_error_event() {
    let producer =
        spawn_http_producer(&["--retention-events", "5", "--max-batch-events", "1"]).await;
    let http = producer.http.unwrap();
    producer.publish_n("a", 3).await;
    let mut sse = SseClient::connect(http, "/events?after=0", None).await;
    sse.next_data().await.unwrap(); // hello
    // The client reads nothing while far more than the retention is appended.
    for _ in 0..20 {
        producer.publish_n("a", 10).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut last = None;
    while let Some(frame) = sse.next_data().await {
        if frame.event.as_deref() == Some("end") {
            last = Some(frame.json());
            break;
        }
    }
    let error = last.expect("the stream ends with an `end` event");
    assert_eq!(error["code"], "cursor_expired", "{error}");
    assert!(sse.next().await.is_none(), "and then ends");
    producer.stop().await.unwrap();
}
