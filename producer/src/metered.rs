//! Metrics for the gRPC side without touching its handlers: [`MeteredApi`] wraps
//! [`ProducerApi`], times each call, counts refusals, and watches each Subscribe stream go by
//! (events delivered, open streams, streams ended because retention overtook them).

use std::pin::Pin;

use futures_util::{Stream, StreamExt as _};
use pushpull::{
    errors::{self, ErrorReason},
    pb,
    wire::{
        PublishRequest,
        server::{self as wire, producer_service_server::ProducerService},
    },
};
use tonic::{Request, Response, Status};

use crate::{
    metrics::{Metrics, Transport},
    service::ProducerApi,
};

/// [`ProducerApi`] with metrics.
#[derive(Debug, Clone)]
pub struct MeteredApi {
    api: ProducerApi,
    metrics: Metrics,
}

impl MeteredApi {
    pub fn new(api: ProducerApi, metrics: Metrics) -> Self {
        Self { api, metrics }
    }

    fn rejected<T>(&self, result: Result<T, Status>) -> Result<T, Status> {
        if let Err(status) = &result {
            self.metrics.rejected("grpc", reason(status));
        }
        result
    }
}

/// The `reason` label of a refused call: the status's own `ErrorInfo` reason. Every status
/// the service returns carries one; anything else (none is known) is counted as unspecified.
fn reason(status: &Status) -> ErrorReason {
    errors::reason(status).unwrap_or(ErrorReason::Unspecified)
}

#[tonic::async_trait]
impl ProducerService for MeteredApi {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let timer = self.metrics.timer("grpc", "publish");
        let result = self.rejected(self.api.publish(request).await);
        timer.finish();
        result
    }

    type SubscribeStream =
        Pin<Box<dyn Stream<Item = Result<wire::SubscribeResponse, Status>> + Send>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let stream = self
            .rejected(self.api.subscribe(request).await)?
            .into_inner();
        let metrics = self.metrics.clone();
        let counted = metrics.subscriber(Transport::GrpcStream);
        let delivered = metrics.delivered_counter(Transport::GrpcStream);
        let stream = stream.map(move |item| {
            // Moved in so the stream stays counted until it is dropped.
            let _counted = &counted;
            match &item {
                Ok(response) => {
                    delivered.inc_by(response.events.len() as u64);
                }
                Err(status) if errors::reason(status) == Some(ErrorReason::CursorExpired) => {
                    metrics.lagged(Transport::GrpcStream)
                }
                Err(_) => {}
            }
            item
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn poll(
        &self,
        request: Request<pb::PollRequest>,
    ) -> Result<Response<wire::PollResponse>, Status> {
        let timer = self.metrics.timer("grpc", "poll");
        let result = {
            let _poller = self.metrics.poller(Transport::GrpcPoll);
            self.rejected(self.api.poll(request).await)
        };
        if let Ok(response) = &result {
            self.metrics
                .delivered(Transport::GrpcPoll, response.get_ref().events.len());
        }
        timer.finish();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn the_label_is_the_reason_the_status_carries() {
        let errors = [
            Error::CursorExpired {
                after: 1,
                oldest: 5,
                head: 9,
                log_id: "L".into(),
            },
            Error::CursorAhead {
                after: 10,
                oldest: 5,
                head: 9,
                log_id: "L".into(),
            },
            Error::ShuttingDown,
            Error::NoEvents { max: 10 },
            Error::TooManyTopics {
                count: 101,
                max: 100,
            },
        ];
        for err in errors {
            let expected = err.reason();
            assert_eq!(reason(&Status::from(err)), expected);
        }
        assert_eq!(
            reason(&Status::internal("from elsewhere")),
            ErrorReason::Unspecified
        );
    }
}
