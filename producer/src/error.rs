//! The producer's errors, and the one place they become gRPC statuses.
//!
//! Every message names the field, the bad value and what would have been accepted, because the
//! person reading it is usually typing a grpcurl command or writing a client in another language.

use tonic::Status;

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
    CursorExpired { after: u64, oldest: u64, head: u64 },

    /// The cursor points past the newest event: it belongs to another log, or was made up.
    #[error(
        "after_sequence {after} is beyond head_sequence {head} (oldest_sequence {oldest}): \
         the cursor must be in [{min}, {head}], or 0 for the oldest; a cursor from another \
         log_id cannot be reused",
        min = oldest.saturating_sub(1)
    )]
    CursorAhead { after: u64, oldest: u64, head: u64 },

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
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::CursorExpired { .. } | Error::CursorAhead { .. } => {
                Status::out_of_range(message)
            }
            Error::ShuttingDown => Status::unavailable(message),
            Error::InvalidTopic { .. }
            | Error::TooManyTopics { .. }
            | Error::PayloadTooLarge { .. }
            | Error::NoEvents { .. }
            | Error::TooManyEvents { .. }
            | Error::MaxEventsTooLarge { .. }
            | Error::MaxWaitTooLong { .. }
            | Error::InvalidMaxWait { .. } => Status::invalid_argument(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn expired_cursor_names_oldest_head_and_missed_count() {
        let status = Status::from(Error::CursorExpired {
            after: 3,
            oldest: 11,
            head: 20,
        });
        assert_eq!(status.code(), Code::OutOfRange);
        let msg = status.message();
        assert!(msg.contains("oldest_sequence is 11"), "{msg}");
        assert!(msg.contains("head_sequence is 20"), "{msg}");
        assert!(msg.contains("events 4..=10"), "{msg}");
        assert!(msg.contains("count 7 events as missed"), "{msg}");
    }

    #[test]
    fn shutting_down_is_unavailable() {
        assert_eq!(Status::from(Error::ShuttingDown).code(), Code::Unavailable);
    }
}
