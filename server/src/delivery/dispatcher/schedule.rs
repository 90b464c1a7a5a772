//! The dispatcher's scheduling, without I/O: which delivery is attempted
//! when, which endpoint may read its backlog from storage, and who gets the
//! next request slot. It takes events (a delivery committed, an attempt over,
//! a result stored, a claim read, a timer fired) and answers with actions
//! (send this, claim that, abandon those) that the dispatcher carries out.
//! Keeping it free of I/O is what lets its rules be tested under a paused
//! clock.
//!
//! The rules, per endpoint (a lane):
//! - A lane holds at most its window of deliveries in memory (ready, in
//!   flight, waiting for a result, or on a short retry timer); the whole
//!   dispatcher at most `memory_queue`. What does not fit stays in storage
//!   and the lane remembers only when the earliest of it falls due.
//! - A lane reads its backlog from storage by claims: pages of its own due
//!   deliveries in due order. Claims are served in turn (a FIFO of lanes),
//!   so a lane with a million due rows reads a page, then waits behind every
//!   other lane that wants one.
//! - A paused (breaker open), disabled or gone endpoint takes nothing: its
//!   ready deliveries go back to storage and it makes no claims. A slow or
//!   full endpoint holds at most its window and its `max_in_flight` slots.
//! - Request slots (`max_concurrent` over all endpoints) are shared round
//!   robin: when they run out, lanes wait in a FIFO and each turn sends one
//!   request, so an endpoint with ten due waits at most one request per busy
//!   endpoint, however deep their backlogs.
//! - Ordering keys are storage's: a delivery waiting behind another with its
//!   key is not due there until that one finishes, so the scheduler sees it
//!   only then (a finished ordered delivery marks its lane's backlog due).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

use super::lane::{ClaimWatch, Lane};
use crate::{
    delivery::breaker::Allowance,
    model::{DeliveryStatus, DueCursor, DueDelivery, Endpoint, EndpointState},
    store::Settled,
};

/// Claims read at once over all lanes: enough to overlap reads with sending,
/// few enough that claims never crowd out the writer's and the Admin API's
/// reads.
pub const MAX_CLAIMS: usize = 2;
/// Most rows one claim reads.
pub const CLAIM_PAGE: usize = 512;
/// A retry due within this stays in memory on a timer; a later one goes back
/// to storage and is claimed again when due.
const IN_MEMORY_RETRY: Duration = Duration::from_secs(10);
/// How long to leave work in storage after storage failed to record results
/// or to read a claim; doubled on each failure in a row.
const FIRST_STORAGE_BACKOFF: Duration = Duration::from_secs(1);
const MAX_STORAGE_BACKOFF: Duration = Duration::from_secs(60);
/// What an idle lane's buffers shrink back to.
const IDLE_CAPACITY: usize = 16;
/// Timers lie at most this far ahead; a later due time is re-armed when the
/// timer fires (the timer wheel does not take arbitrary deadlines).
const MAX_TIMER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deliveries held in memory, all endpoints together.
    pub memory_queue: usize,
    /// Deliveries one endpoint may hold in memory (at least twice its
    /// `max_in_flight`).
    pub window: usize,
    /// Requests in flight per endpoint, unless the endpoint sets its own.
    pub max_in_flight: u32,
    /// Requests in flight, all endpoints together.
    pub max_concurrent: usize,
}

/// What the dispatcher must do.
#[derive(Debug)]
pub enum Action {
    Send {
        delivery: DueDelivery,
        endpoint: Arc<Endpoint>,
    },
    /// Read up to `limit` of the endpoint's deliveries due at `now_ms`, after
    /// `after`, and answer with [`Scheduler::claimed`].
    Claim {
        endpoint_id: Arc<str>,
        after: Option<DueCursor>,
        limit: usize,
        now_ms: i64,
    },
    /// The endpoint no longer exists: record the delivery as dead.
    Abandon {
        delivery: DueDelivery,
        reason: String,
    },
}

/// A claim's answer.
#[derive(Debug)]
pub struct Claimed {
    pub endpoint_id: Arc<str>,
    pub asked: usize,
    /// `Err` when storage could not be read.
    pub rows: Result<Vec<DueDelivery>, ()>,
    /// When fewer rows than asked came back: when the endpoint's next
    /// delivery falls due after the claim's `now_ms`.
    pub next_due: Option<i64>,
}

/// What a lane's endpoint is, as far as sending goes.
enum Target {
    Open(Arc<Endpoint>),
    /// Disabled or gone: keep the backlog in storage until enabled again.
    Held,
    /// Deleted: what is left for it cannot be delivered.
    Missing,
}

/// Where endpoints are looked up (the catalog in force).
pub trait Endpoints {
    fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>>;

    /// Whether this daemon sends for the endpoint: always with one daemon;
    /// with several, while it holds the endpoint's lease. An endpoint not
    /// owned is held like a disabled one: its backlog stays in storage.
    fn owns(&self, _id: &str) -> bool {
        true
    }
}

/// Milliseconds since the epoch, as due times in storage are kept. Tests
/// make it follow tokio's (paused) clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Option<(i64, Instant)>,
}

impl Clock {
    pub fn wall() -> Clock {
        Clock { origin: None }
    }

    /// A clock that reads `origin_ms` now and advances with tokio's clock.
    pub fn following_tokio(origin_ms: i64) -> Clock {
        Clock {
            origin: Some((origin_ms, Instant::now())),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self.origin {
            None => crate::model::now_ms(),
            Some((ms, at)) => ms.saturating_add(at.elapsed().as_millis() as i64),
        }
    }
}

enum Timer {
    /// A held delivery's retry fell due.
    Retry(DueDelivery),
    /// A lane's backlog may have fallen due.
    Backlog(Arc<str>),
    /// A paused lane may probe.
    Resume(Arc<str>),
    /// A rate-limited lane may send again.
    Throttle(Arc<str>),
    /// Storage may record results again: try sending.
    StorageResume,
}

pub struct Scheduler {
    limits: Limits,
    clock: Clock,
    lanes: HashMap<Arc<str>, Lane>,
    /// Deliveries in memory, all lanes.
    held: usize,
    /// Requests in flight, all lanes.
    in_flight: usize,
    /// Claims being read.
    claims: usize,
    /// Lanes waiting for a request slot, served one request per turn.
    send_queue: VecDeque<Arc<str>>,
    /// Lanes waiting to read a page of their backlog, served in turn.
    claim_queue: VecDeque<Arc<str>>,
    timers: DelayQueue<Timer>,
    retry_keys: HashMap<u64, tokio_util::time::delay_queue::Key>,
    storage_backoff: Duration,
    /// Storage failed to record results: nothing is sent until then.
    storage_pause: Option<Instant>,
    actions: Vec<Action>,
}

impl Scheduler {
    pub fn new(limits: Limits, clock: Clock) -> Scheduler {
        Scheduler {
            limits,
            clock,
            lanes: HashMap::new(),
            held: 0,
            in_flight: 0,
            claims: 0,
            send_queue: VecDeque::new(),
            claim_queue: VecDeque::new(),
            timers: DelayQueue::new(),
            retry_keys: HashMap::new(),
            storage_backoff: FIRST_STORAGE_BACKOFF,
            storage_pause: None,
            actions: Vec::new(),
        }
    }

    /// Swaps what to do now (in order) into `into`, which must be empty;
    /// the buffers are reused, so deciding allocates nothing per event.
    pub fn take_actions(&mut self, into: &mut Vec<Action>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.actions, into);
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Deliveries held in memory.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The endpoint's circuit breaker, for metrics: 0 closed, 1 probing,
    /// 2 open (sending paused).
    pub fn breaker_state(&self, endpoint_id: &str) -> f64 {
        match self
            .lanes
            .get(endpoint_id)
            .map(|lane| lane.breaker.allowance(Instant::now()))
        {
            None | Some(Allowance::Open) => 0.0,
            Some(Allowance::Probe) => 1.0,
            Some(Allowance::Paused { .. }) => 2.0,
        }
    }

    /// Deliveries one endpoint holds in memory.
    pub fn held_by(&self, endpoint_id: &str) -> usize {
        self.lanes.get(endpoint_id).map_or(0, |l| l.held.len())
    }

    /// On start: these endpoints have deliveries in storage, the earliest
    /// due at the given time.
    pub fn stored(&mut self, backlog: Vec<(String, i64)>, eps: &impl Endpoints) {
        let now = self.now_ms();
        let mut ids = Vec::with_capacity(backlog.len());
        for (endpoint_id, due) in backlog {
            if !eps.owns(&endpoint_id) {
                continue;
            }
            let id: Arc<str> = Arc::from(endpoint_id);
            self.lanes
                .entry(id.clone())
                .or_default()
                .backlog
                .note(due, now);
            ids.push(id);
        }
        self.refresh_many(&ids, eps);
    }

    /// Which endpoints this daemon sends for changed (leases taken, lost or
    /// handed back): these lanes are planned again, and a lane no longer
    /// owned that holds nothing is forgotten.
    pub fn ownership_changed(&mut self, ids: &[Arc<str>], eps: &impl Endpoints) {
        self.refresh_many(ids, eps);
        for id in ids {
            if !eps.owns(id) && self.holds_nothing(id) {
                self.forget(id);
            }
        }
    }

    /// Nothing of the endpoint is in memory or in flight.
    pub fn holds_nothing(&self, id: &str) -> bool {
        self.lanes
            .get(id)
            .is_none_or(|lane| lane.held.is_empty() && lane.in_flight == 0)
    }

    /// Drops a lane that holds nothing (its endpoint is sent by another
    /// daemon now); what it knew of storage is read again if it comes back.
    fn forget(&mut self, id: &str) {
        let Some(lane) = self.lanes.remove(id) else {
            return;
        };
        if let Some(key) = lane.backlog.timer {
            self.timers.remove(&key);
        }
    }

    /// A delivery committed just now (or made due by the Admin API): taken
    /// into memory when its lane has room and nothing due waits before it in
    /// storage, else left in storage for a claim.
    pub fn deliver(&mut self, delivery: DueDelivery, eps: &impl Endpoints) {
        let id = delivery.endpoint_id.clone();
        if !eps.owns(&id) {
            // Its owner reads it from storage.
            return;
        }
        if let Some(key) = self.retry_keys.get(&delivery.id) {
            self.timers.reset(key, Duration::ZERO);
            return;
        }
        let now = self.now_ms();
        let window = self.window(&id, eps);
        let memory_left = self.held < self.limits.memory_queue;
        let lane = self.lanes.entry(id.clone()).or_default();
        if lane.held.contains(&delivery.id) {
            return;
        }
        let waiting_before = lane.backlog.due.is_some_and(|due| due <= now);
        if memory_left && !waiting_before && lane.held.len() < window && !lane.gone {
            lane.held.insert(delivery.id);
            self.held += 1;
            lane.ready.push_back(delivery);
        } else {
            lane.backlog.note(delivery.due_ms, now);
        }
        self.refresh(&id, eps);
    }

    /// An attempt's request is over: its slot is free.
    pub fn attempt_ended(
        &mut self,
        endpoint_id: &Arc<str>,
        reached: bool,
        gone: bool,
        eps: &impl Endpoints,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(lane) = self.lanes.get_mut(endpoint_id) {
            lane.in_flight = lane.in_flight.saturating_sub(1);
            lane.breaker.record(reached, Instant::now());
            lane.gone |= gone;
        }
        self.refresh(endpoint_id, eps);
    }

    /// Attempt results are stored.
    pub fn settled(&mut self, results: &[Settled], eps: &impl Endpoints) {
        self.storage_backoff = FIRST_STORAGE_BACKOFF;
        let now = self.now_ms();
        for settled in results {
            let delivery = &settled.delivery;
            let retry_at = match (settled.status, settled.next_attempt_ms) {
                (DeliveryStatus::Failed, Some(at)) => Some(at),
                _ => None,
            };
            let keep = retry_at.filter(|at| {
                at.saturating_sub(now) <= IN_MEMORY_RETRY.as_millis() as i64
                    && self.accepts_retry(&delivery.endpoint_id, eps)
            });
            match keep {
                Some(at) => {
                    let mut retry = delivery.clone();
                    retry.due_ms = at;
                    let key = self
                        .timers
                        .insert_at(Timer::Retry(retry), instant_at(at, now));
                    self.retry_keys.insert(delivery.id, key);
                }
                None => self.release(&delivery.endpoint_id, delivery.id, retry_at, now),
            }
            if delivery.ordered && settled.status.is_final() {
                // Its commit made the next delivery with its ordering key
                // due, in storage.
                if let Some(lane) = self.lanes.get_mut(&delivery.endpoint_id) {
                    lane.backlog.note(now, now);
                }
            }
        }
        self.after_release(results.iter().map(|s| &s.delivery.endpoint_id), eps);
    }

    /// Storage could not record these results: the deliveries are in storage
    /// as they were, due again; leave them there for a while rather than
    /// send them to the tenant again at once.
    pub fn settle_failed(&mut self, results: &[Settled], eps: &impl Endpoints) {
        let now = self.now_ms();
        for settled in results {
            let d = &settled.delivery;
            self.release(&d.endpoint_id, d.id, Some(d.due_ms), now);
        }
        // Nothing is sent or claimed until the pause is over: an attempt whose
        // result cannot be stored would only be made again.
        if !self.storage_paused() {
            let until = Instant::now() + self.storage_backoff;
            self.storage_pause = Some(until);
            self.timers.insert_at(Timer::StorageResume, until);
            self.storage_backoff = (self.storage_backoff * 2).min(MAX_STORAGE_BACKOFF);
        }
        self.after_release(results.iter().map(|s| &s.delivery.endpoint_id), eps);
    }

    /// A claim came back.
    pub fn claimed(&mut self, claimed: Claimed, eps: &impl Endpoints) {
        self.claims = self.claims.saturating_sub(1);
        let id = claimed.endpoint_id;
        let now = self.now_ms();
        let window = self.window(&id, eps);
        let Some(lane) = self.lanes.get_mut(&id) else {
            return;
        };
        let watch = lane.backlog.claim.take().unwrap_or_default();
        let rows = match claimed.rows {
            Ok(rows) => rows,
            Err(()) => {
                lane.backlog.cursor = None;
                lane.backlog.due =
                    Some(now.saturating_add(self.storage_backoff.as_millis() as i64));
                self.storage_backoff = (self.storage_backoff * 2).min(MAX_STORAGE_BACKOFF);
                self.refresh(&id, eps);
                return;
            }
        };
        let short = rows.len() < claimed.asked;
        let mut full = false;
        for delivery in rows {
            let cursor = delivery.cursor();
            if !lane.held.contains(&delivery.id) && !watch.released.contains(&delivery.id) {
                if lane.held.len() >= window || self.held >= self.limits.memory_queue {
                    full = true;
                    break;
                }
                lane.held.insert(delivery.id);
                self.held += 1;
                lane.ready.push_back(delivery);
            }
            lane.backlog.cursor = Some(cursor);
        }
        if short && !full && !watch.rescan {
            // The pass reached the end of what was due.
            lane.backlog.cursor = None;
            lane.backlog.due = min_opt(claimed.next_due, watch.spilled);
        } else {
            // More is due (after the cursor, or behind it: then from the start).
            if watch.rescan {
                lane.backlog.cursor = None;
            }
            lane.backlog.due = Some(now);
        }
        self.refresh(&id, eps);
    }

    /// Endpoints changed (an Admin edit, an endpoint disabled by a 410).
    pub fn catalog_changed(&mut self, eps: &impl Endpoints) {
        for lane in self.lanes.values_mut() {
            lane.gone = false;
        }
        self.refresh_all(eps);
    }

    /// Waits for the next timer; `None` at once when none is armed.
    pub async fn next_timer(&mut self) -> Option<Fired> {
        if self.timers.is_empty() {
            return None;
        }
        let expired = self.timers.next().await?;
        Some(Fired(expired.into_inner()))
    }

    pub fn on_timer(&mut self, Fired(timer): Fired, eps: &impl Endpoints) {
        match timer {
            Timer::Retry(delivery) => {
                self.retry_keys.remove(&delivery.id);
                let id = delivery.endpoint_id.clone();
                match self.lanes.get_mut(&id) {
                    Some(lane) => lane.ready.push_back(delivery),
                    None => return,
                }
                self.refresh(&id, eps);
            }
            Timer::Backlog(id) => {
                if let Some(lane) = self.lanes.get_mut(&id) {
                    lane.backlog.timer = None;
                }
                self.refresh(&id, eps);
            }
            Timer::Resume(id) => {
                if let Some(lane) = self.lanes.get_mut(&id) {
                    lane.resume_armed = false;
                }
                self.refresh(&id, eps);
            }
            Timer::Throttle(id) => {
                if let Some(lane) = self.lanes.get_mut(&id) {
                    lane.throttle_armed = false;
                }
                self.refresh(&id, eps);
            }
            Timer::StorageResume => {
                self.storage_pause = None;
                self.refresh_all(eps);
            }
        }
    }

    /// Re-plans a lane after a change: send what it may, claim what it can
    /// take, forget it when nothing is left.
    fn refresh(&mut self, id: &Arc<str>, eps: &impl Endpoints) {
        self.serve_send_queue(eps);
        self.pump(id, eps);
        self.plan_backlog(id, eps);
        self.start_claims(eps);
        self.remove_if_idle(id, eps);
    }

    fn refresh_many(&mut self, ids: &[Arc<str>], eps: &impl Endpoints) {
        self.serve_send_queue(eps);
        for id in ids {
            self.pump(id, eps);
            self.plan_backlog(id, eps);
        }
        self.start_claims(eps);
        for id in ids {
            self.remove_if_idle(id, eps);
        }
    }

    fn refresh_all(&mut self, eps: &impl Endpoints) {
        let ids: Vec<Arc<str>> = self.lanes.keys().cloned().collect();
        self.refresh_many(&ids, eps);
    }

    /// An Admin retry of a delivery held on a retry timer: due now.
    pub fn retry_now(&mut self, delivery: DueDelivery, eps: &impl Endpoints) {
        self.deliver(delivery, eps);
    }

    fn target(&self, endpoint_id: &str, eps: &impl Endpoints) -> Target {
        if !eps.owns(endpoint_id) {
            return Target::Held;
        }
        match eps.endpoint(endpoint_id) {
            Some(e) if e.state == EndpointState::Enabled => Target::Open(e.clone()),
            Some(_) => Target::Held,
            None => Target::Missing,
        }
    }

    fn limit_of(&self, endpoint: &Endpoint) -> u32 {
        endpoint
            .max_in_flight
            .unwrap_or(self.limits.max_in_flight)
            .max(1)
    }

    fn window(&self, endpoint_id: &str, eps: &impl Endpoints) -> usize {
        let limit = eps
            .endpoint(endpoint_id)
            .map_or(self.limits.max_in_flight, |e| self.limit_of(e));
        self.limits.window.max(2 * limit as usize)
    }

    /// Whether a failed delivery may wait for its retry in memory.
    fn accepts_retry(&self, endpoint_id: &str, eps: &impl Endpoints) -> bool {
        let Some(lane) = self.lanes.get(endpoint_id) else {
            return false;
        };
        matches!(self.target(endpoint_id, eps), Target::Open(_))
            && !lane.gone
            && !matches!(
                lane.breaker.allowance(Instant::now()),
                Allowance::Paused { .. }
            )
    }

    /// The delivery leaves memory; when it is still to be attempted
    /// (`again`), storage has it due then.
    fn release(&mut self, endpoint_id: &str, id: u64, again: Option<i64>, now: i64) {
        let Some(lane) = self.lanes.get_mut(endpoint_id) else {
            return;
        };
        if lane.held.remove(&id) {
            self.held = self.held.saturating_sub(1);
        }
        if let Some(claim) = &mut lane.backlog.claim {
            claim.released.insert(id);
        }
        if let Some(at) = again {
            lane.backlog.note(at, now);
        }
    }

    /// After memory was freed in these lanes.
    fn after_release<'a>(
        &mut self,
        endpoints: impl Iterator<Item = &'a Arc<str>>,
        eps: &impl Endpoints,
    ) {
        let mut ids: Vec<&Arc<str>> = endpoints.collect();
        ids.sort_unstable();
        ids.dedup();
        let ids: Vec<Arc<str>> = ids.into_iter().cloned().collect();
        self.refresh_many(&ids, eps);
    }

    /// Starts what the lane may send now, or puts it in line for a slot.
    fn pump(&mut self, id: &Arc<str>, eps: &impl Endpoints) {
        let now = self.now_ms();
        let endpoint = match self.target(id, eps) {
            Target::Missing => return self.abandon_ready(id),
            Target::Held => return self.return_ready_to_storage(id, now),
            Target::Open(endpoint) => endpoint,
        };
        let own_limit = self.limit_of(&endpoint);
        let storage_paused = self.storage_paused();
        let Some(lane) = self.lanes.get_mut(id) else {
            return;
        };
        if lane.gone || storage_paused {
            return;
        }
        let limit = match lane.breaker.allowance(Instant::now()) {
            Allowance::Open => own_limit,
            Allowance::Probe => 1,
            Allowance::Paused { until } => {
                if !lane.resume_armed {
                    lane.resume_armed = true;
                    self.timers.insert_at(Timer::Resume(id.clone()), until);
                }
                return self.return_ready_to_storage(id, now);
            }
        };
        while lane.in_flight < limit && !lane.ready.is_empty() {
            if self.in_flight >= self.limits.max_concurrent || !self.send_queue.is_empty() {
                if !lane.in_send_queue {
                    lane.in_send_queue = true;
                    self.send_queue.push_back(id.clone());
                }
                return;
            }
            if lane.throttle_armed {
                return;
            }
            // Waiting for the rate limit is not an attempt: the delivery
            // stays ready and the lane looks again when the limit allows.
            if let Some(wait) = lane.throttle_wait(endpoint.options.rate_limit) {
                lane.throttle_armed = true;
                self.timers
                    .insert_at(Timer::Throttle(id.clone()), Instant::now() + wait);
                return;
            }
            let Some(delivery) = lane.ready.pop_front() else {
                break;
            };
            lane.in_flight += 1;
            self.in_flight += 1;
            self.actions.push(Action::Send {
                delivery,
                endpoint: endpoint.clone(),
            });
        }
    }

    fn abandon_ready(&mut self, id: &Arc<str>) {
        let Some(lane) = self.lanes.get_mut(id) else {
            return;
        };
        for delivery in lane.ready.drain(..) {
            self.actions.push(Action::Abandon {
                delivery,
                reason: format!("endpoint `{id}` no longer exists"),
            });
        }
    }

    fn storage_paused(&self) -> bool {
        self.storage_pause
            .is_some_and(|until| until > Instant::now())
    }

    /// Hands free request slots to the lanes in line, one request per turn.
    fn serve_send_queue(&mut self, eps: &impl Endpoints) {
        while self.in_flight < self.limits.max_concurrent && !self.storage_paused() {
            let Some(id) = self.send_queue.pop_front() else {
                return;
            };
            let Target::Open(endpoint) = self.target(&id, eps) else {
                if let Some(lane) = self.lanes.get_mut(&id) {
                    lane.in_send_queue = false;
                }
                self.pump(&id, eps);
                continue;
            };
            let limit = self.limit_of(&endpoint);
            let Some(lane) = self.lanes.get_mut(&id) else {
                continue;
            };
            lane.in_send_queue = false;
            let allowed = match lane.breaker.allowance(Instant::now()) {
                Allowance::Open => limit,
                Allowance::Probe => 1,
                Allowance::Paused { .. } => 0,
            };
            if lane.gone || lane.in_flight >= allowed || lane.throttle_armed {
                // Its own limit holds it now; it rejoins when a slot of its
                // own frees (or its rate limit allows).
                continue;
            }
            if let Some(wait) = lane.throttle_wait(endpoint.options.rate_limit) {
                lane.throttle_armed = true;
                self.timers
                    .insert_at(Timer::Throttle(id.clone()), Instant::now() + wait);
                continue;
            }
            let Some(delivery) = lane.ready.pop_front() else {
                continue;
            };
            lane.in_flight += 1;
            self.in_flight += 1;
            self.actions.push(Action::Send { delivery, endpoint });
            if !lane.ready.is_empty() && lane.in_flight < allowed {
                lane.in_send_queue = true;
                self.send_queue.push_back(id);
            }
        }
    }

    /// A paused or disabled lane keeps nothing waiting in memory: what is
    /// ready or on a retry timer goes back to storage, which has it anyway.
    fn return_ready_to_storage(&mut self, id: &Arc<str>, now: i64) {
        let Some(lane) = self.lanes.get_mut(id) else {
            return;
        };
        for held in &lane.held {
            if let Some(key) = self.retry_keys.remove(held) {
                let Timer::Retry(delivery) = self.timers.remove(&key).into_inner() else {
                    continue;
                };
                lane.ready.push_back(delivery);
            }
        }
        let Some(earliest) = lane.earliest_ready() else {
            return;
        };
        for delivery in lane.ready.drain(..) {
            if lane.held.remove(&delivery.id) {
                self.held = self.held.saturating_sub(1);
            }
            if let Some(claim) = &mut lane.backlog.claim {
                claim.released.insert(delivery.id);
            }
        }
        lane.backlog.note(earliest, now);
    }

    /// Puts the lane in line for a claim when its backlog is due and it can
    /// take some, or arms a timer for when it falls due.
    fn plan_backlog(&mut self, id: &Arc<str>, eps: &impl Endpoints) {
        let Some(lane) = self.lanes.get(id) else {
            return;
        };
        if lane.backlog.claim.is_some() || lane.backlog.is_empty() {
            return;
        }
        let now = self.now_ms();
        let may_claim = self.may_claim(id, eps);
        let Some(lane) = self.lanes.get_mut(id) else {
            return;
        };
        match lane.backlog.due {
            None => {
                if let Some(key) = lane.backlog.timer.take() {
                    self.timers.remove(&key);
                }
            }
            Some(due) if due <= now => {
                if may_claim && !lane.in_claim_queue {
                    lane.in_claim_queue = true;
                    self.claim_queue.push_back(id.clone());
                }
            }
            Some(due) => {
                let at = instant_at(due, now);
                match &lane.backlog.timer {
                    Some(key) => self.timers.reset_at(key, at),
                    None => {
                        lane.backlog.timer =
                            Some(self.timers.insert_at(Timer::Backlog(id.clone()), at));
                    }
                }
            }
        }
    }

    /// Whether the lane may read from storage now: its endpoint takes
    /// requests (or is deleted, so what is left can be abandoned), and it has
    /// room for a page while less than half its window is ready.
    fn may_claim(&self, id: &str, eps: &impl Endpoints) -> bool {
        let Some(lane) = self.lanes.get(id) else {
            return false;
        };
        let window = self.window(id, eps);
        let room = lane.held.len() < window && lane.ready.len() < window / 2;
        match self.target(id, eps) {
            Target::Missing => room,
            Target::Held => false,
            Target::Open(_) => {
                room && !lane.gone
                    && match lane.breaker.allowance(Instant::now()) {
                        Allowance::Open => true,
                        Allowance::Probe => lane.in_flight == 0 && lane.ready.is_empty(),
                        Allowance::Paused { .. } => false,
                    }
            }
        }
    }

    /// Starts claims for the lanes in line while memory and the claim limit
    /// allow.
    fn start_claims(&mut self, eps: &impl Endpoints) {
        while self.claims < MAX_CLAIMS
            && self.held < self.limits.memory_queue
            && !self.storage_paused()
        {
            let Some(id) = self.claim_queue.pop_front() else {
                return;
            };
            let now = self.now_ms();
            let may_claim = self.may_claim(&id, eps);
            let probing = matches!(self.target(&id, eps), Target::Open(_))
                && self
                    .lanes
                    .get(&id)
                    .is_some_and(|l| l.breaker.allowance(Instant::now()) == Allowance::Probe);
            let window = self.window(&id, eps);
            let memory_room = self.limits.memory_queue - self.held;
            let Some(lane) = self.lanes.get_mut(&id) else {
                continue;
            };
            lane.in_claim_queue = false;
            let due_now = lane.backlog.due.is_some_and(|d| d <= now);
            if !may_claim || !due_now || lane.backlog.claim.is_some() {
                self.remove_if_idle(&id, eps);
                continue;
            }
            let limit = if probing {
                1
            } else {
                (window - lane.held.len()).min(memory_room).min(CLAIM_PAGE)
            };
            lane.backlog.claim = Some(ClaimWatch::default());
            self.claims += 1;
            self.actions.push(Action::Claim {
                endpoint_id: id,
                after: lane.backlog.cursor,
                limit,
                now_ms: now,
            });
        }
    }

    /// An idle lane of an existing endpoint is kept (bounded by the
    /// catalog), so a steady trickle of deliveries does not build a lane per
    /// delivery; its buffers shrink back to a small size.
    fn remove_if_idle(&mut self, id: &str, eps: &impl Endpoints) {
        let Some(lane) = self.lanes.get_mut(id) else {
            return;
        };
        if !lane.is_idle() {
            return;
        }
        if eps.endpoint(id).is_some() {
            lane.held.shrink_to(IDLE_CAPACITY);
            lane.ready.shrink_to(IDLE_CAPACITY);
        } else {
            self.lanes.remove(id);
        }
    }
}

/// A timer that fired, to be handed to [`Scheduler::on_timer`].
pub struct Fired(Timer);

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When a due time (ms since the epoch) comes, on tokio's clock; at most
/// [`MAX_TIMER`] ahead.
fn instant_at(due_ms: i64, now_ms: i64) -> Instant {
    let ahead = Duration::from_millis(due_ms.saturating_sub(now_ms).max(0) as u64);
    Instant::now() + ahead.min(MAX_TIMER)
}
