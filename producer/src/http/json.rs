//! The JSON the HTTP side speaks (documented in the README, "The HTTP side"). Field names are
//! the `.proto` field names, so a gRPC and an HTTP client read the same words.
//!
//! Sequences are JSON numbers: a log would need 2^53 events before a JavaScript client lost
//! precision.

use std::time::SystemTime;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::{Batch, Event, NewEvent, Topics};

/// How a payload is written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The payload is valid UTF-8 and `payload` is that text.
    #[default]
    Utf8,
    /// The payload is arbitrary bytes and `payload` is their standard base64 (with padding).
    Base64,
}

/// One event of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventJson {
    pub sequence: u64,
    pub topic: String,
    pub payload: String,
    pub encoding: Encoding,
    /// RFC 3339, UTC, microseconds: when the producer appended the event.
    pub produced_at: String,
}

impl From<&Event> for EventJson {
    fn from(event: &Event) -> Self {
        let (payload, encoding) = match std::str::from_utf8(&event.payload) {
            Ok(text) => (text.to_owned(), Encoding::Utf8),
            Err(_) => (BASE64.encode(&event.payload), Encoding::Base64),
        };
        Self {
            sequence: event.sequence,
            topic: event.topic.to_string(),
            payload,
            encoding,
            produced_at: rfc3339(event.produced_at),
        }
    }
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_micros(at).to_string()
}

/// A batch of events after a cursor: the `GET /poll` response and the WebSocket `events`
/// message. Same fields and meaning as the gRPC `PollResponse`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchJson {
    pub events: Vec<EventJson>,
    pub next_after_sequence: u64,
    pub head_sequence: u64,
    pub oldest_sequence: u64,
    pub log_id: String,
}

impl BatchJson {
    pub fn new(batch: &Batch, log_id: &str) -> Self {
        Self {
            events: batch.events.iter().map(EventJson::from).collect(),
            next_after_sequence: batch.next_after,
            head_sequence: batch.head,
            oldest_sequence: batch.oldest,
            log_id: log_id.to_owned(),
        }
    }
}

/// An event as a publisher gives it over HTTP or WebSocket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewEventJson {
    pub topic: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub encoding: Encoding,
}

/// The `POST /publish` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishJson {
    pub events: Vec<NewEventJson>,
}

/// What a Publish returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedJson {
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub log_id: String,
}

/// Decodes the events of a publish request; the error names the field (`events[2].payload`).
pub fn decode_events(events: Vec<NewEventJson>) -> Result<Vec<NewEvent>, (String, String)> {
    let mut topics = Topics::default();
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let payload = match e.encoding {
                Encoding::Utf8 => Bytes::from(e.payload),
                Encoding::Base64 => {
                    Bytes::from(BASE64.decode(e.payload.as_bytes()).map_err(|err| {
                        (
                            format!("events[{i}].payload"),
                            format!("events[{i}].payload is not valid base64: {err}"),
                        )
                    })?)
                }
            };
            Ok(NewEvent {
                topic: topics.get(&e.topic),
                payload,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn event(payload: &[u8]) -> Event {
        Event {
            sequence: 7,
            topic: Arc::from("t"),
            payload: Bytes::copy_from_slice(payload),
            produced_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn utf8_payloads_are_text_and_others_base64() {
        let text = EventJson::from(&event("héllo".as_bytes()));
        assert_eq!(
            (text.payload.as_str(), text.encoding),
            ("héllo", Encoding::Utf8)
        );
        let binary = EventJson::from(&event(&[0xff, 0x00, 0x10]));
        assert_eq!(
            (binary.payload.as_str(), binary.encoding),
            ("/wAQ", Encoding::Base64)
        );
        assert_eq!(text.produced_at, "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn publish_decodes_base64_and_names_the_bad_field() {
        let ok = decode_events(vec![NewEventJson {
            topic: "t".into(),
            payload: "/wAQ".into(),
            encoding: Encoding::Base64,
        }])
        .unwrap();
        assert_eq!(&ok[0].payload[..], &[0xff, 0x00, 0x10]);
        let (field, _) = decode_events(vec![
            NewEventJson {
                topic: "t".into(),
                payload: "x".into(),
                encoding: Encoding::Utf8,
            },
            NewEventJson {
                topic: "t".into(),
                payload: "!!".into(),
                encoding: Encoding::Base64,
            },
        ])
        .unwrap_err();
        assert_eq!(field, "events[1].payload");
    }
}

#[cfg(test)]
mod proptests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any payload, text or not, goes out as JSON and comes back in a publish as the same
        /// bytes: what a client reads it can publish again.
        #[test]
        fn any_payload_survives_json_both_ways(payload in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            any::<String>().prop_map(String::into_bytes),
        ]) {
            let out = EventJson::from(&Event {
                sequence: 1,
                topic: Arc::from("t"),
                payload: Bytes::from(payload.clone()),
                produced_at: SystemTime::UNIX_EPOCH,
            });
            let text = serde_json::to_string(&out).unwrap();
            let back: EventJson = serde_json::from_str(&text).unwrap();
            let decoded = decode_events(vec![NewEventJson {
                topic: back.topic,
                payload: back.payload,
                encoding: back.encoding,
            }])
            .unwrap();
            prop_assert_eq!(&decoded[0].payload[..], &payload[..]);
        }

        /// Any base64 claim is decoded or refused naming the event's payload.
        #[test]
        fn a_bad_base64_payload_is_refused_by_field(i in 0usize..3, payload in any::<String>()) {
            let mut events = vec![
                NewEventJson { topic: "t".into(), payload: "AA==".into(), encoding: Encoding::Base64 };
                3
            ];
            events[i].payload = payload.clone();
            match decode_events(events) {
                Ok(decoded) => prop_assert_eq!(decoded.len(), 3),
                Err((field, message)) => {
                    prop_assert!(BASE64.decode(&payload).is_err());
                    prop_assert_eq!(field, format!("events[{i}].payload"));
                    prop_assert!(message.contains("base64"));
                }
            }
        }
    }
}
