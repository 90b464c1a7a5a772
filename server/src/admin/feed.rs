//! The live feed: every delivery state change, broadcast to whoever watches
//! (`Admin.WatchDeliveries`). Publishing is a no-op when nobody watches, and a
//! watcher that falls behind loses the oldest changes and is told how many —
//! it never slows delivery down.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::Delivery;

/// Changes kept for slow watchers before the oldest are dropped.
const CAPACITY: usize = 8192;

#[derive(Debug, Clone)]
pub struct DeliveryChange {
    pub delivery: Delivery,
    pub time_ms: i64,
}

#[derive(Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Arc<DeliveryChange>>,
}

impl Default for LiveFeed {
    fn default() -> Self {
        LiveFeed::new()
    }
}

impl LiveFeed {
    pub fn new() -> LiveFeed {
        let (tx, _) = broadcast::channel(CAPACITY);
        LiveFeed { tx }
    }

    /// Whether building a change is worth it.
    pub fn is_watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn publish(&self, change: DeliveryChange) {
        // No receivers is not an error: nobody is watching.
        let _ = self.tx.send(Arc::new(change));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DeliveryChange>> {
        self.tx.subscribe()
    }
}
