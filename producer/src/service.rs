//! `pushpull.v1.ProducerService`: the gRPC adapter over the producer's [`Api`].
//!
//! Handlers turn the request into the API's terms, validate all of it before doing anything,
//! and turn domain errors into statuses with `?` (see [`crate::error`]: every status carries
//! its `ErrorInfo`). The rules themselves (limits, cursors, waiting) are the API's, shared with
//! the HTTP side.
//!
//! Responses carry each event as the bytes the log encoded once at append
//! ([`pushpull::wire`]): the server is generated from the same `.proto` with `Event` replaced by
//! [`EncodedEvent`], so clients see ordinary `pushpull.v1` messages.

use std::{pin::pin, time::Duration};

use pushpull::{
    pb,
    time::timestamp,
    wire::{
        EncodedEvent,
        server::{self as wire, producer_service_server::ProducerService},
    },
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::{
    api::Api,
    capacity::{Resource, Slot},
    error::Error,
    follow::Follower,
    log::{Batch, Event, NewEvent, TopicFilter},
    metrics::Transport,
    push::{self, SendError},
};

/// Responses a subscriber's task may have made before the client has read them. Small on
/// purpose: the log is the buffer, and a slow subscriber should hold a cursor, not a queue of
/// copies. Two lets the task prepare the next batch while HTTP/2 writes the previous one.
const SUBSCRIBER_CHANNEL_CAPACITY: usize = 2;

/// How long a stream task tries to deliver its final UNAVAILABLE status at shutdown before it
/// gives up on a client that is not reading.
const FINAL_STATUS_TIMEOUT: Duration = Duration::from_millis(200);

/// The service implementation; one instance serves every connection.
#[derive(Debug, Clone)]
pub struct ProducerApi {
    api: Api,
}

impl ProducerApi {
    pub fn new(api: Api) -> Self {
        Self { api }
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
        let events = request
            .into_inner()
            .events
            .into_iter()
            .map(|e| NewEvent {
                topic: e.topic,
                payload: e.payload,
            })
            .collect();
        let (first_sequence, last_sequence) = self.api.publish(events).await?;
        debug!(first_sequence, last_sequence, "published");
        Ok(Response::new(pb::PublishResponse {
            first_sequence,
            last_sequence,
            log_id: self.api.log().log_id().to_owned(),
        }))
    }

    type SubscribeStream = push::Receiver<Result<wire::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let req = request.into_inner();
        // Everything is validated before the stream exists, so a bad request fails the call
        // itself instead of a stream that ends at once.
        let filter = TopicFilter::new(req.topics)?;
        let follower = self.api.subscribe(req.after_sequence, filter)?;
        let slot = self.api.admit(Resource::Subscribers)?;
        let (tx, rx) = push::channel(SUBSCRIBER_CHANNEL_CAPACITY, self.api.limits().stall_timeout);
        let span = info_span!("subscriber", %peer, after_sequence = follower.cursor());
        let subscriber = Subscriber {
            api: self.api.clone(),
            follower,
            tx,
            _slot: slot,
        };
        tokio::spawn(subscriber.run().instrument(span));
        Ok(Response::new(rx))
    }

    async fn poll(
        &self,
        request: Request<pb::PollRequest>,
    ) -> Result<Response<wire::PollResponse>, Status> {
        let req = request.into_inner();
        let limits = self.api.limits();
        let batch_limits = limits.poll_batch(req.max_events)?;
        let wait = limits.proto_poll_wait(req.max_wait.as_ref())?;
        let filter = TopicFilter::new(req.topics)?;
        let batch = self
            .api
            .poll(req.after_sequence, filter, batch_limits, wait)
            .await?;
        Ok(Response::new(wire::PollResponse {
            next_after_sequence: batch.next_after,
            head_sequence: batch.head,
            oldest_sequence: batch.oldest,
            log_id: self.api.log().log_id().to_owned(),
            events: batch.events,
        }))
    }
}

/// One push subscriber: a follower and the sending half of its stream. Runs as its own task
/// and ends when the client goes away, the producer shuts down, retention overtakes the
/// cursor, or the client stops reading.
struct Subscriber {
    api: Api,
    follower: Follower<EncodedEvent>,
    tx: push::Sender<Result<wire::SubscribeResponse, Status>>,
    /// Its place under `--max-subscribers`, given back when the task ends: a stalled
    /// subscriber's stream may linger until its client reads or leaves, but the task and cursor
    /// it was counted for are gone.
    _slot: Slot,
}

/// Why a subscriber's task ended.
enum End {
    ClientGone,
    ShuttingDown,
    /// The client took nothing for the stall timeout while a response waited.
    Stalled,
    Failed(Error),
}

impl Subscriber {
    async fn run(mut self) {
        info!("subscriber attached");
        let end = self.stream().await;
        let after_sequence = self.follower.cursor();
        match end {
            End::Stalled => {
                let timeout = self.api.limits().stall_timeout;
                warn!(
                    after_sequence,
                    stall_timeout = %humantime::format_duration(timeout),
                    "subscriber stalled; ending stream"
                );
                self.api.capacity().count_stalled(Transport::GrpcStream);
                let status = Error::SubscriberStalled { timeout }.into();
                self.tx.end_with(Err(status));
            }
            End::ClientGone => info!(after_sequence, "subscriber left"),
            End::ShuttingDown => {
                debug!(after_sequence, "ending stream: shutting down");
                self.send_final(Error::ShuttingDown).await;
            }
            End::Failed(err) => {
                warn!(after_sequence, %err, "ending stream");
                self.send_final(err).await;
            }
        }
    }

    async fn send_final(&self, err: Error) {
        self.tx
            .send_last(Err(err.into()), FINAL_STATUS_TIMEOUT)
            .await;
    }

    async fn stream(&mut self) -> End {
        let heartbeat = self.api.limits().heartbeat_interval;
        let stop = self.api.stop().clone();
        // The first response goes out at once, even when empty, so the client knows the stream
        // is established and learns log_id and head_sequence; after that, an empty one (a
        // heartbeat) whenever the stream has been quiet for a heartbeat interval.
        let mut due = Instant::now();
        loop {
            let batch = tokio::select! {
                biased;
                () = self.tx.closed() => return End::ClientGone,
                batch = self.follower.next_batch(Some(due), &stop) => batch,
            };
            let batch = match batch {
                Ok(batch) => batch,
                Err(Error::ShuttingDown) => return End::ShuttingDown,
                Err(err) => return End::Failed(err),
            };
            if let Some(end) = self.send(batch).await {
                return end;
            }
            due = Instant::now() + heartbeat;
        }
    }

    /// Sends one response, waiting for room in the channel (that is, for the client to read)
    /// but not past shutdown, nor past the stall timeout.
    async fn send(&self, batch: Batch<EncodedEvent>) -> Option<End> {
        let response = wire::SubscribeResponse {
            head_sequence: batch.head,
            log_id: self.api.log().log_id().to_owned(),
            next_after_sequence: batch.next_after,
            events: batch.events,
        };
        let send = pin!(self.tx.send(Ok(response)));
        tokio::select! {
            biased;
            () = self.api.stop().cancelled() => Some(End::ShuttingDown),
            sent = send => match sent {
                Ok(()) => None,
                Err(SendError::Gone) => Some(End::ClientGone),
                Err(SendError::Stalled) => Some(End::Stalled),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use clap::Parser as _;
    use futures_util::StreamExt as _;
    use pushpull::errors::{ErrorReason, reason};
    use tokio_util::sync::CancellationToken;
    use tonic::Code;

    use super::*;
    use crate::{
        Config,
        limits::Limits,
        log::{EventLog, PublishLimits},
        store::Retention,
    };

    fn service(flags: &[&str]) -> ProducerApi {
        let config = Config::parse_from(std::iter::once("producer").chain(flags.iter().copied()));
        let log = EventLog::memory_with_log_id(
            "t".into(),
            Retention {
                max_events: 1000,
                max_bytes: usize::MAX,
                max_age: None,
            },
            PublishLimits {
                max_events: 100,
                max_payload_bytes: 100,
            },
        );
        ProducerApi::new(Api::new(
            log,
            Limits::new(&config),
            CancellationToken::new(),
        ))
    }

    async fn publish(service: &ProducerApi, n: usize) {
        let events = (0..n)
            .map(|_| NewEvent {
                topic: "t".into(),
                payload: Bytes::new(),
            })
            .collect();
        service.api.publish(events).await.unwrap();
    }

    fn from_oldest() -> Request<pb::SubscribeRequest> {
        Request::new(pb::SubscribeRequest {
            after_sequence: Some(0),
            topics: vec![],
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_stops_reading_is_ended_with_stalled_ahead_of_its_backlog() {
        let service = service(&["--stall-timeout", "30s", "--max-batch-events", "1"]);
        // One event per response: more than the channel holds, so the task waits on a client
        // that never reads.
        publish(&service, 5).await;
        let mut stream = service.subscribe(from_oldest()).await.unwrap().into_inner();
        assert_eq!(service.api.capacity().in_use(Resource::Subscribers), 1);

        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(
            service.api.capacity().in_use(Resource::Subscribers),
            0,
            "the task is gone, and its slot with it"
        );
        assert_eq!(
            service.api.capacity().stalled()[0],
            (Transport::GrpcStream, 1)
        );
        let status = stream
            .next()
            .await
            .expect("the final status")
            .expect_err("not a buffered response");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(reason(&status), Some(ErrorReason::SubscriberStalled));
        assert!(stream.next().await.is_none(), "the stream ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_reads_slowly_but_within_the_timeout_is_kept() {
        let service = service(&["--stall-timeout", "30s", "--max-batch-events", "1"]);
        publish(&service, 5).await;
        let mut stream = service.subscribe(from_oldest()).await.unwrap().into_inner();
        let mut got = Vec::new();
        while got.len() < 5 {
            tokio::time::sleep(Duration::from_secs(29)).await;
            let response = stream.next().await.unwrap().unwrap();
            got.extend(response.events.iter().map(|_| response.next_after_sequence));
        }
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        assert_eq!(service.api.capacity().stalled()[0].1, 0);
    }

    #[tokio::test]
    async fn subscribers_over_the_limit_are_refused_and_a_departed_one_frees_its_slot() {
        let service = service(&["--max-subscribers", "1"]);
        let first = service.subscribe(from_oldest()).await.unwrap();
        let refused = service.subscribe(from_oldest()).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(reason(&refused), Some(ErrorReason::TooManySubscribers));
        assert!(
            refused.message().contains("--max-subscribers"),
            "{}",
            refused.message()
        );
        drop(first);
        // The task sees its client gone at once, and gives the slot back as it ends.
        for _ in 0..1000 {
            if service.api.capacity().in_use(Resource::Subscribers) == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        service.subscribe(from_oldest()).await.unwrap();
    }
}
