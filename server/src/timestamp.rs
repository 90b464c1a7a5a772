//! Times as milliseconds since the Unix epoch, and the one range every door
//! accepts: the years 1970 to 9999. Outside it RFC 3339 has no four-digit
//! year, and formatters fail or panic on it (an event dated in year 10000
//! once panicked the sender that formatted its webhook body and jammed its
//! endpoint). So a time from outside is range-checked where it enters, and
//! every formatter here clamps rather than fails, for values that got in
//! some other way.

use std::time::{Duration, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat};

/// 1970-01-01T00:00:00.000Z.
pub const MIN_MS: i64 = 0;
/// 9999-12-31T23:59:59.999Z.
pub const MAX_MS: i64 = 253_402_300_799_999;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("must be an RFC 3339 time such as 2026-01-31T12:00:00Z")]
    NotRfc3339,
    #[error(
        "must lie in the years 1970 to 9999 (1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z)"
    )]
    OutOfRange,
    #[error("nanos must be 0 to 999999999")]
    BadNanos,
}

/// `ms` when it lies in the accepted range.
pub fn check(ms: i64) -> Result<i64, TimeError> {
    if (MIN_MS..=MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(TimeError::OutOfRange)
    }
}

/// RFC 3339 with any UTC offset (`+00:00` is what Python's `isoformat()`
/// writes), and, as before, without a zone (read as UTC).
pub fn parse_rfc3339(text: &str) -> Result<i64, TimeError> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return check(at.timestamp_millis());
    }
    match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .ok_or(TimeError::OutOfRange)
            .and_then(check),
        Err(humantime::TimestampError::OutOfRange) => Err(TimeError::OutOfRange),
        Err(_) => Err(TimeError::NotRfc3339),
    }
}

/// A protobuf `Timestamp`: nanos must be normalised (0..1e9, also for
/// negative seconds) and the time in range.
pub fn from_proto(t: &prost_types::Timestamp) -> Result<i64, TimeError> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(TimeError::BadNanos);
    }
    if !(MIN_MS / 1000..=MAX_MS / 1000).contains(&t.seconds) {
        return Err(TimeError::OutOfRange);
    }
    check(t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
}

/// `2026-01-31T12:00:00.000Z`. Never fails: a time outside the range is
/// shown as the nearest end of it.
pub fn format_rfc3339_millis(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms.clamp(MIN_MS, MAX_MS))
        .map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// `at + by`, saturating instead of overflowing.
pub fn add(at_ms: i64, by: Duration) -> i64 {
    at_ms.saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    #[test]
    fn the_range_ends_are_in_and_beyond_them_is_out() {
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z"),
            Ok(0),
            "the first instant"
        );
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59.999Z"), Ok(MAX_MS));
        for out in [
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "1970-01-01T00:00:00+01:00",
        ] {
            assert_eq!(parse_rfc3339(out), Err(TimeError::OutOfRange), "{out}");
        }
        for bad in [
            "10000-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
            "yesterday",
            "",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_and_zoneless_times_parse() {
        assert_eq!(
            parse_rfc3339("2026-01-31T13:00:00.123456+01:00"),
            Ok(1_769_860_800_123)
        );
        assert_eq!(parse_rfc3339("2026-01-31T12:00:00"), Ok(1_769_860_800_000));
        assert_eq!(
            parse_rfc3339(" 2026-01-31T12:00:00Z "),
            Ok(1_769_860_800_000)
        );
    }

    #[test]
    fn proto_timestamps_are_checked_field_by_field() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        assert_eq!(
            from_proto(&ts(1_769_860_800, 5_000_000)),
            Ok(1_769_860_800_005)
        );
        assert_eq!(from_proto(&ts(MAX_MS / 1000, 999_999_999)), Ok(MAX_MS));
        // The first second of year 10000.
        assert_eq!(
            from_proto(&ts(253_402_300_800, 0)),
            Err(TimeError::OutOfRange)
        );
        for seconds in [-1, i64::MIN, i64::MAX] {
            assert_eq!(from_proto(&ts(seconds, 0)), Err(TimeError::OutOfRange));
        }
        for nanos in [-1, 1_000_000_000, i32::MIN, i32::MAX] {
            assert_eq!(from_proto(&ts(0, nanos)), Err(TimeError::BadNanos));
        }
    }

    #[test]
    fn formatting_never_fails() {
        assert_eq!(
            format_rfc3339_millis(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(format_rfc3339_millis(i64::MIN), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_millis(-1), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            format_rfc3339_millis(253_402_300_800_000),
            "9999-12-31T23:59:59.999Z",
            "year 10000"
        );
    }

    #[test]
    fn adding_saturates() {
        assert_eq!(add(1, Duration::from_millis(2)), 3);
        assert_eq!(add(i64::MAX - 1, Duration::from_secs(10)), i64::MAX);
        assert_eq!(add(0, Duration::MAX), i64::MAX);
    }
}
