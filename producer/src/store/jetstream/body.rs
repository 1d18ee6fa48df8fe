//! One JetStream message of the log: its headers and its body.
//!
//! A message holds the events of one or more whole Publish calls (a group commit), with
//! consecutive log sequences:
//! - header `Pushpull-First-Sequence`: the log sequence of its first event;
//! - header `Pushpull-Events`: how many events it holds (0 for the stream's first message, the
//!   genesis, which holds none: see [`super::GENESIS_ID`]);
//! - body: each event's `pushpull.v1.Event` encoding (sequence included), preceded by its
//!   length as a protobuf varint: a stream of length-delimited messages, as protobuf's
//!   `writeDelimitedTo` writes them, readable from any language.
//!
//! The encodings are the bytes readers are sent, so the follower slices them out of the
//! message without copying.

use std::{sync::Arc, time::SystemTime};

use async_nats::HeaderMap;
use bytes::{Bytes, BytesMut};
use prost::encoding::{decode_varint, encode_varint, encoded_len_varint};
use pushpull::wire::EventView;

use crate::{
    log::Event,
    store::{Entry, NewBatch, Record, encode_entries},
};

pub const FIRST_SEQUENCE: &str = "Pushpull-First-Sequence";
pub const EVENTS: &str = "Pushpull-Events";

/// Which log sequences a message holds, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first event's sequence (for an empty message, the sequence the next one gets).
    pub first: u64,
    pub events: u64,
}

impl Span {
    /// The last sequence it holds; `first - 1` when it holds none.
    pub fn last(&self) -> u64 {
        self.first + self.events - 1
    }

    pub fn contains(&self, sequence: u64) -> bool {
        sequence >= self.first && sequence < self.first + self.events
    }

    /// Reads the span from a message's headers.
    pub fn from_headers(headers: Option<&HeaderMap>) -> Result<Span, String> {
        let field = |name: &str| -> Result<u64, String> {
            let value = headers
                .and_then(|h| h.get(name))
                .ok_or_else(|| format!("no {name} header: not a pushpull message"))?;
            value
                .as_str()
                .parse()
                .map_err(|_| format!("header {name}: {:?} is not a number", value.as_str()))
        };
        let span = Span {
            first: field(FIRST_SEQUENCE)?,
            events: field(EVENTS)?,
        };
        if span.first == 0 {
            return Err(format!("header {FIRST_SEQUENCE} is 0"));
        }
        Ok(span)
    }

    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(FIRST_SEQUENCE, self.first.to_string().as_str());
        headers.insert(EVENTS, self.events.to_string().as_str());
    }
}

/// Encodes `batches` as one body whose first event gets `first`; returns the body and each
/// batch's (first, last) sequence.
pub fn encode(
    first: u64,
    batches: &[NewBatch],
    produced_at: SystemTime,
) -> (Bytes, Vec<(u64, u64)>) {
    let capacity: usize = batches
        .iter()
        .flat_map(|b| &b.events)
        .map(|(topic, payload)| topic.len() + payload.len() + 64)
        .sum();
    let mut body = BytesMut::with_capacity(capacity);
    let mut spans = Vec::with_capacity(batches.len());
    let mut next = first;
    for batch in batches {
        let count = batch.events.len() as u64;
        for entry in encode_entries(next, batch.clone(), produced_at) {
            encode_varint(entry.encoded.len() as u64, &mut body);
            body.extend_from_slice(&entry.encoded);
        }
        spans.push((next, next + count - 1));
        next += count;
    }
    (body.freeze(), spans)
}

/// Bytes a batch adds to a body: what the group commit adds up against the server's
/// `max_payload`.
pub fn encoded_len(batch: &NewBatch) -> usize {
    batch
        .events
        .iter()
        .map(|(topic, payload)| {
            // The encoding's own bound: sequence, timestamp, keys and lengths take < 48 bytes.
            let len = topic.len() + payload.len() + 48;
            len + encoded_len_varint(len as u64)
        })
        .sum()
}

/// Splits a body into its records, checking each sits at the sequence `span` gives it.
pub fn records(span: Span, body: &Bytes) -> Result<Vec<Record>, String> {
    let mut records = Vec::with_capacity(span.events as usize);
    let mut rest: &[u8] = body;
    while !rest.is_empty() {
        let len = decode_varint(&mut rest).map_err(|e| format!("a record length: {e}"))? as usize;
        if len > rest.len() {
            return Err(format!(
                "a record of {len} bytes runs past the end of the message ({} left)",
                rest.len()
            ));
        }
        let at = body.len() - rest.len();
        let sequence = span.first + records.len() as u64;
        records.push(Record {
            sequence,
            encoded: body.slice(at..at + len),
        });
        rest = &rest[len..];
    }
    if records.len() as u64 != span.events {
        return Err(format!(
            "the message holds {} events, its {EVENTS} header says {}",
            records.len(),
            span.events
        ));
    }
    Ok(records)
}

/// [`records`], parsed into the entries the tail cache holds (each event's sequence checked
/// against its place). Topics repeat within a message, so each is allocated once.
pub fn entries(span: Span, body: &Bytes) -> Result<Vec<Entry>, String> {
    let mut topics: Vec<Arc<str>> = Vec::new();
    records(span, body)?
        .into_iter()
        .map(|record| {
            let view = EventView::parse(&record.encoded)
                .map_err(|e| format!("sequence {}: {e}", record.sequence))?;
            if view.sequence != record.sequence {
                return Err(format!(
                    "the event at sequence {} says it is sequence {}",
                    record.sequence, view.sequence
                ));
            }
            let topic = match topics.iter().find(|t| ***t == *view.topic) {
                Some(t) => Arc::clone(t),
                None => {
                    let t: Arc<str> = Arc::from(view.topic);
                    topics.push(Arc::clone(&t));
                    t
                }
            };
            Ok(Entry {
                event: Event {
                    sequence: record.sequence,
                    topic,
                    payload: record.encoded.slice(view.payload.clone()),
                    produced_at: view.produced_at,
                },
                encoded: record.encoded,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: &[(&str, &str)]) -> NewBatch {
        NewBatch {
            events: events
                .iter()
                .map(|(t, p)| (Arc::from(*t), Bytes::copy_from_slice(p.as_bytes())))
                .collect(),
        }
    }

    #[test]
    fn a_body_round_trips_with_consecutive_sequences_per_batch() {
        let batches = [batch(&[("a", "1"), ("b", "2")]), batch(&[("a", "3")])];
        let (body, spans) = encode(41, &batches, SystemTime::UNIX_EPOCH);
        assert_eq!(spans, vec![(41, 42), (43, 43)]);
        assert!(body.len() <= batches.iter().map(encoded_len).sum());
        let span = Span {
            first: 41,
            events: 3,
        };
        let entries = entries(span, &body).unwrap();
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.event.sequence, &*e.event.topic, &e.event.payload[..]))
            .collect();
        assert_eq!(
            got,
            vec![
                (41, "a", &b"1"[..]),
                (42, "b", &b"2"[..]),
                (43, "a", &b"3"[..])
            ]
        );
        assert!(Arc::ptr_eq(
            &entries[0].event.topic,
            &entries[2].event.topic
        ));
    }

    #[test]
    fn a_body_that_disagrees_with_its_headers_is_refused() {
        let (body, _) = encode(
            1,
            &[batch(&[("a", "1"), ("a", "2")])],
            SystemTime::UNIX_EPOCH,
        );
        let err = records(
            Span {
                first: 1,
                events: 3,
            },
            &body,
        )
        .unwrap_err();
        assert!(err.contains("holds 2 events"), "{err}");
        let err = entries(
            Span {
                first: 5,
                events: 2,
            },
            &body,
        )
        .unwrap_err();
        assert!(err.contains("says it is sequence 1"), "{err}");
        let err = records(
            Span {
                first: 1,
                events: 2,
            },
            &body.slice(..body.len() - 1),
        )
        .unwrap_err();
        assert!(err.contains("runs past the end"), "{err}");
    }

    #[test]
    fn headers_round_trip_and_missing_ones_are_named() {
        let mut headers = HeaderMap::new();
        let span = Span {
            first: 7,
            events: 3,
        };
        span.write_headers(&mut headers);
        assert_eq!(Span::from_headers(Some(&headers)), Ok(span));
        assert_eq!(span.last(), 9);
        assert!(span.contains(9) && !span.contains(10) && !span.contains(6));
        let err = Span::from_headers(None).unwrap_err();
        assert!(err.contains(FIRST_SEQUENCE), "{err}");
    }
}
