//! The memory store: the log in the producer's memory, as it was before the file store. Fast
//! and disposable: a restart starts a new log with a new `log_id`. What tests and benchmarks
//! use, one flag away (`--store memory`).

use std::{
    collections::VecDeque,
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
    time::SystemTime,
};

use super::{
    Bounds, Entry, NewBatch, ReadRange, Record, Retention, Store, StoreError, StoreFuture,
    StoreKind, StoreStats, encode_entries,
};
use crate::log::{Tail, new_log_id};

/// See the module docs.
#[derive(Debug)]
pub struct MemoryStore {
    log_id: String,
    retention: Retention,
    tail: Arc<Tail>,
    /// Written while appending (encoding included) and while committing to the tail, so
    /// commits reach the tail in sequence order; readers share it.
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    /// Shares its allocations with the tail cache: an event's bytes exist once.
    entries: VecDeque<Entry>,
    bounds: Bounds,
    bytes: usize,
    closed: bool,
}

impl MemoryStore {
    /// An empty store with a fresh `log_id`, committing to `tail`.
    pub fn new(retention: Retention, tail: Arc<Tail>) -> Self {
        Self::with_log_id(new_log_id(), retention, tail)
    }

    /// An empty store with a given id (tests use fixed ids).
    pub fn with_log_id(log_id: String, retention: Retention, tail: Arc<Tail>) -> Self {
        Self {
            log_id,
            retention: Retention {
                max_events: retention.max_events.max(1),
                ..retention
            },
            tail,
            state: RwLock::new(State {
                entries: VecDeque::new(),
                bounds: Bounds::EMPTY,
                bytes: 0,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> RwLockWriteGuard<'_, State> {
        // Every change to `State` is complete before anything that could panic, so a poisoned
        // lock still guards a consistent state.
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Readers share the lock: many subscribers read at once.
    fn read_lock(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the oldest events over the limits. Count and byte limits always keep the newest
    /// event; age may empty the log (its head stays).
    fn evict(&self, state: &mut State, now: SystemTime) {
        let retention = self.retention;
        let too_old = |entry: &Entry| {
            retention.max_age.is_some_and(|age| {
                now.duration_since(entry.event.produced_at)
                    .is_ok_and(|elapsed| elapsed > age)
            })
        };
        while let Some(front) = state.entries.front() {
            let over = state.entries.len() > retention.max_events
                || (state.bytes > retention.max_bytes && state.entries.len() > 1)
                || too_old(front);
            if !over {
                break;
            }
            let evicted = state.entries.pop_front().expect("front exists");
            state.bytes -= evicted.charged_bytes();
            state.bounds.oldest = evicted.event.sequence + 1;
        }
    }
}

impl Store for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }

    fn log_id(&self) -> &str {
        &self.log_id
    }

    fn bounds(&self) -> Bounds {
        self.read_lock().bounds
    }

    fn append(&self, batch: NewBatch) -> StoreFuture<'_, (u64, u64)> {
        let result = (|| {
            let mut state = self.lock();
            if state.closed {
                return Err(StoreError::Closed);
            }
            // The time is taken under the lock, so `produced_at` never decreases along the log
            // (unless the wall clock steps back).
            let now = SystemTime::now();
            let first = state.bounds.head + 1;
            let entries = encode_entries(first, batch, now);
            let last = first + entries.len() as u64 - 1;
            // With no cache in front (what the producer runs: this store is its own cache),
            // the entries move straight in and the tail gets the bounds only.
            let caches = self.tail.caches();
            let mut cached = Vec::with_capacity(if caches { entries.len() } else { 0 });
            state.entries.reserve(entries.len());
            for entry in entries {
                state.bytes += entry.charged_bytes();
                if caches {
                    cached.push(entry.clone());
                }
                state.entries.push_back(entry);
            }
            state.bounds.head = last;
            self.evict(&mut state, now);
            self.tail.commit(cached, state.bounds);
            Ok((first, last))
        })();
        Box::pin(std::future::ready(result))
    }

    fn read(&self, range: ReadRange) -> StoreFuture<'_, Vec<Record>> {
        let result = (|| {
            let state = self.read_lock();
            let oldest = state.bounds.oldest;
            if range.from < oldest {
                return Err(StoreError::Expired {
                    from: range.from,
                    oldest,
                });
            }
            let skip = (range.from - oldest) as usize;
            // Sized at once: a Poll of 10,000 otherwise grows it through a dozen copies.
            let wanted = range.to.saturating_sub(range.from).saturating_add(1);
            let mut records = Vec::with_capacity(
                range
                    .max_records
                    .max(1)
                    .min(state.entries.len().saturating_sub(skip))
                    .min(usize::try_from(wanted).unwrap_or(usize::MAX)),
            );
            let mut bytes = 0;
            for entry in state.entries.range(skip.min(state.entries.len())..) {
                if entry.event.sequence > range.to
                    || records.len() >= range.max_records.max(1)
                    || (bytes >= range.max_bytes && !records.is_empty())
                {
                    break;
                }
                bytes += entry.encoded.len();
                records.push(Record {
                    sequence: entry.event.sequence,
                    encoded: entry.encoded.clone(),
                });
            }
            Ok(records)
        })();
        Box::pin(std::future::ready(result))
    }

    fn enforce_retention(&self) {
        let mut state = self.lock();
        let before = state.bounds;
        self.evict(&mut state, SystemTime::now());
        if state.bounds != before {
            self.tail.set_bounds(state.bounds);
        }
    }

    fn stats(&self) -> StoreStats {
        let state = self.read_lock();
        StoreStats {
            events: state.entries.len() as u64,
            bytes: state.bytes as u64,
            segments: 0,
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        self.lock().closed = true;
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn batch(n: usize) -> NewBatch {
        let topic: Arc<str> = Arc::from("a");
        NewBatch {
            events: (0..n)
                .map(|i| (Arc::clone(&topic), Bytes::from(i.to_string())))
                .collect(),
        }
    }

    use crate::{
        log::EventLog,
        store::conformance::{self, Fixture, Options},
    };

    pub(crate) async fn open(options: Options) -> Fixture {
        let tail = Arc::new(Tail::new(options.cache_bytes));
        let store = MemoryStore::new(options.retention, Arc::clone(&tail));
        Fixture {
            log: EventLog::new(Arc::new(store), tail, options.limits),
            guard: Box::new(()),
        }
    }

    conformance::suite!(crate::store::memory::tests::open);

    fn retention(max_events: usize, max_bytes: usize) -> Retention {
        Retention {
            max_events,
            max_bytes,
            max_age: None,
        }
    }

    #[tokio::test]
    async fn retention_by_count_is_exact() {
        let tail = Arc::new(Tail::new(1 << 20));
        let store = MemoryStore::new(retention(3, usize::MAX), Arc::clone(&tail));
        store.append(batch(5)).await.unwrap();
        assert_eq!(store.bounds(), Bounds { oldest: 3, head: 5 });
        assert_eq!(tail.bounds(), store.bounds());
        assert_eq!(store.stats().events, 3);
    }

    #[tokio::test]
    async fn retention_by_bytes_keeps_total_under_limit() {
        use crate::log::EVENT_OVERHEAD_BYTES;
        let per_event = EVENT_OVERHEAD_BYTES + 1 + 10;
        let tail = Arc::new(Tail::new(1 << 20));
        let store = MemoryStore::new(retention(1000, 3 * per_event), Arc::clone(&tail));
        for _ in 0..10 {
            let event = (Arc::from("a"), Bytes::from_static(b"0123456789"));
            store
                .append(NewBatch {
                    events: vec![event],
                })
                .await
                .unwrap();
        }
        assert_eq!(
            (store.stats().events, store.stats().bytes),
            (3, 3 * per_event as u64)
        );
        assert_eq!(
            store.bounds(),
            Bounds {
                oldest: 8,
                head: 10
            }
        );
    }

    #[tokio::test]
    async fn age_retention_drops_old_events_but_keeps_the_head() {
        let tail = Arc::new(Tail::new(1 << 20));
        let store = MemoryStore::with_log_id(
            "t".into(),
            Retention {
                max_events: 100,
                max_bytes: usize::MAX,
                max_age: Some(Duration::from_millis(50)),
            },
            Arc::clone(&tail),
        );
        store.append(batch(3)).await.unwrap();
        std::thread::sleep(Duration::from_millis(80));
        store.enforce_retention();
        assert_eq!(store.bounds(), Bounds { oldest: 4, head: 3 });
        assert_eq!(tail.bounds(), Bounds { oldest: 4, head: 3 });
        assert_eq!(store.stats().events, 0);
        assert_eq!(store.append(batch(1)).await.unwrap(), (4, 4));
    }
}
