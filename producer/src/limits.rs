//! The request limits every transport applies, in one place: gRPC `Poll` and HTTP `GET /poll`
//! refuse the same values with the same errors, and push responses are cut at the same size.
//!
//! Each transport only turns its own syntax into numbers (a protobuf `Duration`, a query string
//! such as `wait=2.5`); the rules about those numbers live here.

use std::time::Duration;

use pushpull::time::{DurationError, display_duration, proto_duration, std_duration};

use crate::{Config, error::Error, log::ReadLimits};

/// `InvalidMaxWait` reason for a negative wait, on every transport.
pub const NEGATIVE_WAIT: &str = "it must not be negative";

/// `InvalidMaxWait` reason for a protobuf `Duration` whose fields disagree.
pub const MALFORMED_WAIT: &str = "nanos must be within ±999,999,999 and have the sign of seconds";

/// Request limits and stream timings, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `max_events` of a poll that asks for 0.
    pub default_poll_events: u32,
    /// Largest `max_events` a poll may ask for.
    pub max_poll_events: u32,
    /// Longest wait a long poll may ask for.
    pub max_poll_wait: Duration,
    /// Most events in one push response.
    pub max_batch_events: usize,
    /// A response stops growing at this many topic + payload bytes.
    pub max_batch_bytes: usize,
    /// An idle push stream gets a heartbeat (gRPC: an empty response; SSE: a comment;
    /// WebSocket: a ping) this often.
    pub heartbeat_interval: Duration,
    /// Most gRPC Subscribe streams at once (see [`crate::capacity`]).
    pub max_subscribers: usize,
    /// Most long polls waiting at once, gRPC and HTTP together.
    pub max_long_polls: usize,
    /// Most SSE streams and WebSocket connections at once.
    pub max_http_streams: usize,
    /// A push stream whose client takes nothing for this long while a response waits is
    /// ended (see [`crate::push`]).
    pub stall_timeout: Duration,
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        Self {
            default_poll_events: config.default_poll_events,
            max_poll_events: config.max_poll_events,
            max_poll_wait: config.max_poll_wait,
            max_batch_events: config.max_batch_events,
            max_batch_bytes: config.max_batch_bytes,
            heartbeat_interval: config.heartbeat_interval,
            max_subscribers: config.max_subscribers,
            max_long_polls: config.max_long_polls,
            max_http_streams: config.max_http_streams,
            stall_timeout: config.stall_timeout,
        }
    }

    /// What one push response (Subscribe, SSE, WebSocket) may hold.
    pub fn push_batch(&self) -> ReadLimits {
        ReadLimits {
            max_events: self.max_batch_events,
            max_bytes: self.max_batch_bytes,
        }
    }

    /// What one poll response may hold, for a poll asking for `max_events` (0: the default).
    pub fn poll_batch(&self, max_events: u32) -> Result<ReadLimits, Error> {
        let max_events = match max_events {
            0 => self.default_poll_events,
            n if n > self.max_poll_events => {
                return Err(Error::MaxEventsTooLarge {
                    value: n,
                    default: self.default_poll_events,
                    max: self.max_poll_events,
                });
            }
            n => n,
        };
        Ok(ReadLimits {
            max_events: max_events as usize,
            max_bytes: self.max_batch_bytes,
        })
    }

    /// A long poll's wait; `written` is the value as the client wrote it, for the message.
    pub fn poll_wait(&self, wait: Duration, written: &str) -> Result<Duration, Error> {
        if wait > self.max_poll_wait {
            return Err(Error::MaxWaitTooLong {
                value: written.to_owned(),
                max: display_duration(&proto_duration(self.max_poll_wait)),
            });
        }
        Ok(wait)
    }

    /// gRPC `PollRequest.max_wait`: unset means return at once.
    pub fn proto_poll_wait(&self, wait: Option<&prost_types::Duration>) -> Result<Duration, Error> {
        let Some(wait) = wait else {
            return Ok(Duration::ZERO);
        };
        let written = display_duration(wait);
        let parsed = std_duration(wait).map_err(|e| Error::InvalidMaxWait {
            value: written.clone(),
            reason: match e {
                DurationError::Negative => NEGATIVE_WAIT,
                DurationError::Malformed => MALFORMED_WAIT,
            },
        })?;
        self.poll_wait(parsed, &written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn limits() -> Limits {
        Limits::new(&Config::parse_from(["producer"]))
    }

    #[test]
    fn poll_batch_defaults_zero_and_refuses_over_the_limit() {
        let l = limits();
        assert_eq!(l.poll_batch(0).unwrap().max_events, 1000);
        assert_eq!(l.poll_batch(7).unwrap().max_events, 7);
        assert_eq!(l.poll_batch(10_000).unwrap().max_events, 10_000);
        assert!(matches!(
            l.poll_batch(10_001),
            Err(Error::MaxEventsTooLarge { value: 10_001, .. })
        ));
    }

    #[test]
    fn waits_over_the_limit_negative_or_malformed_are_refused() {
        let l = limits();
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(l.proto_poll_wait(None).unwrap(), Duration::ZERO);
        assert_eq!(
            l.proto_poll_wait(Some(&d(1, 500_000_000))).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            l.proto_poll_wait(Some(&d(61, 0))),
            Err(Error::MaxWaitTooLong {
                value: "61s".into(),
                max: "60s".into()
            })
        );
        assert!(matches!(
            l.proto_poll_wait(Some(&d(-1, 0))),
            Err(Error::InvalidMaxWait {
                reason: NEGATIVE_WAIT,
                ..
            })
        ));
        assert!(matches!(
            l.proto_poll_wait(Some(&d(1, -1))),
            Err(Error::InvalidMaxWait {
                reason: MALFORMED_WAIT,
                ..
            })
        ));
    }
}
