//! The one place the producer's errors become HTTP responses.
//!
//! Every refusal is JSON, `{"code", "field", "message", ...}`, with the same message as the gRPC
//! status (see [`crate::error`]). Status codes follow the gRPC ↔ HTTP mapping, with one
//! sharpening borrowed from Kubernetes' expired `resourceVersion`: an expired cursor is
//! **410 Gone**, carrying `oldest_sequence` so the client knows where to resume.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use crate::{error::Error, metrics};

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

    /// The `reason` label of `pushpull_producer_rejected_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Log { err, .. } => metrics::reason(err),
            ApiError::BadRequest { .. } => "bad_request",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Log { err, .. } => match err {
                Error::CursorExpired { .. } => StatusCode::GONE,
                Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body (also sent as a WebSocket `error` message).
    pub fn body(&self) -> ErrorJson {
        match self {
            ApiError::BadRequest { field, message } => ErrorJson {
                code: "invalid_argument".into(),
                field: Some(field.clone()),
                message: message.clone(),
                ..ErrorJson::default()
            },
            ApiError::Log { err, cursor_field } => {
                let mut body = ErrorJson {
                    code: match err {
                        Error::CursorExpired { .. } => "cursor_expired",
                        Error::CursorAhead { .. } => "cursor_ahead",
                        Error::ShuttingDown => "shutting_down",
                        _ => "invalid_argument",
                    }
                    .into(),
                    field: field(err, cursor_field),
                    message: err.to_string(),
                    ..ErrorJson::default()
                };
                if let Error::CursorExpired {
                    after,
                    oldest,
                    head,
                }
                | Error::CursorAhead {
                    after,
                    oldest,
                    head,
                } = *err
                {
                    body.oldest_sequence = Some(oldest);
                    body.head_sequence = Some(head);
                    if matches!(err, Error::CursorExpired { .. }) {
                        body.missed = Some(oldest - 1 - after);
                    }
                }
                body
            }
        }
    }
}

/// The field an error is about, named as the HTTP client wrote it.
fn field(err: &Error, cursor_field: &str) -> Option<String> {
    Some(match err {
        Error::InvalidTopic { field, .. } | Error::PayloadTooLarge { field, .. } => field.clone(),
        Error::TooManyTopics { .. } => "topics".into(),
        Error::NoEvents { .. } | Error::TooManyEvents { .. } => "events".into(),
        Error::MaxEventsTooLarge { .. } => "max_events".into(),
        Error::MaxWaitTooLong { .. } | Error::InvalidMaxWait { .. } => "wait".into(),
        Error::CursorExpired { .. } | Error::CursorAhead { .. } => cursor_field.into(),
        Error::ShuttingDown => return None,
    })
}

/// An error as JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorJson {
    /// `invalid_argument`, `cursor_expired`, `cursor_ahead` or `shutting_down`.
    pub code: String,
    /// The parameter, header or body field at fault (`after`, `topics[1]`, `events[0].payload`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
    /// Cursor errors: where the log starts now.
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
pub struct Rejected(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
        });
        assert_eq!(err.status(), StatusCode::GONE);
        let body = err.body();
        assert_eq!(body.code, "cursor_expired");
        assert_eq!(body.field.as_deref(), Some("after"));
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
        let err = ApiError::from(Error::ShuttingDown);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.reason(), "shutting_down");
    }
}
