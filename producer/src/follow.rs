//! Waiting on the log, for every transport: gRPC Poll and Subscribe, SSE, WebSocket and HTTP
//! poll all read with the same cursor rules (the log's own [`EventLog::read`] /
//! [`EventLog::read_encoded`] and [`EventLog::check_cursor`] decide); this module only waits
//! for the head to move, so a long poll behaves the same on every transport.

use std::time::Duration;

use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use crate::{
    error::Error,
    log::{Batch, EventLog, ReadLimits, TopicFilter},
};

/// A push reader (SSE stream, WebSocket subscription): a cursor and the head it waits on.
#[derive(Debug)]
pub struct Follower {
    log: EventLog,
    filter: TopicFilter,
    cursor: u64,
    limits: ReadLimits,
    head: watch::Receiver<u64>,
}

impl Follower {
    /// Validates `after` (None: start at the head) before anything is streamed, so a bad cursor
    /// fails the request itself.
    pub fn new(
        log: EventLog,
        filter: TopicFilter,
        after: Option<u64>,
        limits: ReadLimits,
    ) -> Result<Self, Error> {
        let cursor = match after {
            Some(after) => {
                log.check_cursor(after)?;
                after
            }
            None => log.head(),
        };
        let head = log.watch_head();
        Ok(Self {
            log,
            filter,
            cursor,
            limits,
            head,
        })
    }

    /// Events with a sequence above this come next.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Waits for the next batch holding at least one event. Cancel-safe: the cursor moves only
    /// when a batch is returned, or past events a topic filter skipped.
    pub async fn next_batch(&mut self, stop: &CancellationToken) -> Result<Batch, Error> {
        loop {
            self.head.borrow_and_update();
            let batch = self.log.read(self.cursor, &self.filter, self.limits)?;
            self.cursor = batch.next_after;
            if !batch.events.is_empty() {
                return Ok(batch);
            }
            if !batch.caught_up() {
                // A filter skipped a long run of events: keep scanning, but let others run.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(Error::ShuttingDown),
                changed = self.head.changed() => {
                    if changed.is_err() {
                        return Err(Error::ShuttingDown);
                    }
                }
            }
        }
    }
}

/// One (long) poll: `read` from `after`, and while nothing matches and time is left, wait for
/// the head to move; returns at the deadline at the latest. `read` is the log read the transport
/// wants (decoded events for JSON, encoded ones for gRPC), called with the current cursor.
pub async fn long_poll<E>(
    log: &EventLog,
    after: u64,
    wait: Duration,
    stop: &CancellationToken,
    mut read: impl FnMut(u64) -> Result<Batch<E>, Error>,
) -> Result<Batch<E>, Error> {
    let deadline = Instant::now() + wait;
    let mut head = log.watch_head();
    let mut cursor = after;
    loop {
        head.borrow_and_update();
        let batch = read(cursor)?;
        cursor = batch.next_after;
        if !batch.events.is_empty() || wait.is_zero() || Instant::now() >= deadline {
            return Ok(batch);
        }
        if !batch.caught_up() {
            // A topic filter skipped a long run of events: keep scanning, but let others run.
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Err(Error::ShuttingDown),
            changed = head.changed() => {
                if changed.is_err() {
                    return Err(Error::ShuttingDown);
                }
            }
            _ = sleep_until(deadline) => {}
        }
    }
}
