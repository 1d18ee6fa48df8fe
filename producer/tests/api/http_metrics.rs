//! `GET /metrics`: the numbers move with what happens. (The suite `60-metrics.sh` parses the
//! same output with the Python Prometheus client's parsers.)

use std::collections::HashMap;

use serde_json::json;

use crate::{helpers::*, http_client::*};

/// `name{labels}` → value, from the text exposition.
pub async fn scrape(http: std::net::SocketAddr) -> HashMap<String, f64> {
    let response = reqwest::get(url(http, "/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

pub fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| panic!("no {key} in {m:#?}"))
}

#[tokio::test]
async fn metrics_follow_appends_readers_deliveries_and_rejections() {
    let producer = spawn_http_producer(&["--retention-events", "4"]).await;
    let http = producer.http.unwrap();
    let m = scrape(http).await;
    assert_eq!(get(&m, "pushpull_producer_events_appended_total"), 0.0);
    assert_eq!(get(&m, "pushpull_producer_head_sequence"), 0.0);

    let mut sse = SseClient::connect(http, "/events?after=0", None).await;
    sse.next_data().await.unwrap();
    let mut ws = ws_connect(http, "/ws?after=0").await;
    ws_next_of(&mut ws, "subscribed").await;
    let mut stream = subscribe(&producer.client, Some(0), &[]).await;
    stream.message().await.unwrap();

    http_publish(http, "t", &["a", "b", "c"]).await;
    producer.publish("t", &["d", "e", "f"]).await; // head 6, oldest 3
    for _ in 0..3 {
        sse.next_data().await.unwrap();
    }
    let mut seen = 0;
    while seen < 6 {
        seen += ws_next_of(&mut ws, "events").await["events"]
            .as_array()
            .unwrap()
            .len();
    }
    let (_, batch) = get_json(http, "/poll?after=2").await;
    assert_eq!(seqs(&batch["events"]), vec![3, 4, 5, 6]);
    producer
        .client
        .clone()
        .poll(poll_request(Some(4)))
        .await
        .unwrap();
    let _ = get_json(http, "/poll?after=abc").await;
    let _ = get_json(http, "/poll?after=1").await;
    let _ = post_publish(http, &json!({"events": []})).await;
    let _ = producer.client.clone().poll(poll_request(Some(99))).await;

    let m = scrape(http).await;
    assert_eq!(get(&m, "pushpull_producer_events_appended_total"), 6.0);
    assert_eq!(get(&m, "pushpull_producer_head_sequence"), 6.0);
    // At least the SSE stream's, the WebSocket's and the Subscribe stream's tasks are alive.
    assert!(get(&m, "pushpull_producer_runtime_tasks") >= 3.0, "{m:#?}");
    assert_eq!(get(&m, "pushpull_producer_oldest_sequence"), 3.0);
    assert_eq!(get(&m, "pushpull_producer_retained_events"), 4.0);
    assert!(get(&m, "pushpull_producer_retained_bytes") >= 4.0 * 65.0);
    for transport in ["sse", "websocket", "grpc_stream"] {
        assert_eq!(
            get(
                &m,
                &format!("pushpull_producer_subscribers{{transport=\"{transport}\"}}")
            ),
            1.0,
            "{transport}"
        );
    }
    assert!(
        get(
            &m,
            "pushpull_producer_events_delivered_total{transport=\"sse\"}"
        ) >= 3.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_events_delivered_total{transport=\"websocket\"}"
        ),
        6.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_events_delivered_total{transport=\"http_poll\"}"
        ),
        4.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_events_delivered_total{transport=\"grpc_poll\"}"
        ),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_rejected_requests_total{protocol=\"http\",reason=\"MALFORMED_REQUEST\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_rejected_requests_total{protocol=\"http\",reason=\"CURSOR_EXPIRED\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_rejected_requests_total{protocol=\"http\",reason=\"NO_EVENTS\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_rejected_requests_total{protocol=\"grpc\",reason=\"CURSOR_AHEAD\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_request_duration_seconds_count{protocol=\"http\",method=\"publish\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "pushpull_producer_request_duration_seconds_count{protocol=\"grpc\",method=\"publish\"}"
        ),
        1.0
    );

    // Readers that leave are no longer counted.
    drop(sse);
    drop(ws);
    drop(stream);
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let m = scrape(http).await;
        let open: f64 = ["sse", "websocket", "grpc_stream"]
            .iter()
            .map(|t| {
                get(
                    &m,
                    &format!("pushpull_producer_subscribers{{transport=\"{t}\"}}"),
                )
            })
            .sum();
        if open == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscribers still counted: {open}"
        );
        tokio::time::sleep(BRIEFLY).await;
    }
    producer.stop().await.unwrap();
}

/// `GET /store` and the store metrics report the file store's work: what it holds on disk,
/// its fdatasyncs, and reads from the cache versus the store.
#[tokio::test]
async fn the_file_store_reports_its_size_syncs_and_reads() {
    let dir = tempfile::TempDir::new().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let producer = spawn_http_producer(&["--store", "file", "--data-dir", data_dir]).await;
    let http = producer.http.unwrap();
    producer.publish("t", &["a", "b", "c"]).await;
    let store: serde_json::Value = reqwest::get(url(http, "/store"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(store["store"], "file", "{store}");
    assert_eq!(store["data_dir"], data_dir, "{store}");
    assert_eq!(store["fsync"], "always", "{store}");
    assert_eq!(store["events"], 3, "{store}");
    assert_eq!(store["head_sequence"], 3, "{store}");
    assert_eq!(store["segments"], 1, "{store}");
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(store["bytes"], on_disk, "{store}");
    assert!(store["fsyncs"].as_u64().unwrap() >= 1, "{store}");
    assert!(store["fsync_mean_ms"].as_f64().unwrap() > 0.0, "{store}");

    let m = scrape(http).await;
    assert_eq!(
        get(&m, r#"pushpull_producer_store_info{store="file"}"#),
        1.0
    );
    assert!(get(&m, "pushpull_producer_fsync_seconds_count") >= 1.0);
    assert_eq!(get(&m, "pushpull_producer_retained_bytes"), on_disk as f64);
    assert_eq!(get(&m, "pushpull_producer_store_segments"), 1.0);
    // Just appended: a read from 0 is served by the tail cache, not the disk.
    let cache_reads = get(&m, "pushpull_producer_cache_reads_total");
    reqwest::get(url(http, "/poll?after=0")).await.unwrap();
    let m = scrape(http).await;
    assert_eq!(
        get(&m, "pushpull_producer_cache_reads_total"),
        cache_reads + 1.0
    );
    assert_eq!(get(&m, "pushpull_producer_store_reads_total"), 0.0);
    producer.stop().await.unwrap();
}
