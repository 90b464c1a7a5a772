//! The janitor: deletes what the retention settings no longer keep, so the
//! database stops growing under a steady load.
//!
//! - events whose deliveries all succeeded (or that matched nothing), after
//!   `retention.events`, with their deliveries and attempts;
//! - events with a dead delivery (and none still to make), after
//!   `retention.dead`;
//! - attempt records of older deliveries, after `retention.attempts`;
//! - flow runs that ended, with their logs, after `retention.runs`.
//!
//! Rows are visited in id order through windows of `WINDOW` ids, each one
//! short transaction, with a pause between them, so intake never waits long
//! for storage and no transaction is long. Ids grow with time, so a pass
//! stops at the first window holding nothing old enough. An event with a
//! delivery still to make is kept whatever its age.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Result, Store};
use crate::model::now_ms;

/// Ids per window (and runs per batch).
const WINDOW: i64 = 1000;
/// Rest between two windows, so the janitor takes a small share of storage.
const PAUSE: Duration = Duration::from_millis(20);

/// What a window held and what went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Rows in the window too recent to go: the pass ends here, since
    /// every later id is at least as recent.
    pub recent: u64,
    pub deleted: u64,
}

impl Window {
    pub fn new(recent: i64, deleted: u64) -> Window {
        Window {
            recent: recent.max(0) as u64,
            deleted,
        }
    }
}

/// How long each kind is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub events: Option<Duration>,
    pub dead: Option<Duration>,
    pub attempts: Option<Duration>,
    pub runs: Option<Duration>,
    pub interval: Duration,
}

/// What one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub attempts: u64,
    pub runs: u64,
}

/// Prunes every `interval` until `shutdown`.
pub async fn janitor(store: Store, retention: Retention, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(retention.interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            pruned = prune(&store, &retention) => match pruned {
                Ok(p) if p != Pruned::default() => {
                    tracing::info!(events = p.events, attempts = p.attempts, runs = p.runs, "Retention: deleted what is no longer kept.");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "Retention pass failed; trying again at the next one."),
            },
        }
    }
}

/// One pass over every kind.
pub async fn prune(store: &Store, retention: &Retention) -> Result<Pruned> {
    let now = now_ms();
    let before = |keep: Option<Duration>| {
        keep.map(|d| now.saturating_sub(d.as_millis().min(i64::MAX as u128) as i64))
    };
    let mut pruned = Pruned::default();
    if let Some(cutoff) = before(retention.events) {
        let dead_cutoff = before(retention.dead).unwrap_or(i64::MIN);
        pruned.events = prune_windows(store.event_seq_range().await?, |after, upto| {
            store.prune_event_window(after, upto, cutoff, dead_cutoff)
        })
        .await?;
    }
    if let Some(cutoff) = before(retention.attempts) {
        pruned.attempts = prune_windows(store.delivery_id_range().await?, |after, upto| {
            store.prune_attempt_window(after, upto, cutoff)
        })
        .await?;
    }
    if let Some(cutoff) = before(retention.runs) {
        loop {
            let deleted = store.prune_runs(cutoff, WINDOW as usize).await?;
            pruned.runs += deleted;
            if deleted < WINDOW as u64 {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
    }
    Ok(pruned)
}

/// Walks `(lo - 1, hi]` a window at a time until a window holds a row too
/// recent to go (an empty window, a gap left by earlier passes, goes on);
/// the rows deleted.
async fn prune_windows<F, Fut>(range: Option<(i64, i64)>, mut window: F) -> Result<u64>
where
    F: FnMut(i64, i64) -> Fut,
    Fut: std::future::Future<Output = Result<Window>>,
{
    let Some((lo, hi)) = range else {
        return Ok(0);
    };
    let mut deleted = 0;
    let mut after = lo - 1;
    while after < hi {
        let upto = after.saturating_add(WINDOW).min(hi);
        let done = window(after, upto).await?;
        deleted += done.deleted;
        if done.recent > 0 {
            break;
        }
        after = upto;
        tokio::time::sleep(PAUSE).await;
    }
    Ok(deleted)
}
