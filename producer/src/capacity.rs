//! How many clients the producer serves at once, and the ones it had to drop.
//!
//! Three limits, one per kind of client that holds the producer's resources for as long as it
//! stays: gRPC Subscribe streams (`--max-subscribers`), long polls waiting
//! (`--max-long-polls`, gRPC and HTTP together) and SSE streams plus WebSocket connections
//! (`--max-http-streams`). A stream or a wait takes a [`Slot`] before it starts and holds it for
//! its life; dropping the slot (the client left, the stream ended by whatever path, a panic)
//! gives it back at once. One client over a limit is refused with [`Error::AtCapacity`], which
//! names the limit and its flag, and nobody already served notices.
//!
//! Counters rather than a semaphore: nothing ever waits for a slot (a client over the limit is
//! told to come back later, not queued behind others), so only "take one if there is one" is
//! needed, and the same atomic numbers are what `/metrics` reads at scrape time.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use crate::{error::Error, limits::Limits, metrics::Transport};

/// What a capacity limit counts. The names are part of the API (`ErrorInfo` metadata
/// `resource`) and of the metrics (label `resource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// gRPC Subscribe streams.
    Subscribers,
    /// Long polls waiting (gRPC Poll with max_wait, HTTP `GET /poll?wait=`).
    LongPolls,
    /// SSE streams and WebSocket connections.
    HttpStreams,
}

impl Resource {
    pub const ALL: [Resource; 3] = [
        Resource::Subscribers,
        Resource::LongPolls,
        Resource::HttpStreams,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Resource::Subscribers => "subscribers",
            Resource::LongPolls => "long_polls",
            Resource::HttpStreams => "http_streams",
        }
    }

    /// The flag that sets the limit.
    pub fn flag(self) -> &'static str {
        match self {
            Resource::Subscribers => "--max-subscribers",
            Resource::LongPolls => "--max-long-polls",
            Resource::HttpStreams => "--max-http-streams",
        }
    }

    /// What is counted, for people: "the producer serves at most 10 {noun}".
    pub fn noun(self) -> &'static str {
        match self {
            Resource::Subscribers => "Subscribe streams",
            Resource::LongPolls => "waiting long polls",
            Resource::HttpStreams => "SSE streams and WebSocket connections",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The push transports a stalled client can be dropped from, in [`Capacity::stalled`]'s order.
pub const PUSH: [Transport; 3] = [Transport::GrpcStream, Transport::Sse, Transport::WebSocket];

/// The producer's capacity counters: a cheap `Clone` handle, one per producer, shared by every
/// transport through [`crate::api::Api`].
#[derive(Debug, Clone)]
pub struct Capacity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// By [`Resource::index`].
    counters: [Counter; 3],
    /// Push streams ended because their client stopped reading, by [`PUSH`] transport.
    stalled: [AtomicU64; 3],
}

#[derive(Debug)]
struct Counter {
    max: usize,
    in_use: AtomicUsize,
}

impl Capacity {
    pub fn new(limits: &Limits) -> Self {
        let counter = |max| Counter {
            max,
            in_use: AtomicUsize::new(0),
        };
        Self {
            inner: Arc::new(Inner {
                counters: [
                    counter(limits.max_subscribers),
                    counter(limits.max_long_polls),
                    counter(limits.max_http_streams),
                ],
                stalled: Default::default(),
            }),
        }
    }

    /// A slot of `resource`, or [`Error::AtCapacity`] when all are taken.
    pub fn take(&self, resource: Resource) -> Result<Slot, Error> {
        let counter = &self.inner.counters[resource.index()];
        counter
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < counter.max).then_some(n + 1)
            })
            .map_err(|_| Error::AtCapacity {
                resource,
                max: counter.max,
            })?;
        Ok(Slot {
            capacity: self.clone(),
            resource,
        })
    }

    /// Slots of `resource` taken now.
    pub fn in_use(&self, resource: Resource) -> usize {
        self.inner.counters[resource.index()]
            .in_use
            .load(Ordering::Relaxed)
    }

    /// The limit on `resource`.
    pub fn max(&self, resource: Resource) -> usize {
        self.inner.counters[resource.index()].max
    }

    /// Counts a push stream ended because its client stopped reading.
    pub fn count_stalled(&self, transport: Transport) {
        if let Some(i) = PUSH.iter().position(|t| *t == transport) {
            self.inner.stalled[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Push streams ended so far because their client stopped reading, by transport.
    pub fn stalled(&self) -> [(Transport, u64); 3] {
        std::array::from_fn(|i| (PUSH[i], self.inner.stalled[i].load(Ordering::Relaxed)))
    }
}

/// One taken place under a limit; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    capacity: Capacity,
    resource: Resource,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.capacity.inner.counters[self.resource.index()]
            .in_use
            .fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::Config;

    fn capacity(flags: &[&str]) -> Capacity {
        let config = Config::parse_from(std::iter::once("producer").chain(flags.iter().copied()));
        Capacity::new(&Limits::new(&config))
    }

    #[test]
    fn a_slot_over_the_limit_is_refused_and_a_dropped_one_is_free_at_once() {
        let capacity = capacity(&["--max-subscribers", "2", "--max-long-polls", "1"]);
        let first = capacity.take(Resource::Subscribers).unwrap();
        let _second = capacity.take(Resource::Subscribers).unwrap();
        assert_eq!(
            capacity.take(Resource::Subscribers).unwrap_err(),
            Error::AtCapacity {
                resource: Resource::Subscribers,
                max: 2
            }
        );
        assert_eq!(capacity.in_use(Resource::Subscribers), 2);
        // The limits are separate: subscribers do not use up long polls.
        let _poll = capacity.take(Resource::LongPolls).unwrap();
        drop(first);
        assert_eq!(capacity.in_use(Resource::Subscribers), 1);
        let _third = capacity.take(Resource::Subscribers).unwrap();
        assert_eq!(capacity.in_use(Resource::LongPolls), 1);
        assert_eq!(capacity.max(Resource::HttpStreams), 4096);
    }

    #[test]
    fn stalls_are_counted_by_transport() {
        let capacity = capacity(&[]);
        capacity.count_stalled(Transport::Sse);
        capacity.count_stalled(Transport::Sse);
        capacity.count_stalled(Transport::GrpcStream);
        assert_eq!(
            capacity.stalled(),
            [
                (Transport::GrpcStream, 1),
                (Transport::Sse, 2),
                (Transport::WebSocket, 0)
            ]
        );
    }
}
