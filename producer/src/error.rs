//! The producer's errors, and the one place they become gRPC statuses.
//!
//! Every message names the field, the bad value and what would have been accepted, because the
//! person reading it is usually typing a grpcurl command or writing a client in another language.
//! Programs read the structure instead: [`Error::info`] is the `google.rpc.ErrorInfo` reason and
//! metadata (documented in `proto/pushpull/v1/errors.proto`) that every status carries, and the
//! HTTP side puts the same into its JSON errors.

use std::time::Duration;

use pushpull::errors::{ErrorInfo, ErrorReason, key};
use tonic::{Code, Status};

use crate::auth::AuthError;
use crate::capacity::Resource;

/// How long a client should wait before reconnecting to a producer that is shutting down
/// (RetryInfo on gRPC, `Retry-After` on HTTP): long enough for a restart to begin listening.
pub const RETRY_AFTER_SHUTDOWN: Duration = Duration::from_secs(1);

/// How long a publisher should wait after the disk was full: long enough for an operator or
/// retention to free space, short enough not to stall a pipeline that could go on.
pub const RETRY_AFTER_STORAGE_FULL: Duration = Duration::from_secs(5);

/// How long a client refused at a capacity limit should wait before trying again: long enough
/// that a crowd of refused clients does not come straight back (clients add jitter), short
/// enough that a slot freed by a departing client is soon used.
pub const RETRY_AFTER_AT_CAPACITY: Duration = Duration::from_secs(2);

/// Everything a request to the producer can fail with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The cursor points before the oldest retained event: the events in between are gone, and
    /// serving from `oldest` would skip them silently.
    #[error(
        "after_sequence {after} has expired: events {first_missing}..={last_missing} are no longer retained; \
         oldest_sequence is {oldest}, head_sequence is {head}; resume from after_sequence {resume} \
         (or 0 for the oldest) and count {missed} events as missed",
        first_missing = after + 1,
        last_missing = oldest - 1,
        resume = oldest - 1,
        missed = oldest - 1 - after
    )]
    CursorExpired {
        after: u64,
        oldest: u64,
        head: u64,
        log_id: String,
    },

    /// The cursor points past the newest event: it belongs to another log, or was made up.
    #[error(
        "after_sequence {after} is beyond head_sequence {head} (oldest_sequence {oldest}): \
         the cursor must be in [{min}, {head}], or 0 for the oldest; a cursor from another \
         log_id cannot be reused",
        min = oldest.saturating_sub(1)
    )]
    CursorAhead {
        after: u64,
        oldest: u64,
        head: u64,
        log_id: String,
    },

    /// A topic that is empty, too long or has characters outside the allowed set.
    #[error(
        "{field} {topic:?} is invalid: a topic is 1 to {max_len} characters from [A-Za-z0-9._-]"
    )]
    InvalidTopic {
        field: String,
        topic: String,
        max_len: usize,
    },

    /// A topic filter with more entries than the producer accepts.
    #[error("topics has {count} entries; at most {max} are allowed")]
    TooManyTopics { count: usize, max: usize },

    /// A payload over the producer's limit.
    #[error("{field} is {size} bytes; the limit is {max} bytes (flag --max-payload-bytes)")]
    PayloadTooLarge {
        field: String,
        size: usize,
        max: usize,
    },

    /// A Publish with no events.
    #[error("events is empty; a Publish needs 1 to {max} events")]
    NoEvents { max: usize },

    /// A Publish with more events than the producer accepts in one call.
    #[error(
        "events has {count} entries; at most {max} are allowed per Publish (flag --max-publish-events)"
    )]
    TooManyEvents { count: usize, max: usize },

    /// `max_events` over the producer's limit.
    #[error(
        "max_events {value} is over the limit: use 0 for the default ({default}) or 1 to {max} (flag --max-poll-events)"
    )]
    MaxEventsTooLarge { value: u32, default: u32, max: u32 },

    /// `max_wait` over the producer's limit.
    #[error("max_wait {value} is over the limit: at most {max} (flag --max-poll-wait)")]
    MaxWaitTooLong { value: String, max: String },

    /// A negative or malformed `max_wait`.
    #[error("max_wait {value} is invalid: {reason}")]
    InvalidMaxWait { value: String, reason: &'static str },

    /// The producer is stopping; the client should reconnect (to this or another producer).
    #[error("the producer is shutting down; reconnect and resume from your cursor")]
    ShuttingDown,

    /// The store has no room: nothing of the Publish was stored; it works again once space is
    /// freed (or retention shrinks the log).
    #[error(
        "cannot {doing}: {detail}; nothing of this request was stored, retry once space is freed"
    )]
    StorageFull { doing: &'static str, detail: String },

    /// The store failed (an I/O error, or a remote store out of reach).
    #[error("cannot {doing}: {detail}")]
    StorageUnavailable { doing: &'static str, detail: String },

    /// Stored data failed its checksum: it is never served.
    #[error("cannot {doing}: {detail}")]
    StorageCorrupt { doing: &'static str, detail: String },

    /// The producer already serves as many clients of this kind as `--max-*` allows; nothing
    /// was started, and everyone already served goes on as before.
    #[error(
        "the producer serves at most {max} {noun} (flag {flag}); try again later",
        noun = resource.noun(),
        flag = resource.flag()
    )]
    AtCapacity { resource: Resource, max: usize },

    /// A push stream whose client took nothing for `--stall-timeout` while a response waited.
    #[error(
        "the stream was ended because the client took nothing for {timeout} while a response \
         was waiting (flag --stall-timeout); resume from the last event received, and read \
         faster or subscribe to fewer topics",
        timeout = humantime::format_duration(*timeout)
    )]
    SubscriberStalled { timeout: Duration },

    /// No webhook subscription has this id.
    #[error("webhook_id {id:?} names no webhook subscription")]
    WebhookNotFound { id: String },

    /// A webhook subscription with this id exists and the request did not ask to replace it.
    #[error(
        "webhook_id {id:?} is taken: set replace to replace that subscription, or choose another id"
    )]
    WebhookExists { id: String },

    /// A webhook URL whose host is outside `--webhook-allow`; `detail` names the address.
    #[error("url {detail}")]
    WebhookTargetNotAllowed { detail: String },

    /// A webhook id, URL or secret that is malformed.
    #[error("{field} is invalid: {detail}")]
    InvalidWebhook { field: &'static str, detail: String },
    /// The call's bearer token is missing, unknown, or lacks the scope (see [`crate::auth`]).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

impl Error {
    /// A store's failure, while `doing` (append, read) something for a client.
    pub fn from_store(err: crate::store::StoreError, doing: &'static str) -> Self {
        use crate::store::StoreError;
        let detail = err.to_string();
        match err {
            StoreError::Full { .. } => Error::StorageFull { doing, detail },
            StoreError::Corrupt { .. } => Error::StorageCorrupt { doing, detail },
            StoreError::Closed => Error::ShuttingDown,
            StoreError::Io { .. } | StoreError::Expired { .. } | StoreError::Unavailable { .. } => {
                Error::StorageUnavailable { doing, detail }
            }
            StoreError::TooLarge { size, max } => Error::PayloadTooLarge {
                field: "events".into(),
                size,
                max,
            },
        }
    }

    /// The `ErrorInfo.reason`: what a client branches on.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Error::CursorExpired { .. } => ErrorReason::CursorExpired,
            Error::CursorAhead { .. } => ErrorReason::CursorAhead,
            Error::InvalidTopic { .. } => ErrorReason::InvalidTopic,
            Error::TooManyTopics { .. } => ErrorReason::TooManyTopics,
            Error::PayloadTooLarge { .. } => ErrorReason::PayloadTooLarge,
            Error::NoEvents { .. } => ErrorReason::NoEvents,
            Error::TooManyEvents { .. } => ErrorReason::TooManyEvents,
            Error::MaxEventsTooLarge { .. } => ErrorReason::MaxEventsTooLarge,
            Error::MaxWaitTooLong { .. } => ErrorReason::MaxWaitTooLong,
            Error::InvalidMaxWait { .. } => ErrorReason::InvalidMaxWait,
            Error::ShuttingDown => ErrorReason::ShuttingDown,
            Error::StorageFull { .. } => ErrorReason::StorageFull,
            Error::StorageUnavailable { .. } => ErrorReason::StorageUnavailable,
            Error::StorageCorrupt { .. } => ErrorReason::StorageCorrupt,
            Error::WebhookNotFound { .. } => ErrorReason::WebhookNotFound,
            Error::WebhookExists { .. } => ErrorReason::WebhookExists,
            Error::WebhookTargetNotAllowed { .. } => ErrorReason::WebhookTargetNotAllowed,
            Error::InvalidWebhook { .. } => ErrorReason::InvalidWebhook,
            Error::Auth(AuthError::Missing) => ErrorReason::TokenMissing,
            Error::Auth(AuthError::Invalid) => ErrorReason::TokenInvalid,
            Error::Auth(AuthError::ScopeMissing { .. }) => ErrorReason::ScopeMissing,
            Error::AtCapacity { resource, .. } => match resource {
                Resource::Subscribers => ErrorReason::TooManySubscribers,
                Resource::LongPolls => ErrorReason::TooManyLongPolls,
                Resource::HttpStreams => ErrorReason::TooManyHttpStreams,
            },
            Error::SubscriberStalled { .. } => ErrorReason::SubscriberStalled,
        }
    }

    /// The gRPC status code.
    pub fn code(&self) -> Code {
        match self {
            Error::CursorExpired { .. } | Error::CursorAhead { .. } => Code::OutOfRange,
            Error::ShuttingDown | Error::StorageUnavailable { .. } => Code::Unavailable,
            Error::StorageFull { .. }
            | Error::AtCapacity { .. }
            | Error::SubscriberStalled { .. } => Code::ResourceExhausted,
            Error::StorageCorrupt { .. } => Code::DataLoss,
            Error::WebhookNotFound { .. } => Code::NotFound,
            Error::WebhookExists { .. } => Code::AlreadyExists,
            Error::WebhookTargetNotAllowed { .. } | Error::Auth(AuthError::ScopeMissing { .. }) => {
                Code::PermissionDenied
            }
            Error::Auth(AuthError::Missing | AuthError::Invalid) => Code::Unauthenticated,
            Error::InvalidWebhook { .. }
            | Error::InvalidTopic { .. }
            | Error::TooManyTopics { .. }
            | Error::PayloadTooLarge { .. }
            | Error::NoEvents { .. }
            | Error::TooManyEvents { .. }
            | Error::MaxEventsTooLarge { .. }
            | Error::MaxWaitTooLong { .. }
            | Error::InvalidMaxWait { .. } => Code::InvalidArgument,
        }
    }

    /// The request field at fault, named as in the `.proto` (the HTTP side renames the two
    /// whose parameters are spelled differently there).
    pub fn field(&self) -> Option<&str> {
        Some(match self {
            Error::CursorExpired { .. } | Error::CursorAhead { .. } => "after_sequence",
            Error::InvalidTopic { field, .. } | Error::PayloadTooLarge { field, .. } => field,
            Error::TooManyTopics { .. } => "topics",
            Error::NoEvents { .. } | Error::TooManyEvents { .. } => "events",
            Error::MaxEventsTooLarge { .. } => "max_events",
            Error::MaxWaitTooLong { .. } | Error::InvalidMaxWait { .. } => "max_wait",
            Error::WebhookNotFound { .. } | Error::WebhookExists { .. } => "webhook_id",
            Error::WebhookTargetNotAllowed { .. } => "url",
            Error::InvalidWebhook { field, .. } => field,
            Error::ShuttingDown
            | Error::StorageFull { .. }
            | Error::StorageUnavailable { .. }
            | Error::StorageCorrupt { .. }
            | Error::Auth(_)
            | Error::AtCapacity { .. }
            | Error::SubscriberStalled { .. } => return None,
        })
    }

    /// The reason and the metadata a client needs to act without reading the message.
    pub fn info(&self) -> ErrorInfo {
        let info = ErrorInfo::new(self.reason());
        let info = match self.field() {
            Some(field) => info.with(key::FIELD, field),
            None => info,
        };
        match self {
            Error::CursorExpired {
                after,
                oldest,
                head,
                log_id,
            }
            | Error::CursorAhead {
                after,
                oldest,
                head,
                log_id,
            } => {
                let info = info
                    .with(key::AFTER_SEQUENCE, after)
                    .with(key::OLDEST_SEQUENCE, oldest)
                    .with(key::HEAD_SEQUENCE, head)
                    .with(key::LOG_ID, log_id);
                // Only an expired cursor has lost events; one ahead of the head has lost none.
                match self {
                    Error::CursorExpired { .. } => info.with(key::MISSED, oldest - 1 - after),
                    _ => info,
                }
            }
            Error::InvalidTopic { max_len, .. } => info.with(key::LIMIT, max_len),
            Error::TooManyTopics { count, max } => {
                info.with(key::COUNT, count).with(key::LIMIT, max)
            }
            Error::PayloadTooLarge { size, max, .. } => info
                .with(key::SIZE, size)
                .with(key::LIMIT, max)
                .with(key::FLAG, "--max-payload-bytes"),
            Error::NoEvents { max } => info.with(key::LIMIT, max),
            Error::TooManyEvents { count, max } => info
                .with(key::COUNT, count)
                .with(key::LIMIT, max)
                .with(key::FLAG, "--max-publish-events"),
            Error::MaxEventsTooLarge { value, max, .. } => info
                .with(key::COUNT, value)
                .with(key::LIMIT, max)
                .with(key::FLAG, "--max-poll-events"),
            Error::MaxWaitTooLong { max, .. } => info
                .with(key::LIMIT, max)
                .with(key::FLAG, "--max-poll-wait"),
            Error::WebhookNotFound { id } | Error::WebhookExists { id } => {
                info.with(key::WEBHOOK_ID, id)
            }
            Error::WebhookTargetNotAllowed { .. } => info.with(key::FLAG, "--webhook-allow"),
            Error::Auth(AuthError::ScopeMissing { scope }) => info.with(key::SCOPE, scope),
            Error::AtCapacity { resource, max } => info
                .with(key::RESOURCE, resource.name())
                .with(key::LIMIT, max)
                .with(key::FLAG, resource.flag()),
            Error::SubscriberStalled { timeout } => info
                .with(key::LIMIT, humantime::format_duration(*timeout))
                .with(key::FLAG, "--stall-timeout"),
            Error::Auth(AuthError::Missing | AuthError::Invalid)
            | Error::InvalidMaxWait { .. }
            | Error::InvalidWebhook { .. }
            | Error::ShuttingDown
            | Error::StorageFull { .. }
            | Error::StorageUnavailable { .. }
            | Error::StorageCorrupt { .. } => info,
        }
    }

    /// How long a client should wait before trying again, for errors that pass.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::ShuttingDown | Error::StorageUnavailable { .. } => Some(RETRY_AFTER_SHUTDOWN),
            Error::StorageFull { .. } => Some(RETRY_AFTER_STORAGE_FULL),
            Error::AtCapacity { .. } => Some(RETRY_AFTER_AT_CAPACITY),
            _ => None,
        }
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        err.info()
            .into_status(err.code(), err.to_string(), err.retry_after())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt as _;

    #[test]
    fn expired_cursor_names_oldest_head_and_missed_count() {
        let status = Status::from(Error::CursorExpired {
            after: 3,
            oldest: 11,
            head: 20,
            log_id: "L".into(),
        });
        assert_eq!(status.code(), Code::OutOfRange);
        let msg = status.message();
        assert!(msg.contains("oldest_sequence is 11"), "{msg}");
        assert!(msg.contains("head_sequence is 20"), "{msg}");
        assert!(msg.contains("events 4..=10"), "{msg}");
        assert!(msg.contains("count 7 events as missed"), "{msg}");
        let info = ErrorInfo::from_status(&status).expect("ErrorInfo");
        assert_eq!(info.reason, ErrorReason::CursorExpired);
        let number = |k| info.get_u64(k);
        assert_eq!(
            (
                number(key::AFTER_SEQUENCE),
                number(key::OLDEST_SEQUENCE),
                number(key::HEAD_SEQUENCE),
                number(key::MISSED)
            ),
            (Some(3), Some(11), Some(20), Some(7))
        );
        assert_eq!(info.get(key::LOG_ID), Some("L"));
    }

    #[test]
    fn bad_input_names_its_field_in_a_bad_request() {
        let status = Status::from(Error::PayloadTooLarge {
            field: "events[2].payload".into(),
            size: 11,
            max: 10,
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "events[2].payload");
        assert_eq!(bad.field_violations[0].description, status.message());
        let info = ErrorInfo::from_status(&status).unwrap();
        assert_eq!(info.reason_name(), "PAYLOAD_TOO_LARGE");
        assert_eq!(
            (info.get_u64(key::SIZE), info.get_u64(key::LIMIT)),
            (Some(11), Some(10))
        );
        assert_eq!(info.get(key::FLAG), Some("--max-payload-bytes"));
    }

    #[test]
    fn shutting_down_is_unavailable_with_a_retry_delay() {
        let status = Status::from(Error::ShuttingDown);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            pushpull::errors::reason(&status),
            Some(ErrorReason::ShuttingDown)
        );
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(RETRY_AFTER_SHUTDOWN)
        );
    }

    #[test]
    fn capacity_refusals_name_the_limit_and_its_flag_and_say_when_to_retry() {
        let status = Status::from(Error::AtCapacity {
            resource: Resource::Subscribers,
            max: 16_384,
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            "the producer serves at most 16384 Subscribe streams (flag --max-subscribers); \
             try again later"
        );
        let info = ErrorInfo::from_status(&status).unwrap();
        assert_eq!(info.reason, ErrorReason::TooManySubscribers);
        assert_eq!(info.get(key::RESOURCE), Some("subscribers"));
        assert_eq!(info.get_u64(key::LIMIT), Some(16_384));
        assert_eq!(info.get(key::FLAG), Some("--max-subscribers"));
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(RETRY_AFTER_AT_CAPACITY)
        );
        let polls = Error::AtCapacity {
            resource: Resource::LongPolls,
            max: 1,
        };
        assert_eq!(polls.reason(), ErrorReason::TooManyLongPolls);

        let stalled = Status::from(Error::SubscriberStalled {
            timeout: Duration::from_secs(30),
        });
        assert_eq!(stalled.code(), Code::ResourceExhausted);
        assert!(stalled.message().contains("30s"), "{}", stalled.message());
        let info = ErrorInfo::from_status(&stalled).unwrap();
        assert_eq!(info.reason, ErrorReason::SubscriberStalled);
        assert_eq!(
            (info.get(key::LIMIT), info.get(key::FLAG)),
            (Some("30s"), Some("--stall-timeout"))
        );
    }

    #[test]
    fn storage_errors_name_the_directory_and_say_whether_to_retry() {
        use crate::store::StoreError;
        let full = Error::from_store(
            StoreError::Full {
                dir: "/var/lib/pushpull".into(),
                detail: "cannot write: No space left on device (os error 28)".into(),
            },
            "append",
        );
        let status = Status::from(full);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("/var/lib/pushpull"),
            "{}",
            status.message()
        );
        assert!(
            status
                .message()
                .contains("nothing of this request was stored")
        );
        assert_eq!(
            pushpull::errors::reason(&status),
            Some(ErrorReason::StorageFull)
        );
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(RETRY_AFTER_STORAGE_FULL)
        );
        let io = Status::from(Error::from_store(
            StoreError::Io {
                dir: "/d".into(),
                detail: "cannot write: Input/output error".into(),
            },
            "append",
        ));
        assert_eq!(io.code(), Code::Unavailable);
        assert_eq!(
            pushpull::errors::reason(&io),
            Some(ErrorReason::StorageUnavailable)
        );
        let corrupt = Status::from(Error::from_store(
            StoreError::Corrupt {
                path: "/d/00000000000000000001.log".into(),
                offset: 40,
                detail: "checksum mismatch".into(),
            },
            "read",
        ));
        assert_eq!(corrupt.code(), Code::DataLoss);
        assert!(
            corrupt
                .message()
                .contains("00000000000000000001.log at byte 40")
        );
        assert_eq!(
            Error::from_store(StoreError::Closed, "append"),
            Error::ShuttingDown
        );
    }
}
