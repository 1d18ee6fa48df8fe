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
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::{
    api::Api,
    error::Error,
    follow::Follower,
    log::{Batch, Event, NewEvent, TopicFilter},
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

    type SubscribeStream = ReceiverStream<Result<wire::SubscribeResponse, Status>>;

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
        let (tx, rx) = mpsc::channel(SUBSCRIBER_CHANNEL_CAPACITY);
        let span = info_span!("subscriber", %peer, after_sequence = follower.cursor());
        let subscriber = Subscriber {
            api: self.api.clone(),
            follower,
            tx,
        };
        tokio::spawn(subscriber.run().instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
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
/// and ends when the client goes away, the producer shuts down, or retention overtakes the
/// cursor.
struct Subscriber {
    api: Api,
    follower: Follower<EncodedEvent>,
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
        let after_sequence = self.follower.cursor();
        match end {
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
        let _ = tokio::time::timeout(FINAL_STATUS_TIMEOUT, self.tx.send(Err(err.into()))).await;
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
    /// but not past shutdown.
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
            sent = send => sent.err().map(|_| End::ClientGone),
        }
    }
}
