//! Stopping: open streams and long polls end with UNAVAILABLE, the process exits 0 promptly.

use std::time::Duration;

use pushpull::{pb, time::proto_duration};
use testkit::ServiceProcess;
use tokio::time::{Instant, timeout};
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn shutdown_ends_open_streams_and_long_polls_with_unavailable() {
    let producer = spawn_producer(&["--heartbeat-interval", "1h"]).await;
    let mut stream = subscribe(&producer.client, None, &[]).await;
    stream.message().await.unwrap().unwrap();
    let mut client = producer.client.clone();
    let long_poll = tokio::spawn(async move {
        client
            .poll(pb::PollRequest {
                max_wait: Some(proto_duration(Duration::from_secs(60))),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    producer.stop().await.expect("clean stop");

    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());
    let status = stream
        .message()
        .await
        .expect_err("stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let status = timeout(PROMPTLY, long_poll)
        .await
        .unwrap()
        .unwrap()
        .expect_err("long poll ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn sigterm_with_subscribers_attached_exits_zero_promptly() {
    let mut child =
        ServiceProcess::producer(env!("CARGO_BIN_EXE_producer"), &["--demo-rate", "100"]).await;
    testkit::assert_serving(child.addr, "pushpull.v1.ProducerService").await;
    let client = client(child.addr).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = subscribe(&client, Some(0), &[]).await;
        stream.message().await.unwrap().unwrap();
        streams.push(stream);
    }
    let http = child.http.expect("the producer binary serves HTTP");
    let mut sse = crate::http_client::SseClient::connect(http, "/events?after=0", None).await;
    assert_eq!(sse.status, 200);

    child.sigterm();
    let status = child
        .wait_exit(PROMPTLY)
        .await
        .unwrap_or_else(|| panic!("producer still running {PROMPTLY:?} after SIGTERM"));

    assert!(status.success(), "exit status {status:?}");
    for mut stream in streams {
        // Drain what was in flight; the stream must end with UNAVAILABLE (or a transport
        // error if the process was already gone), never hang.
        let end = timeout(PROMPTLY, async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => break None,
                    Err(status) => break Some(status.code()),
                }
            }
        })
        .await
        .expect("stream ended");
        assert_eq!(end, Some(Code::Unavailable));
    }
    let last = timeout(PROMPTLY, async {
        let mut last = None;
        while let Some(frame) = sse.next_data().await {
            last = Some(frame);
        }
        last
    })
    .await
    .expect("SSE stream ended");
    assert_eq!(
        last.and_then(|f| f.event).as_deref(),
        Some("end"),
        "SSE ends with an `end` event"
    );
}

/// A SIGTERM the moment the producer serves (as `docker stop` just after a start) is a clean
/// stop too, not the default action's kill: the handlers are in place before it serves.
#[tokio::test]
async fn sigterm_right_after_start_exits_zero() {
    for _ in 0..3 {
        let mut child = ServiceProcess::producer(env!("CARGO_BIN_EXE_producer"), &[]).await;

        child.sigterm();

        let status = child.wait_exit(PROMPTLY).await.expect("exits");
        assert!(
            status.success(),
            "{status:?}; its log:\n{}",
            child.log_text()
        );
    }
}

#[tokio::test]
async fn shutdown_ends_sse_streams_websockets_and_http_long_polls_promptly() {
    use crate::http_client::*;

    let producer = spawn_http_producer(&["--heartbeat-interval", "1h"]).await;
    let http = producer.http.unwrap();
    let mut sse = SseClient::connect(http, "/events", None).await;
    sse.next_data().await.unwrap(); // hello
    let mut ws = ws_connect(http, "/ws?after=0").await;
    ws_next_of(&mut ws, "subscribed").await;
    let long_poll = tokio::spawn(async move { get_json(http, "/poll?wait=60s").await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    producer.stop().await.expect("clean stop");
    assert!(started.elapsed() < PROMPTLY, "took {:?}", started.elapsed());

    let last = sse.next_data().await.expect("a final event");
    assert_eq!(last.event.as_deref(), Some("end"));
    assert_eq!(last.json()["code"], "shutting_down");
    assert!(sse.next().await.is_none(), "the SSE stream ends");
    assert_eq!(ws_next_of(&mut ws, "error").await["code"], "shutting_down");
    assert_eq!(
        ws_next(&mut ws).await,
        Err(Some(1001)),
        "closed with 1001 going away"
    );
    let (status, body) = timeout(PROMPTLY, long_poll).await.unwrap().unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("shutting_down"))
    );
}
