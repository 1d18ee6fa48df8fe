//! The storage conformance suite: what the log promises, checked over every backend.
//!
//! Each check is an async function taking the backend's `open`; [`suite!`] turns them into
//! `#[tokio::test]`s in the backend's module. Every check runs twice per backend: with the
//! default tail cache (reads served from memory) and with none (every read goes to the store),
//! so both read paths keep the same rules.

use std::{any::Any, future::Future};

use bytes::Bytes;
use pushpull::wire::EncodedEvent;

use crate::{
    error::Error,
    log::{
        Batch, Event, EventLog, MAX_TOPIC_LEN, NewEvent, PublishLimits, ReadLimits, TopicFilter,
    },
    store::Retention,
};

/// What a backend's `open` is given.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub retention: Retention,
    pub limits: PublishLimits,
    pub cache_bytes: usize,
}

/// An open log, and whatever must live as long as it (a temporary directory).
pub struct Fixture {
    pub log: EventLog,
    pub guard: Box<dyn Any + Send>,
}

/// Generates the suite's tests for one backend: `suite!(open)` inside a `#[cfg(test)] mod`,
/// where `open` is an `async fn(Options) -> Fixture`.
macro_rules! suite {
    ($open:path) => {
        $crate::store::conformance::suite!(@tests $open;
            sequences_are_consecutive_from_one,
            cursor_reads_strictly_after,
            filter_advances_cursor_past_skipped_events,
            max_events_limits_the_batch_and_the_cursor,
            byte_limit_still_returns_one_large_event,
            retention_evicts_oldest_and_expires_cursors,
            invalid_publish_appends_nothing,
            watch_head_wakes_on_append,
            encoded_reads_carry_the_same_events_as_plain_reads,
            concurrent_appends_get_disjoint_consecutive_ranges,
            bounds_and_log_id_are_stable,
        );
    };
    (@tests $open:path; $($check:ident),* $(,)?) => {
        mod cached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    $crate::store::conformance::$check(|o| $open(o), $crate::log::DEFAULT_CACHE_BYTES).await;
                }
            )*
        }
        mod uncached {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    $crate::store::conformance::$check(|o| $open(o), 0).await;
                }
            )*
        }
    };
}
pub(crate) use suite;

const ALL: ReadLimits = ReadLimits {
    max_events: usize::MAX,
    max_bytes: usize::MAX,
};

fn options(max_events: usize, cache_bytes: usize) -> Options {
    Options {
        retention: Retention {
            max_events,
            max_bytes: usize::MAX,
            max_age: None,
        },
        limits: PublishLimits {
            max_events: 1000,
            max_payload_bytes: 1024,
        },
        cache_bytes,
    }
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

async fn read(log: &EventLog, after: u64, filter: &TopicFilter) -> Result<Batch, Error> {
    log.read::<Event>(after, filter, ALL).await
}

/// Reads everything after `after` to the head, batch by batch.
async fn read_all(log: &EventLog, mut after: u64) -> Vec<Event> {
    let mut events = Vec::new();
    loop {
        let batch = read(log, after, &TopicFilter::default()).await.unwrap();
        events.extend(batch.events.iter().cloned());
        after = batch.next_after;
        if batch.caught_up() {
            return events;
        }
    }
}

pub async fn sequences_are_consecutive_from_one<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    assert_eq!(
        log.append(vec![ev("a", "1"), ev("b", "2")]).await,
        Ok((1, 2))
    );
    assert_eq!(log.append(vec![ev("a", "3")]).await, Ok((3, 3)));
    let batch = read(&log, 0, &TopicFilter::default()).await.unwrap();
    assert_eq!(seqs(&batch), vec![1, 2, 3]);
    assert_eq!((batch.next_after, batch.head, batch.oldest), (3, 3, 1));
    assert_eq!(&*batch.events[1].topic, "b");
    assert_eq!(&batch.events[2].payload[..], b"3");
}

pub async fn cursor_reads_strictly_after<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    log.append((0..5).map(|i| ev("a", &i.to_string())).collect())
        .await
        .unwrap();
    let batch = read(&log, 2, &TopicFilter::default()).await.unwrap();
    assert_eq!(seqs(&batch), vec![3, 4, 5]);
    let batch = read(&log, 5, &TopicFilter::default()).await.unwrap();
    assert!(batch.events.is_empty());
    assert_eq!(batch.next_after, 5);
}

pub async fn filter_advances_cursor_past_skipped_events<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    log.append(vec![
        ev("a", ""),
        ev("b", ""),
        ev("a", ""),
        ev("b", ""),
        ev("b", ""),
    ])
    .await
    .unwrap();
    let only_a = TopicFilter::new(vec!["a".into()]).unwrap();
    let batch = read(&log, 0, &only_a).await.unwrap();
    assert_eq!(seqs(&batch), vec![1, 3]);
    assert_eq!(
        batch.next_after, 5,
        "cursor must move past filtered-out events"
    );
    let batch = read(&log, 3, &only_a).await.unwrap();
    assert!(batch.events.is_empty());
    assert_eq!(batch.next_after, 5);
}

pub async fn max_events_limits_the_batch_and_the_cursor<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    log.append((0..10).map(|_| ev("a", "")).collect())
        .await
        .unwrap();
    let limits = ReadLimits {
        max_events: 4,
        max_bytes: usize::MAX,
    };
    let batch = log
        .read::<Event>(0, &TopicFilter::default(), limits)
        .await
        .unwrap();
    assert_eq!(seqs(&batch), vec![1, 2, 3, 4]);
    assert_eq!(
        batch.next_after, 4,
        "must not skip events it did not return"
    );
    assert!(!batch.caught_up());
}

pub async fn byte_limit_still_returns_one_large_event<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    log.append(vec![ev("a", &"x".repeat(500)), ev("a", "y")])
        .await
        .unwrap();
    let limits = ReadLimits {
        max_events: 100,
        max_bytes: 10,
    };
    let all = TopicFilter::default();
    let batch = log.read::<Event>(0, &all, limits).await.unwrap();
    assert_eq!(seqs(&batch), vec![1]);
    let batch = log.read::<Event>(1, &all, limits).await.unwrap();
    assert_eq!(seqs(&batch), vec![2]);
}

/// Retention drops the oldest events (a backend may drop in larger units, such as whole
/// segments, but never more than it must), and the cursor rules follow the bounds exactly.
pub async fn retention_evicts_oldest_and_expires_cursors<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(20, cache_bytes)).await;
    for i in 0..100 {
        log.append(vec![ev("a", &format!("{i:0>100}"))])
            .await
            .unwrap();
    }
    let (oldest, head) = log.bounds();
    assert_eq!(head, 100);
    assert!(oldest > 1, "retention dropped nothing: oldest {oldest}");
    assert!(
        head - oldest + 1 >= 1,
        "the newest event is always retained"
    );
    let all = TopicFilter::default();
    // 0 means "from the oldest retained".
    let events = read_all(&log, 0).await;
    assert_eq!(events.first().map(|e| e.sequence), Some(oldest));
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (oldest..=head).collect::<Vec<_>>()
    );
    assert_eq!(
        &events.last().unwrap().payload[..],
        format!("{:0>100}", 99).as_bytes()
    );
    // oldest - 1 is still a valid cursor: nothing is skipped.
    let batch = read(&log, oldest - 1, &all).await.unwrap();
    assert_eq!(batch.events.first().map(|e| e.sequence), Some(oldest));
    assert_eq!(
        read(&log, oldest - 2, &all).await,
        Err(Error::CursorExpired {
            after: oldest - 2,
            oldest,
            head,
            log_id: log.log_id().to_owned(),
        })
    );
    assert_eq!(
        read(&log, head + 1, &all).await,
        Err(Error::CursorAhead {
            after: head + 1,
            oldest,
            head,
            log_id: log.log_id().to_owned(),
        })
    );
    assert_eq!(log.resolve_cursor(None), Ok(head));
}

pub async fn invalid_publish_appends_nothing<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    let err = log
        .append(vec![ev("ok", ""), ev("bad topic", "")])
        .await
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
        log.append(vec![ev("a", ""), big]).await,
        Err(Error::PayloadTooLarge {
            size: 1025,
            max: 1024,
            ..
        })
    ));
    assert_eq!(log.append(vec![]).await, Err(Error::NoEvents { max: 1000 }));
    assert_eq!(log.head(), 0);
    assert_eq!(log.store_stats().events, 0);
    assert_eq!(log.append(vec![ev("a", "")]).await, Ok((1, 1)));
}

pub async fn watch_head_wakes_on_append<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    let mut rx = log.watch_head();
    rx.borrow_and_update();
    log.append(vec![ev("a", "")]).await.unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow_and_update(), 1);
}

pub async fn encoded_reads_carry_the_same_events_as_plain_reads<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    use prost::Message as _;
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    log.append(vec![ev("a", "one"), ev("b", ""), ev("a", "three")])
        .await
        .unwrap();
    log.append(vec![ev("c", "four")]).await.unwrap();
    let only_a = TopicFilter::new(vec!["a".into()]).unwrap();
    for filter in [TopicFilter::default(), only_a] {
        let plain = read(&log, 0, &filter).await.unwrap();
        let encoded = log.read::<EncodedEvent>(0, &filter, ALL).await.unwrap();
        assert_eq!(
            (encoded.next_after, encoded.head, encoded.oldest),
            (plain.next_after, plain.head, plain.oldest)
        );
        let decoded: Vec<pushpull::pb::Event> = encoded
            .events
            .iter()
            .map(|e| pushpull::pb::Event::decode(e.0.clone()).unwrap())
            .collect();
        let expected: Vec<pushpull::pb::Event> = plain.events.into_iter().map(Into::into).collect();
        assert_eq!(decoded, expected);
    }
}

/// Publishes racing each other each get one run of consecutive sequences, and together they
/// fill the log with no gap: the atomicity a store must keep under concurrency.
pub async fn concurrent_appends_get_disjoint_consecutive_ranges<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100_000, cache_bytes)).await;
    let tasks: Vec<_> = (0..8)
        .map(|writer| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut ranges = Vec::new();
                for call in 0..20 {
                    let events = (0..(1 + (writer + call) % 7))
                        .map(|i| ev(&format!("w{writer}"), &format!("{call}.{i}")))
                        .collect();
                    ranges.push(log.append(events).await.unwrap());
                }
                (writer, ranges)
            })
        })
        .collect();
    let mut ranges = Vec::new();
    for task in tasks {
        let (writer, mine) = task.await.unwrap();
        ranges.extend(mine.into_iter().map(|r| (r, writer)));
    }
    ranges.sort();
    let mut next = 1;
    for ((first, last), _) in &ranges {
        assert_eq!(*first, next, "ranges {ranges:?}");
        next = last + 1;
    }
    let events = read_all(&log, 0).await;
    assert_eq!(events.len() as u64, next - 1);
    // Each call's events are together, in the order given, under its writer's topic.
    for ((first, last), writer) in &ranges {
        let run = &events[(*first - 1) as usize..*last as usize];
        assert!(run.iter().all(|e| *e.topic == *format!("w{writer}")));
        let calls: std::collections::BTreeSet<_> = run
            .iter()
            .map(|e| {
                String::from_utf8_lossy(&e.payload)
                    .split('.')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(calls.len(), 1, "one call's events stay together: {run:?}");
    }
}

pub async fn bounds_and_log_id_are_stable<F, Fut>(open: F, cache_bytes: usize)
where
    F: Fn(Options) -> Fut,
    Fut: Future<Output = Fixture>,
{
    let Fixture { log, guard: _guard } = open(options(100, cache_bytes)).await;
    assert_eq!(log.bounds(), (1, 0));
    assert!(!log.log_id().is_empty());
    let id = log.log_id().to_owned();
    log.append(vec![ev("a", "")]).await.unwrap();
    assert_eq!(log.bounds(), (1, 1));
    assert_eq!(log.log_id(), id);
    let other = open(options(100, cache_bytes)).await;
    assert_ne!(other.log.log_id(), id, "a different log has a different id");
}
