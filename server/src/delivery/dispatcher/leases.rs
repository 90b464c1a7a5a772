//! Which endpoints this daemon sends for, when several daemons share one
//! PostgreSQL database. Each endpoint is sent by one daemon at a time, the
//! holder of its lease, so its window, `max_in_flight` and breaker hold for
//! the whole cluster exactly as they do for one daemon.
//!
//! The keeper runs beside the dispatcher and tells it what changed
//! ([`LeaseNews`]); the dispatcher only ever sends for endpoints the keeper
//! has announced and not taken back. Every third of `storage.lease_timeout`
//! the keeper:
//! - marks this node alive and counts the live nodes;
//! - renews its leases (one statement); one missing from the answer was
//!   taken over by a node that found it expired: it is lost at once;
//! - takes free or expired leases up to its fair share, ceil(endpoints /
//!   live nodes), and asks the dispatcher to hand back what is above it (a
//!   node that joins gets work without anyone dying);
//! - lets go of leases on endpoints that were deleted and have nothing left
//!   to deliver, and takes those of deleted endpoints that still have
//!   deliveries and no holder, so they are dead-lettered rather than left
//!   pending forever.
//!
//! It also forwards the committer's `hookyard_deliveries` notifications for
//! endpoints it holds: that is how deliveries committed by any node reach
//! the one that sends them. A newly taken lease comes with its endpoint's
//! earliest due time, read after the lease was taken, so nothing committed
//! before the lease is missed and everything after it is notified.
//!
//! When storage cannot be reached for two thirds of the lease timeout, the
//! keeper takes every lease back from the dispatcher before they can expire
//! under it; it announces them again once a renewal succeeds.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use tokio::{
    sync::mpsc,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

use crate::{
    catalog::CatalogHandle,
    model::now_ms,
    store::{DeliveriesHint, Lease, Store},
};

/// What the keeper tells the dispatcher.
#[derive(Debug)]
pub enum LeaseNews {
    /// Send for these endpoints from now on; each with when its earliest
    /// delivery falls due, when it has one.
    Acquired(Vec<(Lease, Option<i64>)>),
    /// Stop sending for these at once: another node holds them.
    Lost(Vec<String>),
    /// Hand these back: stop starting requests, and report each with
    /// [`Released`] once nothing of it is in flight or waiting for a result.
    Release(Vec<String>),
    /// These endpoints have deliveries due at the given time.
    Due(Vec<(String, i64)>),
}

/// The dispatcher is done with a lease it was asked to hand back.
#[derive(Debug)]
pub struct Released(pub Lease);

pub struct Keeper {
    store: Store,
    catalog: Arc<CatalogHandle>,
    lease: Duration,
    news: mpsc::Sender<LeaseNews>,
    released: mpsc::UnboundedReceiver<Released>,
    /// What the dispatcher was told it holds, with the tokens.
    held: HashMap<String, i64>,
    /// Asked back and not yet released.
    releasing: HashSet<String>,
    last_renewed: Instant,
}

impl Keeper {
    pub fn new(
        store: Store,
        catalog: Arc<CatalogHandle>,
        lease: Duration,
        news: mpsc::Sender<LeaseNews>,
        released: mpsc::UnboundedReceiver<Released>,
    ) -> Keeper {
        Keeper {
            store,
            catalog,
            lease,
            news,
            released,
            held: HashMap::new(),
            releasing: HashSet::new(),
            last_renewed: Instant::now(),
        }
    }

    /// Runs until `shutdown`, then gives every lease up so the other nodes
    /// take the endpoints over at once rather than after the timeout.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut hints = self.store.watch_deliveries();
        let mut tick = tokio::time::interval(self.lease / 3);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut changes = self.catalog.changes();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.round().await,
                Ok(()) = changes.changed() => self.round().await,
                Some(Released(lease)) = self.released.recv() => self.release(lease).await,
                Some(hint) = recv_hint(&mut hints) => self.forward(hint).await,
            }
            if self.news.is_closed() {
                break;
            }
        }
        if let Err(error) = self.store.leave_cluster().await {
            tracing::warn!(%error, "Could not give up this node's leases; other nodes take its endpoints over when they expire.");
        }
    }

    /// One round: heartbeat, renew, rebalance.
    async fn round(&mut self) {
        let live = match self.store.heartbeat(self.lease).await {
            Ok(live) => live.max(1),
            Err(error) => return self.storage_failed(error).await,
        };
        let renewed = match self.store.renew_endpoint_leases(self.lease).await {
            Ok(renewed) => renewed,
            Err(error) => return self.storage_failed(error).await,
        };
        self.last_renewed = Instant::now();
        self.reconcile(renewed).await;
        let endpoints: Vec<String> = self
            .catalog
            .get()
            .endpoint_ids()
            .map(str::to_string)
            .collect();
        let share = endpoints.len().div_ceil(live as usize);
        let in_catalog: HashSet<&str> = endpoints.iter().map(String::as_str).collect();
        let mine = self
            .held
            .keys()
            .filter(|id| in_catalog.contains(id.as_str()) && !self.releasing.contains(*id))
            .count();
        if mine < share {
            let wanted: Vec<String> = endpoints
                .iter()
                .filter(|id| !self.held.contains_key(*id))
                .cloned()
                .collect();
            self.acquire(&wanted, share - mine).await;
        } else if mine > share {
            let extra: Vec<String> = self
                .held
                .keys()
                .filter(|id| in_catalog.contains(id.as_str()) && !self.releasing.contains(*id))
                .take(mine - share)
                .cloned()
                .collect();
            self.releasing.extend(extra.iter().cloned());
            self.tell(LeaseNews::Release(extra)).await;
        }
        let deleted: Vec<String> = self
            .held
            .keys()
            .filter(|id| !in_catalog.contains(id.as_str()))
            .cloned()
            .collect();
        self.drop_finished(deleted).await;
        self.adopt_orphans().await;
    }

    /// Leases endpoints that were deleted while no node held them and still
    /// have deliveries: the dispatcher finds them gone and records what is
    /// left as dead ("no longer exists"), as it does for an endpoint it held
    /// when deleted; then the lease goes. Any node may adopt them.
    async fn adopt_orphans(&mut self) {
        let orphans = match self.store.orphaned_endpoints().await {
            Ok(orphans) => orphans,
            Err(error) => {
                tracing::debug!(%error, "Could not look for deliveries of deleted endpoints.");
                return;
            }
        };
        let orphans: Vec<String> = orphans
            .into_iter()
            .filter(|id| !self.held.contains_key(id))
            .collect();
        if !orphans.is_empty() {
            let count = orphans.len();
            self.acquire(&orphans, count).await;
        }
    }

    /// Aligns what the dispatcher holds with what storage says this node
    /// holds.
    async fn reconcile(&mut self, renewed: Vec<Lease>) {
        let renewed: HashMap<String, i64> = renewed
            .into_iter()
            .map(|l| (l.endpoint_id, l.token))
            .collect();
        let lost: Vec<String> = self
            .held
            .iter()
            .filter(|(id, token)| renewed.get(*id) != Some(*token))
            .map(|(id, _)| id.clone())
            .collect();
        if !lost.is_empty() {
            tracing::warn!(endpoints = ?lost, "Endpoint leases were taken over by another node; this node stops sending for them.");
            for id in &lost {
                self.held.remove(id);
                self.releasing.remove(id);
            }
            self.tell(LeaseNews::Lost(lost)).await;
        }
        // Held in storage but not announced: taken back during an outage.
        let regained: Vec<Lease> = renewed
            .into_iter()
            .filter(|(id, _)| !self.held.contains_key(id))
            .map(|(endpoint_id, token)| Lease { endpoint_id, token })
            .collect();
        self.announce(regained).await;
    }

    async fn acquire(&mut self, wanted: &[String], limit: usize) {
        match self
            .store
            .acquire_endpoint_leases(wanted, limit, self.lease)
            .await
        {
            Ok(taken) => {
                if !taken.is_empty() {
                    tracing::info!(endpoints = taken.len(), "Took endpoint leases.");
                }
                self.announce(taken).await;
            }
            Err(error) => {
                tracing::warn!(%error, "Could not take endpoint leases; trying again shortly.")
            }
        }
    }

    /// Tells the dispatcher about leases it now holds, with their backlog.
    async fn announce(&mut self, leases: Vec<Lease>) {
        if leases.is_empty() {
            return;
        }
        let ids: Vec<String> = leases.iter().map(|l| l.endpoint_id.clone()).collect();
        for lease in &leases {
            self.held.insert(lease.endpoint_id.clone(), lease.token);
        }
        // Read after the leases were taken: whatever committed before is
        // here, whatever commits after is notified.
        let due: HashMap<String, i64> = match self.store.due_of(&ids).await {
            Ok(due) => due.into_iter().collect(),
            Err(error) => {
                tracing::warn!(%error, "Could not read the backlog of newly leased endpoints; treating them as due now.");
                ids.iter().map(|id| (id.clone(), now_ms())).collect()
            }
        };
        let news = leases
            .into_iter()
            .map(|lease| {
                let at = due.get(&lease.endpoint_id).copied();
                (lease, at)
            })
            .collect();
        self.tell(LeaseNews::Acquired(news)).await;
    }

    /// The dispatcher drained an endpoint it was asked to hand back.
    async fn release(&mut self, lease: Lease) {
        if self.held.get(&lease.endpoint_id) != Some(&lease.token) {
            return;
        }
        self.releasing.remove(&lease.endpoint_id);
        self.held.remove(&lease.endpoint_id);
        if let Err(error) = self
            .store
            .release_endpoint_lease(&lease.endpoint_id, lease.token)
            .await
        {
            tracing::warn!(%error, endpoint = %lease.endpoint_id, "Could not give up an endpoint lease; it expires by itself.");
        }
    }

    /// Deleted endpoints whose deliveries are all settled: nothing is left
    /// to send, the lease goes.
    async fn drop_finished(&mut self, deleted: Vec<String>) {
        if deleted.is_empty() {
            return;
        }
        let Ok(due) = self.store.due_of(&deleted).await else {
            return;
        };
        let still_due: HashSet<String> = due.into_iter().map(|(id, _)| id).collect();
        let done: Vec<String> = deleted
            .into_iter()
            .filter(|id| !still_due.contains(id))
            .collect();
        for id in &done {
            if let Some(token) = self.held.remove(id) {
                self.releasing.remove(id);
                let _ = self.store.release_endpoint_lease(id, token).await;
            }
        }
        if !done.is_empty() {
            self.tell(LeaseNews::Lost(done)).await;
        }
    }

    /// Passes on notifications for endpoints held here; after notifications
    /// may have been lost, reads the backlog of every one held.
    async fn forward(&mut self, hint: DeliveriesHint) {
        match hint {
            DeliveriesHint::Endpoints(ids) => {
                let now = now_ms();
                let due: Vec<(String, i64)> = ids
                    .into_iter()
                    .filter(|id| self.held.contains_key(id))
                    .map(|id| (id, now))
                    .collect();
                if !due.is_empty() {
                    self.tell(LeaseNews::Due(due)).await;
                }
            }
            DeliveriesHint::Any => {
                let ids: Vec<String> = self.held.keys().cloned().collect();
                match self.store.due_of(&ids).await {
                    Ok(due) if !due.is_empty() => self.tell(LeaseNews::Due(due)).await,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "Could not read the backlog of leased endpoints.")
                    }
                }
            }
        }
    }

    /// Storage is unreachable: once the leases may be about to expire, the
    /// dispatcher stops sending for them.
    async fn storage_failed(&mut self, error: crate::store::Error) {
        tracing::warn!(%error, "Could not renew endpoint leases; trying again shortly.");
        if self.held.is_empty() || self.last_renewed.elapsed() < self.lease * 2 / 3 {
            return;
        }
        let lost: Vec<String> = self.held.drain().map(|(id, _)| id).collect();
        self.releasing.clear();
        tracing::warn!(
            endpoints = lost.len(),
            "Leases could not be renewed in time; this node stops sending until storage answers."
        );
        self.tell(LeaseNews::Lost(lost)).await;
    }

    async fn tell(&self, news: LeaseNews) {
        // The dispatcher has stopped when this fails; `run` ends next.
        let _ = self.news.send(news).await;
    }
}

async fn recv_hint(hints: &mut Option<mpsc::Receiver<DeliveriesHint>>) -> Option<DeliveriesHint> {
    match hints {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
