//! `pushpull.v1.WebhookService`: the gRPC adapter over the webhook [`Webhooks`] registry.
//! Validation and the rules are the registry's, shared with the HTTP side (`/webhooks`);
//! errors become statuses through [`crate::error`], like every other producer error.

use pushpull::{
    pb::{self, webhook_service_server::WebhookService},
    time::timestamp,
};
use tonic::{Request, Response, Status};

use super::registry::{NewWebhook, Subscription, Webhooks};
use crate::{error::Error, metrics::Metrics};

/// The service implementation; one instance serves every connection.
#[derive(Debug, Clone)]
pub struct WebhookApi {
    webhooks: Webhooks,
    metrics: Metrics,
}

impl WebhookApi {
    pub fn new(webhooks: Webhooks, metrics: Metrics) -> Self {
        Self { webhooks, metrics }
    }

    /// The status for `err`, counted in `rejected_requests` like every refused call.
    fn refuse(&self, err: Error) -> Status {
        self.metrics.rejected("grpc", err.reason());
        err.into()
    }
}

impl From<Subscription> for pb::Webhook {
    fn from(s: Subscription) -> Self {
        pb::Webhook {
            webhook_id: s.webhook_id,
            url: s.url,
            topics: s.topics,
            delivered_sequence: s.delivered_sequence,
            enabled: s.enabled,
            disabled_reason: s.disabled_reason,
            last_attempt_at: s.last_attempt_at.map(timestamp),
            last_error: s.last_error,
            next_attempt_at: s.next_attempt_at.map(timestamp),
            consecutive_failures: s.consecutive_failures,
            batches_delivered: s.batches_delivered,
            events_delivered: s.events_delivered,
            log_id: s.log_id,
            failing_since: s.failing_since.map(timestamp),
            created_at: Some(timestamp(s.created_at)),
        }
    }
}

impl From<pb::CreateWebhookRequest> for NewWebhook {
    fn from(r: pb::CreateWebhookRequest) -> Self {
        NewWebhook {
            webhook_id: r.webhook_id,
            url: r.url,
            topics: r.topics,
            after_sequence: r.after_sequence,
            secret: r.secret,
            replace: r.replace,
        }
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_webhook(
        &self,
        request: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let created = self
            .webhooks
            .create(request.into_inner().into())
            .await
            .map_err(|err| self.refuse(err))?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(created.webhook.into()),
            secret: created.secret,
            replaced: created.replaced,
        }))
    }

    async fn get_webhook(
        &self,
        request: Request<pb::GetWebhookRequest>,
    ) -> Result<Response<pb::GetWebhookResponse>, Status> {
        let webhook = self
            .webhooks
            .get(&request.into_inner().webhook_id)
            .map_err(|err| self.refuse(err))?;
        Ok(Response::new(pb::GetWebhookResponse {
            webhook: Some(webhook.into()),
        }))
    }

    async fn list_webhooks(
        &self,
        _request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: self.webhooks.list().into_iter().map(Into::into).collect(),
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        self.webhooks
            .delete(&request.into_inner().webhook_id)
            .await
            .map_err(|err| self.refuse(err))?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }
}
