//! One webhook delivery: the batch's body and headers, one POST, and what the answer means.
//!
//! Kept free of subscription state so the rules (only 2xx delivers, 410 ends the subscription,
//! `Retry-After` is honoured, the id survives redelivery) are tested on their own.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;

use pushpull::errors::error_chain;

use super::{allow::AllowList, secret::Secret};
use crate::{
    http::json::{EventJson, rfc3339},
    log::Batch,
};

/// The `type` of every delivery's envelope.
pub const EVENT_TYPE: &str = "pushpull.events";

/// One batch for one subscription: the events after `after_sequence`, up to
/// `next_after_sequence`. The same value is POSTed on every retry, so its id does not change.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookBatch {
    pub webhook_id: String,
    pub events: Vec<EventJson>,
    /// The subscription's cursor before this batch: a receiver whose own cursor is lower has
    /// missed the events in between and polls for them.
    pub after_sequence: u64,
    /// The cursor once this batch is delivered.
    pub next_after_sequence: u64,
    pub head_sequence: u64,
    pub log_id: String,
}

impl WebhookBatch {
    pub fn new(webhook_id: &str, after: u64, batch: &Batch, log_id: &str) -> Self {
        Self {
            webhook_id: webhook_id.to_owned(),
            events: batch.events.iter().map(EventJson::from).collect(),
            after_sequence: after,
            next_after_sequence: batch.next_after,
            head_sequence: batch.head,
            log_id: log_id.to_owned(),
        }
    }

    /// The `webhook-id`: derived from the subscription and the batch's sequences, so every
    /// redelivery of the batch carries the same id (the receiver's idempotency key), and two
    /// batches never share one. `_` separates the parts: ids are `[A-Za-z0-9-]`.
    pub fn message_id(&self) -> String {
        format!(
            "{}_{}_{}",
            self.webhook_id, self.after_sequence, self.next_after_sequence
        )
    }

    /// The JSON body, in Standard Webhooks' recommended envelope: `type`, `timestamp`, `data`.
    pub fn body(&self, now: SystemTime) -> Vec<u8> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            r#type: &'static str,
            timestamp: String,
            data: &'a WebhookBatch,
        }
        serde_json::to_vec(&Envelope {
            r#type: EVENT_TYPE,
            timestamp: rfc3339(now),
            data: self,
        })
        .expect("a batch always serializes")
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: the cursor moves past the batch.
    Delivered,
    /// Try the same batch again later; `retry_after` is what the endpoint asked for.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// 410 Gone: the endpoint does not want deliveries any more; the subscription is disabled.
    Gone { error: String },
}

impl Outcome {
    /// The `outcome` label of the attempts metric.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Gone { .. } => "gone",
        }
    }
}

/// The answer's meaning. Everything but 2xx and 410 is retried: a 4xx is usually a receiver's
/// bug that its owner fixes (a bad signature check, a deploy), and skipping the batch would lose
/// events, which the cursor promises never to do.
pub fn classify(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let error = format!("HTTP {status}");
    if status == StatusCode::GONE {
        return Outcome::Gone { error };
    }
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| retry_after(value, now));
    Outcome::Retry { error, retry_after }
}

/// `Retry-After`, as delay-seconds or an HTTP date (RFC 9110 §10.2.3); `None` if it is neither.
/// A date in the past asks for no delay.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The signed request's headers for `batch` with `body`, at `now`.
pub fn signed_headers(
    secret: &Secret,
    batch: &WebhookBatch,
    body: &[u8],
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    let id = batch.message_id();
    let timestamp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64);
    let signature = secret
        .signer()
        .sign(&id, timestamp, body)
        .expect("the body is JSON, so UTF-8");
    vec![
        (standardwebhooks::HEADER_WEBHOOK_ID, id),
        (
            standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
            timestamp.to_string(),
        ),
        (standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature),
    ]
}

/// POSTs `batch` to `url` once, signed with `secret`, and says what came of it. `client` must
/// not follow redirects: a redirect could lead outside the allow-list.
pub async fn attempt(
    client: &reqwest::Client,
    url: &str,
    secret: &Secret,
    batch: &WebhookBatch,
    timeout: Duration,
) -> Outcome {
    let now = SystemTime::now();
    let body = batch.body(now);
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in signed_headers(secret, batch, &body, now) {
        request = request.header(name, value);
    }
    match request.body(body).send().await {
        // reqwest and axum share the `http` crate: its status and headers are ours as they are.
        Ok(response) => classify(response.status(), response.headers(), SystemTime::now()),
        Err(err) => Outcome::Retry {
            error: if err.is_timeout() {
                format!("timed out after {}", humantime::format_duration(timeout))
            } else if err.is_connect() {
                format!("cannot connect: {}", error_chain(&err))
            } else {
                error_chain(&err)
            },
            retry_after: None,
        },
    }
}

/// What `https://` webhook deliveries trust and present, beyond the system's roots.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Extra CA certificates (PEM, `--webhook-ca`): for receivers with private certificates.
    pub ca: Option<Vec<u8>>,
    /// The producer's own certificate chain and key (PEM, `--tls-cert` + `--tls-key`),
    /// presented to receivers that ask for a client certificate.
    pub identity: Option<Vec<u8>>,
}

/// The client every delivery uses: names resolve only into `allow`, no redirects, no proxy from
/// the environment (a delivery goes where its URL says, where the allow-list checked it);
/// `https://` receivers are verified against the system's roots and `tls.ca`.
pub fn client(allow: &Arc<AllowList>, tls: &ClientTls) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(allow.resolver())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("pushpull-producer/", env!("CARGO_PKG_VERSION")))
        .https_only(false);
    if let Some(pem) = &tls.ca {
        for cert in
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("--webhook-ca: {e}"))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(pem) = &tls.identity {
        builder = builder.identity(
            reqwest::Identity::from_pem(pem).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?,
        );
    }
    builder.build().map_err(|e| format!("webhook client: {e}"))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{Router, body::Bytes, extract::State, routing::post};
    use bytes::Bytes as Payload;

    use super::*;
    use crate::{log::Event, webhook::allow};

    fn client() -> reqwest::Client {
        super::client(
            &Arc::new(AllowList::parse(allow::DEFAULT).unwrap()),
            &ClientTls::default(),
        )
        .unwrap()
    }

    fn batch() -> WebhookBatch {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let events = [
            (4, "quotes.AAPL", &b"one"[..]),
            (6, "quotes.AAPL", &[0xff, 0][..]),
        ]
        .into_iter()
        .map(|(sequence, topic, payload)| Event {
            sequence,
            topic: topic.into(),
            payload: Payload::copy_from_slice(payload),
            produced_at: at,
        })
        .collect();
        let batch = Batch {
            events,
            next_after: 7,
            head: 9,
            oldest: 1,
        };
        WebhookBatch::new("orders-1", 3, &batch, "L1")
    }

    fn header_map(headers: Vec<(&'static str, String)>) -> HeaderMap {
        headers
            .into_iter()
            .map(|(name, value)| (name.parse().unwrap(), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn the_body_is_the_envelope_with_the_batch_and_its_sequences() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_001);
        let body: serde_json::Value = serde_json::from_slice(&batch().body(at)).unwrap();
        assert_eq!(body["type"], "pushpull.events");
        assert_eq!(body["timestamp"], "2027-01-15T08:00:01.000000Z");
        let data = &body["data"];
        assert_eq!(data["webhook_id"], "orders-1");
        assert_eq!(
            (
                &data["after_sequence"],
                &data["next_after_sequence"],
                &data["head_sequence"],
                &data["log_id"]
            ),
            (&3.into(), &7.into(), &9.into(), &"L1".into())
        );
        assert_eq!(data["events"][0]["sequence"], 4);
        assert_eq!(data["events"][0]["payload"], "one");
        assert_eq!(data["events"][1]["encoding"], "base64");
        assert_eq!(data["events"][1]["payload"], "/wA=");
    }

    #[test]
    fn the_id_names_the_subscription_and_the_batch_and_survives_redelivery() {
        let batch = batch();
        assert_eq!(batch.message_id(), "orders-1_3_7");
        assert_eq!(batch.clone().message_id(), batch.message_id());
        let mut next = batch.clone();
        next.after_sequence = 7;
        next.next_after_sequence = 9;
        assert_ne!(next.message_id(), batch.message_id());
    }

    #[test]
    fn the_signature_verifies_and_a_changed_body_or_secret_does_not() {
        let secret = Secret::generate();
        let batch = batch();
        let now = SystemTime::now();
        let body = batch.body(now);
        let headers = header_map(signed_headers(&secret, &batch, &body, now));
        let verifier = standardwebhooks::Webhook::new(&secret.reveal()).unwrap();
        verifier
            .verify(&body, &headers)
            .expect("signature verifies");
        let signature = headers["webhook-signature"].to_str().unwrap();
        assert!(signature.starts_with("v1,"), "{signature}");

        let mut tampered = body.clone();
        tampered[10] ^= 1;
        assert!(verifier.verify(&tampered, &headers).is_err());
        let other = standardwebhooks::Webhook::new(&Secret::generate().reveal()).unwrap();
        assert!(other.verify(&body, &headers).is_err());
        let stale = SystemTime::now() - Duration::from_secs(600);
        let headers = header_map(signed_headers(&secret, &batch, &body, stale));
        assert!(verifier.verify(&body, &headers).is_err(), "stale timestamp");
    }

    #[test]
    fn only_2xx_delivers_410_ends_and_the_rest_retries() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        for code in [200, 202, 204] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(classify(status, &none, now), Outcome::Delivered);
        }
        assert_eq!(
            classify(StatusCode::GONE, &none, now),
            Outcome::Gone {
                error: "HTTP 410 Gone".into()
            }
        );
        for code in [301, 400, 401, 404, 408, 429, 500, 503] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(
                    classify(status, &none, now),
                    Outcome::Retry {
                        retry_after: None,
                        ..
                    }
                ),
                "{code}"
            );
        }
        let mut asks = HeaderMap::new();
        asks.insert(header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, &asks, now),
            Outcome::Retry {
                error: "HTTP 503 Service Unavailable".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        // RFC 9110's example date is 784111777 s after the epoch.
        let later = "Sun, 06 Nov 1994 08:49:47 GMT";
        assert_eq!(retry_after(later, now), Some(Duration::from_secs(10)));
        let earlier = "Sun, 06 Nov 1994 08:49:27 GMT";
        assert_eq!(retry_after(earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    /// A receiver on port 0 that answers with `statuses` in turn (then 200) and records what it
    /// was sent.
    async fn receiver(statuses: Vec<u16>) -> (String, Arc<Mutex<Vec<(HeaderMap, Bytes)>>>) {
        #[derive(Clone)]
        struct Receiver {
            statuses: Arc<Vec<u16>>,
            calls: Arc<AtomicUsize>,
            seen: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
        }
        async fn take(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
            let call = r.calls.fetch_add(1, Ordering::SeqCst);
            r.seen.lock().unwrap().push((headers, body));
            let code = r.statuses.get(call).copied().unwrap_or(200);
            StatusCode::from_u16(code).unwrap()
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Receiver {
            statuses: Arc::new(statuses),
            calls: Arc::default(),
            seen: Arc::clone(&seen),
        };
        let app = Router::new().route("/hook", post(take)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    #[tokio::test]
    async fn an_attempt_posts_the_signed_batch_and_a_retry_sends_the_same_id() {
        let (url, seen) = receiver(vec![500]).await;
        let (client, secret, batch) = (client(), Secret::generate(), batch());
        let timeout = Duration::from_secs(5);

        let first = attempt(&client, &url, &secret, &batch, timeout).await;
        assert_eq!(
            first,
            Outcome::Retry {
                error: "HTTP 500 Internal Server Error".into(),
                retry_after: None
            }
        );
        let second = attempt(&client, &url, &secret, &batch, timeout).await;
        assert_eq!(second, Outcome::Delivered);

        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let verifier = standardwebhooks::Webhook::new(&secret.reveal()).unwrap();
        for (headers, body) in seen.iter() {
            verifier.verify(body, headers).expect("signed");
            assert_eq!(headers["content-type"], "application/json");
            assert_eq!(headers["webhook-id"], "orders-1_3_7");
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(body["data"]["events"][1]["sequence"], 6);
        }
    }

    #[tokio::test]
    async fn a_dead_or_silent_endpoint_is_a_retry_naming_the_failure() {
        let (client, secret, batch) = (client(), Secret::generate(), batch());
        // A port nothing listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", closed.local_addr().unwrap());
        drop(closed);
        let outcome = attempt(&client, &url, &secret, &batch, Duration::from_secs(5)).await;
        let Outcome::Retry { error, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(error.starts_with("cannot connect"), "{error}");

        // Accepts, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", silent.local_addr().unwrap());
        let outcome = attempt(&client, &url, &secret, &batch, Duration::from_millis(200)).await;
        assert_eq!(
            outcome,
            Outcome::Retry {
                error: "timed out after 200ms".into(),
                retry_after: None
            }
        );
        drop(silent);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (target, seen) = receiver(vec![]).await;
        let app = Router::new().route(
            "/hook",
            post(move || {
                let target = target.clone();
                async move { axum::response::Redirect::temporary(&target) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let outcome = attempt(
            &client(),
            &url,
            &Secret::generate(),
            &batch(),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            matches!(&outcome, Outcome::Retry { error, .. } if error == "HTTP 307 Temporary Redirect"),
            "{outcome:?}"
        );
        assert!(
            seen.lock().unwrap().is_empty(),
            "the redirect was not followed"
        );
    }

    #[tokio::test]
    async fn a_name_resolving_outside_the_allow_list_is_not_reached() {
        let (url, seen) = receiver(vec![]).await;
        // The receiver listens on 127.0.0.1; reach it by name with only 10/8 allowed.
        let by_name = url.replace("127.0.0.1", "localhost");
        let only_ten = super::client(
            &Arc::new(AllowList::parse("10.0.0.0/8").unwrap()),
            &ClientTls::default(),
        )
        .unwrap();
        let outcome = attempt(
            &only_ten,
            &by_name,
            &Secret::generate(),
            &batch(),
            Duration::from_secs(5),
        )
        .await;
        let Outcome::Retry { error, .. } = &outcome else {
            panic!("{outcome:?}")
        };
        assert!(error.contains("outside the webhook allow-list"), "{error}");
        assert!(seen.lock().unwrap().is_empty());
        // And with loopback allowed, the same URL is reached.
        let outcome = attempt(
            &client(),
            &by_name,
            &Secret::generate(),
            &batch(),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(outcome, Outcome::Delivered);
    }
}
