//! The consumer's `/metrics`, and the producer's `/consumers` (the dashboard's view of the
//! consumers' GetStats), with real processes' worth of servers on port 0.

use clap::Parser as _;
use testkit::{Served, bind};

use crate::helpers::*;

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn consumer_metrics_report_what_get_stats_reports() {
    let producer = spawn_producer(&[]).await;
    let consumer = spawn_consumer_with_metrics(
        &producer.url(),
        &["--mode", "long-poll", "--from", "earliest"],
    )
    .await;
    let metrics = consumer.metrics.unwrap();
    producer.publish("t", 10).await;
    consumer
        .wait_for("10 events", |s| s.events_received == 10)
        .await;

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

    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test]
async fn the_producer_serves_its_consumers_stats_to_the_dashboard() {
    // The consumer's port first, so the producer can be told about it; and an address that was
    // bound and let go, where nothing listens.
    let (consumer_grpc, consumer_addr) = bind().await;
    let (_, nobody) = bind().await;

    let config = producer::Config::parse_from([
        "producer",
        "--store",
        "memory",
        "--consumers",
        &format!("http://{consumer_addr},http://{nobody}"),
    ]);
    let (grpc, producer_addr) = bind().await;
    let (http, http_addr) = bind().await;
    let producer = Served::spawn(|shutdown| {
        let listeners = producer::Listeners {
            grpc,
            http: Some(http),
        };
        producer::run_with(config, listeners, shutdown)
    });

    let config = consumer::Config::parse_from([
        "consumer",
        "--producer",
        &format!("http://{producer_addr}"),
        "--mode",
        "push",
        "--summary-interval",
        "0s",
    ]);
    let consumer = Served::spawn(|shutdown| consumer::run(config, consumer_grpc, shutdown));
    let stats = StatsClient::connect(consumer_addr).await;
    stats.wait_for("connected", |s| s.connected).await;
    reqwest::Client::new()
        .post(format!("http://{http_addr}/publish"))
        .body(r#"{"events":[{"topic":"t","payload":"1"},{"topic":"t","payload":"2"}]}"#)
        .send()
        .await
        .unwrap();
    stats.wait_for("2 events", |s| s.events_received == 2).await;

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

    consumer.stop().await.expect("the consumer stops cleanly");
    producer.stop().await.expect("the producer stops cleanly");
}

#[tokio::test]
async fn the_producer_reaches_https_consumers_with_its_consumers_ca() {
    // A consumer serving TLS with a certificate of the development CA, which the producer
    // trusts through --consumers-ca only (it is no system root).
    let certs = tempfile::tempdir().unwrap();
    pushpull::tls::dev_certs(certs.path(), &["consumer".to_owned()], &[]).unwrap();
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (consumer_grpc, consumer_addr) = bind().await;
    let config = producer::Config::parse_from([
        "producer",
        "--store",
        "memory",
        "--consumers",
        &format!("https://{consumer_addr}"),
        "--consumers-ca",
        &file("ca.pem"),
    ]);
    let (grpc, producer_addr) = bind().await;
    let (http, http_addr) = bind().await;
    let producer = Served::spawn(|shutdown| {
        let listeners = producer::Listeners {
            grpc,
            http: Some(http),
        };
        producer::run_with(config, listeners, shutdown)
    });
    let config = consumer::Config::parse_from([
        "consumer",
        "--producer",
        &format!("http://{producer_addr}"),
        "--mode",
        "long-poll",
        "--summary-interval",
        "0s",
        "--tls-cert",
        &file("consumer.pem"),
        "--tls-key",
        &file("consumer.key"),
    ]);
    let consumer = Served::spawn(|shutdown| consumer::run(config, consumer_grpc, shutdown));

    // The consumer may still be starting: ask until it answers (bounded).
    let mut last = serde_json::Value::Null;
    for _ in 0..50 {
        last = reqwest::get(format!("http://{http_addr}/consumers"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if last["consumers"][0]["ok"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last["consumers"][0]["ok"], true, "{last}");
    assert_eq!(last["consumers"][0]["stats"]["mode"], "long-poll", "{last}");

    consumer.stop().await.expect("the consumer stops cleanly");
    producer.stop().await.expect("the producer stops cleanly");
}

#[tokio::test]
async fn an_unreadable_consumers_ca_stops_the_producer_at_start() {
    let config = producer::Config::parse_from([
        "producer",
        "--store",
        "memory",
        "--consumers",
        "https://127.0.0.1:1,http://127.0.0.1:2",
        "--consumers-ca",
        "/nonexistent/ca.pem",
    ]);
    let (grpc, _) = bind().await;
    let (http, _) = bind().await;
    let listeners = producer::Listeners {
        grpc,
        http: Some(http),
    };
    // Bounded: a producer that accepted the CA would serve until stopped.
    let started = producer::run_with(config, listeners, std::future::pending());
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), started)
        .await
        .expect("the producer refuses to start, it does not serve")
        .expect_err("a CA that cannot be read is refused");
    let err = err.to_string();
    assert!(
        err.contains("--consumers-ca /nonexistent/ca.pem"),
        "names the flag and the file: {err}"
    );
}
