//! The event log: the producer's single source of truth and its only buffer.
//!
//! Events get consecutive sequence numbers at append. Readers (push subscribers and pull
//! pollers alike) hold nothing but a cursor, `after`, and call [`EventLog::read`]; to wait for
//! new events they watch the head with [`EventLog::watch_head`]. There is no per-reader queue, so
//! a slow reader costs one `u64`, and appending costs the same with 0 or 10,000 readers.
//!
//! The log knows nothing of gRPC: the service module adapts it. It does keep each event's
//! protobuf encoding, made once at append ([`EventLog::read_encoded`]), because encoding per
//! reader was the largest cost of a push to many subscribers; the payload is a slice of those
//! same bytes, so an event is stored once.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, RwLock},
    time::SystemTime,
};

use bytes::{Bytes, BytesMut};
use pushpull::wire::{EncodedEvent, encode_event};
use tokio::sync::watch;

use crate::error::Error;

/// Longest topic accepted, in bytes (topics are ASCII).
pub const MAX_TOPIC_LEN: usize = 128;

/// Bytes charged to retention for each event on top of its topic and payload: the struct, the
/// deque slot and the allocations' headers, roughly. It keeps a flood of empty payloads from
/// looking free.
pub const EVENT_OVERHEAD_BYTES: usize = 64;

/// Upper bound of an event's encoding beyond its topic and payload: sequence, timestamp, field
/// keys and lengths.
const ENCODING_HEADROOM: usize = 48;

/// Events scanned under one lock acquisition when a topic filter skips most of them. Bounds how
/// long a reader with a rare topic holds the read lock (a few hundred microseconds).
const MAX_SCAN_PER_READ: usize = 65_536;

/// One event in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log: 1, 2, 3 … with no gaps.
    pub sequence: u64,
    /// Shared with every copy handed to readers; topics repeat, so cloning must not allocate.
    pub topic: Arc<str>,
    /// Shared, never copied: `Bytes` clones are reference counts.
    pub payload: Bytes,
    /// When the event was appended (producer wall clock).
    pub produced_at: SystemTime,
}

impl Event {
    fn retained_bytes(&self) -> usize {
        self.topic.len() + self.payload.len() + EVENT_OVERHEAD_BYTES
    }
}

/// An event as a publisher gives it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub topic: String,
    pub payload: Bytes,
}

/// How much the log keeps before dropping its oldest events.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// At most this many events.
    pub max_events: usize,
    /// At most this many bytes (see [`EVENT_OVERHEAD_BYTES`]).
    pub max_bytes: usize,
}

/// Limits on what one Publish may carry.
#[derive(Debug, Clone, Copy)]
pub struct PublishLimits {
    pub max_events: usize,
    pub max_payload_bytes: usize,
}

/// Which topics a reader wants. Empty means all.
#[derive(Debug, Clone, Default)]
pub struct TopicFilter {
    /// As the reader gave them, to be reported back (a WebSocket `subscribed` reply).
    listed: Vec<String>,
    /// The same, for lookups; `None` passes every topic.
    topics: Option<HashSet<String>>,
}

impl TopicFilter {
    /// Most topics one filter may name: a filter is a list of interests, not a data set.
    pub const MAX_TOPICS: usize = 100;

    /// A filter from a request's `topics` field, validating each entry.
    pub fn new(topics: Vec<String>) -> Result<Self, Error> {
        if topics.len() > Self::MAX_TOPICS {
            return Err(Error::TooManyTopics {
                count: topics.len(),
                max: Self::MAX_TOPICS,
            });
        }
        for (i, topic) in topics.iter().enumerate() {
            validate_topic(&format!("topics[{i}]"), topic)?;
        }
        Ok(Self {
            topics: (!topics.is_empty()).then(|| topics.iter().cloned().collect()),
            listed: topics,
        })
    }

    /// The topics as given; empty for all.
    pub fn topics(&self) -> &[String] {
        &self.listed
    }

    /// True when the filter passes every topic.
    pub fn is_all(&self) -> bool {
        self.topics.is_none()
    }

    fn matches(&self, topic: &str) -> bool {
        self.topics.as_ref().is_none_or(|t| t.contains(topic))
    }
}

fn topic_is_valid(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a topic against the documented rule: 1 to [`MAX_TOPIC_LEN`] characters from
/// `[A-Za-z0-9._-]`. A narrow set keeps topics safe in URLs, metric labels and file names.
pub fn validate_topic(field: &str, topic: &str) -> Result<(), Error> {
    if topic_is_valid(topic) {
        Ok(())
    } else {
        Err(Error::InvalidTopic {
            field: field.to_owned(),
            topic: topic.chars().take(MAX_TOPIC_LEN + 8).collect(),
            max_len: MAX_TOPIC_LEN,
        })
    }
}

/// One read's result: [`Event`]s from [`EventLog::read`], [`EncodedEvent`]s from
/// [`EventLog::read_encoded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<E = Event> {
    /// Matching events after the cursor, in order.
    pub events: Vec<E>,
    /// The cursor to read from next: every event up to it was returned or filtered out.
    pub next_after: u64,
    /// Newest sequence in the log at the time of the read (0: never held an event).
    pub head: u64,
    /// Oldest retained sequence (`head + 1` when empty).
    pub oldest: u64,
}

impl<E> Batch<E> {
    /// True when the reader has seen everything up to the head.
    pub fn caught_up(&self) -> bool {
        self.next_after >= self.head
    }
}

/// How much one read may return.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// At most this many events (at least 1).
    pub max_events: usize,
    /// Stop adding events once the batch holds this many payload and topic bytes; a batch
    /// always holds at least one event if one matches, so a large event is never stuck.
    pub max_bytes: usize,
}

/// A cheap `Clone` handle to the log.
#[derive(Debug, Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Unique per log instance, so a reader can tell a restarted producer's log from the old one.
    log_id: String,
    retention: Retention,
    limits: PublishLimits,
    /// Held by one appender at a time, while it encodes its events outside the state lock:
    /// only appenders move the head, so the sequences it reads stay valid until it pushes, and
    /// readers are not held up by encoding.
    appending: Mutex<()>,
    /// A std `RwLock`, not tokio's: it is never held across an `.await`, critical sections are
    /// short (a push, or a bounded scan), and many readers may copy at once.
    state: RwLock<State>,
    /// The head sequence, for readers to wait on. `watch` keeps only the newest value, so a
    /// thousand appends wake a waiting reader once, not a thousand times.
    head: watch::Sender<u64>,
}

/// An event and its protobuf encoding; `event.payload` is a slice of `encoded`.
#[derive(Debug)]
struct Stored {
    event: Event,
    encoded: Bytes,
}

#[derive(Debug)]
struct State {
    events: VecDeque<Stored>,
    /// Sequence of `events[0]`; `head + 1` when empty.
    oldest: u64,
    head: u64,
    bytes: usize,
}

impl State {
    fn check_cursor(&self, after: u64, log_id: &str) -> Result<(), Error> {
        let (oldest, head) = (self.oldest, self.head);
        if after > head {
            return Err(Error::CursorAhead {
                after,
                oldest,
                head,
                log_id: log_id.to_owned(),
            });
        }
        if after != 0 && after + 1 < oldest {
            return Err(Error::CursorExpired {
                after,
                oldest,
                head,
                log_id: log_id.to_owned(),
            });
        }
        Ok(())
    }
}

impl EventLog {
    /// An empty log with a fresh `log_id`.
    pub fn new(retention: Retention, limits: PublishLimits) -> Self {
        Self::with_log_id(new_log_id(), retention, limits)
    }

    /// An empty log with a given id (tests use fixed ids).
    pub fn with_log_id(log_id: String, retention: Retention, limits: PublishLimits) -> Self {
        let retention = Retention {
            max_events: retention.max_events.max(1),
            max_bytes: retention.max_bytes,
        };
        let (head, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                log_id,
                retention,
                limits,
                appending: Mutex::new(()),
                state: RwLock::new(State {
                    events: VecDeque::new(),
                    oldest: 1,
                    head: 0,
                    bytes: 0,
                }),
                head,
            }),
        }
    }

    /// This log's identity.
    pub fn log_id(&self) -> &str {
        &self.shared.log_id
    }

    /// (oldest, head) now.
    pub fn bounds(&self) -> (u64, u64) {
        let state = self.read_state();
        (state.oldest, state.head)
    }

    /// The newest sequence (0 for a log that never held an event).
    pub fn head(&self) -> u64 {
        *self.shared.head.borrow()
    }

    /// Events and bytes retained now.
    pub fn retained(&self) -> (usize, usize) {
        let state = self.read_state();
        (state.events.len(), state.bytes)
    }

    /// A receiver that changes whenever the head moves. Mark it seen (`borrow_and_update`)
    /// *before* reading, then wait on `changed()`: an append between the read and the wait is
    /// then never missed.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.head.subscribe()
    }

    /// Validates and appends `events` atomically: all get consecutive sequences, or (on a
    /// validation error) none is appended. Returns (first, last) sequence.
    pub fn append(&self, events: Vec<NewEvent>) -> Result<(u64, u64), Error> {
        let limits = self.shared.limits;
        if events.is_empty() {
            return Err(Error::NoEvents {
                max: limits.max_events,
            });
        }
        if events.len() > limits.max_events {
            return Err(Error::TooManyEvents {
                count: events.len(),
                max: limits.max_events,
            });
        }
        for (i, event) in events.iter().enumerate() {
            // The field name is formatted only for an error: this loop runs once per event.
            if !topic_is_valid(&event.topic) {
                validate_topic(&format!("events[{i}].topic"), &event.topic)?;
            }
            if event.payload.len() > limits.max_payload_bytes {
                return Err(Error::PayloadTooLarge {
                    field: format!("events[{i}].payload"),
                    size: event.payload.len(),
                    max: limits.max_payload_bytes,
                });
            }
        }

        // Topics are interned per call: a batch usually repeats a few topics, and readers
        // then share one allocation per topic.
        let mut topics: Vec<Arc<str>> = Vec::new();
        let mut prepared = Vec::with_capacity(events.len());
        for NewEvent { topic, payload } in events {
            let topic = match topics.iter().find(|t| ***t == *topic) {
                Some(t) => Arc::clone(t),
                None => {
                    let t: Arc<str> = Arc::from(topic);
                    topics.push(Arc::clone(&t));
                    t
                }
            };
            prepared.push((topic, payload));
        }

        let retention = self.shared.retention;
        let appending = self
            .shared
            .appending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only appenders move the head, and this one holds `appending`. The time is taken here
        // too, so `produced_at` never decreases along the log (unless the wall clock steps back).
        let first = self.read_state().head + 1;
        let produced_at = SystemTime::now();
        let capacity = prepared
            .iter()
            .map(|(t, p)| t.len() + p.len() + ENCODING_HEADROOM)
            .sum();
        let mut buf = BytesMut::with_capacity(capacity);
        let mut spans = Vec::with_capacity(prepared.len());
        for (i, (topic, payload)) in prepared.iter().enumerate() {
            let start = buf.len();
            let payload_at = encode_event(first + i as u64, topic, payload, produced_at, &mut buf);
            spans.push((start..buf.len(), payload_at));
        }
        // One allocation for the whole call; every event and payload is a slice of it.
        let buf = buf.freeze();
        let stored = prepared.into_iter().zip(spans).enumerate().map(
            |(i, ((topic, _), (whole, payload)))| Stored {
                event: Event {
                    sequence: first + i as u64,
                    topic,
                    payload: buf.slice(payload),
                    produced_at,
                },
                encoded: buf.slice(whole),
            },
        );

        let last = {
            let mut state = self.write_state();
            for entry in stored {
                state.bytes += entry.event.retained_bytes();
                state.head = entry.event.sequence;
                state.events.push_back(entry);
            }
            while state.events.len() > retention.max_events
                || (state.bytes > retention.max_bytes && state.events.len() > 1)
            {
                let Some(evicted) = state.events.pop_front() else {
                    break;
                };
                state.bytes -= evicted.event.retained_bytes();
                state.oldest = evicted.event.sequence + 1;
            }
            state.head
        };
        drop(appending);
        self.shared.head.send_replace(last);
        Ok((first, last))
    }

    /// Reads the events after `after` that pass `filter`, within `limits`.
    ///
    /// `after == 0` means "from the oldest retained". Any other cursor must be in
    /// `[oldest - 1, head]`: below it events were evicted ([`Error::CursorExpired`]), above it
    /// the cursor cannot belong to this log ([`Error::CursorAhead`]).
    pub fn read(
        &self,
        after: u64,
        filter: &TopicFilter,
        limits: ReadLimits,
    ) -> Result<Batch, Error> {
        self.scan(after, filter, limits, |stored| stored.event.clone())
    }

    /// As [`EventLog::read`], with each event as its protobuf encoding (`pushpull.v1.Event`),
    /// made once at append and shared by every reader: what the gRPC service sends.
    pub fn read_encoded(
        &self,
        after: u64,
        filter: &TopicFilter,
        limits: ReadLimits,
    ) -> Result<Batch<EncodedEvent>, Error> {
        self.scan(after, filter, limits, |stored| {
            EncodedEvent(stored.encoded.clone())
        })
    }

    fn scan<E>(
        &self,
        after: u64,
        filter: &TopicFilter,
        limits: ReadLimits,
        take: impl Fn(&Stored) -> E,
    ) -> Result<Batch<E>, Error> {
        let max_events = limits.max_events.max(1);
        let state = self.read_state();
        state.check_cursor(after, &self.shared.log_id)?;
        let start = after.max(state.oldest - 1);
        let skip = (start + 1 - state.oldest) as usize;

        let mut events = Vec::new();
        let mut bytes = 0usize;
        let mut next_after = start;
        for (scanned, stored) in state.events.range(skip..).enumerate() {
            if scanned >= MAX_SCAN_PER_READ {
                break;
            }
            let event = &stored.event;
            if filter.matches(&event.topic) {
                if events.len() >= max_events || (bytes >= limits.max_bytes && !events.is_empty()) {
                    break;
                }
                bytes += event.topic.len() + event.payload.len();
                if events.is_empty() {
                    events.reserve(max_events.min(state.events.len() - skip));
                }
                events.push(take(stored));
            }
            next_after = event.sequence;
        }
        Ok(Batch {
            events,
            next_after,
            head: state.head,
            oldest: state.oldest,
        })
    }

    /// A request's cursor as a position to read from, checked before anything is read or
    /// streamed: unset means the head now (only events appended from now on), 0 the oldest
    /// retained event; any other value must be in `[oldest - 1, head]`.
    pub fn resolve_cursor(&self, after: Option<u64>) -> Result<u64, Error> {
        let state = self.read_state();
        match after {
            None => Ok(state.head),
            Some(after) => {
                state.check_cursor(after, &self.shared.log_id)?;
                Ok(after)
            }
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way readers
        // would misread (pushes and pops are each complete), so poisoning is ignored.
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A log id that differs across producer starts: start time in nanoseconds and the process id,
/// in hex. Unique enough to tell one log from another on one deployment; not a secret.
fn new_log_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let salt: u32 = rand::random();
    format!("{nanos:x}-{:x}-{salt:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: ReadLimits = ReadLimits {
        max_events: usize::MAX,
        max_bytes: usize::MAX,
    };

    fn log(max_events: usize) -> EventLog {
        EventLog::with_log_id(
            "test".into(),
            Retention {
                max_events,
                max_bytes: usize::MAX,
            },
            PublishLimits {
                max_events: 1000,
                max_payload_bytes: 1024,
            },
        )
    }

    fn ev(topic: &str, payload: &str) -> NewEvent {
        NewEvent {
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    fn seqs(batch: &Batch) -> Vec<u64> {
        batch.events.iter().map(|e| e.sequence).collect()
    }

    #[test]
    fn sequences_are_consecutive_from_one() {
        let log = log(100);
        assert_eq!(log.append(vec![ev("a", "1"), ev("b", "2")]), Ok((1, 2)));
        assert_eq!(log.append(vec![ev("a", "3")]), Ok((3, 3)));
        let batch = log.read(0, &TopicFilter::default(), ALL).unwrap();
        assert_eq!(seqs(&batch), vec![1, 2, 3]);
        assert_eq!((batch.next_after, batch.head, batch.oldest), (3, 3, 1));
        assert_eq!(&*batch.events[1].topic, "b");
        assert_eq!(&batch.events[2].payload[..], b"3");
    }

    #[test]
    fn cursor_reads_strictly_after() {
        let log = log(100);
        log.append((0..5).map(|i| ev("a", &i.to_string())).collect())
            .unwrap();
        let batch = log.read(2, &TopicFilter::default(), ALL).unwrap();
        assert_eq!(seqs(&batch), vec![3, 4, 5]);
        let batch = log.read(5, &TopicFilter::default(), ALL).unwrap();
        assert!(batch.events.is_empty());
        assert_eq!(batch.next_after, 5);
    }

    #[test]
    fn filter_advances_cursor_past_skipped_events() {
        let log = log(100);
        log.append(vec![
            ev("a", ""),
            ev("b", ""),
            ev("a", ""),
            ev("b", ""),
            ev("b", ""),
        ])
        .unwrap();
        let only_a = TopicFilter::new(vec!["a".into()]).unwrap();
        let batch = log.read(0, &only_a, ALL).unwrap();
        assert_eq!(seqs(&batch), vec![1, 3]);
        assert_eq!(
            batch.next_after, 5,
            "cursor must move past filtered-out events"
        );
        let batch = log.read(3, &only_a, ALL).unwrap();
        assert!(batch.events.is_empty());
        assert_eq!(batch.next_after, 5);
    }

    #[test]
    fn max_events_limits_the_batch_and_the_cursor() {
        let log = log(100);
        log.append((0..10).map(|_| ev("a", "")).collect()).unwrap();
        let limits = ReadLimits {
            max_events: 4,
            max_bytes: usize::MAX,
        };
        let batch = log.read(0, &TopicFilter::default(), limits).unwrap();
        assert_eq!(seqs(&batch), vec![1, 2, 3, 4]);
        assert_eq!(
            batch.next_after, 4,
            "must not skip events it did not return"
        );
        assert!(!batch.caught_up());
    }

    #[test]
    fn byte_limit_still_returns_one_large_event() {
        let log = log(100);
        log.append(vec![ev("a", &"x".repeat(500)), ev("a", "y")])
            .unwrap();
        let limits = ReadLimits {
            max_events: 100,
            max_bytes: 10,
        };
        let batch = log.read(0, &TopicFilter::default(), limits).unwrap();
        assert_eq!(seqs(&batch), vec![1]);
        let batch = log.read(1, &TopicFilter::default(), limits).unwrap();
        assert_eq!(seqs(&batch), vec![2]);
    }

    #[test]
    fn retention_by_count_evicts_oldest_and_expires_cursors() {
        let log = log(3);
        log.append((0..5).map(|_| ev("a", "")).collect()).unwrap();
        assert_eq!(log.bounds(), (3, 5));
        // 0 means "from the oldest retained".
        assert_eq!(
            seqs(&log.read(0, &TopicFilter::default(), ALL).unwrap()),
            vec![3, 4, 5]
        );
        // oldest - 1 is still a valid cursor: nothing is skipped.
        assert_eq!(
            seqs(&log.read(2, &TopicFilter::default(), ALL).unwrap()),
            vec![3, 4, 5]
        );
        assert_eq!(
            log.read(1, &TopicFilter::default(), ALL),
            Err(Error::CursorExpired {
                after: 1,
                oldest: 3,
                head: 5,
                log_id: "test".into(),
            })
        );
        assert_eq!(
            log.read(6, &TopicFilter::default(), ALL),
            Err(Error::CursorAhead {
                after: 6,
                oldest: 3,
                head: 5,
                log_id: "test".into(),
            })
        );
    }

    #[test]
    fn retention_by_bytes_keeps_total_under_limit() {
        let log = EventLog::with_log_id(
            "t".into(),
            Retention {
                max_events: 1000,
                max_bytes: 3 * (EVENT_OVERHEAD_BYTES + 1 + 10),
            },
            PublishLimits {
                max_events: 1000,
                max_payload_bytes: 1024,
            },
        );
        for _ in 0..10 {
            log.append(vec![ev("a", "0123456789")]).unwrap();
        }
        assert_eq!(log.retained(), (3, 3 * (EVENT_OVERHEAD_BYTES + 11)));
        assert_eq!(log.bounds(), (8, 10));
    }

    #[test]
    fn invalid_publish_appends_nothing() {
        let log = log(100);
        let err = log
            .append(vec![ev("ok", ""), ev("bad topic", "")])
            .unwrap_err();
        assert_eq!(
            err,
            Error::InvalidTopic {
                field: "events[1].topic".into(),
                topic: "bad topic".into(),
                max_len: MAX_TOPIC_LEN
            }
        );
        let big = NewEvent {
            topic: "a".into(),
            payload: Bytes::from(vec![0u8; 1025]),
        };
        assert!(matches!(
            log.append(vec![ev("a", ""), big]),
            Err(Error::PayloadTooLarge {
                size: 1025,
                max: 1024,
                ..
            })
        ));
        assert_eq!(log.append(vec![]), Err(Error::NoEvents { max: 1000 }));
        assert_eq!(log.head(), 0);
        assert_eq!(log.retained(), (0, 0));
    }

    #[test]
    fn topic_rules() {
        for good in ["a", "quotes.AAPL", "a-b_c.9", &"x".repeat(MAX_TOPIC_LEN)] {
            assert!(validate_topic("t", good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "é", "a/b", "a*", &"x".repeat(MAX_TOPIC_LEN + 1)] {
            assert!(validate_topic("t", bad).is_err(), "{bad}");
        }
        assert!(matches!(
            TopicFilter::new(vec!["x".into(); TopicFilter::MAX_TOPICS + 1]),
            Err(Error::TooManyTopics { .. })
        ));
    }

    #[test]
    fn watch_head_wakes_on_append() {
        let log = log(100);
        let mut rx = log.watch_head();
        rx.borrow_and_update();
        log.append(vec![ev("a", "")]).unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
    }

    #[test]
    fn encoded_reads_carry_the_same_events_as_plain_reads() {
        use prost::Message as _;
        let log = log(100);
        log.append(vec![ev("a", "one"), ev("b", ""), ev("a", "three")])
            .unwrap();
        log.append(vec![ev("c", "four")]).unwrap();
        let only_a = TopicFilter::new(vec!["a".into()]).unwrap();
        for filter in [TopicFilter::default(), only_a] {
            let plain = log.read(0, &filter, ALL).unwrap();
            let encoded = log.read_encoded(0, &filter, ALL).unwrap();
            assert_eq!(
                (encoded.next_after, encoded.head, encoded.oldest),
                (plain.next_after, plain.head, plain.oldest)
            );
            let decoded: Vec<pushpull::pb::Event> = encoded
                .events
                .iter()
                .map(|e| pushpull::pb::Event::decode(e.0.clone()).unwrap())
                .collect();
            let expected: Vec<pushpull::pb::Event> =
                plain.events.into_iter().map(Into::into).collect();
            assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn payloads_are_slices_of_one_allocation_per_append() {
        let log = log(100);
        log.append(vec![ev("a", "first"), ev("a", "second")])
            .unwrap();
        let batch = log.read(0, &TopicFilter::default(), ALL).unwrap();
        assert_eq!(&batch.events[0].payload[..], b"first");
        assert_eq!(&batch.events[1].payload[..], b"second");
        let encoded = log.read_encoded(0, &TopicFilter::default(), ALL).unwrap();
        let whole = encoded.events[0].0.as_ptr_range();
        assert!(whole.contains(&batch.events[0].payload.as_ptr()));
    }

    #[test]
    fn filtered_scan_is_bounded_but_makes_progress() {
        let log = EventLog::with_log_id(
            "t".into(),
            Retention {
                max_events: usize::MAX,
                max_bytes: usize::MAX,
            },
            PublishLimits {
                max_events: MAX_SCAN_PER_READ + 10,
                max_payload_bytes: 10,
            },
        );
        let n = MAX_SCAN_PER_READ + 10;
        let mut events: Vec<_> = (0..n - 1).map(|_| ev("noise", "")).collect();
        events.push(ev("rare", ""));
        log.append(events).unwrap();
        let rare = TopicFilter::new(vec!["rare".into()]).unwrap();
        let first = log.read(0, &rare, ALL).unwrap();
        assert!(first.events.is_empty());
        assert_eq!(first.next_after, MAX_SCAN_PER_READ as u64);
        let second = log.read(first.next_after, &rare, ALL).unwrap();
        assert_eq!(seqs(&second), vec![n as u64]);
    }
}
