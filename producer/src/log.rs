//! The event log: the producer's single source of truth and its only buffer.
//!
//! Events get consecutive sequence numbers at append. Readers (push subscribers and pull
//! pollers alike) hold nothing but a cursor, `after`, and call [`EventLog::read`]; to wait for
//! new events they watch the head with [`EventLog::watch_head`]. There is no per-reader queue, so
//! a slow reader costs one `u64`, and appending costs the same with 0 or 10,000 readers.
//!
//! Where the events are kept is a [`Store`]'s business (memory, or segment files on disk);
//! what every backend shares is here: validation, the [`Tail`] (a bounded cache of the newest
//! events, and the head watch that wakes readers), and the cursor rules. Live readers and short
//! catch-ups are served from the tail and never touch the store; older reads go to the store
//! in batches.
//!
//! The log knows nothing of gRPC: the service module adapts it. It does keep each event's
//! protobuf encoding, made once at append, because encoding per reader was the largest cost of
//! a push to many subscribers; the payload is a slice of those same bytes, so an event is
//! stored once, and a store keeps those very bytes, so a read from disk is a copy, never a
//! re-encode.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc, RwLock, RwLockReadGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use bytes::Bytes;
use pushpull::wire::{EncodedEvent, EventView};
use tokio::sync::watch;

use crate::{
    error::Error,
    store::{
        Bounds, Entry, NewBatch, ReadRange, Record, Retention, Store, StoreError, StoreStats,
        memory::MemoryStore,
    },
};

/// Longest topic accepted, in bytes (topics are ASCII).
pub const MAX_TOPIC_LEN: usize = 128;

/// Bytes charged to retention for each event on top of its topic and payload: the struct, the
/// deque slot and the allocations' headers, roughly. It keeps a flood of empty payloads from
/// looking free.
pub const EVENT_OVERHEAD_BYTES: usize = 64;

/// Events scanned under one lock acquisition when a topic filter skips most of them. Bounds how
/// long a reader with a rare topic holds the read lock (a few hundred microseconds).
const MAX_SCAN_PER_READ: usize = 65_536;

/// Records one filtered read asks a store for: a filter may skip most of them, and each is
/// read from disk, so a read with a rare topic moves on in steps this big.
const MAX_SCAN_PER_STORE_READ: usize = 4_096;

/// Bytes a store record's encoding carries beyond what the read limits count (topic and
/// payload): sequence, timestamp, keys and lengths.
const RECORD_OVERHEAD: usize = 32;

/// The tail cache's default size (`--cache-bytes`).
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

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

/// An event as a publisher gives it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Shared by the events of a call that name the same topic (see [`Topics`]).
    pub topic: Arc<str>,
    pub payload: Bytes,
}

/// The topics of one call, so its events share one allocation per distinct topic: a batch
/// usually repeats a few topics, and readers then share them too.
#[derive(Debug, Default)]
pub struct Topics(Vec<Arc<str>>);

impl Topics {
    /// Distinct topics remembered per call: a lookup is a scan, so a batch of all-different
    /// topics costs at most this many comparisons per event (and its topics are not shared).
    const MAX: usize = 32;

    /// `topic`, shared with an earlier event's when one named it.
    pub fn get(&mut self, topic: &str) -> Arc<str> {
        match self.0.iter().find(|t| ***t == *topic) {
            Some(t) => Arc::clone(t),
            None => self.remember(Arc::from(topic)),
        }
    }

    /// [`Topics::get`] for a topic already allocated: kept as it is when it is the one shared
    /// (what the gRPC side hands over), swapped for the shared one when equal.
    pub fn share(&mut self, topic: Arc<str>) -> Arc<str> {
        match self
            .0
            .iter()
            .find(|t| Arc::ptr_eq(t, &topic) || ***t == *topic)
        {
            Some(t) if !Arc::ptr_eq(t, &topic) => Arc::clone(t),
            Some(_) => topic,
            None => self.remember(topic),
        }
    }

    fn remember(&mut self, topic: Arc<str>) -> Arc<str> {
        if self.0.len() < Self::MAX {
            self.0.push(Arc::clone(&topic));
        }
        topic
    }
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

/// One read's result, as [`Event`]s or [`EncodedEvent`]s (see [`Take`]).
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

/// How a reader takes events: decoded [`Event`]s for the JSON transports, or
/// [`EncodedEvent`]s, the bytes encoded once at append, for gRPC.
pub trait Take: Sized + Send + 'static {
    /// Whether [`Take::from_record`] needs the record's fields; a reader that takes the bytes
    /// as they are does not, and an unfiltered read then parses nothing.
    const PARSES: bool;
    /// From the tail cache.
    fn from_entry(entry: &Entry) -> Self;
    /// From a store record; `view` is its parse, given whenever [`Take::PARSES`].
    fn from_record(record: &Record, view: Option<&EventView<'_>>) -> Self;
    /// From a store record that was not parsed (never called when [`Take::PARSES`]): taken
    /// by value, so a reader of the bytes as they are moves them instead of sharing them once
    /// more (a reference count up here and down when the record is dropped, per event).
    fn from_unparsed(record: Record) -> Self {
        Self::from_record(&record, None)
    }
}

impl Take for Event {
    const PARSES: bool = true;

    fn from_entry(entry: &Entry) -> Self {
        entry.event.clone()
    }

    fn from_record(record: &Record, view: Option<&EventView<'_>>) -> Self {
        let view = view.expect("an Event is taken from a parsed record");
        Event {
            sequence: record.sequence,
            topic: Arc::from(view.topic),
            payload: record.encoded.slice(view.payload.clone()),
            produced_at: view.produced_at,
        }
    }
}

impl Take for EncodedEvent {
    fn from_entry(entry: &Entry) -> Self {
        EncodedEvent(entry.encoded.clone())
    }

    const PARSES: bool = false;

    fn from_record(record: &Record, _: Option<&EventView<'_>>) -> Self {
        EncodedEvent(record.encoded.clone())
    }

    fn from_unparsed(record: Record) -> Self {
        EncodedEvent(record.encoded)
    }
}

/// The part of the log above the store that every backend shares: a cache of the newest
/// events, bounded in bytes, and the bounds and head of the last commit. A store calls
/// [`Tail::commit`] once appended events are durable, so readers, who read here first, never
/// see an event that a crash could take back.
#[derive(Debug)]
pub struct Tail {
    cache_bytes: usize,
    /// A std `RwLock`, not tokio's: it is never held across an `.await`, critical sections are
    /// short (a push, or a bounded scan), and many readers may copy at once.
    state: RwLock<TailState>,
    /// The head sequence, for readers to wait on. `watch` keeps only the newest value, so a
    /// thousand appends wake a waiting reader once, not a thousand times.
    head: watch::Sender<u64>,
    /// Reads served from the cache, and reads that went to the store.
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug)]
struct TailState {
    /// The newest committed events, consecutive, ending at `bounds.head`.
    entries: VecDeque<Entry>,
    bounds: Bounds,
    bytes: usize,
}

impl TailState {
    /// The first sequence the cache holds; `head + 1` when it holds none.
    fn first_cached(&self) -> u64 {
        self.entries
            .front()
            .map_or(self.bounds.head + 1, |e| e.event.sequence)
    }

    fn check_cursor(&self, after: u64, log_id: &str) -> Result<(), Error> {
        let Bounds { oldest, head } = self.bounds;
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

    fn trim(&mut self, cache_bytes: usize) {
        while let Some(front) = self.entries.front() {
            if self.bytes <= cache_bytes && front.event.sequence >= self.bounds.oldest {
                break;
            }
            self.bytes -= front.charged_bytes();
            self.entries.pop_front();
        }
    }
}

/// Sizes of the tail cache, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub events: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

impl Tail {
    /// An empty tail caching up to `cache_bytes` (topics + payloads + [`EVENT_OVERHEAD_BYTES`]
    /// per event) of the newest events.
    pub fn new(cache_bytes: usize) -> Self {
        let (head, _) = watch::channel(0);
        Self {
            cache_bytes,
            state: RwLock::new(TailState {
                entries: VecDeque::new(),
                bounds: Bounds::EMPTY,
                bytes: 0,
            }),
            head,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Makes `entries` visible: they must follow the current head consecutively. `bounds` are
    /// the store's after the append (retention may have moved `oldest`). Wakes every reader
    /// waiting on the head.
    pub fn commit(&self, entries: Vec<Entry>, bounds: Bounds) {
        {
            let mut state = self.write_state();
            for entry in entries {
                debug_assert_eq!(entry.event.sequence, state.bounds.head + 1);
                state.bounds.head = entry.event.sequence;
                if self.cache_bytes > 0 {
                    state.bytes += entry.charged_bytes();
                    state.entries.push_back(entry);
                }
            }
            state.bounds = Bounds {
                oldest: bounds.oldest,
                head: state.bounds.head.max(bounds.head),
            };
            state.trim(self.cache_bytes);
        }
        self.head.send_if_modified(|head| {
            let new = self.bounds().head;
            let changed = *head != new;
            *head = new;
            changed
        });
    }

    /// New bounds without new events: at start (what a store recovered), or when retention
    /// moved `oldest`. The head never moves back.
    pub fn set_bounds(&self, bounds: Bounds) {
        self.commit(Vec::new(), bounds);
    }

    /// Starts the tail over at `bounds`, dropping the cache: for a store whose log moved on
    /// without it (a JetStream follower that finds retention dropped messages it had not
    /// read yet). The head never moves back.
    pub fn jump(&self, bounds: Bounds) {
        {
            let mut state = self.write_state();
            state.entries.clear();
            state.bytes = 0;
            state.bounds = Bounds {
                oldest: bounds.oldest,
                head: state.bounds.head.max(bounds.head),
            };
        }
        self.head.send_if_modified(|head| {
            let new = self.bounds().head;
            let changed = *head != new;
            *head = new;
            changed
        });
    }

    /// A receiver of the head sequence (see [`EventLog::watch_head`]).
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Whether this tail caches events at all: a store that is itself in memory commits
    /// bounds only.
    pub fn caches(&self) -> bool {
        self.cache_bytes > 0
    }

    /// The bounds of the last commit: what readers may see.
    pub fn bounds(&self) -> Bounds {
        self.read_state().bounds
    }

    /// Events and bytes cached, and how often reads were served here or not.
    pub fn stats(&self) -> CacheStats {
        let state = self.read_state();
        CacheStats {
            events: state.entries.len() as u64,
            bytes: state.bytes as u64,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, TailState> {
        // A panic while holding the lock cannot leave the state half-updated in a way readers
        // would misread (pushes and pops are each complete), so poisoning is ignored.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, TailState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cheap `Clone` handle to the log.
#[derive(Debug, Clone)]
pub struct EventLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    tail: Arc<Tail>,
    limits: PublishLimits,
}

impl EventLog {
    /// The log over `store`, which commits to `tail`. The tail starts at the store's bounds.
    pub fn new(store: Arc<dyn Store>, tail: Arc<Tail>, limits: PublishLimits) -> Self {
        tail.set_bounds(store.bounds());
        Self {
            shared: Arc::new(Shared {
                store,
                tail,
                limits,
            }),
        }
    }

    /// An empty in-memory log with a fresh `log_id` and the default cache.
    pub fn memory(retention: Retention, limits: PublishLimits) -> Self {
        Self::memory_with_log_id(new_log_id(), retention, limits)
    }

    /// An empty in-memory log with a given id (tests use fixed ids).
    pub fn memory_with_log_id(log_id: String, retention: Retention, limits: PublishLimits) -> Self {
        let tail = Arc::new(Tail::new(DEFAULT_CACHE_BYTES));
        let store = MemoryStore::with_log_id(log_id, retention, Arc::clone(&tail));
        Self::new(Arc::new(store), tail, limits)
    }

    /// This log's identity.
    pub fn log_id(&self) -> &str {
        self.shared.store.log_id()
    }

    /// The backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// (oldest, head) now, as readers see them.
    pub fn bounds(&self) -> (u64, u64) {
        let Bounds { oldest, head } = self.shared.tail.bounds();
        (oldest, head)
    }

    /// The newest sequence (0 for a log that never held an event).
    pub fn head(&self) -> u64 {
        *self.shared.tail.head.borrow()
    }

    /// What the store retains now.
    pub fn store_stats(&self) -> StoreStats {
        self.shared.store.stats()
    }

    /// The tail cache's sizes and hit counts.
    pub fn cache_stats(&self) -> CacheStats {
        self.shared.tail.stats()
    }

    /// A receiver that changes whenever the head moves. Mark it seen (`borrow_and_update`)
    /// *before* reading, then wait on `changed()`: an append between the read and the wait is
    /// then never missed.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.shared.tail.head.subscribe()
    }

    /// Validates and appends `events` atomically: all get consecutive sequences, or (on a
    /// validation or storage error) none is appended. Returns (first, last) sequence, once the
    /// store has made them durable and visible.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<(u64, u64), Error> {
        let batch = self.validate(events)?;
        self.shared
            .store
            .append(batch)
            .await
            .map_err(|err| self.store_error(err, "append"))
    }

    fn validate(&self, events: Vec<NewEvent>) -> Result<NewBatch, Error> {
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
        // Topics are interned per call (the gRPC side has done it already; the HTTP side has
        // not), so readers share one allocation per topic.
        let mut topics = Topics::default();
        let events = events
            .into_iter()
            .map(|NewEvent { topic, payload }| (topics.share(topic), payload))
            .collect();
        Ok(NewBatch { events })
    }

    /// Reads the events after `after` that pass `filter`, within `limits`.
    ///
    /// `after == 0` means "from the oldest retained". Any other cursor must be in
    /// `[oldest - 1, head]`: below it events were evicted ([`Error::CursorExpired`]), above it
    /// the cursor cannot belong to this log ([`Error::CursorAhead`]). Served from the tail
    /// cache when it holds the cursor's next event; from the store otherwise.
    pub async fn read<E: Take>(
        &self,
        after: u64,
        filter: &TopicFilter,
        limits: ReadLimits,
    ) -> Result<Batch<E>, Error> {
        let (start, first_cached, bounds) = {
            let state = self.shared.tail.read_state();
            state.check_cursor(after, self.log_id())?;
            let start = after.max(state.bounds.oldest - 1);
            let first_cached = state.first_cached();
            if start + 1 >= first_cached {
                self.shared.tail.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(scan_cache(&state, start, filter, limits));
            }
            (start, first_cached, state.bounds)
        };
        self.shared.tail.misses.fetch_add(1, Ordering::Relaxed);
        self.read_store(after, start, first_cached - 1, bounds, filter, limits)
            .await
    }

    /// Reads `start + 1 ..= to` from the store: everything older than the cache.
    async fn read_store<E: Take>(
        &self,
        after: u64,
        start: u64,
        to: u64,
        bounds: Bounds,
        filter: &TopicFilter,
        limits: ReadLimits,
    ) -> Result<Batch<E>, Error> {
        let max_events = limits.max_events.max(1);
        let range = ReadRange {
            from: start + 1,
            to,
            max_records: if filter.is_all() {
                max_events
            } else {
                MAX_SCAN_PER_STORE_READ
            },
            max_bytes: limits
                .max_bytes
                .saturating_add(max_events.saturating_mul(RECORD_OVERHEAD)),
        };
        let records = match self.shared.store.read(range).await {
            Ok(records) => records,
            Err(StoreError::Expired { oldest, .. }) => {
                // Retention overtook the cursor between the check and the read.
                let now = self.shared.tail.bounds();
                return Err(Error::CursorExpired {
                    after,
                    oldest: oldest.max(now.oldest),
                    head: now.head,
                    log_id: self.log_id().to_owned(),
                });
            }
            Err(err) => return Err(self.store_error(err, "read")),
        };
        if records.is_empty() {
            return Err(self.store_error(
                StoreError::Corrupt {
                    path: "(read)".into(),
                    offset: 0,
                    detail: format!(
                        "the store returned nothing for sequences {}..={to}",
                        start + 1
                    ),
                },
                "read",
            ));
        }
        let parse = E::PARSES || !filter.is_all();
        if !parse {
            return self.take_unparsed(records, start, bounds, limits);
        }
        let mut events = Vec::with_capacity(records.len());
        let mut bytes = 0usize;
        let mut next_after = start;
        for record in &records {
            if record.sequence != next_after + 1 {
                return Err(self.out_of_order(record.sequence, next_after + 1));
            }
            let view = EventView::parse(&record.encoded).map_err(|err| {
                self.store_error(
                    StoreError::Corrupt {
                        path: "(read)".into(),
                        offset: 0,
                        detail: format!("sequence {}: {err}", record.sequence),
                    },
                    "read",
                )
            })?;
            if filter.matches(view.topic) {
                if events.len() >= max_events || (bytes >= limits.max_bytes && !events.is_empty()) {
                    break;
                }
                bytes += view.topic.len() + view.payload.len();
                events.push(E::from_record(record, Some(&view)));
            }
            next_after = record.sequence;
        }
        Ok(Batch {
            events,
            next_after,
            head: bounds.head,
            oldest: bounds.oldest,
        })
    }

    /// [`EventLog::read_store`] for a reader of every topic that takes the bytes as they are
    /// (gRPC without a filter, the hot path of a Poll): the records become the events in
    /// place, each moved, in the records' own allocation. A Poll of 10,000 events otherwise
    /// made a second vector of 300 KB, and shared and released every event's bytes once more.
    fn take_unparsed<E: Take>(
        &self,
        mut records: Vec<Record>,
        start: u64,
        bounds: Bounds,
        limits: ReadLimits,
    ) -> Result<Batch<E>, Error> {
        let max_events = limits.max_events.max(1);
        let mut bytes = 0usize;
        let mut next_after = start;
        let mut taken = 0;
        for record in &records {
            if record.sequence != next_after + 1 {
                return Err(self.out_of_order(record.sequence, next_after + 1));
            }
            if taken >= max_events || (bytes >= limits.max_bytes && taken > 0) {
                break;
            }
            // Unparsed, the whole encoding counts: a few bytes more than topic and payload.
            bytes += record.encoded.len();
            taken += 1;
            next_after = record.sequence;
        }
        records.truncate(taken);
        Ok(Batch {
            events: records.into_iter().map(E::from_unparsed).collect(),
            next_after,
            head: bounds.head,
            oldest: bounds.oldest,
        })
    }

    /// A store that returned `sequence` where `expected` was next: a corrupt read.
    fn out_of_order(&self, sequence: u64, expected: u64) -> Error {
        self.store_error(
            StoreError::Corrupt {
                path: "(read)".into(),
                offset: 0,
                detail: format!("the store returned sequence {sequence} where {expected} was next"),
            },
            "read",
        )
    }

    /// A request's cursor as a position to read from, checked before anything is read or
    /// streamed: unset means the head now (only events appended from now on), 0 the oldest
    /// retained event; any other value must be in `[oldest - 1, head]`.
    pub fn resolve_cursor(&self, after: Option<u64>) -> Result<u64, Error> {
        let state = self.shared.tail.read_state();
        match after {
            None => Ok(state.bounds.head),
            Some(after) => {
                state.check_cursor(after, self.log_id())?;
                Ok(after)
            }
        }
    }

    /// Flushes and closes the store; appends fail from then on.
    pub async fn close(&self) -> Result<(), Error> {
        self.shared
            .store
            .close()
            .await
            .map_err(|err| self.store_error(err, "close"))
    }

    fn store_error(&self, err: StoreError, doing: &'static str) -> Error {
        Error::from_store(err, doing)
    }
}

/// Serves a read from the tail cache: `start + 1` is cached.
fn scan_cache<E: Take>(
    state: &TailState,
    start: u64,
    filter: &TopicFilter,
    limits: ReadLimits,
) -> Batch<E> {
    let max_events = limits.max_events.max(1);
    let skip = (start + 1 - state.first_cached()) as usize;
    let mut events = Vec::new();
    let mut bytes = 0usize;
    let mut next_after = start;
    for (scanned, entry) in state
        .entries
        .range(skip.min(state.entries.len())..)
        .enumerate()
    {
        if scanned >= MAX_SCAN_PER_READ {
            break;
        }
        let event = &entry.event;
        if filter.matches(&event.topic) {
            if events.len() >= max_events || (bytes >= limits.max_bytes && !events.is_empty()) {
                break;
            }
            bytes += event.topic.len() + event.payload.len();
            if events.is_empty() {
                events.reserve(max_events.min(state.entries.len() - skip));
            }
            events.push(E::from_entry(entry));
        }
        next_after = event.sequence;
    }
    Batch {
        events,
        next_after,
        head: state.bounds.head,
        oldest: state.bounds.oldest,
    }
}

/// A log id that differs across in-memory logs (and new data directories): creation time in
/// nanoseconds, the process id and a random salt, in hex. Unique enough to tell one log from
/// another on one deployment; not a secret.
pub(crate) fn new_log_id() -> String {
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
    use crate::store::Retention;

    const ALL: ReadLimits = ReadLimits {
        max_events: usize::MAX,
        max_bytes: usize::MAX,
    };

    fn log(max_events: usize) -> EventLog {
        EventLog::memory_with_log_id(
            "test".into(),
            Retention {
                max_events,
                max_bytes: usize::MAX,
                max_age: None,
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

    #[tokio::test]
    async fn payloads_are_slices_of_one_allocation_per_append() {
        let log = log(100);
        log.append(vec![ev("a", "first"), ev("a", "second")])
            .await
            .unwrap();
        let batch = log
            .read::<Event>(0, &TopicFilter::default(), ALL)
            .await
            .unwrap();
        assert_eq!(&batch.events[0].payload[..], b"first");
        assert_eq!(&batch.events[1].payload[..], b"second");
        let encoded = log
            .read::<EncodedEvent>(0, &TopicFilter::default(), ALL)
            .await
            .unwrap();
        let whole = encoded.events[0].0.as_ptr_range();
        assert!(whole.contains(&batch.events[0].payload.as_ptr()));
    }

    #[test]
    fn topics_of_a_call_share_one_allocation_each_up_to_the_limit() {
        let mut topics = Topics::default();
        let a = topics.get("a");
        assert!(Arc::ptr_eq(&a, &topics.get("a")));
        assert!(Arc::ptr_eq(&a, &topics.share(Arc::clone(&a))));
        assert!(
            Arc::ptr_eq(&a, &topics.share(Arc::from("a"))),
            "an equal one is swapped"
        );
        let b: Arc<str> = Arc::from("b");
        assert!(Arc::ptr_eq(&b, &topics.share(Arc::clone(&b))));
        assert!(Arc::ptr_eq(&b, &topics.get("b")), "a new one is remembered");
        for i in 0..Topics::MAX {
            topics.get(&format!("t{i}"));
        }
        let last = format!("t{}", Topics::MAX - 1);
        assert!(
            !Arc::ptr_eq(&topics.get(&last), &topics.get(&last)),
            "past the limit"
        );
        assert_eq!(&*topics.get(&last), last);
    }

    /// The memory store as the producer runs it: no tail cache, so every read goes to the
    /// store, and an unfiltered gRPC read takes the records as they are.
    #[tokio::test]
    async fn unparsed_reads_cut_where_parsed_reads_do() {
        let tail = Arc::new(Tail::new(0));
        let store = MemoryStore::with_log_id(
            "t".into(),
            Retention {
                max_events: 100,
                max_bytes: usize::MAX,
                max_age: None,
            },
            Arc::clone(&tail),
        );
        let limits = PublishLimits {
            max_events: 100,
            max_payload_bytes: 100,
        };
        let log = EventLog::new(Arc::new(store), tail, limits);
        let events = (0..10).map(|i| ev("a", &"x".repeat(i * 10))).collect();
        log.append(events).await.unwrap();
        let all = TopicFilter::default();
        for (after, max_events, max_bytes) in
            [(0, 3, usize::MAX), (2, 100, 120), (9, 5, 1), (4, 1, 0)]
        {
            let limits = ReadLimits {
                max_events,
                max_bytes,
            };
            let parsed = log.read::<Event>(after, &all, limits).await.unwrap();
            let encoded = log.read::<EncodedEvent>(after, &all, limits).await.unwrap();
            let decoded: Vec<u64> = encoded
                .events
                .iter()
                .map(|e| EventView::parse(&e.0).unwrap().sequence)
                .collect();
            assert!(!decoded.is_empty());
            // An unparsed read counts whole encodings, a little more than topic and payload,
            // so it may stop one event sooner, never later.
            assert!(
                decoded.len() <= seqs(&parsed).len()
                    && decoded[..] == seqs(&parsed)[..decoded.len()],
                "{after} {max_events} {max_bytes}: {decoded:?} {:?}",
                seqs(&parsed)
            );
            assert_eq!(encoded.next_after, *decoded.last().unwrap());
            assert_eq!((encoded.head, encoded.oldest), (10, 1));
        }
    }

    #[tokio::test]
    async fn filtered_scan_is_bounded_but_makes_progress() {
        let log = EventLog::memory_with_log_id(
            "t".into(),
            Retention {
                max_events: usize::MAX,
                max_bytes: usize::MAX,
                max_age: None,
            },
            PublishLimits {
                max_events: MAX_SCAN_PER_READ + 10,
                max_payload_bytes: 10,
            },
        );
        let n = MAX_SCAN_PER_READ + 10;
        let mut events: Vec<_> = (0..n - 1).map(|_| ev("noise", "")).collect();
        events.push(ev("rare", ""));
        log.append(events).await.unwrap();
        let rare = TopicFilter::new(vec!["rare".into()]).unwrap();
        let first = log.read::<Event>(0, &rare, ALL).await.unwrap();
        assert!(first.events.is_empty());
        assert_eq!(first.next_after, MAX_SCAN_PER_READ as u64);
        let second = log
            .read::<Event>(first.next_after, &rare, ALL)
            .await
            .unwrap();
        assert_eq!(seqs(&second), vec![n as u64]);
    }
}
