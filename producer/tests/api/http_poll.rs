//! `GET /poll` and `POST /publish`: the gRPC cursor rules and limits, in JSON.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{helpers::*, http_client::*};

#[tokio::test]
async fn publish_and_poll_follow_the_grpc_cursor_rules() {
    let producer = spawn_http_producer(&[]).await;
    let http = producer.http.unwrap();

    let (status, published) = post_publish(
        http,
        &json!({"events": [
            {"topic": "a", "payload": "héllo"},
            {"topic": "b", "payload": "/wAQ", "encoding": "base64"},
            {"topic": "a", "payload": ""},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(
        (
            published["first_sequence"].as_u64(),
            published["last_sequence"].as_u64()
        ),
        (Some(1), Some(3))
    );
    producer.publish("b", &["grpc"]).await; // 4, through gRPC

    let (status, batch) = get_json(http, "/poll?after=0").await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(seqs(&batch["events"]), vec![1, 2, 3, 4]);
    let events = &batch["events"];
    assert_eq!(events[0]["payload"], "héllo");
    assert_eq!(events[0]["encoding"], "utf8");
    assert_eq!(
        events[1]["payload"], "/wAQ",
        "non-UTF-8 payloads are base64"
    );
    assert_eq!(events[1]["encoding"], "base64");
    assert_eq!(events[3]["payload"], "grpc");
    assert!(events[0]["produced_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(batch["next_after_sequence"], 4);
    assert_eq!(
        (
            batch["head_sequence"].as_u64(),
            batch["oldest_sequence"].as_u64()
        ),
        (Some(4), Some(1))
    );
    assert_eq!(
        batch["log_id"].as_str(),
        Some(published["log_id"].as_str().unwrap())
    );

    // The same batch through gRPC: same sequences, same bytes.
    let grpc = producer
        .client
        .clone()
        .poll(poll_request(Some(0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sequences(&grpc.events), vec![1, 2, 3, 4]);
    assert_eq!(&grpc.events[1].payload[..], &[0xff, 0x00, 0x10]);
    assert_eq!(&grpc.events[0].payload[..], "héllo".as_bytes());

    // max_events bounds the batch and the cursor; a filter moves the cursor past what it skips.
    let (_, batch) = get_json(http, "/poll?after=1&max_events=2").await;
    assert_eq!(seqs(&batch["events"]), vec![2, 3]);
    assert_eq!(batch["next_after_sequence"], 3);
    let (_, batch) = get_json(http, "/poll?after=0&topics=b").await;
    assert_eq!(seqs(&batch["events"]), vec![2, 4]);
    let (_, batch) = get_json(http, "/poll?after=0&topics=a,zzz").await;
    assert_eq!(seqs(&batch["events"]), vec![1, 3]);
    assert_eq!(
        batch["next_after_sequence"], 4,
        "moves past filtered-out events"
    );

    // No cursor: from the head, so an immediate poll is empty.
    let (_, batch) = get_json(http, "/poll").await;
    assert_eq!(seqs(&batch["events"]), Vec::<u64>::new());
    assert_eq!(batch["next_after_sequence"], 4);
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn long_poll_answers_as_soon_as_an_event_exists_and_empty_at_the_deadline() {
    let producer = spawn_http_producer(&[]).await;
    let http = producer.http.unwrap();

    let started = Instant::now();
    let (status, batch) = get_json(http, "/poll?after=0&wait=300ms").await;
    assert_eq!(status, 200);
    assert!(seqs(&batch["events"]).is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "{:?}",
        started.elapsed()
    );

    let waiting = tokio::spawn(async move { get_json(http, "/poll?after=0&wait=30").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let published_at = Instant::now();
    producer.publish("t", &["x"]).await;
    let (status, batch) = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(seqs(&batch["events"]), vec![1]);
    assert!(
        published_at.elapsed() < Duration::from_secs(2),
        "the long poll answered {:?} after the publish",
        published_at.elapsed()
    );
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_400_or_410_naming_the_field_and_appends_nothing() {
    let producer = spawn_http_producer(&["--retention-events", "10"]).await;
    let http = producer.http.unwrap();
    producer.publish_n("a", 30).await; // oldest retained: 21, head: 30

    let gets: Vec<(&str, u16, &str, Option<&str>)> = vec![
        ("/poll?after=abc", 400, "invalid_argument", Some("after")),
        ("/poll?after=-1", 400, "invalid_argument", Some("after")),
        (
            "/poll?after=0&topics=a,b%20c",
            400,
            "invalid_argument",
            Some("topics[1]"),
        ),
        (
            "/poll?max_events=10001",
            400,
            "invalid_argument",
            Some("max_events"),
        ),
        (
            "/poll?max_events=many",
            400,
            "invalid_argument",
            Some("max_events"),
        ),
        ("/poll?wait=61s", 400, "invalid_argument", Some("wait")),
        ("/poll?wait=-1", 400, "invalid_argument", Some("wait")),
        ("/poll?wait=soon", 400, "invalid_argument", Some("wait")),
        ("/poll?after=5", 410, "cursor_expired", Some("after")),
        ("/poll?after=31", 400, "cursor_ahead", Some("after")),
        ("/events?after=5", 410, "cursor_expired", Some("after")),
        (
            "/events?topics=a/b",
            400,
            "invalid_argument",
            Some("topics[0]"),
        ),
        ("/ws?after=5", 410, "cursor_expired", Some("after")),
        // A parameter given twice is ambiguous: refused in JSON like the rest, not in axum's
        // plain text (found by http_hostile.rs).
        (
            "/poll?after=1&after=2",
            400,
            "invalid_argument",
            Some("query"),
        ),
        (
            "/events?topics=a&topics=b",
            400,
            "invalid_argument",
            Some("query"),
        ),
        ("/ws?wait=1&wait=1", 400, "invalid_argument", Some("query")),
    ];
    for (path, status, code, field) in gets {
        let (got, body) = get_json(http, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(body["code"], code, "{path}: {body}");
        assert_eq!(body["field"].as_str(), field, "{path}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{path}");
    }
    let (_, expired) = get_json(http, "/poll?after=5").await;
    assert_eq!(expired["oldest_sequence"], 21);
    assert_eq!(expired["head_sequence"], 30);
    assert_eq!(expired["missed"], 15);
    assert!(
        expired["message"]
            .as_str()
            .unwrap()
            .contains("oldest_sequence is 21")
    );

    // Last-Event-ID is a cursor too, and the error says so.
    let sse = SseClient::connect(http, "/events", Some("3")).await;
    assert_eq!(sse.status, 410);

    let too_big = "x".repeat(1024 * 1024 + 1);
    let posts: Vec<(Value, &str, &str)> = vec![
        (json!({"events": []}), "events", "events is empty"),
        (
            json!({"events": [{"topic": "ok"}, {"topic": "a b"}]}),
            "events[1].topic",
            "\"a b\"",
        ),
        (
            json!({"events": [{"topic": "a", "payload": too_big}]}),
            "events[0].payload",
            "1048577 bytes",
        ),
        (
            json!({"events": [{"topic": "a", "payload": "!", "encoding": "base64"}]}),
            "events[0].payload",
            "base64",
        ),
        (
            json!({"events": [{"topic": "a", "payload": "x", "encoding": "rot13"}]}),
            "body",
            "rot13",
        ),
        (json!({"event": []}), "body", "events"),
    ];
    for (body, field, needle) in posts {
        let (status, answer) = post_publish(http, &body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(needle),
            "{answer}"
        );
    }
    let not_json = reqwest::Client::new()
        .post(url(http, "/publish"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);

    let (_, batch) = get_json(http, "/poll?after=0").await;
    assert_eq!(batch["head_sequence"], 30, "nothing was appended");
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn the_dashboard_page_is_served_at_the_root() {
    let producer = spawn_http_producer(&[]).await;
    let response = reqwest::get(url(producer.http.unwrap(), "/"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    // The streams and fetches it makes, each with the token when the producer checks tokens
    // (the browser test, scripts/suites/65-dashboard.sh, checks they work).
    for needle in [
        "new EventSource(streamUrl(\"/events\"))",
        "streamUrl(\"/ws\")",
        "api(\"/consumers\")",
        "authorization: \"Bearer \"",
    ] {
        assert!(page.contains(needle), "the page uses {needle}");
    }
    producer.stop().await.unwrap();
}
