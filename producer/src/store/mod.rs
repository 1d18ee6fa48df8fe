//! Where the events live: the storage seam.
//!
//! Everything a backend must do, and nothing more: append a batch atomically with consecutive
//! sequences, read a range back by sequence, keep its bounds (oldest, head), apply retention,
//! and own the `log_id`. Everything shared by every backend stays above the seam, in
//! [`crate::log`]: validation, the tail cache of recent events, the head watch that wakes
//! readers, and fan-out (readers hold cursors into the same log).
//!
//! Backends: [`memory`] (the log in the producer's memory; gone on restart) and [`file`]
//! (segments on disk, crash-safe). A remote, shared backend (a NATS JetStream stream with
//! several producers in front of it) fits the same shape: appends and reads are async, and
//! appends become visible only through [`Tail::commit`](crate::log::Tail::commit), which such a backend calls for every
//! record in the stream, whichever producer appended it.
//!
//! # The commit rule
//! A store makes appended events visible by calling [`Tail::commit`](crate::log::Tail::commit), in sequence order, once
//! they are as durable as the store promises (on disk, for the file store with
//! `--fsync always`), and only then resolves the append. Readers read the tail and the head
//! watch it drives, so no reader ever sees an event that a crash could take back. A store
//! whose append fails commits nothing of that batch.

pub mod file;
pub mod jetstream;
pub mod memory;

#[cfg(test)]
pub(crate) mod conformance;

use std::{
    fmt,
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use pushpull::wire::{ProducedAt, encode_event_at};

use crate::log::{EVENT_OVERHEAD_BYTES, Event};

/// What an async store call returns. Boxed, so the log holds any backend as `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The backends `--store` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Segments on disk under `--data-dir`: survives restarts and crashes.
    File,
    /// The producer's memory: gone when the process ends.
    Memory,
    /// A NATS JetStream stream (`--nats-urls`, `--nats-stream`): replicated by the NATS
    /// cluster, shared by every producer pointed at it.
    Jetstream,
}

impl StoreKind {
    /// The name used by `--store`, logs and the `store` metric label.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Memory => "memory",
            StoreKind::Jetstream => "jetstream",
        }
    }
}

/// The oldest and newest sequence a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Oldest retained sequence; `head + 1` when nothing is retained.
    pub oldest: u64,
    /// Newest sequence ever appended (0: none yet). Never decreases.
    pub head: u64,
}

impl Bounds {
    /// The bounds of a log that never held an event.
    pub const EMPTY: Bounds = Bounds { oldest: 1, head: 0 };
}

/// How much a store keeps before dropping its oldest events. A store may drop in units
/// coarser than one event (the file store drops whole segments, so it keeps at most one
/// segment more than the limits), never finer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many events.
    pub max_events: usize,
    /// At most this many bytes: for the memory store, topics + payloads + [`EVENT_OVERHEAD_BYTES`]
    /// per event; for the file store, bytes on disk.
    pub max_bytes: usize,
    /// Events older than this (by `produced_at`) are dropped; `None` keeps them regardless of age.
    pub max_age: Option<Duration>,
}

/// Validated events of one Publish, topics interned: what a store appends atomically.
#[derive(Debug, Clone, Default)]
pub struct NewBatch {
    pub events: Vec<(Arc<str>, Bytes)>,
}

/// An event and its `pushpull.v1.Event` encoding, made once at append: what the tail cache
/// holds and what a store commits. `event.payload` is a slice of `encoded`'s allocation.
#[derive(Debug, Clone)]
pub struct Entry {
    pub event: Event,
    pub encoded: Bytes,
}

impl Entry {
    /// Bytes charged to memory for this event (the tail cache and the memory store's
    /// retention): topic, payload and [`EVENT_OVERHEAD_BYTES`].
    pub fn charged_bytes(&self) -> usize {
        self.event.topic.len() + self.event.payload.len() + EVENT_OVERHEAD_BYTES
    }
}

/// One event as a store reads it back: its sequence and its `pushpull.v1.Event` encoding,
/// exactly the bytes that were appended (decoded only when a reader needs the fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub sequence: u64,
    pub encoded: Bytes,
}

/// Which records one [`Store::read`] returns: sequences `from..=to`, stopping early after
/// `max_records` records or once `max_bytes` of encodings are collected (at least one record
/// is returned when `from <= to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    pub from: u64,
    pub to: u64,
    pub max_records: usize,
    pub max_bytes: usize,
}

/// Sizes a store reports for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Events retained.
    pub events: u64,
    /// Bytes retained: in memory (memory store) or on disk (file store).
    pub bytes: u64,
    /// Segment files (0 for the memory store).
    pub segments: u64,
}

/// Upper bounds (seconds) of the fsync histogram's buckets.
const FSYNC_BUCKETS: [f64; 20] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_15, 0.000_2, 0.000_3, 0.000_4, 0.000_5, 0.000_75, 0.001,
    0.001_5, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// What a store measures as it works, registered with the producer's other metrics.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Seconds per fdatasync (the file store's group commits).
    pub fsync_seconds: Histogram,
    /// The same calls' count and total time, for `GET /store` (the histogram's own are not
    /// readable outside its tests).
    fsyncs: Arc<AtomicU64>,
    fsync_nanos: Arc<AtomicU64>,
    /// The JetStream store's messages published, renumbered after another producer's, and
    /// retried after a timeout or a broken connection.
    pub jetstream_messages: Counter,
    pub jetstream_conflicts: Counter,
    pub jetstream_retries: Counter,
}

impl StoreMetrics {
    /// Records one fdatasync.
    pub fn observe_fsync(&self, took: Duration) {
        self.fsync_seconds.observe(took.as_secs_f64());
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// fdatasync calls so far, and the time they took in all.
    pub fn fsyncs(&self) -> (u64, Duration) {
        (
            self.fsyncs.load(Ordering::Relaxed),
            Duration::from_nanos(self.fsync_nanos.load(Ordering::Relaxed)),
        )
    }
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self {
            // Fine below a few milliseconds, where a local disk's syncs fall (about 0.16 ms
            // here), so a p99 can be read off to within a bucket; coarse up to seconds.
            fsync_seconds: Histogram::new(FSYNC_BUCKETS.iter().copied()),
            fsyncs: Arc::default(),
            fsync_nanos: Arc::default(),
            jetstream_messages: Counter::default(),
            jetstream_conflicts: Counter::default(),
            jetstream_retries: Counter::default(),
        }
    }
}

/// Why a store call failed. Each becomes a precise [`crate::error::Error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk is full: nothing of the batch was appended; appends work again once space
    /// is freed.
    #[error("data directory {dir} is full: {detail}")]
    Full { dir: PathBuf, detail: String },
    /// An I/O error (or, for a remote store, the store being unreachable).
    #[error("data directory {dir}: {detail}")]
    Io { dir: PathBuf, detail: String },
    /// Data that fails its checksum or breaks the sequence order: never served.
    #[error("corrupt log in {path} at byte {offset}: {detail}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// The range starts below the oldest retained sequence (retention overtook the reader).
    #[error("sequence {from} is no longer retained (oldest is {oldest})")]
    Expired { from: u64, oldest: u64 },
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// A remote store cannot be reached, or cannot take writes now (no stream leader): says
    /// what is down. Nothing of the batch was appended, or (a lost acknowledgement) it may
    /// have been; the caller may retry.
    #[error("{detail}")]
    Unavailable { detail: String },
    /// The batch does not fit in one of the store's writes (a JetStream message is at most
    /// the server's `max_payload`): nothing was appended.
    #[error("the batch's events take {size} bytes; one Publish may hold at most {max}")]
    TooLarge { size: usize, max: usize },
}

/// A backend of the event log. See the module docs for the commit rule.
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Which backend this is.
    fn kind(&self) -> StoreKind;

    /// The identity of this log: the same for as long as the log is the same one (for the
    /// file store, across restarts), different for a different log.
    fn log_id(&self) -> &str;

    /// The bounds as stored now. The log's readers use the bounds of the last commit instead
    /// ([`Tail::bounds`](crate::log::Tail::bounds)), which never run ahead of what is visible.
    fn bounds(&self) -> Bounds;

    /// Appends `batch` atomically with consecutive sequences after the head, commits it to
    /// the tail once durable, then resolves to its (first, last) sequence. On an error nothing
    /// of it is stored or visible.
    fn append(&self, batch: NewBatch) -> StoreFuture<'_, (u64, u64)>;

    /// Reads stored records in `range` (all committed, so `range.to` is at most the head the
    /// caller saw). Fails with [`StoreError::Expired`] when `range.from` is below the oldest.
    fn read(&self, range: ReadRange) -> StoreFuture<'_, Vec<Record>>;

    /// Applies age retention now (count and byte retention are applied at append). The log
    /// calls it periodically; it never blocks.
    fn enforce_retention(&self);

    /// Sizes for metrics.
    fn stats(&self) -> StoreStats;

    /// Flushes what is not yet durable and stops the store's I/O; later calls fail with
    /// [`StoreError::Closed`].
    fn close(&self) -> StoreFuture<'_, ()>;

    /// Why the store cannot serve now (a remote store that is unreachable), or `None`: the
    /// producer reports NOT_SERVING on gRPC health while it is `Some`. Local stores are always
    /// reachable.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// Upper bound of an event's encoding beyond its topic and payload: sequence, timestamp, field
/// keys and lengths.
const ENCODING_HEADROOM: usize = 48;

/// Encodes a batch as the entries of sequences `first..`, all with the same `produced_at`, in
/// one allocation: every entry's encoding and payload is a slice of it. Stores call it once
/// they know the batch's first sequence. An iterator, so a store that keeps the entries in
/// memory moves them straight into place: collecting ten thousand of them first costs a
/// megabyte of fresh pages per Publish.
pub fn encode_entries(
    first: u64,
    batch: NewBatch,
    produced_at: SystemTime,
) -> impl ExactSizeIterator<Item = Entry> {
    let capacity = batch
        .events
        .iter()
        .map(|(t, p)| t.len() + p.len() + ENCODING_HEADROOM)
        .sum();
    let mut buf = BytesMut::with_capacity(capacity);
    let mut spans = Vec::with_capacity(batch.events.len());
    let at = ProducedAt::new(produced_at);
    for (i, (topic, payload)) in batch.events.iter().enumerate() {
        let start = buf.len();
        let payload_at = encode_event_at(first + i as u64, topic, payload, &at, &mut buf);
        spans.push((start..buf.len(), payload_at));
    }
    let buf = buf.freeze();
    batch.events.into_iter().zip(spans).enumerate().map(
        move |(i, ((topic, _), (whole, payload)))| Entry {
            event: Event {
                sequence: first + i as u64,
                topic,
                payload: buf.slice(payload),
                produced_at,
            },
            encoded: buf.slice(whole),
        },
    )
}
