//! Conversions between protobuf time types and std ones, in one place so the services agree
//! on how out-of-range values are treated.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The protobuf `Timestamp` for a wall-clock time.
pub fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}

/// The wall-clock time of a protobuf `Timestamp`, or `None` if it is not a valid instant
/// (nanos out of range) or lies before the Unix epoch.
pub fn system_time(ts: &prost_types::Timestamp) -> Option<SystemTime> {
    if ts.seconds < 0 || !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(ts.seconds as u64, ts.nanos as u32))
}

/// The largest protobuf `Duration` (about 10,000 years): readers such as Go's `durationpb`
/// refuse anything longer.
const MAX_PROTO_DURATION: prost_types::Duration = prost_types::Duration {
    seconds: 315_576_000_000,
    nanos: 999_999_999,
};

/// A std `Duration` as a protobuf `Duration`, saturating at the protobuf maximum. (prost's own
/// conversion only stops at `i64::MAX` seconds, far past it.)
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    match prost_types::Duration::try_from(d) {
        Ok(p) if p.seconds <= MAX_PROTO_DURATION.seconds => p,
        _ => MAX_PROTO_DURATION,
    }
}

/// Why a protobuf `Duration` could not be read as a std `Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// Seconds or nanos below zero.
    Negative,
    /// Nanos outside ±999,999,999, or seconds and nanos of different signs.
    Malformed,
}

/// A protobuf `Duration` as a std `Duration`, refusing negative and malformed values
/// instead of normalising them, so a client's mistake is reported rather than guessed at.
pub fn std_duration(d: &prost_types::Duration) -> Result<Duration, DurationError> {
    if !(-999_999_999..=999_999_999).contains(&d.nanos)
        || (d.seconds > 0 && d.nanos < 0)
        || (d.seconds < 0 && d.nanos > 0)
    {
        return Err(DurationError::Malformed);
    }
    if d.seconds < 0 || d.nanos < 0 {
        return Err(DurationError::Negative);
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// Formats a protobuf `Duration` the way its JSON mapping does ("1.5s"), for error messages.
pub fn display_duration(d: &prost_types::Duration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        let sign = if d.seconds < 0 || d.nanos < 0 {
            "-"
        } else {
            ""
        };
        let secs = d.seconds.unsigned_abs();
        let nanos = d.nanos.unsigned_abs();
        let frac = format!("{nanos:09}");
        format!("{sign}{secs}.{}s", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn std_duration_accepts_valid_and_refuses_negative_or_malformed() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(
            std_duration(&d(1, 500_000_000)),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(std_duration(&d(0, 0)), Ok(Duration::ZERO));
        assert_eq!(std_duration(&d(-1, 0)), Err(DurationError::Negative));
        assert_eq!(std_duration(&d(0, -1)), Err(DurationError::Negative));
        assert_eq!(std_duration(&d(1, -1)), Err(DurationError::Malformed));
        assert_eq!(
            std_duration(&d(0, 1_000_000_000)),
            Err(DurationError::Malformed)
        );
    }

    #[test]
    fn proto_duration_saturates_at_the_protobuf_maximum() {
        let max = prost_types::Duration {
            seconds: 315_576_000_000,
            nanos: 999_999_999,
        };
        assert_eq!(proto_duration(Duration::new(315_576_000_000, 5)).nanos, 5);
        assert_eq!(proto_duration(Duration::from_secs(315_576_000_001)), max);
        assert_eq!(proto_duration(Duration::MAX), max);
    }

    #[test]
    fn display_duration_matches_json_mapping() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(display_duration(&d(30, 0)), "30s");
        assert_eq!(display_duration(&d(1, 500_000_000)), "1.5s");
        assert_eq!(display_duration(&d(-2, 0)), "-2s");
        assert_eq!(display_duration(&d(0, -250_000_000)), "-0.25s");
    }

    #[test]
    fn timestamps_round_trip_and_reject_garbage() {
        let now = SystemTime::now();
        assert_eq!(system_time(&timestamp(now)), Some(now));
        let bad = prost_types::Timestamp {
            seconds: 1,
            nanos: -5,
        };
        assert_eq!(system_time(&bad), None);
    }
}

/// Durations and timestamps arrive in clients' requests: any field values are read or refused,
/// never panicked on, and what is accepted converts back to the same value.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn nanos() -> impl Strategy<Value = i32> {
        prop_oneof![any::<i32>(), -1_000_000_000..=1_000_000_000i32]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn a_proto_duration_is_read_exactly_or_refused(seconds in any::<i64>(), nanos in nanos()) {
            let d = prost_types::Duration { seconds, nanos };
            let _ = display_duration(&d);
            match std_duration(&d) {
                Ok(std) => {
                    prop_assert!(seconds >= 0 && (0..1_000_000_000).contains(&nanos));
                    // Past the protobuf range it is read (a limit refuses it) but written
                    // back saturated.
                    if seconds <= MAX_PROTO_DURATION.seconds {
                        prop_assert_eq!(proto_duration(std), d);
                    } else {
                        prop_assert_eq!(proto_duration(std), MAX_PROTO_DURATION);
                    }
                }
                Err(DurationError::Negative) => prop_assert!(seconds < 0 || nanos < 0),
                Err(DurationError::Malformed) => prop_assert!(
                    nanos.unsigned_abs() > 999_999_999
                        || (seconds > 0 && nanos < 0)
                        || (seconds < 0 && nanos > 0)
                ),
            }
        }

        #[test]
        fn a_timestamp_is_an_instant_or_none(seconds in any::<i64>(), nanos in nanos()) {
            let ts = prost_types::Timestamp { seconds, nanos };
            if let Some(at) = system_time(&ts) {
                prop_assert_eq!(timestamp(at), ts);
            } else {
                prop_assert!(seconds < 0 || !(0..1_000_000_000).contains(&nanos));
            }
        }

        #[test]
        fn any_std_duration_converts_or_saturates(secs in any::<u64>(), nanos in 0..1_000_000_000u32) {
            let d = proto_duration(Duration::new(secs, nanos));
            prop_assert!(d.seconds >= 0 && d.seconds <= 315_576_000_000);
            prop_assert!(std_duration(&d).is_ok());
        }
    }
}
