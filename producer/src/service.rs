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

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::Stream;

use pushpull::{
    pb,
    time::timestamp,
    wire::{
        EncodedEvent, PublishRequest,
        server::{self as wire, producer_service_server::ProducerService},
    },
};
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{Span, debug, info, info_span, warn};

use crate::{
    api::Api,
    capacity::{Resource, Slot},
    error::Error,
    follow::Follower,
    log::{Batch, Event, NewEvent, TopicFilter, Topics},
    metrics::Transport,
    stall::{Stalls, Watched},
};

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
        request: Request<PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        // The topics come as slices of the request's bytes: each distinct one is allocated
        // once per call here, not once per event.
        let mut topics = Topics::default();
        let events = request
            .into_inner()
            .events
            .into_iter()
            .map(|e| NewEvent {
                topic: topics.get(e.topic()),
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

    type SubscribeStream = SubscriberStream;

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
        let span = info_span!("subscriber", %peer, after_sequence = follower.cursor());
        span.in_scope(|| info!("subscriber attached"));
        Ok(Response::new(SubscriberStream::new(
            self.api.clone(),
            follower,
            slot,
            span,
        )))
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

/// One push subscriber: the response stream *is* the subscriber. hyper asks it for the next
/// response only while HTTP/2 has room for one, and it then reads the log from its cursor, so
/// the log stays the only buffer: no task, no channel, no response made before the client can
/// take it. One wake-up per appended batch per subscriber (the head watch waking the HTTP/2
/// stream's own task), where a task feeding a channel cost two; and an idle subscriber is its
/// cursor, its place in the head watch and this struct.
///
/// It ends when the client goes away (hyper drops it), the producer shuts down or retention
/// overtakes the cursor (a last status), or the client stops reading: then the stall reaper
/// ([`crate::stall`]) frees its slot, and the stream ends with `SUBSCRIBER_STALLED` once
/// asked again.
pub struct SubscriberStream {
    /// The log reads, one response each.
    responses: Pin<Box<dyn Stream<Item = Result<wire::SubscribeResponse, Status>> + Send>>,
    stalls: Stalls,
    /// Its stall watch, which also holds its place under `--max-subscribers`.
    watched: Arc<Watched>,
    span: Span,
    /// Its last response was returned: a status (shutdown, an expired cursor, a stall).
    ended: bool,
}

impl SubscriberStream {
    fn new(api: Api, follower: Follower<EncodedEvent>, slot: Slot, span: Span) -> Self {
        let watched = api.stalls().watch(slot, Transport::GrpcStream);
        let stalls = api.stalls().clone();
        let heartbeat = api.limits().heartbeat_interval;
        // The first response goes out at once, even when empty, so the client knows the stream
        // is established and learns log_id and head_sequence; after that, an empty one (a
        // heartbeat) whenever the stream has been quiet for a heartbeat interval.
        let reader = Reader {
            api,
            follower,
            due: Instant::now(),
            done: false,
        };
        let responses = futures_util::stream::unfold(reader, move |mut reader| async move {
            if reader.done {
                return None;
            }
            let due = Some(reader.due);
            let response = match reader.follower.next_batch(due, reader.api.stop()).await {
                Ok(batch) => {
                    reader.due = Instant::now() + heartbeat;
                    Ok(reader.response(batch))
                }
                Err(err) => {
                    reader.done = true;
                    let after_sequence = reader.follower.cursor();
                    if err == Error::ShuttingDown {
                        debug!(after_sequence, "ending stream: shutting down");
                    } else {
                        warn!(after_sequence, %err, "ending stream");
                    }
                    Err(err.into())
                }
            };
            Some((response, reader))
        });
        Self {
            responses: Box::pin(responses),
            stalls,
            watched,
            span,
            ended: false,
        }
    }
}

/// The log side of a [`SubscriberStream`].
struct Reader {
    api: Api,
    follower: Follower<EncodedEvent>,
    /// When the next response is due even without events (a heartbeat).
    due: Instant,
    /// A final status was returned: nothing follows it.
    done: bool,
}

impl Reader {
    fn response(&self, batch: Batch<EncodedEvent>) -> wire::SubscribeResponse {
        wire::SubscribeResponse {
            head_sequence: batch.head,
            log_id: self.api.log().log_id().to_owned(),
            next_after_sequence: batch.next_after,
            events: batch.events,
        }
    }
}

impl Stream for SubscriberStream {
    type Item = Result<wire::SubscribeResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.watched.polled() {
            // The reaper already freed the slot and counted the stall.
            this.ended = true;
            let timeout = this.stalls.timeout();
            return Poll::Ready(Some(Err(Error::SubscriberStalled { timeout }.into())));
        }
        let _entered = this.span.enter();
        match this.responses.as_mut().poll_next(cx) {
            Poll::Ready(Some(response)) => {
                match &response {
                    Ok(ok) => this.watched.yielded(&this.stalls, ok.next_after_sequence),
                    Err(_) => this.ended = true,
                }
                Poll::Ready(Some(response))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl std::fmt::Debug for SubscriberStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberStream")
            .field("watched", &self.watched)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Drop for SubscriberStream {
    fn drop(&mut self) {
        if !self.ended {
            let _entered = self.span.enter();
            info!("subscriber left");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
