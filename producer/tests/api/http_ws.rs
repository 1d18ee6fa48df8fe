//! `GET /ws`: subscribe, re-subscribe, publish through the socket, pings.

use serde_json::json;

use crate::{helpers::*, http_client::*};

#[tokio::test]
async fn websocket_subscribes_resubscribes_and_publishes() {
    let producer = spawn_http_producer(&[]).await;
    let http = producer.http.unwrap();
    producer.publish("a", &["1", "2"]).await;

    let mut ws = ws_connect(http, "/ws").await;
    ws_send(&mut ws, json!({"type": "subscribe", "after": 0})).await;
    let subscribed = ws_next_of(&mut ws, "subscribed").await;
    assert_eq!(subscribed["after_sequence"], 0);
    assert_eq!(subscribed["head_sequence"], 2);
    let batch = ws_next_of(&mut ws, "events").await;
    assert_eq!(seqs(&batch["events"]), vec![1, 2]);
    assert_eq!(batch["next_after_sequence"], 2);

    // Publish through the socket: the reply names the sequences, and the subscription pushes
    // the event back like any other.
    ws_send(
        &mut ws,
        json!({"type": "publish", "id": "req-1", "events": [{"topic": "b", "payload": "from ws"}]}),
    )
    .await;
    let published = ws_next_of(&mut ws, "published").await;
    assert_eq!(published["first_sequence"], 3);
    assert_eq!(published["id"], "req-1");
    let batch = ws_next_of(&mut ws, "events").await;
    assert_eq!(batch["events"][0]["payload"], "from ws");

    // The gRPC side sees the WebSocket's event with the same sequence.
    let grpc = producer
        .client
        .clone()
        .poll(poll_request(Some(2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sequences(&grpc.events), vec![3]);

    // Change the subscription: another cursor and a topic filter.
    ws_send(
        &mut ws,
        json!({"type": "subscribe", "after": 1, "topics": ["a"]}),
    )
    .await;
    ws_next_of(&mut ws, "subscribed").await;
    let batch = ws_next_of(&mut ws, "events").await;
    assert_eq!(seqs(&batch["events"]), vec![2]);
    assert_eq!(
        batch["next_after_sequence"], 3,
        "moves past filtered-out events"
    );

    // A bad message is answered, and the socket stays usable.
    ws_send(&mut ws, json!({"type": "subscribe", "after": 99})).await;
    let error = ws_next_of(&mut ws, "error").await;
    assert_eq!(
        (error["code"].as_str(), error["field"].as_str()),
        (Some("cursor_ahead"), Some("after"))
    );
    ws_send(&mut ws, json!({"type": "dance"})).await;
    let error = ws_next_of(&mut ws, "error").await;
    assert_eq!(error["field"], "message");
    ws_send(
        &mut ws,
        json!({"type": "publish", "events": [{"topic": "bad topic"}]}),
    )
    .await;
    let error = ws_next_of(&mut ws, "error").await;
    assert_eq!(error["field"], "events[0].topic");
    ws_send(&mut ws, json!({"type": "unsubscribe"})).await;
    ws_next_of(&mut ws, "unsubscribed").await;
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_url_parameters_subscribe_at_once_and_the_server_pings() {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;

    let producer = spawn_http_producer(&["--heartbeat-interval", "100ms"]).await;
    let http = producer.http.unwrap();
    producer.publish("a", &["x"]).await;
    let mut ws = ws_connect(http, "/ws?after=0&topics=a").await;
    ws_next_of(&mut ws, "subscribed").await;
    assert_eq!(
        seqs(&ws_next_of(&mut ws, "events").await["events"]),
        vec![1]
    );
    let ping = tokio::time::timeout(PROMPTLY, async {
        loop {
            if let Some(Ok(Message::Ping(_))) = ws.next().await {
                return;
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "the server pings an idle socket");
    producer.stop().await.unwrap();
}

#[tokio::test]
async fn every_transport_follows_the_same_events_with_the_same_sequences() {
    let producer = spawn_http_producer(&[]).await;
    let http = producer.http.unwrap();
    let mut grpc = subscribe(&producer.client, Some(0), &[]).await;
    let mut sse = SseClient::connect(http, "/events?after=0", None).await;
    sse.next_data().await.unwrap(); // hello
    let mut ws = ws_connect(http, "/ws?after=0").await;
    ws_next_of(&mut ws, "subscribed").await;

    let payloads: Vec<String> = (0..25).map(|i| format!("event {i}")).collect();
    let refs: Vec<&str> = payloads.iter().map(String::as_str).collect();
    http_publish(http, "t", &refs[..10]).await;
    producer.publish("t", &refs[10..]).await;
    let expected: Vec<(u64, String)> = (1..=25).zip(payloads.iter().cloned()).collect();

    let mut from_grpc = Vec::new();
    while from_grpc.len() < 25 {
        let response = grpc.message().await.unwrap().unwrap();
        for e in response.events {
            from_grpc.push((e.sequence, String::from_utf8(e.payload.to_vec()).unwrap()));
        }
    }
    let mut from_sse = Vec::new();
    while from_sse.len() < 25 {
        let event = sse.next_data().await.unwrap().json();
        from_sse.push((
            event["sequence"].as_u64().unwrap(),
            event["payload"].as_str().unwrap().to_owned(),
        ));
    }
    let mut from_ws = Vec::new();
    while from_ws.len() < 25 {
        let batch = ws_next_of(&mut ws, "events").await;
        for e in batch["events"].as_array().unwrap() {
            from_ws.push((
                e["sequence"].as_u64().unwrap(),
                e["payload"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let (_, polled) = get_json(http, "/poll?after=0").await;
    let from_poll: Vec<(u64, String)> = polled["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["sequence"].as_u64().unwrap(),
                e["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(from_grpc, expected);
    assert_eq!(from_sse, expected);
    assert_eq!(from_ws, expected);
    assert_eq!(from_poll, expected);
    producer.stop().await.unwrap();
}
