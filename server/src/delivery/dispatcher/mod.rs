//! The dispatcher: gets committed deliveries to their endpoints. It runs the
//! scheduler (`schedule`: windows, claims, fairness, breakers, timers; no
//! I/O) and carries out what it decides: attempts as tasks of their own
//! (`attempt`), claims as reads of one endpoint's due deliveries from
//! storage, and dead letters for endpoints that no longer exist.
//!
//! New deliveries arrive in memory from the writer right after their commit
//! (no polling); storage is read back on start, for an endpoint's backlog
//! beyond its window, and when a retry left in storage falls due. The
//! dispatcher never waits on the writer (the writer waits on it); attempt
//! results go to the writer from the attempt tasks.
//!
//! When several daemons share a PostgreSQL database, each sends only for the
//! endpoints whose lease it holds (`leases`), and every new delivery is read
//! from storage by its endpoint's holder, prompted by the notification its
//! commit sends, whichever daemon committed it; each result is stored fenced
//! by the lease's token.

mod attempt;
mod lane;
pub mod leases;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::{collections::HashMap, sync::Arc, time::Duration};

pub use attempt::settle;
use attempt::{AttemptEnd, AttemptTask};
use leases::{Keeper, LeaseNews, Released};
use schedule::{Action, Claimed, Clock, Endpoints, Limits, Scheduler};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{health::EndpointHealth, sender::Sender};
use crate::{
    admin::feed::{DeliveryChange, LiveFeed},
    catalog::{Catalog, CatalogHandle},
    model::{now_ms, Delivery, DeliveryStatus, DueCursor, DueDelivery, Endpoint, PARKED_MS},
    store::{Committed, Lease, Settled, Store, Writer},
};

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    pub memory_queue: usize,
    pub window: usize,
    pub max_in_flight: u32,
    pub max_concurrent: usize,
    pub retry_schedule: Vec<Duration>,
    /// How long an endpoint lease outlives its last renewal (several
    /// daemons on PostgreSQL).
    pub lease_timeout: Duration,
}

/// Requests from the Admin API.
#[derive(Debug)]
pub enum Control {
    /// Attempt this delivery now (it was marked due in storage).
    RetryNow(DueDelivery),
    /// This endpoint has deliveries due now in storage (recovered).
    Backlog(String),
    /// New deliveries of this endpoint were stored due now outside the
    /// writer (a replay), with ids up to `max_id`: claims may read them.
    /// One the writer committed meanwhile with a lower id may then be
    /// claimed before its handover arrives (the handover of a delivery
    /// still held is ignored); delivery stays at least once.
    Stored { endpoint_id: String, max_id: u64 },
}

impl Endpoints for Catalog {
    fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        Catalog::endpoint(self, id)
    }
}

/// The catalog as the scheduler sees it: only leased endpoints are owned
/// when several daemons share the database.
struct Sendable<'a> {
    catalog: &'a Catalog,
    leases: Option<&'a HashMap<Arc<str>, i64>>,
}

impl Endpoints for Sendable<'_> {
    fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.catalog.endpoint(id)
    }

    fn owns(&self, id: &str) -> bool {
        self.leases.is_none_or(|leases| leases.contains_key(id))
    }
}

/// What the scheduler may send for, from the dispatcher's fields (a macro so
/// the borrow stays on those fields, apart from the scheduler's).
macro_rules! sendable {
    ($self:ident, $catalog:expr) => {
        &Sendable {
            catalog: $catalog,
            leases: $self.cluster.as_ref().map(|c| &c.leases),
        }
    };
}

/// The endpoints this daemon holds leases on, when it shares the database.
struct Cluster {
    /// Owned: sent for. With the lease token every result is stored under.
    leases: HashMap<Arc<str>, i64>,
    /// Asked back by the keeper: nothing new is sent; handed back once
    /// nothing is in flight.
    releasing: HashMap<Arc<str>, i64>,
    news: mpsc::Receiver<LeaseNews>,
    released: mpsc::UnboundedSender<Released>,
    keeper: Option<Keeper>,
}

impl Cluster {
    /// The token a request for this endpoint is made under; one that
    /// matches no lease when the endpoint is not held (nothing it stores
    /// then counts).
    fn token(&self, endpoint_id: &str) -> i64 {
        self.leases
            .get(endpoint_id)
            .or_else(|| self.releasing.get(endpoint_id))
            .copied()
            .unwrap_or(-1)
    }
}

pub struct Dispatcher {
    scheduler: Scheduler,
    store: Store,
    writer: Writer,
    catalog: Arc<CatalogHandle>,
    sender: Arc<Sender>,
    feed: LiveFeed,
    /// Which endpoints have failed for how long (auto-disable).
    health: EndpointHealth,
    default_schedule: Arc<[Duration]>,
    /// Highest delivery id announced by the writer; storage rows above it are
    /// still on their way through the channel and must not be claimed too.
    max_seen_id: u64,
    claims_tx: mpsc::Sender<Claimed>,
    claims_rx: mpsc::Receiver<Claimed>,
    /// Attempt tasks report the end of their request here (one message per
    /// task, so the channel holds at most one per request in flight).
    ends_tx: mpsc::UnboundedSender<AttemptEnd>,
    ends_rx: mpsc::UnboundedReceiver<AttemptEnd>,
    actions: Vec<Action>,
    /// `None` with one daemon per database (SQLite).
    cluster: Option<Cluster>,
}

impl Dispatcher {
    pub async fn new(
        config: DispatcherConfig,
        store: Store,
        writer: Writer,
        catalog: Arc<CatalogHandle>,
        sender: Arc<Sender>,
        feed: LiveFeed,
        health: EndpointHealth,
    ) -> crate::store::Result<Dispatcher> {
        let cluster = store.is_shared().then(|| {
            let (news_tx, news) = mpsc::channel(256);
            let (released, released_rx) = mpsc::unbounded_channel();
            Cluster {
                leases: HashMap::new(),
                releasing: HashMap::new(),
                news,
                released,
                keeper: Some(Keeper::new(
                    store.clone(),
                    catalog.clone(),
                    config.lease_timeout,
                    news_tx,
                    released_rx,
                )),
            }
        });
        // Shared: every row is read from storage by its endpoint's holder,
        // so no id is waiting in the writer's channel to be excluded; the
        // backlog comes with each lease.
        let unparked = store.unpark_orphans().await?;
        if unparked > 0 {
            tracing::info!(
                unparked,
                "Deliveries waiting behind ones no longer pending are due now."
            );
        }
        let (max_seen_id, backlog) = match cluster {
            Some(_) => (i64::MAX as u64, Vec::new()),
            None => (store.max_delivery_id().await?, store.due_endpoints().await?),
        };
        let limits = Limits {
            memory_queue: config.memory_queue.max(1),
            window: config.window.max(1),
            max_in_flight: config.max_in_flight.max(1),
            max_concurrent: config.max_concurrent.max(1),
        };
        let mut scheduler = Scheduler::new(limits, Clock::wall());
        // Whatever the last run left behind is due or will be.
        scheduler.stored(backlog, &**catalog.get());
        let (claims_tx, claims_rx) = mpsc::channel(schedule::MAX_CLAIMS);
        let (ends_tx, ends_rx) = mpsc::unbounded_channel();
        Ok(Dispatcher {
            scheduler,
            store,
            writer,
            catalog,
            sender,
            feed,
            health,
            default_schedule: config.retry_schedule.into(),
            max_seen_id,
            claims_tx,
            claims_rx,
            ends_tx,
            ends_rx,
            actions: Vec::new(),
            cluster,
        })
    }

    pub async fn run(
        mut self,
        mut committed: mpsc::Receiver<Committed>,
        mut control: mpsc::Receiver<Control>,
        shutdown: CancellationToken,
    ) {
        let mut changes: watch::Receiver<u64> = self.catalog.changes();
        let keeper = self
            .cluster
            .as_mut()
            .and_then(|c| c.keeper.take())
            .map(|keeper| tokio::spawn(keeper.run(shutdown.clone())));
        loop {
            self.carry_out();
            self.hand_back_drained();
            let catalog = self.catalog.clone();
            let catalog = &**catalog.get();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(message) = committed.recv() => self.on_committed(message),
                Some(claimed) = self.claims_rx.recv() => {
                    self.scheduler.claimed(claimed, sendable!(self, catalog));
                }
                Some(end) = self.ends_rx.recv() => {
                    self.scheduler.attempt_ended(&end.endpoint_id, end.reached, end.gone, sendable!(self, catalog));
                    crate::metrics::in_flight(&end.endpoint_id, -1.0);
                    crate::metrics::breaker(&end.endpoint_id, self.scheduler.breaker_state(&end.endpoint_id));
                }
                Some(control) = control.recv() => match control {
                    Control::RetryNow(delivery) => self.scheduler.retry_now(delivery, sendable!(self, catalog)),
                    Control::Backlog(endpoint_id) => {
                        let due = vec![(endpoint_id, now_ms())];
                        self.scheduler.stored(due, sendable!(self, catalog));
                    }
                    Control::Stored { endpoint_id, max_id } => {
                        self.max_seen_id = self.max_seen_id.max(max_id);
                        let due = vec![(endpoint_id, now_ms())];
                        self.scheduler.stored(due, sendable!(self, catalog));
                    }
                },
                Some(fired) = self.scheduler.next_timer() => {
                    self.scheduler.on_timer(fired, sendable!(self, catalog));
                }
                Ok(()) = changes.changed() => self.scheduler.catalog_changed(sendable!(self, catalog)),
                Some(news) = lease_news(&mut self.cluster) => self.on_lease_news(news, catalog),
            }
        }
        if let Some(keeper) = keeper {
            // It gives this node's leases up before the daemon exits.
            let _ = keeper.await;
        }
        tracing::info!(
            in_memory = self.scheduler.held(),
            in_flight = self.scheduler.in_flight(),
            "Dispatcher stopped."
        );
    }

    /// What the lease keeper says: endpoints taken, lost, asked back, or
    /// with new deliveries in storage.
    fn on_lease_news(&mut self, news: LeaseNews, catalog: &Catalog) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let changed: Vec<Arc<str>> = match news {
            LeaseNews::Acquired(taken) => {
                let mut ids = Vec::with_capacity(taken.len());
                let mut backlog = Vec::new();
                for (lease, due) in taken {
                    let id: Arc<str> = lease.endpoint_id.as_str().into();
                    cluster.releasing.remove(&id);
                    cluster.leases.insert(id.clone(), lease.token);
                    if let Some(due) = due {
                        backlog.push((lease.endpoint_id, due));
                    }
                    ids.push(id);
                }
                self.scheduler.stored(backlog, sendable!(self, catalog));
                ids
            }
            LeaseNews::Lost(ids) => ids
                .into_iter()
                .map(|id| {
                    let id: Arc<str> = id.into();
                    cluster.leases.remove(&id);
                    cluster.releasing.remove(&id);
                    id
                })
                .collect(),
            LeaseNews::Release(ids) => ids
                .into_iter()
                .filter_map(|id| {
                    let (id, token) = cluster.leases.remove_entry(id.as_str())?;
                    cluster.releasing.insert(id.clone(), token);
                    Some(id)
                })
                .collect(),
            LeaseNews::Due(due) => {
                self.scheduler.stored(due, sendable!(self, catalog));
                return;
            }
        };
        self.scheduler
            .ownership_changed(&changed, sendable!(self, catalog));
    }

    /// Leases asked back whose endpoint has nothing left in flight or
    /// waiting for a result go back to the keeper.
    fn hand_back_drained(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.releasing.is_empty() {
            return;
        }
        let scheduler = &self.scheduler;
        cluster.releasing.retain(|id, token| {
            if !scheduler.holds_nothing(id) {
                return true;
            }
            let _ = cluster.released.send(Released(Lease {
                endpoint_id: id.to_string(),
                token: *token,
            }));
            false
        });
    }

    fn on_committed(&mut self, message: Committed) {
        let catalog = self.catalog.get();
        let catalog = &**catalog;
        match message {
            Committed::Deliveries(deliveries) => {
                let shared = self.cluster.is_some();
                for delivery in deliveries {
                    self.max_seen_id = self.max_seen_id.max(delivery.id);
                    self.announce(&delivery, DeliveryStatus::Pending, None);
                    // Shared: its endpoint's holder reads it from storage.
                    // Parked: storage makes it due when the delivery before
                    // it with its ordering key finishes.
                    if !shared && delivery.due_ms != PARKED_MS {
                        self.scheduler.deliver(delivery, catalog);
                    }
                }
            }
            Committed::Settled(results) => {
                if results.iter().any(|s| s.endpoint_gone) {
                    self.reload_catalog();
                }
                let now = now_ms();
                for settled in &results {
                    self.announce(&settled.delivery, settled.status, Some(settled));
                    if let Some(endpoint) = catalog.endpoint(&settled.delivery.endpoint_id) {
                        self.health.record(endpoint, settled, now);
                    }
                }
                self.scheduler.settled(&results, sendable!(self, catalog));
            }
            Committed::SettleFailed(results) => {
                tracing::warn!(
                    results = results.len(),
                    "Attempt results could not be stored; sending pauses and the deliveries are attempted again later."
                );
                self.scheduler
                    .settle_failed(&results, sendable!(self, catalog));
            }
        }
    }

    /// Does what the scheduler decided.
    fn carry_out(&mut self) {
        let mut actions = std::mem::take(&mut self.actions);
        self.scheduler.take_actions(&mut actions);
        for action in actions.drain(..) {
            match action {
                Action::Send { delivery, endpoint } => {
                    self.announce(&delivery, DeliveryStatus::InFlight, None);
                    crate::metrics::in_flight(&endpoint.id, 1.0);
                    AttemptTask {
                        sender: self.sender.clone(),
                        writer: self.writer.clone(),
                        ends: self.ends_tx.clone(),
                        default_schedule: self.default_schedule.clone(),
                        lease: self.lease_of(&delivery.endpoint_id),
                    }
                    .spawn(delivery, endpoint);
                }
                Action::Claim {
                    endpoint_id,
                    after,
                    limit,
                    now_ms,
                } => self.claim(endpoint_id, after, limit, now_ms),
                Action::Abandon { delivery, reason } => self.abandon(delivery, reason),
            }
        }
        self.actions = actions;
    }

    /// Reads a page of one endpoint's due deliveries in the background.
    fn claim(&self, endpoint_id: Arc<str>, after: Option<DueCursor>, limit: usize, now_ms: i64) {
        let (store, claims) = (self.store.clone(), self.claims_tx.clone());
        let max_id = self.max_seen_id;
        tokio::spawn(async move {
            let read = async {
                let rows = store
                    .claim_due(&endpoint_id, now_ms, max_id, after, limit)
                    .await?;
                let next_due = if rows.len() < limit {
                    store.next_due(&endpoint_id, now_ms).await?
                } else {
                    None
                };
                Ok::<_, crate::store::Error>((rows, next_due))
            };
            let claimed = match read.await {
                Ok((rows, next_due)) => Claimed {
                    endpoint_id,
                    asked: limit,
                    rows: Ok(rows),
                    next_due,
                },
                Err(error) => {
                    tracing::warn!(%error, endpoint = %endpoint_id, "Could not read deliveries from storage; trying again shortly.");
                    Claimed {
                        endpoint_id,
                        asked: limit,
                        rows: Err(()),
                        next_due: None,
                    }
                }
            };
            let _ = claims.send(claimed).await;
        });
    }

    /// The lease token results for this endpoint are stored under.
    fn lease_of(&self, endpoint_id: &str) -> Option<i64> {
        self.cluster.as_ref().map(|c| c.token(endpoint_id))
    }

    /// The endpoint no longer exists: the delivery cannot be made.
    fn abandon(&self, mut delivery: DueDelivery, reason: String) {
        let writer = self.writer.clone();
        let lease = self.lease_of(&delivery.endpoint_id);
        delivery.due_ms = now_ms();
        tokio::spawn(async move {
            let settled = Settled {
                delivery,
                attempt: None,
                status: DeliveryStatus::Dead,
                next_attempt_ms: None,
                last_error: Some(reason),
                endpoint_gone: false,
                lease,
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
                also_subscriptions: Vec::new(),
                ordering_key: None,
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

/// The keeper's next message; never, with one daemon per database.
async fn lease_news(cluster: &mut Option<Cluster>) -> Option<LeaseNews> {
    match cluster {
        Some(c) => c.news.recv().await,
        None => std::future::pending().await,
    }
}
