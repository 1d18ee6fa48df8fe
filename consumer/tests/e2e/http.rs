//! The consumer's `/metrics`, and the producer's `/consumers` (the dashboard's view of the
//! consumers' GetStats), with real processes' worth of servers on port 0.

use std::{net::SocketAddr, time::Duration};

use clap::Parser as _;
use tokio::{net::TcpListener, sync::oneshot};

use crate::helpers::*;

/// A consumer with its metrics listener, both on port 0; returns (gRPC addr, metrics addr,
/// stop).
async fn spawn_consumer_with_metrics(
    producer_url: &str,
    args: &[&str],
) -> (
    SocketAddr,
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let base = [
        "consumer",
        "--producer",
        producer_url,
        "--summary-interval",
        "0s",
    ];
    let config = consumer::Config::parse_from(base.iter().chain(args.iter()).copied());
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let listeners = consumer::Listeners {
        grpc,
        metrics: Some(metrics),
    };
    let handle = tokio::spawn(async move {
        consumer::run_with(config, listeners, async move {
            let _ = rx.await;
        })
        .await
        .expect("consumer runs");
    });
    (addrs.0, addrs.1, tx, handle)
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn consumer_metrics_report_what_get_stats_reports() {
    let producer = spawn_producer(&[]).await;
    let (grpc, metrics, stop, handle) = spawn_consumer_with_metrics(
        &producer.url(),
        &["--mode", "long-poll", "--from", "earliest"],
    )
    .await;
    producer.publish("t", 10).await;
    let stats = ConsumerStats::connect(grpc).await;
    stats.wait_for(|s| s.events_received == 10).await;

    let response = reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let get =
        |series: &str| metric(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        get("pushpull_consumer_events_received_total{mode=\"long-poll\"}"),
        10.0
    );
    assert_eq!(
        get("pushpull_consumer_events_missed_total{mode=\"long-poll\"}"),
        0.0
    );
    assert_eq!(
        get("pushpull_consumer_duplicates_dropped_total{mode=\"long-poll\"}"),
        0.0
    );
    assert_eq!(
        get("pushpull_consumer_last_sequence{mode=\"long-poll\"}"),
        10.0
    );
    assert_eq!(get("pushpull_consumer_connected{mode=\"long-poll\"}"), 1.0);
    assert!(get("pushpull_consumer_rpcs_sent_total{mode=\"long-poll\"}") >= 1.0);
    assert_eq!(
        get("pushpull_consumer_latency_seconds_count{mode=\"long-poll\"}"),
        10.0
    );
    assert_eq!(
        get("pushpull_consumer_latency_seconds_bucket{mode=\"long-poll\",le=\"+Inf\"}"),
        10.0
    );
    assert!(get("pushpull_consumer_latency_seconds_sum{mode=\"long-poll\"}") > 0.0);
    assert!(text.trim_end().ends_with("# EOF"));

    let _ = stop.send(());
    tokio::time::timeout(PROMPTLY, handle)
        .await
        .unwrap()
        .unwrap();
    producer.stop().await;
}

#[tokio::test]
async fn the_producer_serves_its_consumers_stats_to_the_dashboard() {
    // The consumer's port first, so the producer can be told about it.
    let consumer_grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let consumer_addr = consumer_grpc.local_addr().unwrap();
    let nobody = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();

    let config = producer::Config::parse_from([
        "producer",
        "--consumers",
        &format!("http://{consumer_addr},http://{nobody}"),
    ]);
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (producer_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
    let (stop_producer, rx) = oneshot::channel::<()>();
    let producer_task = tokio::spawn(producer::run_with(
        config,
        producer::Listeners {
            grpc,
            http: Some(http),
        },
        async move {
            let _ = rx.await;
        },
    ));

    let config = consumer::Config::parse_from([
        "consumer",
        "--producer",
        &format!("http://{producer_addr}"),
        "--mode",
        "push",
        "--summary-interval",
        "0s",
    ]);
    let (stop_consumer, rx) = oneshot::channel::<()>();
    let consumer_task = tokio::spawn(consumer::run(config, consumer_grpc, async move {
        let _ = rx.await;
    }));
    let stats = ConsumerStats::connect(consumer_addr).await;
    stats.wait_for(|s| s.connected).await;
    reqwest::Client::new()
        .post(format!("http://{http_addr}/publish"))
        .body(r#"{"events":[{"topic":"t","payload":"1"},{"topic":"t","payload":"2"}]}"#)
        .send()
        .await
        .unwrap();
    stats.wait_for(|s| s.events_received == 2).await;

    let body: serde_json::Value = reqwest::get(format!("http://{http_addr}/consumers"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let consumers = body["consumers"].as_array().unwrap();
    assert_eq!(consumers.len(), 2, "{body}");
    let ours = &consumers[0];
    assert_eq!(ours["ok"], true, "{body}");
    assert_eq!(ours["stats"]["mode"], "push");
    assert_eq!(ours["stats"]["events_received"], 2);
    assert_eq!(ours["stats"]["last_sequence"], 2);
    assert!(ours["stats"]["latency_p50_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        consumers[1]["ok"], false,
        "an unreachable consumer is listed with its error"
    );
    assert!(consumers[1]["error"].as_str().is_some());

    let _ = stop_consumer.send(());
    let _ = stop_producer.send(());
    tokio::time::timeout(PROMPTLY, consumer_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(PROMPTLY, producer_task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// GetStats on a consumer, polled until a condition holds.
struct ConsumerStats(
    pushpull::pb::consumer_service_client::ConsumerServiceClient<tonic::transport::Channel>,
);

impl ConsumerStats {
    async fn connect(addr: SocketAddr) -> Self {
        Self(pushpull::pb::consumer_service_client::ConsumerServiceClient::new(channel(addr).await))
    }

    async fn wait_for(&self, done: impl Fn(&pushpull::pb::GetStatsResponse) -> bool) {
        let deadline = tokio::time::Instant::now() + PROMPTLY;
        loop {
            let stats = self
                .0
                .clone()
                .get_stats(pushpull::pb::GetStatsRequest {})
                .await
                .unwrap()
                .into_inner();
            if done(&stats) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out: {stats:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
