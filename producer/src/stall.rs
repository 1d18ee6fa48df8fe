//! The stall timeout for push streams that HTTP/2 pulls from (gRPC Subscribe).
//!
//! A gRPC subscriber has no task of its own: its response stream reads the log when hyper asks
//! for the next response, which hyper does only while HTTP/2 has room for it. A client that
//! stops reading therefore stops its stream from being asked at all, so the stream cannot
//! notice its own stall. One reaper task per producer watches every such stream instead:
//! each records when it handed out a response and has not been asked for the next one since.
//! Past the stall timeout the reaper marks it stalled and frees its place under
//! `--max-subscribers`; the stream, if its client ever reads again, gets what was already on
//! its way and then `RESOURCE_EXHAUSTED` `SUBSCRIBER_STALLED`, as the task-driven transports
//! (SSE, [`crate::push`]) end theirs.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    capacity::{Capacity, Slot},
    metrics::Transport,
};

/// `since`: the stream is not waiting on its client (it is being polled, or waits for events).
const NOT_WAITING: u64 = 0;
/// `since`: the reaper found it stalled.
const STALLED: u64 = u64::MAX;

/// The streams being watched, and the reaper's settings. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Stalls {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    timeout: Duration,
    /// Times are milliseconds since this (plus one, so 0 can mean "not waiting"): tokio's
    /// clock, which tests pause.
    base: Instant,
    /// Every watched stream; dropped streams are swept out by the reaper. A std mutex: held
    /// for a push, or for one sweep that does no I/O.
    watched: Mutex<Vec<Weak<Watched>>>,
    reaper_started: AtomicBool,
    stop: CancellationToken,
    /// Counts the streams found stalled (metrics).
    capacity: Capacity,
}

/// One watched stream's side: see [`Stalls::watch`].
#[derive(Debug)]
pub struct Watched {
    /// [`NOT_WAITING`], [`STALLED`], or when (ms + 1 since `base`) it last handed out a
    /// response that has not been followed by a request for the next.
    since: AtomicU64,
    /// Its place under the subscriber limit, given back when it ends or stalls.
    slot: Mutex<Option<Slot>>,
    /// Where the stream's log lines go (its cursor at the stall).
    cursor: AtomicU64,
    transport: Transport,
}

impl Stalls {
    /// Watches streams with `timeout`, counting stalls in `capacity`; the reaper ends with
    /// `stop`.
    pub fn new(timeout: Duration, stop: CancellationToken, capacity: Capacity) -> Self {
        Self {
            shared: Arc::new(Shared {
                timeout,
                base: Instant::now(),
                watched: Mutex::new(Vec::new()),
                reaper_started: AtomicBool::new(false),
                stop,
                capacity,
            }),
        }
    }

    /// Watches a new stream holding `slot`. It starts out waiting on its client: its first
    /// response is due at once. Starts the reaper with the first stream (it needs a runtime).
    pub fn watch(&self, slot: Slot, transport: Transport) -> Arc<Watched> {
        let watched = Arc::new(Watched {
            since: AtomicU64::new(self.shared.now()),
            slot: Mutex::new(Some(slot)),
            cursor: AtomicU64::new(0),
            transport,
        });
        lock(&self.shared.watched).push(Arc::downgrade(&watched));
        if !self.shared.reaper_started.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(&self.shared)));
        }
        watched
    }

    /// The stall timeout (`--stall-timeout`).
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Streams watched now (including ones ended since the last sweep).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.shared.watched).len()
    }
}

impl Shared {
    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    /// Marks every stream that has waited on its client for the timeout as stalled; forgets
    /// ended ones.
    fn sweep(&self) {
        let now = self.now();
        let timeout = self.timeout.as_millis() as u64;
        let mut stalled = Vec::new();
        lock(&self.watched).retain(|weak| {
            let Some(watched) = weak.upgrade() else {
                return false;
            };
            let since = watched.since.load(Ordering::Acquire);
            if since != NOT_WAITING
                && since != STALLED
                && now.saturating_sub(since) >= timeout
                // Lost to the stream being polled meanwhile: not stalled after all.
                && watched
                    .since
                    .compare_exchange(since, STALLED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                stalled.push(watched);
                return false;
            }
            true
        });
        // Outside the lock: logging, metrics and the slot's release.
        for watched in stalled {
            drop(lock(&watched.slot).take());
            self.capacity.count_stalled(watched.transport);
            warn!(
                after_sequence = watched.cursor.load(Ordering::Relaxed),
                stall_timeout = %humantime::format_duration(self.timeout),
                "subscriber stalled; ending stream"
            );
        }
    }
}

/// Sweeps every tenth of the timeout (within 10 ms ..= 1 s) until `stop` or until the
/// producer's [`Stalls`] is gone.
async fn reap(shared: Weak<Shared>) {
    let Some((tick, stop)) = shared.upgrade().map(|s| {
        (
            (s.timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            s.stop.clone(),
        )
    }) else {
        return;
    };
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.sweep();
    }
}

impl Watched {
    /// The stream is being asked for its next response. True if the reaper found it stalled
    /// first: the stream must then end with the stall status.
    pub fn polled(&self) -> bool {
        self.since.swap(NOT_WAITING, Ordering::AcqRel) == STALLED
    }

    /// The stream handed out a response (whose events end at `cursor`) and now waits to be
    /// asked for the next.
    pub fn yielded(&self, stalls: &Stalls, cursor: u64) {
        self.cursor.store(cursor, Ordering::Relaxed);
        self.since.store(stalls.shared.now(), Ordering::Release);
    }

    /// Whether its place under the limit was given back (tests).
    #[cfg(test)]
    fn holds_slot(&self) -> bool {
        lock(&self.slot).is_some()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while these locks are held.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::Resource;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn setup() -> (Stalls, Capacity) {
        let config = <crate::Config as clap::Parser>::parse_from(["producer"]);
        let capacity = Capacity::new(&crate::limits::Limits::new(&config));
        let stalls = Stalls::new(TIMEOUT, CancellationToken::new(), capacity.clone());
        (stalls, capacity)
    }

    fn stalled(capacity: &Capacity) -> u64 {
        capacity.stalled()[0].1
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_not_asked_for_the_timeout_after_a_response_is_stalled_and_freed() {
        let (stalls, capacity) = setup();
        let slot = capacity.take(Resource::Subscribers).unwrap();
        let watched = stalls.watch(slot, Transport::GrpcStream);
        assert!(!watched.polled());
        watched.yielded(&stalls, 7);
        tokio::time::sleep(TIMEOUT - Duration::from_secs(1)).await;
        assert!(watched.holds_slot(), "not yet");
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!watched.holds_slot());
        assert_eq!(capacity.in_use(Resource::Subscribers), 0);
        assert_eq!(stalled(&capacity), 1);
        assert!(watched.polled(), "the stream learns it stalled");
        assert_eq!(stalls.len(), 0, "no longer watched");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_waiting_for_events_or_asked_in_time_is_never_stalled_and_ended_ones_are_forgotten()
     {
        let (stalls, capacity) = setup();
        let slot = capacity.take(Resource::Subscribers).unwrap();
        let watched = stalls.watch(slot, Transport::GrpcStream);
        // Asked, and waiting for events (not yielded): idle, not stalled.
        assert!(!watched.polled());
        tokio::time::sleep(TIMEOUT * 3).await;
        // Slow but within the timeout each time.
        for _ in 0..5 {
            watched.yielded(&stalls, 1);
            tokio::time::sleep(TIMEOUT - Duration::from_secs(5)).await;
            assert!(!watched.polled());
        }
        assert_eq!(stalled(&capacity), 0);
        assert!(watched.holds_slot());
        drop(watched);
        assert_eq!(capacity.in_use(Resource::Subscribers), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(stalls.len(), 0);
    }
}
