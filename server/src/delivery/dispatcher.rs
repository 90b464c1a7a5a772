//! The dispatcher: decides which delivery is attempted when. New deliveries
//! arrive in memory from the writer right after their commit (no polling);
//! retries wait in a timer queue; each endpoint has a lane that limits its
//! requests in flight. Memory is bounded by `memory_queue`: past it, work is
//! left in storage and reloaded, oldest due first, when there is room again,
//! and on start — so a restart or a huge backlog loses nothing and costs no RAM.
//!
//! Reloads read storage a page at a time in the background, following a
//! cursor through due order, so sending never stops while a page is read and
//! no read returns rows an earlier page of the same pass already returned.
//!
//! The dispatcher never waits on the writer (the writer waits on it); attempt
//! results go to the writer from the send tasks.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::{sync::CancellationToken, time::DelayQueue};

use super::{
    breaker::{self, Allowance, Breaker},
    retry::{self, Outcome},
    sender::{Report, Sender},
};
use crate::{
    admin::feed::{DeliveryChange, LiveFeed},
    catalog::CatalogHandle,
    model::{now_ms, Delivery, DeliveryStatus, DueCursor, DueDelivery, Endpoint, EndpointState},
    store::{Committed, Settled, Store, Writer},
};

/// How long to wait before reloading after storage refused to record results.
const STORAGE_BACKOFF: Duration = Duration::from_secs(1);

/// Deliveries read from storage per page: enough that reads are few, small
/// enough that one read adds little to memory and returns quickly.
const RELOAD_PAGE: usize = 1024;

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub memory_queue: usize,
    pub max_in_flight: u32,
    pub retry_schedule: Vec<Duration>,
}

/// Requests from the Admin API.
#[derive(Debug)]
pub enum Control {
    /// Attempt this delivery now (it was marked due in storage).
    RetryNow(DueDelivery),
}

pub struct Dispatcher {
    config: DispatcherConfig,
    store: Store,
    writer: Writer,
    catalog: Arc<CatalogHandle>,
    sender: Arc<Sender>,
    feed: LiveFeed,
    /// Every delivery held in memory: ready, in flight, waiting for its result
    /// to commit, or waiting for a retry timer.
    owned: HashSet<u64>,
    lanes: HashMap<Arc<str>, Lane>,
    timers: DelayQueue<DueDelivery>,
    timer_keys: HashMap<u64, tokio_util::time::delay_queue::Key>,
    /// Highest delivery id announced by the writer; storage rows above it are
    /// still on their way through the channel and must not be loaded twice.
    max_seen_id: u64,
    reload: Reload,
    pages_tx: mpsc::Sender<Page>,
    pages_rx: Option<mpsc::Receiver<Page>>,
    /// Retries not yet due were left in storage; look for the next one.
    storage_deferred: bool,
    next_scan: Option<Instant>,
    /// Send tasks report here when their request is over, which frees the
    /// endpoint's slot before the result is committed.
    attempt_done_tx: mpsc::Sender<AttemptEnd>,
    attempt_done_rx: Option<mpsc::Receiver<AttemptEnd>>,
    /// Paused endpoints, keyed to when their probe may go out.
    resumes: DelayQueue<Arc<str>>,
    resuming: HashSet<Arc<str>>,
}

/// A request is over: the endpoint's slot is free.
struct AttemptEnd {
    endpoint_id: Arc<str>,
    /// The endpoint answered (anything but 502/503/504).
    reached: bool,
}

/// Attempts whose end the dispatcher has not read yet; a send task waits when
/// it is full.
const ATTEMPT_DONE_QUEUE: usize = 1024;

/// Where reloading from storage stands. A pass reads due order from the
/// start, a page at a time, until a page comes back short.
#[derive(Default)]
struct Reload {
    /// Due deliveries may wait in storage that are not in memory.
    dirty: bool,
    /// Storage was marked dirty since the current pass began, possibly behind
    /// its cursor: another pass is needed after this one.
    marked: bool,
    /// A page is being read.
    reading: bool,
    /// The last delivery the current pass handled; `None` between passes.
    cursor: Option<DueCursor>,
    /// Deliveries released while a page was being read: the page may show
    /// them as they were before their result was committed.
    released: HashSet<u64>,
}

/// A page read from storage, and how many rows were asked for.
struct Page {
    asked: usize,
    due: crate::store::Result<Vec<DueDelivery>>,
}

#[derive(Default)]
struct Lane {
    in_flight: u32,
    ready: VecDeque<DueDelivery>,
    breaker: Breaker,
}

impl Dispatcher {
    pub async fn new(
        config: DispatcherConfig,
        store: Store,
        writer: Writer,
        catalog: Arc<CatalogHandle>,
        sender: Arc<Sender>,
        feed: LiveFeed,
    ) -> crate::store::Result<Dispatcher> {
        let max_seen_id = store.max_delivery_id().await?;
        let (attempt_done_tx, attempt_done_rx) = mpsc::channel(ATTEMPT_DONE_QUEUE);
        let (pages_tx, pages_rx) = mpsc::channel(1);
        Ok(Dispatcher {
            config,
            store,
            writer,
            catalog,
            sender,
            feed,
            owned: HashSet::new(),
            lanes: HashMap::new(),
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
            max_seen_id,
            // Whatever the last run left behind is due or will be.
            reload: Reload {
                dirty: true,
                ..Reload::default()
            },
            pages_tx,
            pages_rx: Some(pages_rx),
            storage_deferred: true,
            next_scan: None,
            attempt_done_tx,
            attempt_done_rx: Some(attempt_done_rx),
            resumes: DelayQueue::new(),
            resuming: HashSet::new(),
        })
    }

    pub async fn run(
        mut self,
        mut committed: mpsc::Receiver<Committed>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) {
        let (Some(mut attempt_done), Some(mut pages)) =
            (self.attempt_done_rx.take(), self.pages_rx.take())
        else {
            return;
        };
        loop {
            self.look_for_next_retry().await;
            self.read_next_page();
            let next_scan = self.next_scan;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(message) = committed.recv() => self.on_committed(message),
                Some(page) = pages.recv() => self.on_page(page),
                Some(end) = attempt_done.recv() => self.on_attempt_end(end),
                Some(message) = control.recv() => self.on_control(message),
                Some(expired) = self.resumes.next(), if !self.resumes.is_empty() => {
                    let endpoint_id = expired.into_inner();
                    self.resuming.remove(&endpoint_id);
                    self.pump(endpoint_id);
                }
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    let delivery = expired.into_inner();
                    self.timer_keys.remove(&delivery.id);
                    self.make_ready(delivery);
                }
                _ = sleep_until(next_scan), if next_scan.is_some() => {
                    self.next_scan = None;
                    // Load what fell due, then find the retry after it.
                    self.mark_dirty();
                    self.storage_deferred = true;
                }
            }
        }
        tracing::info!(in_memory = self.owned.len(), "Dispatcher stopped.");
    }

    fn on_committed(&mut self, message: Committed) {
        match message {
            Committed::Deliveries(deliveries) => {
                for delivery in deliveries {
                    self.max_seen_id = self.max_seen_id.max(delivery.id);
                    self.announce(&delivery, DeliveryStatus::Pending, None);
                    self.adopt(delivery);
                }
            }
            Committed::Settled(results) => {
                for settled in results {
                    self.on_settled(settled);
                }
            }
            Committed::SettleFailed(results) => {
                for settled in results {
                    if settled.endpoint_gone {
                        self.release_slot(&settled.delivery.endpoint_id);
                    }
                    self.release(settled.delivery.id);
                }
                // Storage still has them as they were; try again after a pause
                // rather than hammering the endpoint while storage is down.
                self.schedule_scan(Instant::now() + STORAGE_BACKOFF);
            }
        }
    }

    fn on_control(&mut self, message: Control) {
        match message {
            Control::RetryNow(delivery) => {
                if let Some(key) = self.timer_keys.get(&delivery.id) {
                    self.timers.reset(key, Duration::ZERO);
                } else if !self.owned.contains(&delivery.id) {
                    self.adopt(delivery);
                }
            }
        }
    }

    /// Takes a due delivery into memory if there is room; otherwise leaves it
    /// in storage for a later reload.
    fn adopt(&mut self, delivery: DueDelivery) {
        if self.owned.len() >= self.config.memory_queue {
            self.mark_dirty();
            return;
        }
        if self.owned.insert(delivery.id) {
            self.make_ready(delivery);
        }
    }

    fn on_settled(&mut self, settled: Settled) {
        if settled.endpoint_gone {
            self.reload_catalog();
            self.release_slot(&settled.delivery.endpoint_id);
        }
        self.announce(&settled.delivery, settled.status, Some(&settled));
        let retry_at = match (settled.status, settled.next_attempt_ms) {
            (DeliveryStatus::Failed, Some(at)) => Some(at),
            _ => None,
        };
        match retry_at {
            Some(at) if self.timers.len() < self.config.memory_queue / 2 => {
                let delay = Duration::from_millis((at - now_ms()).max(0) as u64);
                let id = settled.delivery.id;
                let mut delivery = settled.delivery;
                delivery.due_ms = at;
                let key = self.timers.insert(delivery, delay);
                self.timer_keys.insert(id, key);
            }
            Some(_) => {
                self.release(settled.delivery.id);
                self.storage_deferred = true;
            }
            None => self.release(settled.delivery.id),
        }
    }

    /// The delivery is no longer held in memory; storage has its state.
    fn release(&mut self, id: u64) {
        self.owned.remove(&id);
        if self.reload.reading {
            self.reload.released.insert(id);
        }
    }

    fn mark_dirty(&mut self) {
        self.reload.dirty = true;
        self.reload.marked = true;
    }

    fn on_attempt_end(&mut self, end: AttemptEnd) {
        if let Some(lane) = self.lanes.get_mut(&end.endpoint_id) {
            lane.breaker.record(end.reached, Instant::now());
        }
        self.release_slot(&end.endpoint_id);
    }

    fn release_slot(&mut self, endpoint_id: &Arc<str>) {
        if let Some(lane) = self.lanes.get_mut(endpoint_id) {
            lane.in_flight = lane.in_flight.saturating_sub(1);
        }
        self.pump(endpoint_id.clone());
    }

    fn make_ready(&mut self, delivery: DueDelivery) {
        let endpoint_id = delivery.endpoint_id.clone();
        self.lanes
            .entry(endpoint_id.clone())
            .or_default()
            .ready
            .push_back(delivery);
        self.pump(endpoint_id);
    }

    /// Starts as many of the lane's ready deliveries as its limit allows.
    fn pump(&mut self, endpoint_id: Arc<str>) {
        let catalog = self.catalog.get();
        let endpoint = catalog.endpoint(&endpoint_id).cloned();
        drop(catalog);
        let Some(lane) = self.lanes.get_mut(&endpoint_id) else {
            return;
        };
        let Some(endpoint) = endpoint.filter(|e| e.state == EndpointState::Enabled) else {
            let abandoned: Vec<_> = lane.ready.drain(..).collect();
            for delivery in abandoned {
                self.abandon(delivery, &endpoint_id);
            }
            return;
        };
        let limit = match lane.breaker.allowance(Instant::now()) {
            Allowance::Open => endpoint
                .max_in_flight
                .unwrap_or(self.config.max_in_flight)
                .max(1),
            Allowance::Probe => 1,
            Allowance::Paused { until } => {
                if self.resuming.insert(endpoint_id.clone()) {
                    self.resumes.insert_at(endpoint_id, until);
                }
                return;
            }
        };
        let mut started = Vec::new();
        while lane.in_flight < limit {
            let Some(delivery) = lane.ready.pop_front() else {
                break;
            };
            lane.in_flight += 1;
            started.push(delivery);
        }
        if lane.in_flight == 0 && lane.ready.is_empty() && lane.breaker.is_healthy() {
            self.lanes.remove(&endpoint_id);
        }
        for delivery in started {
            self.announce(&delivery, DeliveryStatus::InFlight, None);
            self.spawn_attempt(delivery, endpoint.clone());
        }
    }

    fn spawn_attempt(&self, delivery: DueDelivery, endpoint: Arc<Endpoint>) {
        let sender = self.sender.clone();
        let writer = self.writer.clone();
        let attempt_done = self.attempt_done_tx.clone();
        let schedule = endpoint
            .retry_schedule
            .clone()
            .unwrap_or_else(|| self.config.retry_schedule.clone());
        tokio::spawn(async move {
            // Boxed so the task, which may wait on the writer long after the
            // request is over, does not keep the request's state inline.
            let report = Box::pin(sender.attempt(&delivery, &endpoint)).await;
            let settled = settle(delivery, report, &schedule, rand::random());
            log_attempt(&settled, &endpoint.id);
            // The endpoint's slot is free as soon as its request is over; the
            // delivery itself stays owned until its result is committed. After
            // a 410 the slot stays taken until the endpoint is marked gone, so
            // nothing else is sent to it meanwhile.
            if !settled.endpoint_gone {
                let end = AttemptEnd {
                    endpoint_id: settled.delivery.endpoint_id.clone(),
                    reached: breaker::reached(settled.attempt.as_ref().and_then(|a| a.status_code)),
                };
                let _ = attempt_done.send(end).await;
            }
            if writer.settle(settled).await.is_err() {
                tracing::warn!(endpoint = %endpoint.id, "Writer stopped; the attempt result is lost and the delivery will be retried.");
            }
        });
    }

    /// The endpoint is gone, disabled or deleted: the delivery cannot be made.
    fn abandon(&self, mut delivery: DueDelivery, endpoint_id: &str) {
        let writer = self.writer.clone();
        let reason = match self.catalog.get().endpoint(endpoint_id) {
            Some(e) => format!("endpoint `{endpoint_id}` is {}", e.state.as_str()),
            None => format!("endpoint `{endpoint_id}` no longer exists"),
        };
        delivery.due_ms = now_ms();
        tokio::spawn(async move {
            let settled = Settled {
                delivery,
                attempt: None,
                status: DeliveryStatus::Dead,
                next_attempt_ms: None,
                last_error: Some(reason),
                endpoint_gone: false,
            };
            let _ = writer.settle(settled).await;
        });
    }

    /// An endpoint was disabled by its answer: routing and the lanes must see it.
    fn reload_catalog(&self) {
        let catalog = self.catalog.clone();
        tokio::spawn(async move {
            if let Err(error) = catalog.reload().await {
                tracing::warn!(%error, "Could not reload the catalog after disabling an endpoint.");
            }
        });
    }

    /// Finds when the earliest retry left in storage falls due.
    async fn look_for_next_retry(&mut self) {
        if !self.storage_deferred || self.next_scan.is_some() {
            return;
        }
        self.storage_deferred = false;
        match self.store.next_due_after(now_ms()).await {
            Ok(Some(at)) => {
                let delay = Duration::from_millis((at - now_ms()).max(0) as u64);
                self.schedule_scan(Instant::now() + delay);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "Could not look up the next retry; trying again shortly.");
                self.storage_deferred = true;
                self.schedule_scan(Instant::now() + STORAGE_BACKOFF);
            }
        }
    }

    fn page_size(&self) -> usize {
        RELOAD_PAGE.min(self.config.memory_queue / 2).max(1)
    }

    /// Starts reading the next page of due deliveries that wait only in
    /// storage, if there may be some and memory has room for a page.
    fn read_next_page(&mut self) {
        let asked = self.page_size();
        let reload = &mut self.reload;
        if !reload.dirty || reload.reading || self.owned.len() + asked > self.config.memory_queue {
            return;
        }
        if reload.cursor.is_none() {
            reload.marked = false;
        }
        reload.reading = true;
        reload.released.clear();
        let (store, pages) = (self.store.clone(), self.pages_tx.clone());
        let (max_id, after) = (self.max_seen_id, reload.cursor);
        tokio::spawn(async move {
            let due = store.load_due(now_ms(), max_id, after, asked).await;
            let _ = pages.send(Page { asked, due }).await;
        });
    }

    /// Takes a page's deliveries into memory, skipping those already held or
    /// released while it was read, and moves the cursor past what it handled.
    fn on_page(&mut self, page: Page) {
        self.reload.reading = false;
        let due = match page.due {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "Could not reload deliveries from storage; trying again shortly.");
                self.reload.dirty = false;
                self.reload.cursor = None;
                self.schedule_scan(Instant::now() + STORAGE_BACKOFF);
                return;
            }
        };
        let short = due.len() < page.asked;
        let mut adopted = 0usize;
        let mut full = false;
        for delivery in due {
            let cursor = delivery.cursor();
            let held =
                self.owned.contains(&delivery.id) || self.reload.released.contains(&delivery.id);
            if !held {
                if self.owned.len() >= self.config.memory_queue {
                    full = true;
                    break;
                }
                adopted += 1;
                self.adopt(delivery);
            }
            self.reload.cursor = Some(cursor);
        }
        self.reload.released.clear();
        if adopted > 0 {
            tracing::debug!(adopted, "Reloaded deliveries from storage.");
        }
        if short && !full {
            // The pass reached the end of what is due.
            self.reload.cursor = None;
            self.reload.dirty = self.reload.marked;
        }
    }

    fn schedule_scan(&mut self, at: Instant) {
        self.next_scan = Some(self.next_scan.map_or(at, |current| current.min(at)));
    }

    /// Tells watchers about a state change, if anyone watches.
    fn announce(&self, delivery: &DueDelivery, status: DeliveryStatus, settled: Option<&Settled>) {
        if !self.feed.is_watched() {
            return;
        }
        let catalog = self.catalog.get();
        let subscription_name = catalog
            .subscription(&delivery.subscription_id)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let attempt = settled.and_then(|s| s.attempt.as_ref());
        let now = now_ms();
        self.feed.publish(DeliveryChange {
            time_ms: now,
            delivery: Delivery {
                id: delivery.id,
                event_seq: delivery.event.seq,
                event_id: delivery.event.id.clone(),
                event_name: delivery.event.name.clone(),
                tenant_id: delivery.event.tenant_id.clone(),
                subscription_id: delivery.subscription_id.to_string(),
                subscription_name,
                endpoint_id: delivery.endpoint_id.to_string(),
                status,
                attempts: delivery.attempts,
                last_status_code: attempt.and_then(|a| a.status_code),
                last_error: settled.and_then(|s| s.last_error.clone()),
                last_duration_ms: attempt.map(|a| a.duration_ms),
                next_attempt_ms: settled.and_then(|s| s.next_attempt_ms),
                created_ms: now,
                updated_ms: now,
            },
        });
    }
}

/// What an attempt means for the delivery: done, retry at a time, or dead.
pub fn settle(
    mut delivery: DueDelivery,
    report: Report,
    schedule: &[Duration],
    jitter: f64,
) -> Settled {
    delivery.attempts += 1;
    let error = report.attempt.error.clone();
    let (status, next_attempt_ms, last_error, endpoint_gone) = match report.outcome {
        Outcome::Success => (DeliveryStatus::Succeeded, None, None, false),
        Outcome::Gone => (
            DeliveryStatus::Dead,
            None,
            Some("endpoint answered 410 Gone; the endpoint is now disabled".to_string()),
            true,
        ),
        Outcome::Retryable { retry_after } => {
            match retry::next_delay(schedule, delivery.attempts, retry_after, jitter) {
                Some(delay) => (
                    DeliveryStatus::Failed,
                    Some(now_ms() + delay.as_millis() as i64),
                    error,
                    false,
                ),
                None => (
                    DeliveryStatus::Dead,
                    None,
                    Some(format!(
                        "retries exhausted after {} attempts; last: {}",
                        delivery.attempts,
                        error.unwrap_or_default()
                    )),
                    false,
                ),
            }
        }
    };
    Settled {
        delivery,
        attempt: Some(report.attempt),
        status,
        next_attempt_ms,
        last_error,
        endpoint_gone,
    }
}

fn log_attempt(settled: &Settled, endpoint: &str) {
    let event_id = &settled.delivery.event.id;
    let delivery = settled.delivery.id;
    let status = settled.attempt.as_ref().and_then(|a| a.status_code);
    match settled.status {
        DeliveryStatus::Succeeded => {
            tracing::debug!(%event_id, delivery, endpoint, ?status, "Delivered.")
        }
        DeliveryStatus::Dead => {
            tracing::warn!(%event_id, delivery, endpoint, ?status, error = ?settled.last_error, "Delivery is dead.")
        }
        _ => {
            tracing::info!(%event_id, delivery, endpoint, ?status, error = ?settled.last_error, "Attempt failed; will retry.")
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
