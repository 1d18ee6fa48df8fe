//! Query parameters, headers and bodies shared by the HTTP endpoints, parsed into the log's
//! types with errors that name the parameter.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::{StatusCode, request::Parts},
};
use serde::Deserialize;

use super::error::ApiError;
use crate::{
    error::Error,
    limits::{Limits, NEGATIVE_WAIT},
    log::{ReadLimits, TopicFilter},
};

/// `?after=SEQ&topics=a,b` (SSE, WebSocket) plus the poll-only parameters.
///
/// An extractor of its own, not axum's `Query`, so that a query string that does not parse (a
/// parameter given twice) is refused with our JSON error like every other bad parameter, not
/// with axum's plain-text 400.
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

impl<S: Send + Sync> FromRequestParts<S> for ReadParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::<ReadParams>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::bad(
                    "query",
                    format!(
                        "{}; give each of after, topics, max_events and wait at most once",
                        rejection.body_text()
                    ),
                )
            })?;
        Ok(params)
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

/// Query parameters come from anyone: whatever the string, each parser answers a value or a
/// 400 naming its parameter, and what it prints it reads back.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use pushpull::errors::ErrorReason;

    fn limits() -> Limits {
        use clap::Parser as _;
        Limits::new(&crate::Config::parse_from(["producer"]))
    }

    /// Strings a client might send: anything, or something close to a valid value.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[ 0-9a-z.,+_-]{0,24}",
            "-?[0-9]{1,30}(\\.[0-9]{0,12})?(e-?[0-9]{1,3})?(ns|us|ms|s|m|h|d|w|y)?",
        ]
    }

    fn topic() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,40}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn after_is_a_sequence_or_an_error_naming_its_field(v in text()) {
            match after(Some(&v), "Last-Event-ID") {
                Ok(None) => prop_assert!(v.trim().is_empty()),
                Ok(Some(n)) => prop_assert_eq!(v.trim().parse::<u64>().ok(), Some(n)),
                Err(err) => {
                    prop_assert!(v.trim().parse::<u64>().is_err());
                    prop_assert_eq!(err.reason(), ErrorReason::MalformedRequest);
                    prop_assert_eq!(err.body().field, Some("Last-Event-ID".to_owned()));
                }
            }
        }

        #[test]
        fn after_reads_back_any_sequence(n in any::<u64>(), pad in " {0,2}") {
            prop_assert_eq!(after(Some(&format!("{pad}{n}{pad}")), "after").unwrap(), Some(n));
        }

        #[test]
        fn topics_are_a_valid_filter_or_name_the_bad_entry(v in prop_oneof![
            text(),
            prop::collection::vec(prop_oneof![topic(), text()], 0..4).prop_map(|t| t.join(",")),
        ]) {
            let listed = topic_list(Some(&v));
            match topics(Some(&v)) {
                Ok(filter) => {
                    prop_assert_eq!(filter.topics(), &listed[..]);
                    for t in &listed {
                        prop_assert!(crate::log::validate_topic("t", t).is_ok(), "{t:?}");
                    }
                }
                Err(err) => {
                    let field = err.body().field.expect("names a field");
                    match err.reason() {
                        ErrorReason::InvalidTopic => {
                            let i: usize = field
                                .strip_prefix("topics[")
                                .and_then(|f| f.strip_suffix(']'))
                                .and_then(|i| i.parse().ok())
                                .expect("topics[i]");
                            prop_assert!(crate::log::validate_topic("t", &listed[i]).is_err());
                        }
                        ErrorReason::TooManyTopics => prop_assert_eq!(field, "topics"),
                        other => prop_assert!(false, "unexpected reason {other:?}"),
                    }
                }
            }
        }

        #[test]
        fn a_list_of_valid_topics_reads_back(list in prop::collection::vec(topic(), 1..8)) {
            let filter = topics(Some(&list.join(","))).unwrap();
            prop_assert_eq!(filter.topics(), &list[..]);
        }

        #[test]
        fn max_events_is_a_batch_size_or_a_precise_refusal(v in prop_oneof![
            text(),
            any::<u32>().prop_map(|n| n.to_string()),
            (0u32..20_000).prop_map(|n| n.to_string()),
        ]) {
            let l = &limits();
            match (max_events(Some(&v), l), v.trim().parse::<u32>()) {
                (Ok(batch), Ok(0)) => prop_assert_eq!(batch.max_events, 1000),
                (Ok(batch), Ok(n)) => prop_assert_eq!(batch.max_events, n as usize),
                (Ok(batch), Err(_)) => {
                    prop_assert!(v.trim().is_empty());
                    prop_assert_eq!(batch.max_events, 1000);
                }
                (Err(err), parsed) => {
                    prop_assert_eq!(err.body().field, Some("max_events".to_owned()));
                    let expected = match parsed {
                        Ok(n) if n > l.max_poll_events => ErrorReason::MaxEventsTooLarge,
                        Ok(n) => return Err(TestCaseError::fail(format!("{n} refused"))),
                        Err(_) => ErrorReason::MalformedRequest,
                    };
                    prop_assert_eq!(err.reason(), expected);
                }
            }
        }

        #[test]
        fn wait_is_a_duration_within_the_limit_or_a_refusal_naming_wait(v in text()) {
            let l = &limits();
            match wait(Some(&v), l) {
                Ok(d) => prop_assert!(d <= l.max_poll_wait, "{v:?} gave {d:?}"),
                Err(err) => {
                    prop_assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
                    prop_assert_eq!(err.body().field, Some("wait".to_owned()));
                    prop_assert!(matches!(
                        err.reason(),
                        ErrorReason::MalformedRequest
                            | ErrorReason::InvalidMaxWait
                            | ErrorReason::MaxWaitTooLong
                    ));
                }
            }
        }

        #[test]
        fn wait_reads_back_any_duration_within_the_limit(ms in 0u64..=60_000, secs in any::<bool>()) {
            let d = Duration::from_millis(ms);
            let written = if secs {
                format!("{}", d.as_secs_f64())
            } else {
                humantime::format_duration(d).to_string()
            };
            prop_assert_eq!(wait(Some(&written), &limits()).unwrap(), d, "{}", written);
        }
    }
}
