//! The bare tonic peer: `pushpull.v1.ProducerService` as a typical tonic user writes a
//! streaming server, with none of the producer's machinery (no log, no events encoded once, no
//! custom stream). It runs as a child process of the benchmark, so its CPU is its own:
//!
//! ```text
//! pushpull-bench child peer-stream -- --events N --events-per-message K
//! ```
//!
//! Its log is imaginary and holds events 1 to N. `Subscribe` streams the events after the
//! request's `after_sequence` (the same cursor rule as the producer's) in messages of K events,
//! then ends the stream with OK, so a reader counts to N and stops. `Publish` and `Poll` answer
//! UNIMPLEMENTED.
//!
//! The stream is the pattern of tonic's own streaming example: a spawned task builds each
//! `SubscribeResponse` (sequence, topic, a clone of one 64-byte payload, `produced_at` now) and
//! sends it through a bounded mpsc channel returned as a `ReceiverStream`; a failed send means
//! the client left, and ends the task. The server is a plain `tonic::transport::Server` with
//! its defaults, `TCP_NODELAY` on (as tonic sets it when it binds the port itself).

use std::{future::Future, time::SystemTime};

use bytes::Bytes;
use pushpull::pb::{
    self,
    producer_service_server::{ProducerService, ProducerServiceServer},
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};

use crate::load::{PAYLOAD_BYTES, TOPIC};

/// Messages the stream task may run ahead of the client: tonic's streaming example uses 128.
const CHANNEL_CAPACITY: usize = 128;

/// The peer's flags.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "peer-stream")]
pub struct Config {
    /// How many events the imaginary log holds (sequences 1 to this).
    #[arg(long)]
    pub events: u64,
    /// Events per `SubscribeResponse`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub events_per_message: u64,
}

/// The service: N events, K to a message.
#[derive(Debug)]
pub struct PeerStream {
    config: Config,
    payload: Bytes,
}

impl PeerStream {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            payload: Bytes::from(vec![b'x'; PAYLOAD_BYTES]),
        }
    }
}

/// The messages that carry the events after `after` up to `last`, `per_message` to a message:
/// (first, last) sequence of each.
pub fn message_bounds(after: u64, last: u64, per_message: u64) -> impl Iterator<Item = (u64, u64)> {
    let per_message = per_message.max(1);
    (after.saturating_add(1)..=last)
        .step_by(per_message as usize)
        .map(move |first| (first, first.saturating_add(per_message - 1).min(last)))
}

#[tonic::async_trait]
impl ProducerService for PeerStream {
    async fn publish(
        &self,
        _request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        Err(Status::unimplemented("the bare peer only streams"))
    }

    type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let after = request.into_inner().after_sequence.unwrap_or(0);
        let (last, per_message) = (self.config.events, self.config.events_per_message);
        let payload = self.payload.clone();
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(async move {
            for (first, end) in message_bounds(after, last, per_message) {
                let produced_at = Some(pushpull::time::timestamp(SystemTime::now()));
                let events = (first..=end)
                    .map(|sequence| pb::Event {
                        sequence,
                        topic: TOPIC.to_owned(),
                        payload: payload.clone(),
                        produced_at,
                    })
                    .collect();
                let response = pb::SubscribeResponse {
                    events,
                    head_sequence: last,
                    next_after_sequence: end,
                    ..Default::default()
                };
                if tx.send(Ok(response)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn poll(
        &self,
        _request: Request<pb::PollRequest>,
    ) -> Result<Response<pb::PollResponse>, Status> {
        Err(Status::unimplemented("the bare peer only streams"))
    }
}

/// Serves the peer on `listener` until `shutdown`. Its streams are finite, so a shutdown never
/// waits long for one.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    Server::builder()
        .add_service(ProducerServiceServer::new(PeerStream::new(config)))
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| format!("peer-stream: {e}"))
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    #[test]
    fn messages_cover_every_event_after_the_cursor_once() {
        let bounds: Vec<_> = message_bounds(0, 10, 4).collect();
        assert_eq!(bounds, [(1, 4), (5, 8), (9, 10)]);
        assert_eq!(
            message_bounds(3, 5, 1).collect::<Vec<_>>(),
            [(4, 4), (5, 5)]
        );
        assert_eq!(
            message_bounds(10, 10, 256).count(),
            0,
            "nothing after the end"
        );
        assert_eq!(message_bounds(0, 512, 256).count(), 2);
    }

    #[tokio::test]
    async fn subscribe_streams_the_events_after_the_cursor_then_ends() {
        let peer = PeerStream::new(Config {
            events: 600,
            events_per_message: 256,
        });
        let request = Request::new(pb::SubscribeRequest {
            after_sequence: Some(100),
            topics: vec![],
        });
        let stream = peer
            .subscribe(request)
            .await
            .expect("a stream")
            .into_inner();
        let messages: Vec<pb::SubscribeResponse> = stream
            .map(|m| m.expect("no error"))
            .collect::<Vec<_>>()
            .await;
        let sizes: Vec<usize> = messages.iter().map(|m| m.events.len()).collect();
        assert_eq!(sizes, [256, 244]);
        let sequences: Vec<u64> = messages
            .iter()
            .flat_map(|m| m.events.iter().map(|e| e.sequence))
            .collect();
        assert_eq!(sequences, (101..=600).collect::<Vec<_>>());
        let event = &messages[0].events[0];
        assert_eq!(event.topic, TOPIC);
        assert_eq!(event.payload.len(), PAYLOAD_BYTES);
        assert!(event.produced_at.is_some());
    }
}
