//! Events encoded once: the producer encodes each `pushpull.v1.Event` when it is appended and
//! every Subscribe and Poll response copies those bytes as they are, so delivering an event to a
//! thousand readers costs a thousand copies of ~100 bytes, not a thousand conversions and
//! encodings.
//!
//! [`server`] is the producer's generated server with `Event` replaced by [`EncodedEvent`]; the
//! bytes on the wire are exactly those of [`crate::pb`], so clients use the ordinary types.

use std::time::SystemTime;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::{
    DecodeError, Message,
    encoding::{self, DecodeContext, WireType},
};

/// The producer's generated server and its response types (`SubscribeResponse`,
/// `PollResponse`) over [`EncodedEvent`]; its Publish requests are [`PublishRequest`]s, the
/// other request types [`crate::pb`]'s.
pub mod server {
    #![allow(missing_docs, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/wire/pushpull.v1.rs"));
}

/// A `pushpull.v1.Event` as protobuf bytes: the message's fields, without the tag and length
/// that the enclosing `repeated Event events` field adds.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct EncodedEvent(pub Bytes);

/// Field numbers of `pushpull.v1.Event`.
const SEQUENCE: u32 = 1;
const TOPIC: u32 = 2;
const PAYLOAD: u32 = 3;
const PRODUCED_AT: u32 = 4;

/// Appends the encoding of one event to `buf`, exactly as prost encodes the equivalent
/// [`crate::pb::Event`] (proto3: zero and empty fields are left out). Returns where the payload
/// sits in `buf`, so the caller can keep the payload as a slice of the encoded bytes instead of
/// a second copy.
pub fn encode_event(
    sequence: u64,
    topic: &str,
    payload: &[u8],
    produced_at: SystemTime,
    buf: &mut BytesMut,
) -> std::ops::Range<usize> {
    encode_event_at(sequence, topic, payload, &ProducedAt::new(produced_at), buf)
}

/// The `produced_at` field of an event, encoded once for a batch whose events share it: the
/// conversion to a `Timestamp` and its encoding were a fifth of the cost of encoding a
/// 64-byte event.
#[derive(Debug, Clone)]
pub struct ProducedAt(BytesMut);

impl ProducedAt {
    pub fn new(at: SystemTime) -> Self {
        let ts = prost_types::Timestamp::from(at);
        let mut field = BytesMut::with_capacity(24);
        encoding::message::encode(PRODUCED_AT, &ts, &mut field);
        Self(field)
    }
}

/// [`encode_event`] with `produced_at` encoded beforehand.
pub fn encode_event_at(
    sequence: u64,
    topic: &str,
    payload: &[u8],
    produced_at: &ProducedAt,
    buf: &mut BytesMut,
) -> std::ops::Range<usize> {
    if sequence != 0 {
        encoding::uint64::encode(SEQUENCE, &sequence, buf);
    }
    if !topic.is_empty() {
        encoding::encode_key(TOPIC, WireType::LengthDelimited, buf);
        encoding::encode_varint(topic.len() as u64, buf);
        buf.put_slice(topic.as_bytes());
    }
    let mut payload_at = buf.len()..buf.len();
    if !payload.is_empty() {
        encoding::encode_key(PAYLOAD, WireType::LengthDelimited, buf);
        encoding::encode_varint(payload.len() as u64, buf);
        let start = buf.len();
        buf.put_slice(payload);
        payload_at = start..buf.len();
    }
    buf.put_slice(&produced_at.0);
    payload_at
}

/// The fields of an encoded `pushpull.v1.Event`, read without copying: what a store's reader
/// needs to filter by topic and to rebuild an event, from the bytes that were appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView<'a> {
    pub sequence: u64,
    pub topic: &'a str,
    /// Where the payload sits in the encoding (empty when the payload is).
    pub payload: std::ops::Range<usize>,
    pub produced_at: SystemTime,
}

/// Bytes that do not parse as a `pushpull.v1.Event`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pushpull.v1.Event: {0}")]
pub struct MalformedEvent(pub String);

impl From<DecodeError> for MalformedEvent {
    fn from(err: DecodeError) -> Self {
        MalformedEvent(err.to_string())
    }
}

impl<'a> EventView<'a> {
    /// Parses an encoding made by [`encode_event`] (or any valid `pushpull.v1.Event`). Unknown
    /// fields are skipped, as protobuf readers must.
    pub fn parse(encoded: &'a [u8]) -> Result<Self, MalformedEvent> {
        let mut view = EventView {
            sequence: 0,
            topic: "",
            payload: 0..0,
            produced_at: SystemTime::UNIX_EPOCH,
        };
        let mut buf = encoded;
        while !buf.is_empty() {
            let (tag, wire_type) = encoding::decode_key(&mut buf)?;
            match (tag, wire_type) {
                (SEQUENCE, WireType::Varint) => view.sequence = encoding::decode_varint(&mut buf)?,
                (TOPIC | PAYLOAD | PRODUCED_AT, WireType::LengthDelimited) => {
                    let len = encoding::decode_varint(&mut buf)? as usize;
                    if len > buf.len() {
                        return Err(MalformedEvent("a field runs past the end".into()));
                    }
                    let start = encoded.len() - buf.len();
                    let (field, rest) = buf.split_at(len);
                    match tag {
                        TOPIC => {
                            view.topic = std::str::from_utf8(field)
                                .map_err(|_| MalformedEvent("topic is not UTF-8".into()))?;
                        }
                        PAYLOAD => view.payload = start..start + len,
                        _ => {
                            let ts = prost_types::Timestamp::decode(field)?;
                            view.produced_at = SystemTime::try_from(ts).map_err(|_| {
                                MalformedEvent("produced_at is out of range".into())
                            })?;
                        }
                    }
                    buf = rest;
                }
                _ => encoding::skip_field(wire_type, tag, &mut buf, DecodeContext::default())?,
            }
        }
        Ok(view)
    }
}

impl Message for EncodedEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Keeps each field's bytes as they came (re-encoding only the key and the length), so a
    /// decoded `EncodedEvent` encodes back to the same bytes. Only tests decode these; clients
    /// use [`crate::pb::Event`].
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut out = BytesMut::from(&self.0[..]);
        match wire_type {
            WireType::Varint => {
                let v = encoding::decode_varint(buf)?;
                encoding::encode_key(tag, wire_type, &mut out);
                encoding::encode_varint(v, &mut out);
            }
            WireType::LengthDelimited => {
                let mut value = Bytes::new();
                encoding::bytes::merge(wire_type, &mut value, buf, ctx)?;
                encoding::encode_key(tag, wire_type, &mut out);
                encoding::encode_varint(value.len() as u64, &mut out);
                out.put_slice(&value);
            }
            _ => return encoding::skip_field(wire_type, tag, buf, ctx),
        }
        self.0 = out.freeze();
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

/// Field numbers of `pushpull.v1.NewEvent`.
const NEW_TOPIC: u32 = 1;
const NEW_PAYLOAD: u32 = 2;

/// A `pushpull.v1.PublishRequest` as the producer's server decodes it: its events' topics and
/// payloads are slices of the request's bytes ([`NewEvent`]), where prost's own type gives
/// every event a `String` of its own (a thousand allocations and copies per 1,000-event
/// Publish, for topics that mostly repeat). Same wire format, same errors as
/// [`crate::pb::PublishRequest`]; the producer interns the topics.
#[derive(Clone, PartialEq, Message)]
pub struct PublishRequest {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<NewEvent>,
}

/// A `pushpull.v1.NewEvent` whose topic stays in the request's bytes, checked to be UTF-8 as
/// prost checks a `string`.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct NewEvent {
    /// UTF-8, always: checked when decoded (the only way one is made).
    topic: Bytes,
    pub payload: Bytes,
}

impl NewEvent {
    pub fn topic(&self) -> &str {
        std::str::from_utf8(&self.topic).expect("a NewEvent's topic is UTF-8: checked when made")
    }
}

/// prost's message for a `string` field that is not UTF-8, word for word.
const NOT_UTF8: &str = "invalid string value: data is not UTF-8 encoded";

impl Message for NewEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.topic.is_empty() {
            encoding::bytes::encode(NEW_TOPIC, &self.topic, buf);
        }
        if !self.payload.is_empty() {
            encoding::bytes::encode(NEW_PAYLOAD, &self.payload, buf);
        }
    }

    /// As prost's generated `merge_field` for the same message, errors included (field
    /// errors carry the same `NewEvent.topic` / `NewEvent.payload` location), except that the
    /// topic is kept as `Bytes` after its UTF-8 check.
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            NEW_TOPIC => {
                let mut topic = Bytes::new();
                encoding::bytes::merge(wire_type, &mut topic, buf, ctx)
                    .and_then(|()| match std::str::from_utf8(&topic) {
                        Ok(_) => Ok(()),
                        // The constructor prost's own `string` decoding uses; deprecated only
                        // for being public by accident.
                        #[allow(deprecated)]
                        Err(_) => Err(DecodeError::new(NOT_UTF8)),
                    })
                    .map_err(|mut err| {
                        err.push("NewEvent", "topic");
                        err
                    })?;
                self.topic = topic;
                Ok(())
            }
            NEW_PAYLOAD => {
                encoding::bytes::merge(wire_type, &mut self.payload, buf, ctx).map_err(|mut err| {
                    err.push("NewEvent", "payload");
                    err
                })
            }
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let field = |tag, value: &Bytes| {
            if value.is_empty() {
                0
            } else {
                encoding::bytes::encoded_len(tag, value)
            }
        };
        field(NEW_TOPIC, &self.topic) + field(NEW_PAYLOAD, &self.payload)
    }

    fn clear(&mut self) {
        self.topic = Bytes::new();
        self.payload = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use std::time::{Duration, UNIX_EPOCH};

    fn pb_event(sequence: u64, topic: &str, payload: &[u8], at: SystemTime) -> pb::Event {
        pb::Event {
            sequence,
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload),
            produced_at: Some(prost_types::Timestamp::from(at)),
        }
    }

    #[test]
    fn views_read_back_what_was_encoded() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        for (sequence, topic, payload) in [
            (1, "a", &b"x"[..]),
            (7, "t.b", &b""[..]),
            (u64::MAX, "z", &[9u8; 300][..]),
        ] {
            let mut buf = BytesMut::new();
            encode_event(sequence, topic, payload, at, &mut buf);
            let view = EventView::parse(&buf).unwrap();
            assert_eq!(
                (
                    view.sequence,
                    view.topic,
                    &buf[view.payload.clone()],
                    view.produced_at
                ),
                (sequence, topic, payload, at)
            );
            for cut in 1..buf.len() {
                // A truncated encoding is an error or a shorter event, never a panic.
                let _ = EventView::parse(&buf[..cut]);
            }
        }
    }

    #[test]
    fn hand_encoding_matches_prost_byte_for_byte() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let cases = [
            (1, "a", &b"x"[..], at),
            (300, "quotes.AAPL", &[7u8; 200][..], at),
            (u64::MAX, "t", &b""[..], UNIX_EPOCH + Duration::from_secs(5)),
            (
                42,
                "whole.seconds",
                &b"{}"[..],
                UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            ),
        ];
        for (sequence, topic, payload, at) in cases {
            let mut buf = BytesMut::new();
            let range = encode_event(sequence, topic, payload, at, &mut buf);
            assert_eq!(&buf[range], payload);
            let expected = pb_event(sequence, topic, payload, at);
            assert_eq!(buf.to_vec(), expected.encode_to_vec(), "{expected:?}");
            assert_eq!(pb::Event::decode(&buf[..]).unwrap(), expected);
        }
    }

    #[test]
    fn responses_of_encoded_events_decode_as_ordinary_responses() {
        let at = SystemTime::now();
        let mut buf = BytesMut::new();
        encode_event(5, "a", b"one", at, &mut buf);
        let first = EncodedEvent(buf.split().freeze());
        encode_event(6, "b", b"two", at, &mut buf);
        let second = EncodedEvent(buf.split().freeze());
        let response = server::SubscribeResponse {
            events: vec![first.clone(), second],
            head_sequence: 9,
            log_id: "L".into(),
            next_after_sequence: 6,
        };
        let decoded = pb::SubscribeResponse::decode(&response.encode_to_vec()[..]).unwrap();
        assert_eq!(
            decoded,
            pb::SubscribeResponse {
                events: vec![pb_event(5, "a", b"one", at), pb_event(6, "b", b"two", at)],
                head_sequence: 9,
                log_id: "L".into(),
                next_after_sequence: 6,
            }
        );
        // And back: an encoded event survives decoding as itself.
        let again = server::SubscribeResponse::decode(&response.encode_to_vec()[..]).unwrap();
        assert_eq!(again.events[0], first);
    }

    /// Our decoding of a Publish request and prost's agree: the same events, or the same
    /// error, word for word (a malformed request's status carries it).
    pub(super) fn decodes_as_prost_does(bytes: &[u8]) -> Result<(), String> {
        let ours = PublishRequest::decode(Bytes::copy_from_slice(bytes));
        let theirs = pb::PublishRequest::decode(bytes);
        match (ours, theirs) {
            (Ok(ours), Ok(theirs)) => {
                let ours: Vec<_> = ours
                    .events
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.payload.clone()))
                    .collect();
                let theirs: Vec<_> = theirs
                    .events
                    .into_iter()
                    .map(|e| (e.topic, e.payload))
                    .collect();
                if ours == theirs {
                    Ok(())
                } else {
                    Err(format!("{ours:?} != {theirs:?}"))
                }
            }
            (Err(ours), Err(theirs)) if ours.to_string() == theirs.to_string() => Ok(()),
            (ours, theirs) => Err(format!("ours {ours:?}, prost's {theirs:?}")),
        }
    }

    /// A Publish request's bytes, with topics that need not be UTF-8.
    pub(super) fn publish_bytes(events: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (topic, payload) in events {
            let mut body = Vec::new();
            if !topic.is_empty() {
                encoding::bytes::encode(NEW_TOPIC, topic, &mut body);
            }
            if !payload.is_empty() {
                encoding::bytes::encode(NEW_PAYLOAD, payload, &mut body);
            }
            encoding::bytes::encode(1, &body, &mut buf);
        }
        buf
    }

    #[test]
    fn publish_requests_decode_as_prost_decodes_them_and_encode_back_the_same() {
        let request = pb::PublishRequest {
            events: vec![
                pb::NewEvent {
                    topic: "quotes.AAPL".into(),
                    payload: Bytes::from_static(b"{\"p\":1}"),
                },
                pb::NewEvent {
                    topic: "quotes.AAPL".into(),
                    payload: Bytes::new(),
                },
                pb::NewEvent {
                    topic: String::new(),
                    payload: Bytes::from_static(&[0, 255]),
                },
            ],
        };
        let bytes = request.encode_to_vec();
        decodes_as_prost_does(&bytes).unwrap();
        let ours = PublishRequest::decode(&bytes[..]).unwrap();
        assert_eq!(ours.events[1].topic(), "quotes.AAPL");
        assert_eq!(ours.events[2].topic(), "");
        assert_eq!(ours.encode_to_vec(), bytes);
        assert_eq!(ours.encoded_len(), bytes.len());
        for cut in 0..bytes.len() {
            decodes_as_prost_does(&bytes[..cut]).unwrap();
        }
    }

    #[test]
    fn a_topic_that_is_not_utf8_fails_as_it_does_with_prost() {
        let bytes = publish_bytes(&[(b"ok".to_vec(), vec![]), (vec![b'a', 0xff], b"x".to_vec())]);
        let err = PublishRequest::decode(&bytes[..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to decode Protobuf message: NewEvent.topic: PublishRequest.events: \
             invalid string value: data is not UTF-8 encoded"
        );
        decodes_as_prost_does(&bytes).unwrap();
    }

    #[test]
    fn odd_but_valid_encodings_decode_as_with_prost() {
        let mut event = Vec::new();
        // Payload before topic, a topic given twice (the last wins), an unknown field.
        encoding::bytes::encode(NEW_PAYLOAD, &b"p".to_vec(), &mut event);
        encoding::bytes::encode(NEW_TOPIC, &b"first".to_vec(), &mut event);
        encoding::uint64::encode(9, &7, &mut event);
        encoding::bytes::encode(NEW_TOPIC, &b"second".to_vec(), &mut event);
        let mut bytes = Vec::new();
        encoding::bytes::encode(1, &event, &mut bytes);
        encoding::uint64::encode(5, &1, &mut bytes);
        let ours = PublishRequest::decode(&bytes[..]).unwrap();
        assert_eq!(
            (ours.events[0].topic(), &ours.events[0].payload[..]),
            ("second", &b"p"[..])
        );
        decodes_as_prost_does(&bytes).unwrap();
        // The wrong wire type for a field.
        let mut event = Vec::new();
        encoding::uint64::encode(NEW_TOPIC, &7, &mut event);
        let mut bytes = Vec::new();
        encoding::bytes::encode(1, &event, &mut bytes);
        assert!(PublishRequest::decode(&bytes[..]).is_err());
        decodes_as_prost_does(&bytes).unwrap();
    }
}

#[cfg(test)]
mod proptests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Any bytes decode as a Publish request exactly as prost decodes them: the same
        /// events, or the same error.
        #[test]
        fn any_bytes_decode_as_a_publish_request_as_with_prost(
            bytes in prop::collection::vec(any::<u8>(), 0..96),
        ) {
            prop_assert_eq!(super::tests::decodes_as_prost_does(&bytes), Ok(()));
        }

        /// A request made of events with any topics (UTF-8 or not) and payloads, then cut
        /// short or with one byte changed, decodes exactly as prost decodes it.
        #[test]
        fn publish_requests_cut_or_changed_decode_as_with_prost(
            events in prop::collection::vec(
                (
                    prop_oneof![
                        "[a-z._-]{0,8}".prop_map(String::into_bytes),
                        prop::collection::vec(any::<u8>(), 0..8),
                    ],
                    prop::collection::vec(any::<u8>(), 0..16),
                ),
                0..5,
            ),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let bytes = super::tests::publish_bytes(&events);
            prop_assert_eq!(super::tests::decodes_as_prost_does(&bytes), Ok(()));
            let cut = cut.index(bytes.len() + 1);
            prop_assert_eq!(super::tests::decodes_as_prost_does(&bytes[..cut]), Ok(()));
            if !bytes.is_empty() {
                let mut changed = bytes.clone();
                changed[at.index(bytes.len())] = byte;
                prop_assert_eq!(super::tests::decodes_as_prost_does(&changed), Ok(()));
            }
        }

        /// The file store and the tail cache parse stored encodings: any bytes are a view or
        /// an error, and a view's payload range lies inside the bytes.
        #[test]
        fn any_bytes_are_a_view_or_malformed(bytes in prop::collection::vec(any::<u8>(), 0..96)) {
            if let Ok(view) = EventView::parse(&bytes) {
                prop_assert!(view.payload.start <= view.payload.end && view.payload.end <= bytes.len());
            }
        }

        /// What is encoded reads back, and any cut of it is malformed or a view of less.
        #[test]
        fn an_encoding_reads_back_and_a_cut_one_never_invents_data(
            sequence in any::<u64>(),
            topic in "[a-z._-]{0,12}",
            payload in prop::collection::vec(any::<u8>(), 0..48),
            nanos in 0u64..4_000_000_000_000_000_000,
            cut in any::<prop::sample::Index>(),
        ) {
            let at = UNIX_EPOCH + Duration::from_nanos(nanos);
            let mut buf = BytesMut::new();
            let payload_at = encode_event(sequence, &topic, &payload, at, &mut buf);
            let view = EventView::parse(&buf).unwrap();
            prop_assert_eq!((view.sequence, view.topic, view.produced_at), (sequence, topic.as_str(), at));
            prop_assert_eq!(&buf[view.payload.clone()], &payload[..]);
            if !payload.is_empty() {
                prop_assert_eq!(view.payload, payload_at);
            }

            let cut = cut.index(buf.len());
            if let Ok(view) = EventView::parse(&buf[..cut]) {
                prop_assert!(view.payload.end <= cut);
                // A field is whole or absent: never a payload cut short.
                prop_assert!(view.payload.is_empty() || buf[view.payload.clone()] == payload[..]);
            }
        }
    }
}
