//! The bounds on what an admin or a config file may set for outbound HTTP:
//! request timeouts, retry schedules and concurrency. Endpoints (Admin API
//! and config), the config's delivery defaults and flows' HTTP steps all
//! check against these, so a value refused at one door is refused at every
//! door. The bounds keep every "now + delay" far from overflowing and every
//! wake-up time formattable.

use std::time::Duration;

/// A timeout of zero would fail every request before it is sent.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Longer than any receiver should take to answer a webhook.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// The longest wait before one retry.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Retries in one schedule.
pub const MAX_RETRIES: usize = 20;
/// Concurrent requests to one endpoint.
pub const MAX_IN_FLIGHT: u32 = 1024;

/// One thing wrong with a schedule: `index` names the entry, `None` the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleProblem {
    pub index: Option<usize>,
    pub message: String,
}

pub fn check_timeout(timeout: Duration) -> Result<(), String> {
    if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        Ok(())
    } else {
        Err("must be between 1 ms and 5 minutes".to_string())
    }
}

/// Every problem with a retry schedule.
pub fn check_retry_schedule(schedule: &[Duration]) -> Vec<ScheduleProblem> {
    let mut problems = Vec::new();
    if schedule.len() > MAX_RETRIES {
        problems.push(ScheduleProblem {
            index: None,
            message: format!("at most {MAX_RETRIES} retries, not {}", schedule.len()),
        });
    }
    for (i, delay) in schedule.iter().enumerate() {
        if *delay > MAX_RETRY_DELAY {
            problems.push(ScheduleProblem {
                index: Some(i),
                message: "a retry waits at most 30 days".to_string(),
            });
        }
    }
    problems
}

pub fn check_max_in_flight(n: u32) -> Result<(), String> {
    if (1..=MAX_IN_FLIGHT).contains(&n) {
        Ok(())
    } else {
        Err(format!("must be between 1 and {MAX_IN_FLIGHT}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_between_one_millisecond_and_five_minutes() {
        assert!(check_timeout(Duration::ZERO).is_err());
        assert!(check_timeout(MIN_TIMEOUT).is_ok());
        assert!(check_timeout(MAX_TIMEOUT).is_ok());
        assert!(check_timeout(MAX_TIMEOUT + Duration::from_nanos(1)).is_err());
        assert!(check_timeout(Duration::MAX).is_err());
    }

    #[test]
    fn schedules_name_each_bad_entry_and_a_long_list() {
        assert!(check_retry_schedule(&[]).is_empty());
        assert!(check_retry_schedule(&[Duration::ZERO, MAX_RETRY_DELAY]).is_empty());
        let problems = check_retry_schedule(&[Duration::ZERO, Duration::MAX, MAX_RETRY_DELAY * 2]);
        let indexes: Vec<_> = problems.iter().map(|p| p.index).collect();
        assert_eq!(indexes, [Some(1), Some(2)]);
        let long = vec![Duration::ZERO; MAX_RETRIES + 1];
        assert_eq!(check_retry_schedule(&long)[0].index, None);
    }

    #[test]
    fn in_flight_between_1_and_1024() {
        assert!(check_max_in_flight(0).is_err());
        assert!(check_max_in_flight(1).is_ok());
        assert!(check_max_in_flight(1024).is_ok());
        assert!(check_max_in_flight(1_000_000).is_err());
    }
}
