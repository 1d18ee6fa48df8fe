//! Webhooks: subscriptions managed over gRPC (`WebhookService`) and HTTP (`/webhooks`), and
//! deliveries to real receivers on port 0: signed, in order, retried until a 2xx, disabled on
//! 410 or after failing too long, kept across a restart, and one slow receiver delaying no
//! other.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use pushpull::{
    errors::{ErrorReason, key},
    pb::{self, webhook_service_client::WebhookServiceClient},
};
use serde_json::Value;
use tonic::{Code, transport::Channel};

use crate::helpers::{PROMPTLY, TestProducer, channel, spawn_http_producer, spawn_producer};

/// What a test receiver answers: a status for each call in turn (then 200), after `delay`.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<u16>>>,
    delay: Arc<Mutex<Duration>>,
    seen: Arc<Mutex<Vec<Delivery>>>,
}

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: HeaderMap,
    body: Bytes,
    status: u16,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery's body is JSON")
    }

    fn id(&self) -> &str {
        self.headers["webhook-id"].to_str().unwrap()
    }

    fn sequences(&self) -> Vec<u64> {
        self.json()["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["sequence"].as_u64().unwrap())
            .collect()
    }
}

struct Receiver {
    url: String,
    script: Script,
}

impl Receiver {
    async fn start() -> Self {
        async fn take(State(script): State<Script>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let delay = *script.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let status = script.answers.lock().unwrap().pop_front().unwrap_or(200);
            script.seen.lock().unwrap().push(Delivery {
                headers,
                body,
                status,
            });
            StatusCode::from_u16(status).unwrap()
        }
        let script = Script::default();
        let app = Router::new()
            .route("/hook", post(take))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/hook"),
            script,
        }
    }

    fn answer(&self, statuses: &[u16]) {
        self.script
            .answers
            .lock()
            .unwrap()
            .extend(statuses.iter().copied());
    }

    fn seen(&self) -> Vec<Delivery> {
        self.script.seen.lock().unwrap().clone()
    }

    /// The sequences of the events it answered 2xx, in the order received.
    fn accepted(&self) -> Vec<u64> {
        self.seen()
            .iter()
            .filter(|d| (200..300).contains(&d.status))
            .flat_map(Delivery::sequences)
            .collect()
    }

    /// Waits until the receiver has accepted `count` events.
    async fn wait_accepted(&self, count: usize) -> Vec<u64> {
        let waited = tokio::time::timeout(PROMPTLY, async {
            loop {
                let accepted = self.accepted();
                if accepted.len() >= count {
                    return accepted;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("{count} events not accepted: {:?}", self.seen()))
    }
}

async fn webhooks(producer: &TestProducer) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(channel(producer.addr).await)
}

fn create(id: &str, url: &str) -> pb::CreateWebhookRequest {
    pb::CreateWebhookRequest {
        webhook_id: id.into(),
        url: url.into(),
        ..Default::default()
    }
}

async fn get(client: &mut WebhookServiceClient<Channel>, id: &str) -> pb::Webhook {
    client
        .get_webhook(pb::GetWebhookRequest {
            webhook_id: id.into(),
        })
        .await
        .expect("get")
        .into_inner()
        .webhook
        .unwrap()
}

/// Waits until `check` holds for subscription `id`.
async fn wait_state(
    client: &mut WebhookServiceClient<Channel>,
    id: &str,
    what: &str,
    check: impl Fn(&pb::Webhook) -> bool,
) -> pb::Webhook {
    let deadline = tokio::time::Instant::now() + PROMPTLY;
    loop {
        let webhook = get(client, id).await;
        if check(&webhook) {
            return webhook;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never happened; last state {webhook:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_event_is_delivered_once_in_order_signed_with_the_secret_shown_once() {
    let producer = spawn_producer(&["--webhook-max-batch-events", "7"]).await;
    let receiver = Receiver::start().await;
    producer.publish_n("before", 3).await;
    let mut client = webhooks(&producer).await;
    let created = client
        .create_webhook(pb::CreateWebhookRequest {
            after_sequence: Some(0),
            ..create("orders", &receiver.url)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    assert!(!created.replaced);
    let webhook = created.webhook.unwrap();
    assert_eq!((webhook.delivered_sequence, webhook.enabled), (0, true));
    for _ in 0..4 {
        producer.publish_n("later", 5).await;
    }

    let accepted = receiver.wait_accepted(23).await;
    assert_eq!(accepted, (1..=23).collect::<Vec<_>>());
    let verifier = standardwebhooks::Webhook::new(&created.secret).unwrap();
    let mut after = 0;
    for delivery in receiver.seen() {
        verifier
            .verify(&delivery.body, &delivery.headers)
            .expect("each delivery verifies with the secret");
        let body = delivery.json();
        assert_eq!(body["type"], "pushpull.events");
        let data = &body["data"];
        assert_eq!(data["after_sequence"], after, "batches follow each other");
        assert!(
            delivery.sequences().len() <= 7,
            "--webhook-max-batch-events"
        );
        assert_eq!(
            delivery.id(),
            format!("orders_{after}_{}", data["next_after_sequence"])
        );
        after = data["next_after_sequence"].as_u64().unwrap();
    }
    let state = wait_state(&mut client, "orders", "cursor at 23", |w| {
        w.delivered_sequence == 23
    })
    .await;
    assert_eq!(state.events_delivered, 23);
    assert!(state.last_error.is_empty());

    let listed = client
        .list_webhooks(pb::ListWebhooksRequest {})
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 1);
    // Shown once: Get and List never carry the secret; the Webhook message has no such field,
    // and nothing else in it does either.
    assert!(!format!("{listed:?}").contains(&created.secret[6..]));
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_until_a_2xx_and_410_disables() {
    let producer = spawn_producer(&[
        "--webhook-retry-min",
        "20ms",
        "--webhook-retry-max",
        "100ms",
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 503, 404]);
    let mut client = webhooks(&producer).await;
    client
        .create_webhook(create("flaky", &receiver.url))
        .await
        .unwrap();
    producer.publish_n("t", 2).await;
    assert_eq!(receiver.wait_accepted(2).await, vec![1, 2]);
    let seen = receiver.seen();
    assert_eq!(
        seen.iter().map(|d| d.status).collect::<Vec<_>>(),
        vec![500, 503, 404, 200]
    );
    assert!(
        seen.iter().all(|d| d.id() == "flaky_0_2"),
        "a redelivery keeps its id"
    );
    let state = wait_state(&mut client, "flaky", "delivered", |w| {
        w.delivered_sequence == 2
    })
    .await;
    assert_eq!(state.consecutive_failures, 0);
    assert!(state.failing_since.is_none());

    receiver.answer(&[410]);
    producer.publish_n("t", 1).await;
    let state = wait_state(&mut client, "flaky", "disabled", |w| !w.enabled).await;
    assert!(
        state.disabled_reason.contains("HTTP 410 Gone"),
        "{}",
        state.disabled_reason
    );
    assert_eq!(state.delivered_sequence, 2, "the cursor stays");
    producer.publish_n("t", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.seen().len(),
        5,
        "a disabled subscription gets nothing"
    );
}

#[tokio::test]
async fn a_subscription_failing_longer_than_disable_after_is_disabled_and_says_why() {
    let producer = spawn_producer(&[
        "--webhook-retry-min",
        "20ms",
        "--webhook-retry-max",
        "50ms",
        "--webhook-disable-after",
        "300ms",
    ])
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500; 1000]);
    let mut client = webhooks(&producer).await;
    client
        .create_webhook(create("dead", &receiver.url))
        .await
        .unwrap();
    producer.publish_n("t", 1).await;
    let state = wait_state(&mut client, "dead", "disabled", |w| !w.enabled).await;
    assert!(
        state.disabled_reason.contains("--webhook-disable-after")
            && state.disabled_reason.contains("HTTP 500"),
        "{}",
        state.disabled_reason
    );
    assert!(state.consecutive_failures >= 2, "{state:?}");
    assert_eq!(state.delivered_sequence, 0);
}

#[tokio::test]
async fn a_slow_receiver_does_not_delay_another_subscription() {
    let producer = spawn_producer(&[]).await;
    let slow = Receiver::start().await;
    *slow.script.delay.lock().unwrap() = Duration::from_secs(3);
    let fast = Receiver::start().await;
    let mut client = webhooks(&producer).await;
    client
        .create_webhook(create("slow", &slow.url))
        .await
        .unwrap();
    client
        .create_webhook(create("fast", &fast.url))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        producer.publish_n("t", 1).await;
    }
    assert_eq!(fast.wait_accepted(5).await, vec![1, 2, 3, 4, 5]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the fast receiver waited {:?} for the slow one",
        started.elapsed()
    );
    assert!(slow.seen().is_empty(), "the slow one is still answering");
}

#[tokio::test]
async fn subscriptions_and_their_cursors_survive_a_restart_with_the_durable_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let receiver = Receiver::start().await;
    let producer = spawn_producer(&["--store", "file", "--data-dir", data]).await;
    let mut client = webhooks(&producer).await;
    let secret = client
        .create_webhook(create("kept", &receiver.url))
        .await
        .unwrap()
        .into_inner()
        .secret;
    producer.publish_n("t", 4).await;
    receiver.wait_accepted(4).await;
    wait_state(&mut client, "kept", "cursor at 4", |w| {
        w.delivered_sequence == 4
    })
    .await;
    producer.stop().await.unwrap();

    let producer = spawn_producer(&["--store", "file", "--data-dir", data]).await;
    let mut client = webhooks(&producer).await;
    let state = get(&mut client, "kept").await;
    assert_eq!((state.delivered_sequence, state.enabled), (4, true));
    producer.publish_n("t", 2).await;
    assert_eq!(receiver.wait_accepted(6).await, (1..=6).collect::<Vec<_>>());
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    let last = receiver.seen().pop().unwrap();
    verifier
        .verify(&last.body, &last.headers)
        .expect("the secret survived too");
    let mode = std::fs::metadata(dir.path().join("webhooks.json"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
        0,
        "the state file holds secrets: the producer's user alone reads it"
    );
}

#[tokio::test]
async fn a_replaced_subscription_starts_from_its_new_cursor_and_a_deleted_one_stops() {
    let producer = spawn_producer(&[]).await;
    let receiver = Receiver::start().await;
    producer.publish_n("t", 5).await;
    let mut client = webhooks(&producer).await;
    client
        .create_webhook(pb::CreateWebhookRequest {
            after_sequence: Some(4),
            ..create("r", &receiver.url)
        })
        .await
        .unwrap();
    assert_eq!(receiver.wait_accepted(1).await, vec![5]);
    let replaced = client
        .create_webhook(pb::CreateWebhookRequest {
            after_sequence: Some(1),
            topics: vec!["t".into()],
            replace: true,
            ..create("r", &receiver.url)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(replaced.replaced);
    assert_eq!(
        receiver.wait_accepted(5).await,
        vec![5, 2, 3, 4, 5],
        "the replacement delivers from its own cursor"
    );
    client
        .delete_webhook(pb::DeleteWebhookRequest {
            webhook_id: "r".into(),
        })
        .await
        .unwrap();
    producer.publish_n("t", 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.accepted().len(),
        5,
        "a deleted subscription gets nothing"
    );
}

#[tokio::test]
async fn bad_requests_get_a_precise_status_and_reason_and_change_nothing() {
    let producer = spawn_producer(&[]).await;
    producer.publish_n("t", 3).await;
    let receiver = Receiver::start().await;
    let mut client = webhooks(&producer).await;
    client
        .create_webhook(create("taken", &receiver.url))
        .await
        .unwrap();
    let cases: Vec<(pb::CreateWebhookRequest, Code, ErrorReason, &str, &str)> = vec![
        (
            create("taken", &receiver.url),
            Code::AlreadyExists,
            ErrorReason::WebhookExists,
            "webhook_id",
            "set replace",
        ),
        (
            create("bad_id!", &receiver.url),
            Code::InvalidArgument,
            ErrorReason::InvalidWebhook,
            "webhook_id",
            "[A-Za-z0-9-]",
        ),
        (
            create("a", "http://169.254.169.254/latest/meta-data"),
            Code::PermissionDenied,
            ErrorReason::WebhookTargetNotAllowed,
            "url",
            "169.254.169.254 is outside the allow-list (flag --webhook-allow)",
        ),
        (
            create("a", "ftp://127.0.0.1/"),
            Code::InvalidArgument,
            ErrorReason::InvalidWebhook,
            "url",
            "http:// or https://",
        ),
        (
            pb::CreateWebhookRequest {
                secret: "whsec_c2hvcnQ=".into(),
                ..create("a", &receiver.url)
            },
            Code::InvalidArgument,
            ErrorReason::InvalidWebhook,
            "secret",
            "24 to 64 bytes",
        ),
        (
            pb::CreateWebhookRequest {
                topics: vec!["no spaces".into()],
                ..create("a", &receiver.url)
            },
            Code::InvalidArgument,
            ErrorReason::InvalidTopic,
            "topics[0]",
            "is invalid",
        ),
        (
            pb::CreateWebhookRequest {
                after_sequence: Some(9),
                ..create("a", &receiver.url)
            },
            Code::OutOfRange,
            ErrorReason::CursorAhead,
            "after_sequence",
            "beyond head_sequence 3",
        ),
    ];
    for (request, code, reason, field, says) in cases {
        let what = format!("{request:?}");
        let status = client.create_webhook(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(says),
            "{what}: {}",
            status.message()
        );
        let info = pushpull::errors::ErrorInfo::from_status(&status).expect("ErrorInfo");
        assert_eq!(info.reason, reason, "{what}");
        assert_eq!(info.get(key::FIELD), Some(field), "{what}");
    }
    let missing = client
        .get_webhook(pb::GetWebhookRequest {
            webhook_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let info = pushpull::errors::ErrorInfo::from_status(&missing).unwrap();
    assert_eq!(
        (info.reason, info.get(key::WEBHOOK_ID)),
        (ErrorReason::WebhookNotFound, Some("nope"))
    );
    let missing = client
        .delete_webhook(pb::DeleteWebhookRequest {
            webhook_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let listed = client
        .list_webhooks(pb::ListWebhooksRequest {})
        .await
        .unwrap()
        .into_inner()
        .webhooks;
    assert_eq!(
        listed
            .iter()
            .map(|w| w.webhook_id.as_str())
            .collect::<Vec<_>>(),
        vec!["taken"],
        "nothing refused was created"
    );
}

#[tokio::test]
async fn the_allow_list_flag_decides_where_webhooks_may_go() {
    let producer = spawn_producer(&["--webhook-allow", "10.0.0.0/8"]).await;
    let receiver = Receiver::start().await;
    let mut client = webhooks(&producer).await;
    let status = client
        .create_webhook(create("local", &receiver.url))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("127.0.0.1"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn http_json_manages_the_same_subscriptions() {
    let producer = spawn_http_producer(&[]).await;
    let base = format!("http://{}/webhooks", producer.http.unwrap());
    let receiver = Receiver::start().await;
    let http = reqwest::Client::new();

    let created = http
        .post(&base)
        .json(&serde_json::json!({"webhook_id": "h1", "url": receiver.url, "topics": ["t"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["webhook"]["topics"], serde_json::json!(["t"]));
    assert_eq!(created["webhook"]["last_attempt_at"], Value::Null);

    producer.publish("t", &["x"]).await;
    receiver.wait_accepted(1).await;

    let one: Value = http
        .get(format!("{base}/h1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["webhook"]["webhook_id"], "h1");
    assert!(one["webhook"].get("secret").is_none());
    let all: Value = http.get(&base).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["webhooks"].as_array().unwrap().len(), 1);

    let conflict = http
        .post(&base)
        .json(&serde_json::json!({"webhook_id": "h1", "url": receiver.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), 409);
    let body: Value = conflict.json().await.unwrap();
    assert_eq!(
        (&body["reason"], &body["field"]),
        (&"WEBHOOK_EXISTS".into(), &"webhook_id".into())
    );
    let forbidden = http
        .post(&base)
        .json(&serde_json::json!({"url": "http://10.1.2.3/"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let malformed = http.post(&base).body("{").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    let body: Value = malformed.json().await.unwrap();
    assert_eq!(body["reason"], "MALFORMED_REQUEST");

    let deleted = http.delete(format!("{base}/h1")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = http.get(format!("{base}/h1")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let body: Value = gone.json().await.unwrap();
    assert_eq!(body["reason"], "WEBHOOK_NOT_FOUND");
}

#[tokio::test]
async fn a_post_in_flight_at_shutdown_is_let_finish_and_not_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let receiver = Receiver::start().await;
    *receiver.script.delay.lock().unwrap() = Duration::from_millis(300);
    let producer = spawn_producer(&["--store", "file", "--data-dir", data]).await;
    webhooks(&producer)
        .await
        .create_webhook(create("inflight", &receiver.url))
        .await
        .unwrap();
    producer.publish_n("t", 1).await;
    // The POST is on its way (answered after 300 ms) when the producer is told to stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    producer.stop().await.unwrap();
    assert_eq!(
        receiver.accepted(),
        vec![1],
        "the POST in flight was answered"
    );

    *receiver.script.delay.lock().unwrap() = Duration::ZERO;
    let producer = spawn_producer(&["--store", "file", "--data-dir", data]).await;
    producer.publish_n("t", 1).await;
    assert_eq!(
        receiver.wait_accepted(2).await,
        vec![1, 2],
        "its 2xx was recorded before the producer stopped"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.accepted(), vec![1, 2]);
}
