//! Query parameters, headers and bodies shared by the HTTP endpoints, parsed into the log's
//! types with errors that name the parameter.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::StatusCode,
};
use serde::Deserialize;

use super::error::ApiError;
use crate::{
    error::Error,
    limits::{Limits, NEGATIVE_WAIT},
    log::{ReadLimits, TopicFilter},
};

/// `?after=SEQ&topics=a,b` (SSE, WebSocket) plus the poll-only parameters.
#[derive(Debug, Default, Deserialize)]
pub struct ReadParams {
    pub after: Option<String>,
    pub topics: Option<String>,
    pub max_events: Option<String>,
    pub wait: Option<String>,
}

/// A request body within `--max-message-bytes` (axum's `DefaultBodyLimit`, set in
/// [`super::router`]): over it, our JSON error (413, `BODY_TOO_LARGE`) instead of axum's plain
/// text.
#[derive(Debug)]
pub struct Body(pub Bytes);

impl FromRequest<super::AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &super::AppState) -> Result<Self, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge {
                    max: state.max_body_bytes,
                })
            }
            Err(rejection) => Err(ApiError::bad("body", rejection.body_text())),
        }
    }
}

/// `after`: a sequence number; absent or empty means "from the head".
pub fn after(value: Option<&str>, field: &'static str) -> Result<Option<u64>, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::bad(
                field,
                format!(
                    "{field} {v:?} is not a sequence number: use 0 for the oldest retained event, \
                     or leave it out to start at the head"
                ),
            )
        }),
    }
}

/// `topics=a,b`: comma-separated; absent or empty means all topics.
pub fn topic_list(value: Option<&str>) -> Vec<String> {
    match value {
        None | Some("") => vec![],
        Some(v) => v.split(',').map(|t| t.trim().to_owned()).collect(),
    }
}

/// `topics=a,b` as a filter, each topic validated.
pub fn topics(value: Option<&str>) -> Result<TopicFilter, ApiError> {
    Ok(TopicFilter::new(topic_list(value))?)
}

/// `max_events`: 0 or absent means the default; over the limit is refused like gRPC.
pub fn max_events(value: Option<&str>, limits: &Limits) -> Result<ReadLimits, ApiError> {
    let n = match value.map(str::trim) {
        None | Some("") => 0,
        Some(v) => v.parse::<u32>().map_err(|_| {
            ApiError::bad(
                "max_events",
                format!(
                    "max_events {v:?} is not a number from 0 to {}",
                    limits.max_poll_events
                ),
            )
        })?,
    };
    Ok(limits.poll_batch(n)?)
}

/// `wait`: a duration such as `30s` or `500ms`, or a bare number of seconds (`2.5`); absent
/// means return at once. Over the limit is refused like gRPC.
pub fn wait(value: Option<&str>, limits: &Limits) -> Result<Duration, ApiError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(Duration::ZERO);
    };
    let wait = match v.parse::<f64>() {
        Ok(secs) if secs < 0.0 => {
            return Err(Error::InvalidMaxWait {
                value: v.to_owned(),
                reason: NEGATIVE_WAIT,
            }
            .into());
        }
        Ok(secs) if secs.is_finite() => Duration::try_from_secs_f64(secs).ok(),
        Ok(_) => None,
        Err(_) => humantime::parse_duration(v).ok(),
    };
    let Some(wait) = wait else {
        return Err(ApiError::bad(
            "wait",
            format!("wait {v:?} is not a duration: use e.g. 30s, 500ms or 2.5 (seconds)"),
        ));
    };
    Ok(limits.poll_wait(wait, v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushpull::errors::ErrorReason;

    fn limits() -> Limits {
        use clap::Parser as _;
        Limits::new(&crate::Config::parse_from(["producer"]))
    }

    #[test]
    fn wait_accepts_units_and_seconds_and_refuses_the_rest() {
        let max = &limits();
        assert_eq!(wait(None, max).unwrap(), Duration::ZERO);
        assert_eq!(
            wait(Some("500ms"), max).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(wait(Some("2.5"), max).unwrap(), Duration::from_millis(2500));
        assert_eq!(
            wait(Some("-1"), max).unwrap_err().reason(),
            ErrorReason::InvalidMaxWait
        );
        assert_eq!(
            wait(Some("61s"), max).unwrap_err().body().field.as_deref(),
            Some("wait")
        );
        assert_eq!(
            wait(Some("soon"), max).unwrap_err().reason(),
            ErrorReason::MalformedRequest
        );
    }

    #[test]
    fn max_events_follows_the_grpc_rules() {
        let l = &limits();
        assert_eq!(max_events(Some("0"), l).unwrap().max_events, 1000);
        assert_eq!(max_events(Some("7"), l).unwrap().max_events, 7);
        assert_eq!(
            max_events(Some("10001"), l).unwrap_err().reason(),
            ErrorReason::MaxEventsTooLarge
        );
        assert_eq!(
            max_events(Some("x"), l).unwrap_err().reason(),
            ErrorReason::MalformedRequest
        );
    }

    #[test]
    fn after_and_topics() {
        assert_eq!(after(Some("12"), "after").unwrap(), Some(12));
        assert_eq!(after(Some(""), "after").unwrap(), None);
        assert!(after(Some("-1"), "after").is_err());
        assert!(topics(Some("a,b")).is_ok());
        let err = topics(Some("a,b c")).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("topics[1]"));
    }
}
