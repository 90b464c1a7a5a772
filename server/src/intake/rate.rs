//! Rate limits at the doors (GCRA, through governor): per source, per API
//! key and per flow webhook. A limit counts events, so a batch of fifty costs
//! fifty; a batch larger than the burst can never pass and is told so instead
//! of being asked to retry.

use std::{
    collections::HashMap,
    fmt::Display,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, InsufficientCapacity, Quota,
};

use super::ApiError;
use crate::model::RateLimit;

pub type Limiter = DefaultDirectRateLimiter;

pub fn quota(limit: RateLimit) -> Quota {
    let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

pub fn limiter(limit: RateLimit) -> Limiter {
    Limiter::direct(quota(limit))
}

/// Takes `events` cells from `limiter`; `scope` names whose limit it is in
/// the answer (`API key \`crm\``).
pub fn admit(limiter: &Limiter, events: usize, scope: impl Display) -> Result<(), ApiError> {
    let Some(n) = NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)) else {
        return Ok(());
    };
    match limiter.check_n(n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => Err(ApiError::RateLimited {
            retry_after_secs: whole_seconds(
                not_until.wait_time_from(DefaultClock::default().now()),
            ),
            scope: scope.to_string(),
        }),
        Err(InsufficientCapacity(burst)) => Err(ApiError::BadRequest(format!(
            "{events} events at once are more than the burst of {burst} that the rate limit of \
             {scope} allows; send batches of at most {burst}"
        ))),
    }
}

/// Retry-After is in whole seconds: round up, and never say 0.
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Limiters by name, each kept (and so its state) while its limit is
/// unchanged: a reload must not hand out a fresh burst.
#[derive(Default)]
pub struct Buckets {
    limiters: Mutex<HashMap<String, (RateLimit, Arc<Limiter>)>>,
}

impl Buckets {
    pub fn get(&self, name: &str, limit: RateLimit) -> Arc<Limiter> {
        let fresh = || Arc::new(limiter(limit));
        let Ok(mut map) = self.limiters.lock() else {
            return fresh();
        };
        match map.get(name) {
            Some((current, limiter)) if *current == limit => limiter.clone(),
            _ => {
                let limiter = fresh();
                map.insert(name.to_string(), (limit, limiter.clone()));
                limiter
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn a_burst_passes_then_the_caller_is_told_when_to_retry() {
        let limiter = limiter(limit(1, 3));
        for _ in 0..3 {
            assert!(admit(&limiter, 1, "key `a`").is_ok());
        }
        match admit(&limiter, 1, "key `a`") {
            Err(ApiError::RateLimited {
                retry_after_secs,
                scope,
            }) => {
                assert_eq!(retry_after_secs, 1);
                assert_eq!(scope, "key `a`");
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_costs_one_cell_per_event() {
        let limiter = limiter(limit(1, 10));
        assert!(admit(&limiter, 7, "k").is_ok());
        assert!(matches!(
            admit(&limiter, 4, "k"),
            Err(ApiError::RateLimited { .. })
        ));
        assert!(admit(&limiter, 3, "k").is_ok());
        assert!(admit(&limiter, 0, "k").is_ok());
    }

    #[test]
    fn a_batch_over_the_burst_can_never_pass_and_says_so() {
        let limiter = limiter(limit(5, 0));
        let message = match admit(&limiter, 6, "API key `crm`") {
            Err(ApiError::BadRequest(message)) => message,
            other => panic!("expected a bad request, got {other:?}"),
        };
        assert!(message.contains("burst of 5"), "{message}");
        assert!(message.contains("API key `crm`"), "{message}");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(200)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn buckets_keep_their_state_until_the_limit_changes() {
        let buckets = Buckets::default();
        let first = buckets.get("f", limit(1, 1));
        assert!(admit(&first, 1, "f").is_ok());
        assert!(admit(&buckets.get("f", limit(1, 1)), 1, "f").is_err());
        assert!(admit(&buckets.get("f", limit(2, 1)), 1, "f").is_ok());
        assert!(admit(&buckets.get("g", limit(2, 1)), 1, "g").is_ok());
    }
}
