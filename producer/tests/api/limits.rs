//! The producer's capacity limits and its stall timeout under abuse: one client too many is
//! refused with a status naming the limit and its flag, a client that stops reading is ended,
//! and everyone else goes on being served.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use pushpull::{
    errors::{ErrorInfo, ErrorReason, key},
    pb,
    time::proto_duration,
};
use serde_json::Value;
use tokio::time::{Instant, sleep, timeout};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::{
    helpers::*,
    http_client::*,
    http_metrics::{get, scrape},
};

/// Asserts `status` is a RESOURCE_EXHAUSTED refusal with `reason` naming `flag` and `limit`.
fn assert_refused(status: &Status, reason: ErrorReason, flag: &str, limit: u64) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(flag), "{}", status.message());
    let info = ErrorInfo::from_status(status).expect("an ErrorInfo");
    assert_eq!(info.reason, reason);
    assert_eq!(info.get(key::FLAG), Some(flag));
    assert_eq!(info.get_u64(key::LIMIT), Some(limit));
    assert!(
        status.get_details_retry_info().is_some(),
        "a refused client is told when to come back"
    );
}

/// Asserts an HTTP refusal: 503, `Retry-After`, our JSON error naming `flag`.
async fn assert_http_refused(response: reqwest::Response, reason: &str, flag: &str) {
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], "resource_exhausted", "{body}");
    assert_eq!(body["metadata"]["flag"], flag, "{body}");
    assert!(body["message"].as_str().unwrap().contains(flag), "{body}");
}

/// Scrapes until `metric` reads `value` (a state the producer reaches on its own, such as a
/// departed client's slot given back); panics after `PROMPTLY`.
async fn until_metric(http: SocketAddr, metric: &str, value: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let m = scrape(http).await;
        if m.get(metric) == Some(&value) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{metric} is {:?}, not {value}",
            m.get(metric)
        );
        sleep(Duration::from_millis(20)).await;
    }
}

const SUBSCRIBERS_IN_USE: &str = "pushpull_producer_limit_in_use{resource=\"subscribers\"}";
const LONG_POLLS_IN_USE: &str = "pushpull_producer_limit_in_use{resource=\"long_polls\"}";
const HTTP_STREAMS_IN_USE: &str = "pushpull_producer_limit_in_use{resource=\"http_streams\"}";

fn rejected(protocol: &str, reason: &str) -> String {
    format!(
        "pushpull_producer_rejected_requests_total{{protocol=\"{protocol}\",reason=\"{reason}\"}}"
    )
}

#[tokio::test]
async fn one_subscriber_over_the_limit_is_refused_and_the_others_keep_receiving() {
    let producer = spawn_http_producer(&["--max-subscribers", "2"]).await;
    let http = producer.http.unwrap();
    let mut first = subscribe(&producer.client, None, &[]).await;
    let mut second = subscribe(&producer.client, None, &[]).await;

    let refused = producer
        .client
        .clone()
        .subscribe(pb::SubscribeRequest::default())
        .await
        .expect_err("a third subscriber");
    assert_refused(
        &refused,
        ErrorReason::TooManySubscribers,
        "--max-subscribers",
        2,
    );

    producer.publish("a", &["x"]).await;
    for stream in [&mut first, &mut second] {
        loop {
            let response = stream.message().await.unwrap().unwrap();
            if !response.events.is_empty() {
                assert_eq!(sequences(&response.events), vec![1]);
                break;
            }
        }
    }
    let m = scrape(http).await;
    assert_eq!(get(&m, SUBSCRIBERS_IN_USE), 2.0);
    assert_eq!(
        get(&m, "pushpull_producer_limit_max{resource=\"subscribers\"}"),
        2.0
    );
    assert_eq!(get(&m, &rejected("grpc", "TOO_MANY_SUBSCRIBERS")), 1.0);

    // A departed subscriber's place is free for the next one.
    drop(first);
    until_metric(http, SUBSCRIBERS_IN_USE, 1.0).await;
    let _third = subscribe(&producer.client, None, &[]).await;
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn a_long_poll_over_the_limit_is_refused_unless_it_need_not_wait() {
    let producer = spawn_http_producer(&["--max-long-polls", "1"]).await;
    let http = producer.http.unwrap();
    producer.publish("a", &["x"]).await; // 1

    let waiting = {
        let mut client = producer.client.clone();
        tokio::spawn(async move {
            client
                .poll(pb::PollRequest {
                    after_sequence: Some(1),
                    topics: vec!["rare".into()],
                    max_wait: Some(proto_duration(Duration::from_secs(30))),
                    ..Default::default()
                })
                .await
        })
    };
    until_metric(http, LONG_POLLS_IN_USE, 1.0).await;

    let long_poll = pb::PollRequest {
        after_sequence: Some(1),
        max_wait: Some(proto_duration(Duration::from_secs(5))),
        ..Default::default()
    };
    let refused = producer
        .client
        .clone()
        .poll(long_poll.clone())
        .await
        .expect_err("a second long poll");
    assert_refused(
        &refused,
        ErrorReason::TooManyLongPolls,
        "--max-long-polls",
        1,
    );
    let response = reqwest::get(url(http, "/poll?after=1&wait=5s"))
        .await
        .unwrap();
    assert_http_refused(response, "TOO_MANY_LONG_POLLS", "--max-long-polls").await;

    // Polls that need not wait are answered: a short poll, and a long poll with events ready.
    let short = producer
        .client
        .clone()
        .poll(poll_request(Some(1)))
        .await
        .unwrap();
    assert!(short.into_inner().events.is_empty());
    let ready = producer
        .client
        .clone()
        .poll(pb::PollRequest {
            after_sequence: Some(0),
            ..long_poll.clone()
        })
        .await
        .unwrap();
    assert_eq!(sequences(&ready.into_inner().events), vec![1]);

    // The waiting poll is answered as usual, and its place is free again.
    producer.publish("rare", &["y"]).await;
    let answered = timeout(PROMPTLY, waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(sequences(&answered.into_inner().events), vec![2]);
    let m = until_metric(http, LONG_POLLS_IN_USE, 0.0).await;
    assert_eq!(get(&m, &rejected("grpc", "TOO_MANY_LONG_POLLS")), 1.0);
    assert_eq!(get(&m, &rejected("http", "TOO_MANY_LONG_POLLS")), 1.0);
    producer.client.clone().poll(long_poll).await.unwrap();
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn sse_and_websocket_clients_share_one_limit() {
    let producer = spawn_http_producer(&["--max-http-streams", "1"]).await;
    let http = producer.http.unwrap();
    let mut sse = SseClient::connect(http, "/events", None).await;
    assert_eq!(sse.status, 200);
    sse.next_data().await.unwrap();

    let refused = reqwest::get(url(http, "/events")).await.unwrap();
    assert_http_refused(refused, "TOO_MANY_HTTP_STREAMS", "--max-http-streams").await;
    let upgrade = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
        .await
        .expect_err("no room for a WebSocket");
    let tokio_tungstenite::tungstenite::Error::Http(response) = upgrade else {
        panic!("{upgrade:?}")
    };
    assert_eq!(response.status().as_u16(), 503);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["reason"], "TOO_MANY_HTTP_STREAMS");

    // The SSE client is served as before; once it leaves, a WebSocket gets its place.
    http_publish(http, "a", &["x"]).await;
    assert_eq!(sse.next_data().await.unwrap().id.as_deref(), Some("1"));
    drop(sse);
    let m = until_metric(http, HTTP_STREAMS_IN_USE, 0.0).await;
    assert_eq!(get(&m, &rejected("http", "TOO_MANY_HTTP_STREAMS")), 2.0);
    let mut ws = ws_connect(http, "/ws?after=0").await;
    ws_next_of(&mut ws, "subscribed").await;
    assert_eq!(get(&scrape(http).await, HTTP_STREAMS_IN_USE), 1.0);
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_over_the_limit_gets_a_json_413_naming_the_flag() {
    // The smallest --max-message-bytes the other limits allow.
    let producer = spawn_http_producer(&[
        "--max-payload-bytes",
        "1024",
        "--max-batch-bytes",
        "1024",
        "--max-message-bytes",
        "67584",
    ])
    .await;
    let http = producer.http.unwrap();
    let big = "x".repeat(70_000);
    for path in ["/publish", "/webhooks"] {
        let response = reqwest::Client::new()
            .post(url(http, path))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"events":[{{"topic":"a","payload":"{big}"}}]}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 413, "{path}");
        let body: Value = response.json().await.expect("our JSON error");
        assert_eq!(body["reason"], "BODY_TOO_LARGE", "{body}");
        assert_eq!(body["field"], "body");
        assert_eq!(body["metadata"]["limit"], "67584");
        assert_eq!(body["metadata"]["flag"], "--max-message-bytes");
    }
    let m = scrape(http).await;
    assert_eq!(get(&m, &rejected("http", "BODY_TOO_LARGE")), 2.0);
    // A body within the limit is read as before.
    http_publish(http, "a", &["small"]).await;
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn a_grpc_subscriber_that_stops_reading_is_ended_and_one_beside_it_keeps_receiving() {
    let producer = spawn_http_producer(&["--stall-timeout", "300ms"]).await;
    let http = producer.http.unwrap();
    // Each on a connection of its own: on one connection, the unread stream would also hold
    // up the connection's flow-control window (HTTP/2 shares it).
    let (one, other) = (client(producer.addr).await, client(producer.addr).await);
    let mut stalled = subscribe(&one, Some(0), &[]).await;
    let mut reader = subscribe(&other, Some(0), &[]).await;
    stalled.message().await.unwrap().unwrap();

    // Far more than the flow-control windows and buffers between the producer and a client
    // that reads nothing: 32 MiB.
    const BATCHES: u64 = 32;
    const PER_BATCH: u64 = 16;
    let payload = vec![b'p'; 64 * 1024];
    let total = BATCHES * PER_BATCH;
    let reading = tokio::spawn(async move {
        let mut next = 1;
        while next <= total {
            let response = reader.message().await.unwrap().unwrap();
            for event in &response.events {
                assert_eq!(event.sequence, next);
                next += 1;
            }
        }
        reader
    });
    for _ in 0..BATCHES {
        let events = (0..PER_BATCH).map(|_| new_event("a", &payload)).collect();
        producer
            .client
            .clone()
            .publish(pb::PublishRequest { events })
            .await
            .unwrap();
    }
    let mut reader = timeout(PROMPTLY, reading).await.unwrap().unwrap();
    let m = until_metric(
        http,
        "pushpull_producer_subscribers_stalled_total{transport=\"grpc_stream\"}",
        1.0,
    )
    .await;
    assert_eq!(get(&m, SUBSCRIBERS_IN_USE), 1.0, "the stalled task is gone");

    // The stalled client gets what was already on its way, in order, then the status.
    let mut next = 1;
    let status = loop {
        match timeout(PROMPTLY, stalled.message()).await.unwrap() {
            Ok(Some(response)) => {
                for event in &response.events {
                    assert_eq!(event.sequence, next, "nothing skipped");
                    next += 1;
                }
            }
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert!(next <= total, "it stalled before the end");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let info = ErrorInfo::from_status(&status).unwrap();
    assert_eq!(info.reason, ErrorReason::SubscriberStalled);
    assert_eq!(info.get(key::FLAG), Some("--stall-timeout"));
    assert_eq!(info.get(key::LIMIT), Some("300ms"));
    assert!(
        matches!(
            timeout(PROMPTLY, stalled.message()).await.unwrap(),
            Ok(None)
        ),
        "the stream ends"
    );

    // The reader beside it is served as before.
    producer.publish("a", &["after"]).await;
    loop {
        let response = reader.message().await.unwrap().unwrap();
        if !response.events.is_empty() {
            assert_eq!(sequences(&response.events), vec![total + 1]);
            break;
        }
    }
    producer.stop().await.unwrap();
}

/// Publishes 32 MiB on topic `a` (512 events of 64 KiB): far more than the socket buffers and
/// flow-control windows between the producer and a client that reads nothing hold.
async fn publish_32_mib(producer: &TestProducer) -> u64 {
    let payload = vec![b'p'; 64 * 1024];
    for _ in 0..32 {
        let events = (0..16).map(|_| new_event("a", &payload)).collect();
        producer
            .client
            .clone()
            .publish(pb::PublishRequest { events })
            .await
            .unwrap();
    }
    32 * 16
}

#[tokio::test]
async fn an_sse_client_that_stops_reading_gets_an_end_event_after_what_was_on_its_way() {
    let producer = spawn_http_producer(&["--stall-timeout", "300ms"]).await;
    let http = producer.http.unwrap();
    let mut sse = SseClient::connect(http, "/events?after=0", None).await;
    assert_eq!(
        sse.next_data().await.unwrap().event.as_deref(),
        Some("hello")
    );
    let total = publish_32_mib(&producer).await;
    let m = until_metric(
        http,
        "pushpull_producer_subscribers_stalled_total{transport=\"sse\"}",
        1.0,
    )
    .await;
    assert_eq!(get(&m, HTTP_STREAMS_IN_USE), 0.0, "its place is free");

    let mut next = 1;
    let end = loop {
        let frame = sse.next_data().await.expect("an end event before the end");
        if frame.event.as_deref() == Some("end") {
            break frame.json();
        }
        assert_eq!(frame.id, Some(next.to_string()), "nothing skipped");
        next += 1;
    };
    assert!(next <= total, "it stalled before the end");
    assert_eq!(end["reason"], "SUBSCRIBER_STALLED", "{end}");
    assert_eq!(end["metadata"]["flag"], "--stall-timeout");
    assert!(sse.next_data().await.is_none(), "the stream ends");
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn a_websocket_client_that_stops_reading_is_dropped() {
    let producer = spawn_http_producer(&["--stall-timeout", "300ms"]).await;
    let http = producer.http.unwrap();
    let mut ws = ws_connect(http, "/ws?after=0").await;
    ws_next_of(&mut ws, "subscribed").await;
    let total = publish_32_mib(&producer).await;
    let m = until_metric(
        http,
        "pushpull_producer_subscribers_stalled_total{transport=\"websocket\"}",
        1.0,
    )
    .await;
    let _ = m;
    // Its place is given back when the connection task ends, just after the count.
    let freed = tokio::time::timeout(PROMPTLY, async {
        while get(
            &crate::http_metrics::scrape(http).await,
            HTTP_STREAMS_IN_USE,
        ) != 0.0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(freed.is_ok(), "its place is free");

    // What was on its way arrives in order; then the socket is closed.
    let mut next = 1;
    let closed = loop {
        match ws_next(&mut ws).await {
            Ok(batch) => {
                for sequence in seqs(&batch["events"]) {
                    assert_eq!(sequence, next, "nothing skipped");
                    next += 1;
                }
            }
            Err(code) => break code,
        }
    };
    assert!(next <= total, "it stalled before the end");
    // The close frame (1008, policy) comes only if there was room left to write it.
    assert!(matches!(closed, None | Some(1008)), "{closed:?}");
    producer.stop().await.unwrap();
}
