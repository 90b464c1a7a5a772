// Temporary placeholder so the crate compiles; the real module replaces this file.
use std::time::Duration;
pub enum Outcome {
    Success,
    Gone,
    Retryable { retry_after: Option<Duration> },
}
pub fn classify(status: Option<u16>, _h: Option<&str>) -> Outcome {
    match status {
        Some(200..=299) => Outcome::Success,
        Some(410) => Outcome::Gone,
        _ => Outcome::Retryable { retry_after: None },
    }
}
pub fn next_delay(
    schedule: &[Duration],
    attempts_made: u32,
    _ra: Option<Duration>,
    _j: f64,
) -> Option<Duration> {
    schedule.get(attempts_made as usize - 1).copied()
}
