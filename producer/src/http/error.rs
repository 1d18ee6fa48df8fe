//! The one place the producer's errors become HTTP responses.
//!
//! Every refusal is JSON, `{"code", "field", "message", ...}`, with the same message as the gRPC
//! status (see [`crate::error`]). Status codes follow the gRPC ↔ HTTP mapping, with one
//! sharpening borrowed from Kubernetes' expired `resourceVersion`: an expired cursor is
//! **410 Gone**, carrying `oldest_sequence` so the client knows where to resume.

use std::collections::BTreeMap;

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use pushpull::errors::{ErrorInfo, ErrorReason, key};
use serde::{Deserialize, Serialize};

use crate::{auth::AuthError, error::Error};

/// Why an HTTP request (or a WebSocket message) was refused.
#[derive(Debug)]
pub enum ApiError {
    /// A domain error from the log or the limits. `cursor_field` names where the cursor came
    /// from (`after`, or the `Last-Event-ID` header) for cursor errors.
    Log {
        err: Error,
        cursor_field: &'static str,
    },
    /// A parameter or body that could not be parsed at all.
    BadRequest { field: String, message: String },
    /// A request body over the limit (`--max-message-bytes`, the gRPC message limit, so both
    /// sides accept the same publish).
    BodyTooLarge { max: usize },
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError::Log {
            err,
            cursor_field: "after",
        }
    }
}

impl ApiError {
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The `ErrorInfo` reason: the JSON `reason` and the `reason` label of
    /// `pushpull_producer_rejected_requests_total`.
    pub fn reason(&self) -> ErrorReason {
        match self {
            ApiError::Log { err, .. } => err.reason(),
            ApiError::BadRequest { .. } => ErrorReason::MalformedRequest,
            ApiError::BodyTooLarge { .. } => ErrorReason::BodyTooLarge,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Log { err, .. } => match err {
                Error::CursorExpired { .. } => StatusCode::GONE,
                Error::ShuttingDown
                | Error::StorageUnavailable { .. }
                | Error::AtCapacity { .. }
                | Error::SubscriberStalled { .. } => StatusCode::SERVICE_UNAVAILABLE,
                Error::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
                Error::StorageCorrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                Error::WebhookNotFound { .. } => StatusCode::NOT_FOUND,
                Error::WebhookExists { .. } => StatusCode::CONFLICT,
                Error::WebhookTargetNotAllowed { .. } => StatusCode::FORBIDDEN,
                Error::Auth(AuthError::ScopeMissing { .. }) => StatusCode::FORBIDDEN,
                Error::Auth(AuthError::Missing | AuthError::Invalid) => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            },
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The JSON body (also sent as a WebSocket `error` message): the gRPC status's message,
    /// reason and metadata, with fields named as the HTTP client wrote them.
    pub fn body(&self) -> ErrorJson {
        match self {
            ApiError::BadRequest { field, message } => {
                let info = ErrorInfo::new(self.reason()).with(key::FIELD, field);
                ErrorJson {
                    code: "invalid_argument".into(),
                    reason: info.reason_name().into(),
                    field: Some(field.clone()),
                    message: message.clone(),
                    metadata: info.metadata,
                    ..ErrorJson::default()
                }
            }
            ApiError::BodyTooLarge { max } => {
                let info = ErrorInfo::new(self.reason())
                    .with(key::FIELD, "body")
                    .with(key::LIMIT, max)
                    .with(key::FLAG, "--max-message-bytes");
                ErrorJson {
                    code: "invalid_argument".into(),
                    reason: info.reason_name().into(),
                    field: Some("body".into()),
                    message: format!(
                        "the body is over {max} bytes, the limit (flag --max-message-bytes); \
                         publish fewer events per request"
                    ),
                    metadata: info.metadata,
                    ..ErrorJson::default()
                }
            }
            ApiError::Log { err, cursor_field } => {
                let mut info = err.info();
                let field = err.field().map(|f| http_field(f, cursor_field).to_owned());
                if let Some(field) = &field {
                    info = info.with(key::FIELD, field);
                }
                let reason = info.reason;
                ErrorJson {
                    code: match reason {
                        ErrorReason::CursorExpired => "cursor_expired",
                        ErrorReason::CursorAhead => "cursor_ahead",
                        ErrorReason::ShuttingDown => "shutting_down",
                        ErrorReason::StorageFull => "storage_full",
                        ErrorReason::StorageUnavailable => "storage_unavailable",
                        ErrorReason::StorageCorrupt => "storage_corrupt",
                        ErrorReason::WebhookNotFound => "not_found",
                        ErrorReason::WebhookExists => "already_exists",
                        ErrorReason::WebhookTargetNotAllowed | ErrorReason::ScopeMissing => {
                            "permission_denied"
                        }
                        ErrorReason::TokenMissing | ErrorReason::TokenInvalid => "unauthenticated",
                        ErrorReason::TooManySubscribers
                        | ErrorReason::TooManyLongPolls
                        | ErrorReason::TooManyHttpStreams
                        | ErrorReason::SubscriberStalled => "resource_exhausted",
                        _ => "invalid_argument",
                    }
                    .into(),
                    reason: info.reason_name().into(),
                    field,
                    message: err.to_string(),
                    oldest_sequence: info.get_u64(key::OLDEST_SEQUENCE),
                    head_sequence: info.get_u64(key::HEAD_SEQUENCE),
                    missed: info.get_u64(key::MISSED),
                    metadata: info.metadata,
                }
            }
        }
    }
}

/// A proto field name as the HTTP side spells it: the cursor is `after` (or the
/// `Last-Event-ID` header), `max_wait` is `wait`; the rest are the same.
fn http_field<'a>(proto_field: &'a str, cursor_field: &'a str) -> &'a str {
    match proto_field {
        "after_sequence" => cursor_field,
        "max_wait" => "wait",
        other => other,
    }
}

/// An error as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorJson {
    /// The kind, for simple clients: `invalid_argument`, `cursor_expired`, `cursor_ahead`,
    /// `shutting_down`, `resource_exhausted` (a capacity limit, or a stalled stream), `storage_*`,
    /// `not_found`, `already_exists`, `permission_denied`.
    pub code: String,
    /// The `google.rpc.ErrorInfo` reason, as gRPC clients get it: `CURSOR_EXPIRED`,
    /// `INVALID_TOPIC`, `MALFORMED_REQUEST`, ... (`proto/pushpull/v1/errors.proto`).
    pub reason: String,
    /// The parameter, header or body field at fault (`after`, `topics[1]`, `events[0].payload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    /// The `ErrorInfo` metadata: bounds, limits, counts, the flag that sets a limit.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Cursor errors: where the log starts now (also in `metadata`, as a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_sequence: Option<u64>,
    /// Expired cursor: how many events between the cursor and `oldest_sequence` are gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missed: Option<u64>,
}

/// Put on refused responses so one middleware counts them by reason.
#[derive(Debug, Clone, Copy)]
pub struct Rejected(pub ErrorReason);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if let ApiError::Log { err, .. } = &self
            && let Some(after) = err.retry_after()
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(after.as_secs().max(1)),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: what a client should send instead.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pushpull\""),
            );
        }
        response.extensions_mut().insert(Rejected(self.reason()));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_cursor_is_gone_with_oldest_and_missed() {
        let err = ApiError::from(Error::CursorExpired {
            after: 3,
            oldest: 11,
            head: 20,
            log_id: "L".into(),
        });
        assert_eq!(err.status(), StatusCode::GONE);
        let body = err.body();
        assert_eq!(body.code, "cursor_expired");
        assert_eq!(body.reason, "CURSOR_EXPIRED");
        assert_eq!(body.field.as_deref(), Some("after"));
        assert_eq!(
            body.metadata["field"], "after",
            "named as the HTTP client wrote it"
        );
        assert_eq!(body.metadata["log_id"], "L");
        assert_eq!(body.metadata["missed"], "7");
        assert_eq!(
            (body.oldest_sequence, body.head_sequence, body.missed),
            (Some(11), Some(20), Some(7))
        );
    }

    #[test]
    fn validation_errors_name_the_http_field() {
        let err = ApiError::from(Error::MaxEventsTooLarge {
            value: 20_000,
            default: 1000,
            max: 10_000,
        });
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.body().field.as_deref(), Some("max_events"));
        assert_eq!(err.body().reason, "MAX_EVENTS_TOO_LARGE");
        assert_eq!(err.body().metadata["limit"], "10000");
        let err = ApiError::from(Error::MaxWaitTooLong {
            value: "61s".into(),
            max: "1m".into(),
        });
        assert_eq!(err.body().field.as_deref(), Some("wait"));
        let err = ApiError::from(Error::ShuttingDown);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.reason(), ErrorReason::ShuttingDown);
        assert_eq!(err.into_response().headers()["retry-after"], "1");
    }

    #[test]
    fn capacity_refusals_are_503_with_retry_after_and_name_their_flag() {
        let err = ApiError::from(Error::AtCapacity {
            resource: crate::capacity::Resource::HttpStreams,
            max: 3,
        });
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = err.body();
        assert_eq!(
            (body.code.as_str(), body.reason.as_str()),
            ("resource_exhausted", "TOO_MANY_HTTP_STREAMS")
        );
        assert_eq!(body.metadata["flag"], "--max-http-streams");
        assert_eq!(body.metadata["resource"], "http_streams");
        assert_eq!(body.metadata["limit"], "3");
        assert_eq!(err.into_response().headers()["retry-after"], "2");
        let err = ApiError::BodyTooLarge { max: 10 };
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.body().reason, "BODY_TOO_LARGE");
        assert_eq!(err.body().metadata["flag"], "--max-message-bytes");
    }
}
