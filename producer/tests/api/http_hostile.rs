//! Property tests of the HTTP side against whatever a client sends: random query strings,
//! headers, JSON bodies and WebSocket messages. Every answer is a success or a 4xx with our
//! JSON error body (never a 5xx, never a dropped connection), and a refused publish appends
//! nothing.
//!
//! One producer serves all the cases of a property (starting one per case would be most of
//! the run); each property drives it from a runtime of its own with a proptest `TestRunner`.

use std::{cell::RefCell, net::SocketAddr};

use futures_util::SinkExt as _;
use producer::http::error::ErrorJson;
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{helpers::*, http_client::*};

/// Long polls in these tests may wait, but not long.
const FLAGS: &[&str] = &["--max-poll-wait", "50ms"];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Strings a client might send: anything, or something close to a valid value.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ 0-9a-z.,_-]{0,12}",
        "-?[0-9]{1,22}(\\.[0-9]{0,4})?(ms|s|m|h)?",
        Just(String::new()),
    ]
}

/// A query string: parameters the endpoints know and others, any values, repeats allowed.
fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        Just("after".to_owned()),
        Just("topics".to_owned()),
        Just("max_events".to_owned()),
        Just("wait".to_owned()),
        "[a-z_]{1,8}",
    ];
    prop::collection::vec((key, text()), 0..5)
}

/// Checks an answer: a success, or a 4xx whose body is our JSON error naming a reason.
async fn check(response: reqwest::Response, what: &str) -> Result<(u16, Value), TestCaseError> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    prop_assert!(status < 500, "{what}: {status}");
    if status < 300 {
        if content_type.starts_with("text/event-stream") {
            return Ok((status, Value::Null)); // a stream: dropped here
        }
        let body = response.bytes().await.unwrap();
        let value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        return Ok((status, value));
    }
    prop_assert!(
        content_type.starts_with("application/json"),
        "{what}: {status} with content-type {content_type:?}"
    );
    let body = response.bytes().await.unwrap();
    let error: ErrorJson = serde_json::from_slice(&body).map_err(|err| {
        TestCaseError::fail(format!(
            "{what}: {status} {err}: {}",
            String::from_utf8_lossy(&body)
        ))
    })?;
    prop_assert!(!error.reason.is_empty() && !error.message.is_empty());
    Ok((status, serde_json::to_value(error).unwrap()))
}

fn get(http: SocketAddr, path: &str, query: &[(String, String)]) -> reqwest::RequestBuilder {
    reqwest::Client::new().get(url(http, path)).query(query)
}

/// The head as `GET /poll` reports it.
async fn head(http: SocketAddr) -> u64 {
    let (status, body) = get_json(http, "/poll?max_events=1").await;
    assert_eq!(status, 200, "{body}");
    body["head_sequence"].as_u64().unwrap()
}

#[test]
fn any_query_on_poll_events_and_ws_is_answered_or_refused_in_json() {
    let rt = runtime();
    let producer = rt.block_on(spawn_http_producer(FLAGS));
    let http = producer.http.unwrap();
    rt.block_on(producer.publish("a", &["1", "2", "3"]));

    let header = prop_oneof![Just(None), text().prop_map(Some)];
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&(query(), header), |(query, last_event_id)| {
            rt.block_on(async {
                let (status, body) =
                    check(get(http, "/poll", &query).send().await.unwrap(), "poll").await?;
                if status == 200 {
                    prop_assert!(body["events"].is_array(), "{body}");
                }
                let mut sse = get(http, "/events", &query);
                if let Some(id) = &last_event_id
                    && let Ok(value) = reqwest::header::HeaderValue::from_str(id)
                {
                    sse = sse.header("last-event-id", value);
                }
                check(sse.send().await.unwrap(), "events").await?;
                // Without the upgrade headers the handshake is refused (by axum, in text), but
                // after the query was checked: whatever the query, never a 5xx.
                let ws = get(http, "/ws", &query).send().await.unwrap();
                prop_assert!(ws.status().is_client_error(), "ws: {}", ws.status());
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(producer.stop()).unwrap();
}

/// An event as a publisher might write it, right or wrong.
fn event_json() -> impl Strategy<Value = Value> {
    let topic = prop_oneof!["[a-z]{1,5}", text()];
    let encoding = prop_oneof![
        Just(json!("utf8")),
        Just(json!("base64")),
        text().prop_map(Value::from),
    ];
    let payload = prop_oneof![
        text(),
        prop::collection::vec(any::<u8>(), 0..24).prop_map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        }),
    ];
    let event = (topic, payload, prop::option::of(encoding)).prop_map(|(t, p, e)| {
        let mut event = json!({"topic": t, "payload": p});
        if let Some(e) = e {
            event["encoding"] = e;
        }
        event
    });
    prop_oneof![
        8 => event,
        1 => Just(json!({"topic": "a", "extra": 1})),
        1 => Just(json!({"payload": "no topic"})),
        1 => text().prop_map(Value::from),
    ]
}

/// A body: random bytes, JSON of the wrong shape, or a publish request right or wrong.
fn publish_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        text().prop_map(String::into_bytes),
        prop::collection::vec(event_json(), 0..4)
            .prop_map(|events| json!({ "events": events }).to_string().into_bytes()),
        event_json().prop_map(|e| e.to_string().into_bytes()),
    ]
}

#[test]
fn any_publish_body_is_appended_whole_or_refused_in_json_appending_nothing() {
    let rt = runtime();
    let producer = rt.block_on(spawn_http_producer(FLAGS));
    let http = producer.http.unwrap();
    let expected_head = RefCell::new(0u64);

    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&publish_body(), |body| {
            rt.block_on(async {
                let response = reqwest::Client::new()
                    .post(url(http, "/publish"))
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let (status, answer) = check(response, "publish").await?;
                if status == 200 {
                    let sent: Value = serde_json::from_slice(&body).unwrap();
                    let n = sent["events"].as_array().unwrap().len() as u64;
                    let mut expected = expected_head.borrow_mut();
                    prop_assert_eq!(&answer["first_sequence"], &json!(*expected + 1));
                    prop_assert_eq!(&answer["last_sequence"], &json!(*expected + n));
                    *expected += n;
                }
                prop_assert_eq!(head(http).await, *expected_head.borrow());
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(producer.stop()).unwrap();
}

/// A webhook as someone might ask for one. Hosts are addresses or `localhost`, so no case
/// waits on DNS; the default allow-list (loopback) refuses the others. Ports are ones nothing
/// listens on (or invalid), so the deliveries of the webhooks created reach no one.
fn webhook_body() -> impl Strategy<Value = Vec<u8>> {
    let url = prop_oneof![
        text(),
        "(http|https|ftp|)://(localhost|127\\.0\\.0\\.1|10\\.0\\.0\\.1|\\[::1\\]|\\[fe80::1\\]|user:pw@127\\.0\\.0\\.1):(0|1|65536|x)(/[a-z]{0,4})?",
    ];
    let id = prop_oneof!["[a-z0-9-]{1,12}", text()];
    let secret = prop_oneof![
        text(),
        "whsec_[A-Za-z0-9+/=]{0,60}",
        Just("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
    ];
    let topics = prop::collection::vec(prop_oneof!["[a-z]{1,5}", text()], 0..3);
    let create = (
        url,
        prop::option::of(id),
        prop::option::of(topics),
        prop::option::of(prop_oneof![
            any::<u64>().prop_map(Value::from),
            text().prop_map(Value::from)
        ]),
        prop::option::of(secret),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(url, id, topics, after, secret, replace)| {
            let mut body = json!({ "url": url });
            if let Some(id) = id {
                body["webhook_id"] = json!(id);
            }
            if let Some(topics) = topics {
                body["topics"] = json!(topics);
            }
            if let Some(after) = after {
                body["after_sequence"] = after;
            }
            if let Some(secret) = secret {
                body["secret"] = json!(secret);
            }
            if let Some(replace) = replace {
                body["replace"] = json!(replace);
            }
            body.to_string().into_bytes()
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => text().prop_map(String::into_bytes),
        6 => create,
    ]
}

#[test]
fn any_webhook_request_is_answered_or_refused_in_json() {
    let rt = runtime();
    let producer = rt.block_on(spawn_http_producer(FLAGS));
    let http = producer.http.unwrap();
    rt.block_on(producer.publish("a", &["1"]));

    // Not empty, `.` or `..`: the URL would be `/webhooks/` (after dot segments are resolved),
    // another route (404, no body).
    let id = prop_oneof!["[a-z0-9-]{1,12}", text()]
        .prop_filter("an id", |id| !matches!(id.as_str(), "" | "." | ".."));
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&(webhook_body(), id), |(body, id)| {
            rt.block_on(async {
                let client = reqwest::Client::new();
                let created = client
                    .post(url(http, "/webhooks"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let (status, answer) = check(created, "create").await?;
                if status < 300 {
                    prop_assert!(answer["webhook"]["webhook_id"].is_string(), "{answer}");
                }
                // The id goes into the path percent-encoded, as a client library would.
                let path = format!(
                    "/webhooks/{}",
                    url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
                );
                check(client.get(url(http, &path)).send().await.unwrap(), "get").await?;
                check(
                    client.delete(url(http, &path)).send().await.unwrap(),
                    "delete",
                )
                .await?;
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(producer.stop()).unwrap();
}

/// A WebSocket client message, right or wrong.
fn ws_message() -> impl Strategy<Value = WsMessage> {
    let after = prop_oneof![
        Just(Value::Null),
        (0u64..8).prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    let topics = prop::collection::vec(prop_oneof!["[a-z]{1,3}", text()], 0..3);
    let subscribe = (after, prop::option::of(topics)).prop_map(|(after, topics)| {
        let mut m = json!({"type": "subscribe", "after": after});
        if let Some(topics) = topics {
            m["topics"] = json!(topics);
        }
        m
    });
    let publish = (
        prop::collection::vec(event_json(), 0..3),
        prop::option::of(text()),
    )
        .prop_map(|(events, id)| json!({"type": "publish", "events": events, "id": id}));
    let json = prop_oneof![
        subscribe,
        publish,
        Just(json!({"type": "unsubscribe"})),
        text().prop_map(|t| json!({"type": t})),
        Just(json!({"type": "unsubscribe", "extra": 1})),
    ];
    prop_oneof![
        6 => json.prop_map(|m| WsMessage::text(m.to_string())),
        2 => text().prop_map(WsMessage::text),
        1 => prop::collection::vec(any::<u8>(), 0..32).prop_map(WsMessage::binary),
    ]
}

#[test]
fn any_websocket_message_gets_one_reply_and_the_socket_stays_open() {
    let rt = runtime();
    let producer = rt.block_on(spawn_http_producer(FLAGS));
    let http = producer.http.unwrap();
    rt.block_on(producer.publish("a", &["1", "2"]));
    let ws = tokio::sync::Mutex::new(rt.block_on(ws_connect(http, "/ws")));

    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&ws_message(), |message| {
            rt.block_on(async {
                let ws = &mut *ws.lock().await;
                ws.send(message.clone()).await.unwrap();
                // Batches of the current subscription may come first; the reply is the next
                // message of another type.
                let reply = loop {
                    match ws_next(ws).await {
                        Ok(m) if m["type"] == "events" => continue,
                        Ok(m) => break m,
                        Err(close) => {
                            return Err(TestCaseError::fail(format!(
                                "closed ({close:?}) after {message:?}"
                            )));
                        }
                    }
                };
                let kind = reply["type"].as_str().unwrap_or_default();
                prop_assert!(
                    matches!(kind, "subscribed" | "unsubscribed" | "published" | "error"),
                    "{reply}"
                );
                if kind == "error" {
                    let error: ErrorJson = serde_json::from_value(reply.clone())
                        .map_err(|e| TestCaseError::fail(format!("{e}: {reply}")))?;
                    prop_assert!(
                        !error.reason.is_empty() && !error.message.is_empty(),
                        "{reply}"
                    );
                }
                Ok(())
            })
        })
        .unwrap();
    drop(ws);
    rt.block_on(producer.stop()).unwrap();
}
