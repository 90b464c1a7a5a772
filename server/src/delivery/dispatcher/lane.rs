//! One endpoint's share of the dispatcher: the deliveries it holds in memory
//! (its window), its requests in flight, its circuit breaker, and what it
//! knows of its backlog in storage. Nothing here reads the clock or talks to
//! storage; the scheduler drives it.

use std::{
    collections::{HashSet, VecDeque},
    num::NonZeroU32,
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    DefaultDirectRateLimiter, Quota,
};
use tokio_util::time::delay_queue;

use crate::{
    delivery::breaker::Breaker,
    model::{DueCursor, DueDelivery, RateLimit},
};

#[derive(Default)]
pub(super) struct Lane {
    /// Due now, waiting for a request slot.
    pub ready: VecDeque<DueDelivery>,
    /// Every delivery of this endpoint in memory: ready, being sent, waiting
    /// for its result to commit, or on a short retry timer.
    pub held: HashSet<u64>,
    pub in_flight: u32,
    pub breaker: Breaker,
    pub backlog: Backlog,
    pub in_send_queue: bool,
    pub in_claim_queue: bool,
    pub resume_armed: bool,
    /// Answered 410: nothing more goes out until the catalog shows the
    /// endpoint disabled.
    pub gone: bool,
    /// The endpoint's rate limit (GCRA) and the limit it was made for.
    pub throttle: Option<(RateLimit, DefaultDirectRateLimiter)>,
    /// A timer is armed for when the rate limit lets the next request go.
    pub throttle_armed: bool,
}

impl Lane {
    /// Nothing in memory, nothing known in storage, nothing to remember.
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty()
            && self.held.is_empty()
            && self.in_flight == 0
            && self.backlog.is_empty()
            && self.breaker.is_healthy()
            && !self.in_send_queue
            && !self.in_claim_queue
            && !self.gone
    }

    /// How long until the rate limit lets one more request go (`None`: now,
    /// and the request is counted). A changed limit starts a fresh bucket.
    pub fn throttle_wait(&mut self, limit: Option<RateLimit>) -> Option<Duration> {
        let Some(limit) = limit else {
            self.throttle = None;
            return None;
        };
        if self
            .throttle
            .as_ref()
            .is_none_or(|(made_for, _)| *made_for != limit)
        {
            let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
            let quota = Quota::per_second(per_second).allow_burst(burst);
            self.throttle = Some((limit, DefaultDirectRateLimiter::direct(quota)));
        }
        let (_, limiter) = self.throttle.as_ref()?;
        limiter
            .check()
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The earliest due time among the ready deliveries.
    pub fn earliest_ready(&self) -> Option<i64> {
        self.ready.iter().map(|d| d.due_ms).min()
    }
}

/// What a lane knows of its deliveries that wait in storage only.
#[derive(Default)]
pub(super) struct Backlog {
    /// When the earliest of them falls due; `None`: there are none.
    pub due: Option<i64>,
    /// The timer armed for `due`, when it lies ahead.
    pub timer: Option<delay_queue::Key>,
    /// Where the current pass through the due ones stands; `None` between
    /// passes. A pass pages through due order so no page rereads what an
    /// earlier one returned.
    pub cursor: Option<DueCursor>,
    /// A claim is being read.
    pub claim: Option<ClaimWatch>,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.due.is_none() && self.claim.is_none() && self.timer.is_none()
    }

    /// Something (due at `due_ms`) was left in storage. When it is due
    /// already it may lie behind the cursor, so the pass starts over.
    pub fn note(&mut self, due_ms: i64, now_ms: i64) {
        self.due = Some(self.due.map_or(due_ms, |d| d.min(due_ms)));
        match &mut self.claim {
            Some(claim) => {
                claim.spilled = Some(claim.spilled.map_or(due_ms, |d| d.min(due_ms)));
                claim.rescan |= due_ms <= now_ms;
            }
            None if due_ms <= now_ms => self.cursor = None,
            None => {}
        }
    }
}

/// What happened to a lane while its claim was being read.
#[derive(Default)]
pub(super) struct ClaimWatch {
    /// Released meanwhile: the claim may show them as they were before their
    /// result committed, so they must not be taken again from it.
    pub released: HashSet<u64>,
    /// The earliest due time of what was left in storage meanwhile.
    pub spilled: Option<i64>,
    /// Something due now was left in storage, possibly behind the cursor:
    /// another pass from the start is needed.
    pub rescan: bool,
}
