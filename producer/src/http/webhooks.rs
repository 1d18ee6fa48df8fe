//! `/webhooks`: webhook subscriptions over HTTP JSON, the same operations and rules as gRPC's
//! `WebhookService` (the registry is shared; field names are the `.proto`'s):
//!
//! - `POST /webhooks` with a `CreateWebhookRequest` as JSON: 201 with `{"webhook", "secret",
//!   "replaced"}` (200 when an existing one was replaced);
//! - `GET /webhooks`: `{"webhooks": [...]}`, by id;
//! - `GET /webhooks/{webhook_id}`: `{"webhook": {...}}`;
//! - `DELETE /webhooks/{webhook_id}`: 204.
//!
//! Times are RFC 3339 strings, or null when unset.

use std::time::SystemTime;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{AppState, error::ApiError, json::rfc3339, params::Body};
use crate::webhook::registry::{NewWebhook, Subscription};

/// A subscription as JSON: `pushpull.v1.Webhook`'s fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookJson {
    pub webhook_id: String,
    pub url: String,
    pub topics: Vec<String>,
    pub delivered_sequence: u64,
    pub enabled: bool,
    pub disabled_reason: String,
    pub last_attempt_at: Option<String>,
    pub last_error: String,
    pub next_attempt_at: Option<String>,
    pub consecutive_failures: u32,
    pub failing_since: Option<String>,
    pub batches_delivered: u64,
    pub events_delivered: u64,
    pub log_id: String,
    pub created_at: String,
}

impl From<Subscription> for WebhookJson {
    fn from(s: Subscription) -> Self {
        let time = |at: Option<SystemTime>| at.map(rfc3339);
        Self {
            webhook_id: s.webhook_id,
            url: s.url,
            topics: s.topics,
            delivered_sequence: s.delivered_sequence,
            enabled: s.enabled,
            disabled_reason: s.disabled_reason,
            last_attempt_at: time(s.last_attempt_at),
            last_error: s.last_error,
            next_attempt_at: time(s.next_attempt_at),
            consecutive_failures: s.consecutive_failures,
            failing_since: time(s.failing_since),
            batches_delivered: s.batches_delivered,
            events_delivered: s.events_delivered,
            log_id: s.log_id,
            created_at: rfc3339(s.created_at),
        }
    }
}

/// `CreateWebhookRequest` as JSON; every field but `url` may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJson {
    #[serde(default)]
    webhook_id: String,
    url: String,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    after_sequence: Option<u64>,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    replace: bool,
}

/// `POST /webhooks`.
pub async fn create(State(state): State<AppState>, Body(body): Body) -> Result<Response, ApiError> {
    let request: CreateJson = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad(
            "body",
            format!(
                "the body is not a webhook to create ({err}); expected {{\"url\":\"http://...\", \
                 \"webhook_id\":\"...\", \"topics\":[...], \"after_sequence\":N, \"secret\":\"whsec_...\", \
                 \"replace\":false}} (only url is required)"
            ),
        )
    })?;
    let created = state
        .webhooks
        .create(NewWebhook {
            webhook_id: request.webhook_id,
            url: request.url,
            topics: request.topics,
            after_sequence: request.after_sequence,
            secret: request.secret,
            replace: request.replace,
        })
        .await?;
    let status = if created.replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let body = serde_json::json!({
        "webhook": WebhookJson::from(created.webhook),
        "secret": created.secret,
        "replaced": created.replaced,
    });
    Ok((status, Json(body)).into_response())
}

/// `GET /webhooks`.
pub async fn list(State(state): State<AppState>) -> Json<serde_json::Value> {
    let webhooks: Vec<WebhookJson> = state.webhooks.list().into_iter().map(Into::into).collect();
    Json(serde_json::json!({ "webhooks": webhooks }))
}

/// `GET /webhooks/{webhook_id}`.
pub async fn get(
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let webhook = WebhookJson::from(state.webhooks.get(&webhook_id)?);
    Ok(Json(serde_json::json!({ "webhook": webhook })))
}

/// `DELETE /webhooks/{webhook_id}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(webhook_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.delete(&webhook_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
