//! The one follow loop, for every transport: gRPC Subscribe and Poll, SSE, WebSocket and HTTP
//! poll all read through a [`Follower`], so a cursor is resolved, a long poll waits and a push
//! stream waits for the head the same way everywhere. The cursor rules themselves are the
//! log's ([`EventLog::resolve_cursor`], [`EventLog::read`]); this module only waits.

use std::marker::PhantomData;

use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use crate::{
    error::Error,
    log::{Batch, EventLog, ReadLimits, TopicFilter},
};

pub use crate::log::Take;

/// A reader of the log: a cursor, a topic filter, and the head it waits on. A push stream keeps
/// one for its lifetime; a poll makes one per call.
#[derive(Debug)]
pub struct Follower<E> {
    log: EventLog,
    filter: TopicFilter,
    cursor: u64,
    limits: ReadLimits,
    head: watch::Receiver<u64>,
    taking: PhantomData<fn() -> E>,
}

impl<E: Take> Follower<E> {
    /// A follower at `after` (unset: the head now; 0: the oldest retained event), validated
    /// before anything is read or streamed, so a bad cursor fails the request itself.
    pub fn new(
        log: EventLog,
        filter: TopicFilter,
        after: Option<u64>,
        limits: ReadLimits,
    ) -> Result<Self, Error> {
        // Subscribed before the cursor is resolved: an append in between then shows as a
        // change, and is read, instead of being waited past.
        let head = log.watch_head();
        let cursor = log.resolve_cursor(after)?;
        Ok(Self {
            log,
            filter,
            cursor,
            limits,
            head,
            taking: PhantomData,
        })
    }

    /// Events with a sequence above this come next.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The topic filter this follower reads with.
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// The next batch after the cursor: at once when a matching event is waiting; otherwise
    /// as soon as one is appended, or, once `until` has passed, the empty batch (which still
    /// carries the head and moves the cursor past events the filter skipped). With no `until`
    /// it waits for an event or for `stop`.
    ///
    /// Cancel-safe: the cursor moves only when a batch is returned, or past skipped events, so
    /// a caller may race it against its client going away.
    pub async fn next_batch(
        &mut self,
        until: Option<Instant>,
        stop: &CancellationToken,
    ) -> Result<Batch<E>, Error> {
        loop {
            // Marked seen before reading: an append after this read changes the watch again.
            self.head.borrow_and_update();
            let batch = self
                .log
                .read::<E>(self.cursor, &self.filter, self.limits)
                .await?;
            self.cursor = batch.next_after;
            if !batch.events.is_empty() || until.is_some_and(|t| Instant::now() >= t) {
                return Ok(batch);
            }
            if !batch.caught_up() {
                // A filter skipped a long run of events: keep scanning, but let others run.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return Err(Error::ShuttingDown),
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return Err(Error::ShuttingDown);
                    }
                }
                () = deadline(until) => return Ok(batch),
            }
        }
    }
}

/// Resolves at `until`; never without one.
async fn deadline(until: Option<Instant>) {
    match until {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use pushpull::wire::EncodedEvent;

    use super::*;
    use crate::{
        log::{Event, NewEvent, PublishLimits},
        store::Retention,
    };

    const ALL: ReadLimits = ReadLimits {
        max_events: 100,
        max_bytes: usize::MAX,
    };

    fn log() -> EventLog {
        EventLog::memory_with_log_id(
            "t".into(),
            Retention {
                max_events: 100,
                max_bytes: usize::MAX,
                max_age: None,
            },
            PublishLimits {
                max_events: 100,
                max_payload_bytes: 100,
            },
        )
    }

    async fn append(log: &EventLog, topic: &str) {
        log.append(vec![NewEvent {
            topic: topic.into(),
            payload: Bytes::new(),
        }])
        .await
        .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_batch_comes_at_the_deadline_with_the_cursor_past_skipped_events() {
        let log = log();
        append(&log, "noise").await;
        append(&log, "noise").await;
        let rare = TopicFilter::new(vec!["rare".into()]).unwrap();
        let mut follower = Follower::<Event>::new(log, rare, Some(0), ALL).unwrap();
        let started = Instant::now();
        let batch = follower
            .next_batch(
                Some(started + Duration::from_secs(3)),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        assert!(batch.events.is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(follower.cursor(), 2, "skipped events are not rescanned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_follower_wakes_on_append_and_without_until_never_times_out() {
        let log = log();
        let mut follower =
            Follower::<EncodedEvent>::new(log.clone(), TopicFilter::default(), None, ALL).unwrap();
        let stop = CancellationToken::new();
        let appender = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                append(&log, "a").await;
            })
        };
        let batch = follower.next_batch(None, &stop).await.unwrap();
        assert_eq!(batch.events.len(), 1);
        assert_eq!(follower.cursor(), 1);
        appender.await.unwrap();
    }

    #[tokio::test]
    async fn stop_ends_a_wait_and_a_bad_cursor_fails_at_once() {
        let log = log();
        let stop = CancellationToken::new();
        let mut follower =
            Follower::<Event>::new(log.clone(), TopicFilter::default(), None, ALL).unwrap();
        stop.cancel();
        assert_eq!(
            follower.next_batch(None, &stop).await,
            Err(Error::ShuttingDown)
        );
        assert!(matches!(
            Follower::<Event>::new(log, TopicFilter::default(), Some(5), ALL),
            Err(Error::CursorAhead { after: 5, .. })
        ));
    }
}
