//! The dispatcher: decides which delivery is attempted when. New deliveries
//! arrive in memory from the writer right after their commit (no polling);
//! retries wait in a timer queue; each endpoint has a lane that limits its
//! requests in flight. Memory is bounded by `memory_queue`: past it, work is
//! left in storage and reloaded, oldest due first, when there is room again,
//! and on start — so a restart or a huge backlog loses nothing and costs no RAM.
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
    retry::{self, Outcome},
    sender::{Report, Sender},
};
use crate::{
    admin::feed::{DeliveryChange, LiveFeed},
    catalog::CatalogHandle,
    model::{now_ms, Delivery, DeliveryStatus, DueDelivery, Endpoint, EndpointState},
    store::{Committed, Settled, Store, Writer},
};

/// How long to wait before reloading after storage refused to record results.
const STORAGE_BACKOFF: Duration = Duration::from_secs(1);

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
    /// Due deliveries may wait in storage that are not in memory.
    storage_dirty: bool,
    /// Retries not yet due were left in storage; look for the next one.
    storage_deferred: bool,
    next_scan: Option<Instant>,
    /// Send tasks report here when their request is over, which frees the
    /// endpoint's slot before the result is committed.
    attempt_done_tx: mpsc::Sender<Arc<str>>,
    attempt_done_rx: Option<mpsc::Receiver<Arc<str>>>,
}

/// Attempts whose end the dispatcher has not read yet; a send task waits when
/// it is full.
const ATTEMPT_DONE_QUEUE: usize = 1024;

#[derive(Default)]
struct Lane {
    in_flight: u32,
    ready: VecDeque<DueDelivery>,
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
            storage_dirty: true,
            storage_deferred: true,
            next_scan: None,
            attempt_done_tx,
            attempt_done_rx: Some(attempt_done_rx),
        })
    }

    pub async fn run(
        mut self,
        mut committed: mpsc::Receiver<Committed>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) {
        let Some(mut attempt_done) = self.attempt_done_rx.take() else {
            return;
        };
        loop {
            self.reload_from_storage().await;
            let next_scan = self.next_scan;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(message) = committed.recv() => self.on_committed(message),
                Some(endpoint_id) = attempt_done.recv() => self.release_slot(&endpoint_id),
                Some(message) = control.recv() => self.on_control(message),
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    let delivery = expired.into_inner();
                    self.timer_keys.remove(&delivery.id);
                    self.make_ready(delivery);
                }
                _ = sleep_until(next_scan), if next_scan.is_some() => {
                    self.next_scan = None;
                    // Load what fell due, then find the retry after it.
                    self.storage_dirty = true;
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
                    self.owned.remove(&settled.delivery.id);
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
            self.storage_dirty = true;
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
                self.owned.remove(&settled.delivery.id);
                self.storage_deferred = true;
            }
            None => {
                self.owned.remove(&settled.delivery.id);
            }
        }
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
        let limit = endpoint
            .max_in_flight
            .unwrap_or(self.config.max_in_flight)
            .max(1);
        let mut started = Vec::new();
        while lane.in_flight < limit {
            let Some(delivery) = lane.ready.pop_front() else {
                break;
            };
            lane.in_flight += 1;
            started.push(delivery);
        }
        if lane.in_flight == 0 && lane.ready.is_empty() {
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
            let report = sender.attempt(&delivery, &endpoint).await;
            let settled = settle(delivery, report, &schedule, rand::random());
            log_attempt(&settled, &endpoint.id);
            // The endpoint's slot is free as soon as its request is over; the
            // delivery itself stays owned until its result is committed. After
            // a 410 the slot stays taken until the endpoint is marked gone, so
            // nothing else is sent to it meanwhile.
            if !settled.endpoint_gone {
                let _ = attempt_done
                    .send(settled.delivery.endpoint_id.clone())
                    .await;
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

    /// Loads due deliveries that wait only in storage, when memory has room.
    async fn reload_from_storage(&mut self) {
        if self.storage_deferred && self.next_scan.is_none() {
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
        while self.storage_dirty && self.owned.len() < self.config.memory_queue / 2 {
            let limit = self.config.memory_queue;
            let due = match self.store.load_due(now_ms(), self.max_seen_id, limit).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "Could not reload deliveries from storage; trying again shortly.");
                    self.schedule_scan(Instant::now() + STORAGE_BACKOFF);
                    self.storage_dirty = false;
                    return;
                }
            };
            let complete = due.len() < limit;
            let mut adopted = 0usize;
            for delivery in due {
                if !self.owned.contains(&delivery.id) && self.owned.len() < self.config.memory_queue
                {
                    adopted += 1;
                    self.adopt(delivery);
                }
            }
            if adopted > 0 {
                tracing::debug!(adopted, "Reloaded deliveries from storage.");
            }
            self.storage_dirty = !complete;
            if adopted == 0 {
                // Everything due is already in memory; wait for room.
                break;
            }
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
