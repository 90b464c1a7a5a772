//! The retry policy as data and pure functions: what an attempt's result
//! means ([`classify`]) and how long to wait before the next one
//! ([`next_delay`]). Nothing here sleeps, reads the clock for scheduling or
//! touches storage; the dispatcher does that.
//!
//! A schedule lists the delays before each *retry*. Attempt 1 is the initial
//! send; after attempt `n` fails, retry `n` waits `schedule[n - 1]`. So a
//! schedule of `k` delays allows `1 + k` attempts, the default 9, and an
//! empty schedule means a single attempt with no retries.

use std::time::{Duration, SystemTime};

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;

/// Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_SCHEDULE: &[Duration] = &[
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * MINUTE),
    Duration::from_secs(30 * MINUTE),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(5 * HOUR),
    Duration::from_secs(10 * HOUR),
    Duration::from_secs(10 * HOUR),
];

/// A receiver cannot push a retry further out than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * HOUR);

/// Jitter adds up to this fraction of the scheduled delay, spreading retries
/// to an endpoint that failed for many deliveries at once.
const JITTER_FRACTION: f64 = 0.1;

/// What one attempt's result means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Any 2xx.
    Success,
    /// 410: the receiver wants no more; the endpoint is disabled.
    Gone,
    /// The receiver answered `webhook-delivery: abort`: this delivery is
    /// not retried; the endpoint stays enabled.
    Aborted,
    /// Anything else, a timeout or a connection error. `retry_after` is the
    /// receiver's `Retry-After` (429 and 503 only), capped at 24 h.
    Retryable { retry_after: Option<Duration> },
}

/// Classifies a response status (`None` for a timeout or connection error)
/// and its `Retry-After` header.
pub fn classify(status: Option<u16>, retry_after_header: Option<&str>) -> Outcome {
    classify_at(status, retry_after_header, SystemTime::now())
}

fn classify_at(status: Option<u16>, retry_after_header: Option<&str>, now: SystemTime) -> Outcome {
    match status {
        Some(200..=299) => Outcome::Success,
        Some(410) => Outcome::Gone,
        // Other statuses use Retry-After for unrelated things (e.g. 301).
        Some(429 | 503) => Outcome::Retryable {
            retry_after: retry_after_header.and_then(|h| parse_retry_after(h, now)),
        },
        _ => Outcome::Retryable { retry_after: None },
    }
}

/// `Retry-After` is delta-seconds or an HTTP-date; anything unparseable is
/// ignored rather than trusted. A date in the past means "now".
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "later than the cap".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The delay before the next attempt, or `None` when retries are exhausted.
///
/// `attempts_made` counts attempts already made, including the one that just
/// failed (0 is treated as 1). `jitter` is a uniform draw in `0.0..=1.0` and
/// adds up to 10% of the scheduled delay, never subtracts. A `retry_after`
/// from the receiver is a floor.
pub fn next_delay(
    schedule: &[Duration],
    attempts_made: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let index = usize::try_from(attempts_made.max(1) - 1).ok()?;
    let scheduled = *schedule.get(index)?;
    let delay = scheduled.saturating_add(jitter_for(scheduled, jitter));
    Some(delay.max(retry_after.unwrap_or(Duration::ZERO)))
}

fn jitter_for(scheduled: Duration, draw: f64) -> Duration {
    // NaN or out-of-range draws must not panic or make a retry early.
    let draw = if draw.is_nan() {
        0.0
    } else {
        draw.clamp(0.0, 1.0)
    };
    Duration::try_from_secs_f64(scheduled.as_secs_f64() * JITTER_FRACTION * draw)
        .unwrap_or(Duration::ZERO)
}

/// Parses a configured schedule such as `["0s", "100ms", "5m"]`.
pub fn parse_schedule(items: &[String]) -> Result<Vec<Duration>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            humantime::parse_duration(item.trim()).map_err(|e| {
                format!(
                    "retry_schedule[{i}]: `{item}` is not a duration like \"5s\" or \"10m\" ({e})"
                )
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_schedule_allows_nine_attempts() {
        assert_eq!(DEFAULT_SCHEDULE.len(), 8);
        assert_eq!(
            next_delay(DEFAULT_SCHEDULE, 8, None, 0.0),
            Some(secs(10 * HOUR))
        );
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 9, None, 0.0), None);
    }

    #[test]
    fn first_retry_is_immediate() {
        assert_eq!(
            next_delay(DEFAULT_SCHEDULE, 1, None, 1.0),
            Some(Duration::ZERO)
        );
        assert_eq!(
            next_delay(DEFAULT_SCHEDULE, 0, None, 0.0),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn each_step_follows_the_schedule() {
        for (i, expected) in DEFAULT_SCHEDULE.iter().enumerate() {
            let attempts = u32::try_from(i + 1).unwrap();
            assert_eq!(
                next_delay(DEFAULT_SCHEDULE, attempts, None, 0.0),
                Some(*expected)
            );
        }
    }

    #[test]
    fn exhausted_and_empty_schedules_give_none() {
        assert_eq!(next_delay(DEFAULT_SCHEDULE, u32::MAX, None, 0.5), None);
        assert_eq!(next_delay(&[], 1, None, 0.5), None);
        assert_eq!(next_delay(&[], 0, Some(secs(5)), 0.5), None);
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert_eq!(
            next_delay(DEFAULT_SCHEDULE, 2, Some(secs(60)), 0.0),
            Some(secs(60))
        );
        assert_eq!(
            next_delay(DEFAULT_SCHEDULE, 3, Some(secs(60)), 0.0),
            Some(secs(300))
        );
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 9, Some(secs(60)), 0.0), None);
    }

    #[test]
    fn jitter_adds_at_most_ten_percent() {
        let five_min = secs(300);
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 3, None, 0.0), Some(five_min));
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 3, None, 1.0), Some(secs(330)));
        let half = next_delay(DEFAULT_SCHEDULE, 3, None, 0.5).unwrap();
        assert!(half > five_min && half < secs(330));
        for odd in [f64::NAN, -3.0, f64::INFINITY, 7.0] {
            let delay = next_delay(DEFAULT_SCHEDULE, 3, None, odd).unwrap();
            assert!(delay >= five_min && delay <= secs(330), "{odd}: {delay:?}");
        }
        assert_eq!(
            next_delay(&[Duration::MAX], 1, None, 1.0),
            Some(Duration::MAX)
        );
    }

    #[test]
    fn classifies_statuses() {
        assert_eq!(classify(Some(200), None), Outcome::Success);
        assert_eq!(classify(Some(204), Some("10")), Outcome::Success);
        assert_eq!(classify(Some(299), None), Outcome::Success);
        assert_eq!(classify(Some(410), Some("10")), Outcome::Gone);
        for status in [None, Some(100), Some(301), Some(400), Some(404), Some(500)] {
            let outcome = classify(status, Some("10"));
            assert_eq!(
                outcome,
                Outcome::Retryable { retry_after: None },
                "{status:?}"
            );
        }
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let after = |s| Outcome::Retryable {
            retry_after: Some(secs(s)),
        };
        assert_eq!(classify(Some(429), Some("120")), after(120));
        assert_eq!(classify(Some(503), Some(" 7 ")), after(7));
        assert_eq!(
            classify(Some(500), Some("120")),
            Outcome::Retryable { retry_after: None }
        );
        assert_eq!(
            classify(Some(429), None),
            Outcome::Retryable { retry_after: None }
        );
    }

    #[test]
    fn retry_after_is_capped_and_garbage_ignored() {
        let cap = Outcome::Retryable {
            retry_after: Some(MAX_RETRY_AFTER),
        };
        assert_eq!(classify(Some(429), Some("999999")), cap);
        assert_eq!(classify(Some(429), Some("99999999999999999999999")), cap);
        for garbage in ["", "-5", "1.5", "soon", "5s"] {
            let outcome = classify(Some(429), Some(garbage));
            assert_eq!(
                outcome,
                Outcome::Retryable { retry_after: None },
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let at = |h| classify_at(Some(503), Some(h), now);
        let after = |s| Outcome::Retryable {
            retry_after: Some(secs(s)),
        };
        assert_eq!(at("Sun, 06 Nov 1994 08:51:37 GMT"), after(120));
        assert_eq!(at("Sunday, 06-Nov-94 08:50:37 GMT"), after(60));
        assert_eq!(at("Sat, 05 Nov 1994 08:49:37 GMT"), after(0));
        assert_eq!(at("Sun, 13 Nov 1994 08:49:37 GMT"), after(24 * HOUR));
    }

    #[test]
    fn parses_schedules() {
        let items: Vec<String> = ["0s", "100ms", "5m", " 2h "].map(String::from).to_vec();
        let parsed = parse_schedule(&items).unwrap();
        let expected = vec![
            Duration::ZERO,
            Duration::from_millis(100),
            secs(300),
            secs(7200),
        ];
        assert_eq!(parsed, expected);
        assert_eq!(parse_schedule(&[]), Ok(vec![]));
        let bad = ["5s".to_string(), "soon".to_string()];
        let error = parse_schedule(&bad).unwrap_err();
        assert!(error.starts_with("retry_schedule[1]: `soon`"), "{error}");
    }
}
