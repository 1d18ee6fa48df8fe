//! Structured errors, the Google API way (AIP-193): every refusal carries a
//! `google.rpc.ErrorInfo` with a reason from [`ErrorReason`] (defined in
//! `proto/pushpull/v1/errors.proto`, so clients in every language share the names), the
//! domain [`DOMAIN`] and metadata under the keys in [`key`]; bad input carries a
//! `google.rpc.BadRequest` naming the field too.
//!
//! Services build statuses with [`ErrorInfo::into_status`]; clients read them back with
//! [`ErrorInfo::from_status`] and branch on the reason and the numbers, never on message text.
//! The producer's HTTP side writes the same reason and metadata into its JSON errors.

use std::{collections::BTreeMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

pub use crate::pb::ErrorReason;

/// `ErrorInfo.domain` of every pushpull error.
pub const DOMAIN: &str = "pushpull";

/// The metadata keys of `ErrorInfo`, as documented in `errors.proto`.
pub mod key {
    /// The cursor the request carried.
    pub const AFTER_SEQUENCE: &str = "after_sequence";
    /// The oldest sequence the log still retains.
    pub const OLDEST_SEQUENCE: &str = "oldest_sequence";
    /// The newest sequence in the log.
    pub const HEAD_SEQUENCE: &str = "head_sequence";
    /// The log the bounds belong to.
    pub const LOG_ID: &str = "log_id";
    /// Events an expired cursor has lost.
    pub const MISSED: &str = "missed";
    /// The request field at fault.
    pub const FIELD: &str = "field";
    /// The largest accepted value.
    pub const LIMIT: &str = "limit";
    /// The refused count (events, topics, max_events).
    pub const COUNT: &str = "count";
    /// The refused size in bytes.
    pub const SIZE: &str = "size";
    /// The producer flag that sets the limit.
    pub const FLAG: &str = "flag";
    /// The webhook subscription concerned.
    pub const WEBHOOK_ID: &str = "webhook_id";
    /// The token scope a call needs.
    pub const SCOPE: &str = "scope";
    /// What a capacity limit counts (`subscribers`, `long_polls`, `http_streams`).
    pub const RESOURCE: &str = "resource";
}

/// The reason and metadata of one refusal: what a client branches on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    pub reason: ErrorReason,
    /// Sorted by key, so the JSON form and logs are stable.
    pub metadata: BTreeMap<String, String>,
}

impl ErrorInfo {
    pub fn new(reason: ErrorReason) -> Self {
        Self {
            reason,
            metadata: BTreeMap::new(),
        }
    }

    /// Adds one metadata entry.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.metadata.insert(key.to_owned(), value.to_string());
        self
    }

    /// The reason as it travels: `"CURSOR_EXPIRED"`.
    pub fn reason_name(&self) -> &'static str {
        self.reason.as_str_name()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// A numeric metadata value (sequences, counts).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// The request field at fault, if the error is about one.
    pub fn field(&self) -> Option<&str> {
        self.get(key::FIELD)
    }

    /// The status a service returns: `code` and `message`, this `ErrorInfo`, a `BadRequest`
    /// naming the field for INVALID_ARGUMENT and OUT_OF_RANGE, and a `RetryInfo` when
    /// `retry_after` is given.
    pub fn into_status(
        self,
        code: Code,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Status {
        let message = message.into();
        let mut details = ErrorDetails::new();
        if let Some(field) = self.field()
            && matches!(code, Code::InvalidArgument | Code::OutOfRange)
        {
            details.add_bad_request_violation(field, message.clone());
        }
        if retry_after.is_some() {
            details.set_retry_info(retry_after);
        }
        details.set_error_info(
            self.reason.as_str_name(),
            DOMAIN,
            self.metadata
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        );
        Status::with_error_details(code, message, details)
    }

    /// The `ErrorInfo` a status carries in the pushpull domain; `None` for a status without
    /// one (a transport error, another service) or with a reason this build does not know
    /// (a newer producer): then only the code tells what happened.
    pub fn from_status(status: &Status) -> Option<Self> {
        let info = status.get_details_error_info()?;
        if info.domain != DOMAIN {
            return None;
        }
        Some(Self {
            reason: ErrorReason::from_str_name(&info.reason)?,
            metadata: info.metadata.into_iter().collect(),
        })
    }
}

/// The canonical name of a gRPC status code, as the gRPC specification and other languages'
/// libraries spell it (`UNAVAILABLE`, `OUT_OF_RANGE`): for logs and labels. tonic's `Display`
/// gives a sentence instead, and its `Debug` the Rust variant name.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The reason of a status, if it carries one: for metrics labels and client decisions.
pub fn reason(status: &Status) -> Option<ErrorReason> {
    ErrorInfo::from_status(status).map(|info| info.reason)
}

/// An error and its causes on one line: transport errors (tonic's, reqwest's) say only
/// "transport error" or "error sending request"; the cause ("Connection refused") is what a
/// person reading a log or a status needs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_carries_reason_metadata_and_the_bad_field() {
        let status = ErrorInfo::new(ErrorReason::TooManyTopics)
            .with(key::FIELD, "topics")
            .with(key::LIMIT, 100)
            .into_status(Code::InvalidArgument, "topics has 101 entries", None);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "topics has 101 entries");
        let info = ErrorInfo::from_status(&status).expect("error info");
        assert_eq!(info.reason, ErrorReason::TooManyTopics);
        assert_eq!(info.reason_name(), "TOO_MANY_TOPICS");
        assert_eq!(info.get_u64(key::LIMIT), Some(100));
        let bad = status.get_details_bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "topics");
        assert!(status.get_details_retry_info().is_none());
    }

    #[test]
    fn unavailable_carries_retry_info_and_no_bad_request() {
        let status = ErrorInfo::new(ErrorReason::ShuttingDown).into_status(
            Code::Unavailable,
            "stopping",
            Some(Duration::from_secs(1)),
        );
        assert_eq!(reason(&status), Some(ErrorReason::ShuttingDown));
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(1))
        );
        assert!(status.get_details_bad_request().is_none());
    }

    #[test]
    fn code_names_are_the_grpc_specification_s() {
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
        assert_eq!(code_name(Code::OutOfRange), "OUT_OF_RANGE");
        // The numeric codes 0..=16, in order, as https://grpc.github.io/grpc/core/md_doc_statuscodes.html lists them.
        let names: Vec<&str> = (0..=16).map(|i| code_name(Code::from_i32(i))).collect();
        assert_eq!(names[0], "OK");
        assert_eq!(names[3], "INVALID_ARGUMENT");
        assert_eq!(names[11], "OUT_OF_RANGE");
        assert_eq!(names[14], "UNAVAILABLE");
        assert_eq!(names[16], "UNAUTHENTICATED");
    }

    #[test]
    fn statuses_without_our_details_have_no_reason() {
        assert_eq!(reason(&Status::unavailable("connection refused")), None);
        let foreign = Status::with_error_details(
            Code::OutOfRange,
            "x",
            ErrorDetails::with_error_info("CURSOR_EXPIRED", "example.com", []),
        );
        assert_eq!(reason(&foreign), None);
        let unknown = Status::with_error_details(
            Code::OutOfRange,
            "x",
            ErrorDetails::with_error_info("FROM_THE_FUTURE", DOMAIN, []),
        );
        assert_eq!(reason(&unknown), None);
    }
}
