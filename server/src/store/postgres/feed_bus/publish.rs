//! The sending side: batches from the queue onto `hookyard_feed`, while
//! another node watches.

use std::sync::{atomic::Ordering, Arc};

use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    wire::{Encoder, Outgoing},
    Shared, BATCH, CHANNEL, CHECK_EVERY, FEED_LOCK,
};

pub(super) async fn publish(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Outgoing>,
    pool: PgPool,
    shutdown: CancellationToken,
) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut encoder = Encoder::new(&shared.node_id);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = check.tick() => {
                let own = shared.listener_pid.load(Ordering::Relaxed);
                match other_node_watches(&pool, own).await {
                    Ok(wanted) => shared.wanted.store(wanted, Ordering::Relaxed),
                    // Left as it was: while the database is unreachable
                    // the sends fail and the receivers count the gap.
                    Err(error) => tracing::debug!(%error, "Cannot tell whether another node watches the feeds."),
                }
            }
            received = queue.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                let dropped = (
                    shared.dropped_deliveries.swap(0, Ordering::Relaxed),
                    shared.dropped_runs.swap(0, Ordering::Relaxed),
                );
                if dropped != (0, 0) {
                    tracing::debug!(deliveries = dropped.0, runs = dropped.1, "The feed bus queue was full; other nodes' watchers are told they missed changes.");
                }
                let payloads = encoder.encode(batch.drain(..), dropped);
                if let Err(error) = notify(&pool, &payloads).await {
                    tracing::debug!(%error, notifications = payloads.len(), "Could not send feed changes to the other nodes; their watchers are told they missed them.");
                }
            }
        }
    }
}

/// Whether a connection other than `own` (this node's LISTEN connection)
/// holds the feed lock in this database.
async fn other_node_watches(pool: &PgPool, own: i32) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND classid = $1::oid AND objid = $2::oid \
         AND objsubid = 2 AND pid <> $3 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
    )
    .bind(i64::from(FEED_LOCK.0))
    .bind(i64::from(FEED_LOCK.1))
    .bind(own)
    .fetch_one(pool)
    .await
}

/// One statement, one transaction: the notifications arrive in order.
async fn notify(pool: &PgPool, payloads: &[String]) -> sqlx::Result<()> {
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(pool)
        .await?;
    Ok(())
}
