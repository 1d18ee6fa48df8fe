//! `pushpull.v1.ProducerService`: the gRPC adapter over the [`EventLog`].
//!
//! Handlers validate the whole request before doing anything, turn domain errors into statuses
//! with `?` (see [`crate::error`]), and never hold the log's lock across an `.await`.
//!
//! Responses carry each event as the bytes the log encoded once at append
//! ([`pushpull::wire`]): the server is generated from the same `.proto` with `Event` replaced by
//! [`EncodedEvent`], so clients see ordinary `pushpull.v1` messages.

use std::{pin::pin, time::Duration};

use pushpull::{
    pb,
    time::{DurationError, display_duration, proto_duration, std_duration, timestamp},
    wire::{
        EncodedEvent,
        server::{self as wire, producer_service_server::ProducerService},
    },
};
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::{
    error::Error,
    follow::long_poll,
    log::{Batch, Event, EventLog, NewEvent, ReadLimits, TopicFilter},
};

/// Responses a subscriber's task may have made before the client has read them. Small on
/// purpose: the log is the buffer, and a slow subscriber should hold a cursor, not a queue of
/// copies. Two lets the task prepare the next batch while HTTP/2 writes the previous one.
const SUBSCRIBER_CHANNEL_CAPACITY: usize = 2;

/// How long a stream task tries to deliver its final UNAVAILABLE status at shutdown before it
/// gives up on a client that is not reading.
const FINAL_STATUS_TIMEOUT: Duration = Duration::from_millis(200);

/// Request limits and stream settings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub default_poll_events: u32,
    pub max_poll_events: u32,
    pub max_poll_wait: Duration,
    pub max_batch_events: usize,
    pub max_batch_bytes: usize,
    pub heartbeat_interval: Duration,
}

/// The service implementation; one instance serves every connection.
#[derive(Debug, Clone)]
pub struct ProducerApi {
    log: EventLog,
    settings: Settings,
    /// Cancelled when the producer starts shutting down: every stream and long poll listens to
    /// it, because tonic's graceful shutdown waits for open streams to end on their own.
    shutdown: CancellationToken,
}

impl ProducerApi {
    pub fn new(log: EventLog, settings: Settings, shutdown: CancellationToken) -> Self {
        Self {
            log,
            settings,
            shutdown,
        }
    }

    fn check_running(&self) -> Result<(), Error> {
        if self.shutdown.is_cancelled() {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    fn poll_limits(&self, req: &pb::PollRequest) -> Result<(ReadLimits, Duration), Error> {
        let s = &self.settings;
        let max_events = match req.max_events {
            0 => s.default_poll_events,
            n if n > s.max_poll_events => {
                return Err(Error::MaxEventsTooLarge {
                    value: n,
                    default: s.default_poll_events,
                    max: s.max_poll_events,
                });
            }
            n => n,
        };
        let max_wait = match &req.max_wait {
            None => Duration::ZERO,
            Some(d) => {
                let wait = std_duration(d).map_err(|e| Error::InvalidMaxWait {
                    value: display_duration(d),
                    reason: match e {
                        DurationError::Negative => "it must not be negative",
                        DurationError::Malformed => {
                            "nanos must be within ±999,999,999 and have the sign of seconds"
                        }
                    },
                })?;
                if wait > s.max_poll_wait {
                    return Err(Error::MaxWaitTooLong {
                        value: display_duration(d),
                        max: display_duration(&proto_duration(s.max_poll_wait)),
                    });
                }
                wait
            }
        };
        let limits = ReadLimits {
            max_events: max_events as usize,
            max_bytes: s.max_batch_bytes,
        };
        Ok((limits, max_wait))
    }
}

impl From<Event> for pb::Event {
    fn from(event: Event) -> Self {
        pb::Event {
            sequence: event.sequence,
            topic: event.topic.to_string(),
            payload: event.payload,
            produced_at: Some(timestamp(event.produced_at)),
        }
    }
}

#[tonic::async_trait]
impl ProducerService for ProducerApi {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        self.check_running()?;
        let events = request
            .into_inner()
            .events
            .into_iter()
            .map(|e| NewEvent {
                topic: e.topic,
                payload: e.payload,
            })
            .collect();
        let (first_sequence, last_sequence) = self.log.append(events)?;
        debug!(first_sequence, last_sequence, "published");
        Ok(Response::new(pb::PublishResponse {
            first_sequence,
            last_sequence,
            log_id: self.log.log_id().to_owned(),
        }))
    }

    type SubscribeStream = ReceiverStream<Result<wire::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.check_running()?;
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        // Everything is validated before the stream exists, so a bad request fails the call
        // itself instead of a stream that ends at once.
        let filter = TopicFilter::new(req.topics)?;
        let cursor = match req.after_sequence {
            Some(after) => {
                self.log.check_cursor(after)?;
                after
            }
            None => self.log.head(),
        };
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CHANNEL_CAPACITY);
        let subscriber = Subscriber {
            log: self.log.clone(),
            filter,
            cursor,
            limits: ReadLimits {
                max_events: self.settings.max_batch_events,
                max_bytes: self.settings.max_batch_bytes,
            },
            heartbeat_interval: self.settings.heartbeat_interval,
            shutdown: self.shutdown.clone(),
            tx,
        };
        let span = info_span!("subscriber", %peer, after_sequence = cursor);
        tokio::spawn(subscriber.run().instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn poll(
        &self,
        request: Request<pb::PollRequest>,
    ) -> Result<Response<wire::PollResponse>, Status> {
        self.check_running()?;
        let req = request.into_inner();
        let (limits, max_wait) = self.poll_limits(&req)?;
        let filter = TopicFilter::new(req.topics)?;
        let cursor = match req.after_sequence {
            Some(after) => after,
            None => self.log.head(),
        };
        let batch = long_poll(&self.log, cursor, max_wait, &self.shutdown, |after| {
            self.log.read_encoded(after, &filter, limits)
        })
        .await?;
        Ok(Response::new(wire::PollResponse {
            next_after_sequence: batch.next_after,
            head_sequence: batch.head,
            oldest_sequence: batch.oldest,
            log_id: self.log.log_id().to_owned(),
            events: batch.events,
        }))
    }
}

/// One push subscriber: a cursor and the sending half of its stream. Runs as its own task and
/// ends when the client goes away, the producer shuts down, or retention overtakes the cursor.
struct Subscriber {
    log: EventLog,
    filter: TopicFilter,
    cursor: u64,
    limits: ReadLimits,
    heartbeat_interval: Duration,
    shutdown: CancellationToken,
    tx: mpsc::Sender<Result<wire::SubscribeResponse, Status>>,
}

/// Why a subscriber's task ended.
enum End {
    ClientGone,
    ShuttingDown,
    Failed(Error),
}

impl Subscriber {
    async fn run(mut self) {
        info!("subscriber attached");
        let end = self.stream().await;
        match end {
            End::ClientGone => info!(after_sequence = self.cursor, "subscriber left"),
            End::ShuttingDown => {
                debug!("ending stream: shutting down");
                self.send_final(Error::ShuttingDown).await;
            }
            End::Failed(err) => {
                warn!(after_sequence = self.cursor, %err, "ending stream");
                self.send_final(err).await;
            }
        }
    }

    async fn send_final(&self, err: Error) {
        let _ = tokio::time::timeout(FINAL_STATUS_TIMEOUT, self.tx.send(Err(err.into()))).await;
    }

    async fn stream(&mut self) -> End {
        let mut head = self.log.watch_head();
        // The first response goes out at once, even when empty, so the client knows the stream
        // is established and learns log_id and head_sequence.
        let mut must_send = true;
        let mut last_sent = Instant::now();
        loop {
            head.borrow_and_update();
            let batch = match self
                .log
                .read_encoded(self.cursor, &self.filter, self.limits)
            {
                Ok(batch) => batch,
                Err(err) => return End::Failed(err),
            };
            self.cursor = batch.next_after;
            let caught_up = batch.caught_up();
            if !batch.events.is_empty() || must_send {
                must_send = false;
                if let Some(end) = self.send(batch).await {
                    return end;
                }
                last_sent = Instant::now();
                continue;
            }
            if !caught_up {
                tokio::task::yield_now().await;
                continue;
            }
            let heartbeat_at = last_sent + self.heartbeat_interval;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return End::ShuttingDown,
                _ = self.tx.closed() => return End::ClientGone,
                changed = head.changed() => {
                    if changed.is_err() {
                        return End::ShuttingDown;
                    }
                }
                _ = sleep_until(heartbeat_at) => must_send = true,
            }
        }
    }

    /// Sends one response, waiting for room in the channel (that is, for the client to read)
    /// but not past shutdown.
    async fn send(&self, batch: Batch<EncodedEvent>) -> Option<End> {
        let response = wire::SubscribeResponse {
            head_sequence: batch.head,
            log_id: self.log.log_id().to_owned(),
            next_after_sequence: batch.next_after,
            events: batch.events,
        };
        let send = pin!(self.tx.send(Ok(response)));
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Some(End::ShuttingDown),
            sent = send => sent.err().map(|_| End::ClientGone),
        }
    }
}
