//! Per-endpoint circuit breaker. An endpoint that cannot be reached (no
//! connection, a timeout, 502/503/504) several times in a row is paused:
//! deliveries that fall due meanwhile wait in memory or in storage, keep
//! their attempts, and cost no requests and no writes. After the pause one
//! delivery goes out as a probe; if it gets through, the endpoint is sent to
//! at full speed again and its waiting backlog drains at once; if not, the
//! pause doubles, up to a ceiling.
//!
//! Pausing only ever makes an attempt later than its schedule, never sooner.
//! Without it, an endpoint that is down for a while turns every retry into a
//! failed request plus an attempt record, which takes storage throughput
//! from intake and burns deliveries' retries on an outage.

use std::time::Duration;

use tokio::time::Instant;

/// Consecutive unreachable attempts that pause an endpoint.
pub const TRIP_AFTER: u32 = 5;
/// The first pause; each failed probe doubles it.
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// The longest pause: how late, at most, a recovered endpoint is noticed.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// How many requests an endpoint may have in flight right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// Healthy: the endpoint's own limit.
    Open,
    /// Paused until the probe time.
    Paused { until: Instant },
    /// The pause is over: one request, to see whether it gets through.
    Probe,
}

#[derive(Debug, Clone)]
pub struct Breaker {
    failures: u32,
    paused_until: Option<Instant>,
    pause: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: 0,
            paused_until: None,
            pause: FIRST_PAUSE,
        }
    }
}

impl Breaker {
    pub fn allowance(&self, now: Instant) -> Allowance {
        match self.paused_until {
            Some(until) if until > now => Allowance::Paused { until },
            Some(_) => Allowance::Probe,
            None => Allowance::Open,
        }
    }

    /// Nothing to remember: the lane holding it may be dropped.
    pub fn is_healthy(&self) -> bool {
        self.failures == 0
    }

    /// Records how an attempt ended: `reached` when the endpoint answered
    /// with anything but 502/503/504.
    pub fn record(&mut self, reached: bool, now: Instant) {
        if reached {
            *self = Breaker::default();
            return;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures < TRIP_AFTER {
            return;
        }
        match self.paused_until {
            // Requests sent before the pause began are still coming back.
            Some(until) if until > now => {}
            // A failed probe (or the trip itself): pause, longer each time.
            Some(_) => {
                self.pause = (self.pause * 2).min(MAX_PAUSE);
                self.paused_until = Some(now + self.pause);
            }
            None => self.paused_until = Some(now + self.pause),
        }
    }
}

/// Whether an attempt's answer shows the endpoint reachable.
pub fn reached(status: Option<u16>) -> bool {
    !matches!(status, None | Some(502..=504))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_consecutive_failures_and_probes_after_the_pause() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            breaker.record(false, now);
            assert_eq!(breaker.allowance(now), Allowance::Open);
        }
        breaker.record(false, now);
        assert_eq!(
            breaker.allowance(now),
            Allowance::Paused {
                until: now + FIRST_PAUSE
            }
        );
        // Late failures of requests already in flight do not extend it.
        breaker.record(false, now + Duration::from_millis(10));
        assert_eq!(
            breaker.allowance(now + FIRST_PAUSE),
            Allowance::Probe,
            "one request once the pause is over"
        );
    }

    #[test]
    fn a_failed_probe_doubles_the_pause_up_to_the_ceiling() {
        let mut now = Instant::now();
        let mut breaker = Breaker::default();
        for _ in 0..TRIP_AFTER {
            breaker.record(false, now);
        }
        let mut expected = FIRST_PAUSE;
        for _ in 0..10 {
            now += expected;
            assert_eq!(breaker.allowance(now), Allowance::Probe);
            breaker.record(false, now);
            expected = (expected * 2).min(MAX_PAUSE);
            assert_eq!(
                breaker.allowance(now),
                Allowance::Paused {
                    until: now + expected
                }
            );
        }
        assert_eq!(expected, MAX_PAUSE);
    }

    #[test]
    fn an_answer_closes_it_and_a_success_in_between_resets_the_count() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            breaker.record(false, now);
        }
        breaker.record(true, now);
        breaker.record(false, now);
        assert_eq!(breaker.allowance(now), Allowance::Open);
        for _ in 0..TRIP_AFTER {
            breaker.record(false, now);
        }
        breaker.record(true, now + FIRST_PAUSE);
        assert_eq!(breaker.allowance(now + FIRST_PAUSE), Allowance::Open);
        assert!(breaker.is_healthy());
    }

    #[test]
    fn only_no_answer_and_gateway_errors_count_as_unreachable() {
        assert!(!reached(None));
        for status in [502, 503, 504] {
            assert!(!reached(Some(status)));
        }
        for status in [200, 400, 404, 410, 429, 500] {
            assert!(reached(Some(status)));
        }
    }
}
