//! The live feeds: every delivery state change (`Admin.WatchDeliveries`)
//! and run change (`Admin.WatchRuns`, `flows::RunFeed`), broadcast to whoever
//! watches. Publishing is a no-op when nobody watches, and a watcher that
//! falls behind loses the oldest changes and is told how many — it never
//! slows delivery down.
//!
//! On PostgreSQL the feeds span every node sharing the database: a local
//! change also goes onto the feed bus (`store::FeedBus`) while another node
//! watches, and the other nodes' changes arrive through `NodeFeeds` and are
//! broadcast here like local ones, but never sent back onto the bus. Changes
//! lost on the way (a node's full bus queue, a dropped connection) reach
//! the watchers as a gap, counted into the next change each one gets, the
//! same way as the broadcast's own lag.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, OnceLock,
};

use tokio::sync::broadcast;

use crate::{
    flows::{RunChange, RunFeed},
    model::Delivery,
    store::{FeedBus, LocalFeeds, RemoteChange},
};

/// Changes kept for slow watchers before the oldest are dropped.
const CAPACITY: usize = 8192;

#[derive(Debug, Clone)]
pub struct DeliveryChange {
    pub delivery: Delivery,
    pub time_ms: i64,
}

/// A broadcast of changes `C` with what the two feeds share: the other
/// nodes (the bus, when there is one) and the changes they lost.
pub struct Feed<C> {
    tx: broadcast::Sender<Arc<C>>,
    /// Changes from other nodes that will never arrive, since start.
    gaps: Arc<AtomicU64>,
    bus: Arc<OnceLock<FeedBus>>,
}

impl<C> Clone for Feed<C> {
    fn clone(&self) -> Self {
        Feed {
            tx: self.tx.clone(),
            gaps: self.gaps.clone(),
            bus: self.bus.clone(),
        }
    }
}

impl<C> Feed<C> {
    pub fn new(capacity: usize) -> Feed<C> {
        Feed {
            tx: broadcast::channel(capacity).0,
            gaps: Arc::new(AtomicU64::new(0)),
            bus: Arc::new(OnceLock::new()),
        }
    }

    /// Joins the feed to the other nodes (PostgreSQL); once.
    pub fn attach(&self, bus: FeedBus) {
        let _ = self.bus.set(bus);
    }

    /// Someone watches on this node.
    pub fn watched_here(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Another node watches: changes made here go onto the bus.
    pub fn bus(&self) -> Option<&FeedBus> {
        self.bus.get().filter(|bus| bus.wanted())
    }

    /// Whether building a change is worth it, here or for another node.
    pub fn is_watched(&self) -> bool {
        self.watched_here() || self.bus().is_some()
    }

    /// To this node's watchers only.
    pub fn broadcast(&self, change: C) {
        // No receivers is not an error: nobody is watching.
        let _ = self.tx.send(Arc::new(change));
    }

    /// `count` changes another node made will never arrive.
    pub fn missed(&self, count: u64) {
        if count > 0 {
            self.gaps.fetch_add(count, Ordering::Relaxed);
        }
    }

    pub fn subscribe(&self) -> Changes<C> {
        let changes = Changes {
            rx: self.tx.subscribe(),
            gaps: self.gaps.clone(),
            seen_gaps: self.gaps.load(Ordering::Relaxed),
            held: None,
        };
        if let Some(bus) = self.bus.get() {
            bus.watch_started();
        }
        changes
    }
}

/// One watcher's side of a feed: the broadcast's changes, with the gaps in
/// the other nodes' changes reported as lag.
pub struct Changes<C> {
    rx: broadcast::Receiver<Arc<C>>,
    gaps: Arc<AtomicU64>,
    seen_gaps: u64,
    /// A change received just after a gap, returned after the gap is.
    held: Option<Arc<C>>,
}

impl<C> Changes<C> {
    /// Like `broadcast::Receiver::recv`; a gap is reported before the
    /// change that followed it. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Arc<C>, broadcast::error::RecvError> {
        if let Some(change) = self.held.take() {
            return Ok(change);
        }
        let received = self.rx.recv().await;
        let gaps = self.gaps.load(Ordering::Relaxed);
        if gaps <= self.seen_gaps {
            return received;
        }
        let mut missed = gaps - self.seen_gaps;
        self.seen_gaps = gaps;
        match received {
            Ok(change) => self.held = Some(change),
            Err(broadcast::error::RecvError::Lagged(lagged)) => missed += lagged,
            Err(closed) => return Err(closed),
        }
        Err(broadcast::error::RecvError::Lagged(missed))
    }
}

/// The delivery feed.
#[derive(Clone)]
pub struct LiveFeed {
    feed: Feed<DeliveryChange>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed::new()
    }
}

impl LiveFeed {
    pub fn new() -> LiveFeed {
        LiveFeed {
            feed: Feed::new(CAPACITY),
        }
    }

    /// Joins the feed to the other nodes (PostgreSQL); once.
    pub fn attach(&self, bus: FeedBus) {
        self.feed.attach(bus);
    }

    /// Whether building a change is worth it.
    pub fn is_watched(&self) -> bool {
        self.feed.is_watched()
    }

    /// A change made on this node.
    pub fn publish(&self, change: DeliveryChange) {
        if let Some(bus) = self.feed.bus() {
            bus.send_delivery(&change.delivery, change.time_ms);
        }
        self.feed.broadcast(change);
    }

    pub fn subscribe(&self) -> Changes<DeliveryChange> {
        self.feed.subscribe()
    }
}

/// Both feeds of this node, for the bus: whether anyone here watches, and
/// where the other nodes' changes go.
pub struct NodeFeeds {
    pub deliveries: LiveFeed,
    pub runs: RunFeed,
}

impl LocalFeeds for NodeFeeds {
    fn watched(&self) -> bool {
        self.deliveries.feed.watched_here() || self.runs.feed().watched_here()
    }

    fn remote(&self, change: RemoteChange) {
        match change {
            RemoteChange::Delivery { delivery, time_ms } => {
                if self.deliveries.feed.watched_here() {
                    self.deliveries
                        .feed
                        .broadcast(DeliveryChange { delivery, time_ms });
                }
            }
            RemoteChange::Run { run, time_ms } => {
                if self.runs.feed().watched_here() {
                    self.runs.feed().broadcast(RunChange { run, time_ms });
                }
            }
            RemoteChange::Missed { deliveries, runs } => {
                self.deliveries.feed.missed(deliveries);
                self.runs.feed().missed(runs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gap_is_reported_before_the_change_after_it() {
        let feed: Feed<u32> = Feed::new(16);
        let mut changes = feed.subscribe();
        feed.broadcast(1);
        assert_eq!(*changes.recv().await.expect("the first change"), 1);
        feed.missed(3);
        feed.broadcast(2);
        assert!(matches!(
            changes.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        assert_eq!(*changes.recv().await.expect("the change after the gap"), 2);
        feed.broadcast(3);
        assert_eq!(*changes.recv().await.expect("no gap this time"), 3);
    }

    #[tokio::test]
    async fn a_watcher_is_not_told_of_gaps_from_before_it_subscribed() {
        let feed: Feed<u32> = Feed::new(16);
        feed.missed(5);
        let mut changes = feed.subscribe();
        feed.broadcast(1);
        assert_eq!(*changes.recv().await.expect("the change"), 1);
    }
}
