//! What the producer does for a client, whatever the transport: gRPC ([`crate::service`]) and
//! HTTP ([`crate::http`]) are thin adapters over [`Api`], so a rule (refusing work while
//! shutting down, resolving a cursor, the request limits, the capacity limits, how a long poll
//! waits) is written once and every transport behaves alike.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    capacity::{Capacity, Resource, Slot},
    error::Error,
    follow::{Follower, Take},
    limits::Limits,
    log::{Batch, EventLog, NewEvent, ReadLimits, TopicFilter},
    stall::Stalls,
};

/// The log, the limits and the stop signal; cheap to clone, one per producer.
#[derive(Debug, Clone)]
pub struct Api {
    log: EventLog,
    limits: Limits,
    /// How many subscribers, long polls and HTTP streams are served now, against the limits.
    capacity: Capacity,
    /// The stall timeout of gRPC subscribers, which have no task to time themselves.
    stalls: Stalls,
    /// Cancelled when the producer starts shutting down: new calls are refused, and every
    /// stream and long poll waiting on the log ends with it (tonic's and axum's graceful
    /// shutdowns wait for open streams to end on their own).
    stop: CancellationToken,
}

impl Api {
    pub fn new(log: EventLog, limits: Limits, stop: CancellationToken) -> Self {
        let capacity = Capacity::new(&limits);
        let stalls = Stalls::new(limits.stall_timeout, stop.clone(), capacity.clone());
        Self {
            log,
            limits,
            capacity,
            stalls,
            stop,
        }
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    /// Where gRPC subscribers are watched for stalls.
    pub fn stalls(&self) -> &Stalls {
        &self.stalls
    }

    /// A place under `resource`'s limit, held by a stream for its life; refused with
    /// [`Error::AtCapacity`] when the producer already serves as many.
    pub fn admit(&self, resource: Resource) -> Result<Slot, Error> {
        self.capacity.take(resource)
    }

    /// The producer's stop signal, for transports to end their own streams with.
    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// Refuses new work once shutdown has begun, so a client learns to reconnect elsewhere
    /// instead of starting something that is about to be cut.
    pub fn check_running(&self) -> Result<(), Error> {
        if self.stop.is_cancelled() {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    /// Appends `events` atomically; returns their (first, last) sequence.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<(u64, u64), Error> {
        self.check_running()?;
        self.log.append(events).await
    }

    /// A push reader (Subscribe, SSE, WebSocket) at `after`, validated before the stream
    /// exists; its batches are cut at the push batch limits.
    pub fn subscribe<E: Take>(
        &self,
        after: Option<u64>,
        filter: TopicFilter,
    ) -> Result<Follower<E>, Error> {
        self.check_running()?;
        Follower::new(self.log.clone(), filter, after, self.limits.push_batch())
    }

    /// One poll: the batch after `after`; with a `wait`, it returns as soon as a matching event
    /// exists, or empty once `wait` has passed, never later.
    ///
    /// A long poll takes a slot under `--max-long-polls` only once it has to wait: one that
    /// finds events at once is answered even when the limit is reached.
    pub async fn poll<E: Take>(
        &self,
        after: Option<u64>,
        filter: TopicFilter,
        limits: ReadLimits,
        wait: Duration,
    ) -> Result<Batch<E>, Error> {
        self.check_running()?;
        let until = Instant::now() + wait;
        let mut follower = Follower::new(self.log.clone(), filter, after, limits)?;
        if wait.is_zero() {
            return follower.next_batch(Some(until), &self.stop).await;
        }
        let now = follower
            .next_batch(Some(Instant::now()), &self.stop)
            .await?;
        if !now.events.is_empty() {
            return Ok(now);
        }
        let _waiting = self.admit(Resource::LongPolls)?;
        follower.next_batch(Some(until), &self.stop).await
    }
}
