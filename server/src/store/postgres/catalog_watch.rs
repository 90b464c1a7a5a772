//! Catalog changes made through any daemon sharing the database. Every
//! statement that changes endpoints, subscriptions, sources or flows bumps
//! the `catalog_version` row and notifies `hookyard_catalog` when it commits
//! (triggers in the migrations). This task LISTENs for the notification and
//! also reads the version once a second, since a notification sent while
//! the listening connection was down is lost; each newer version is passed
//! on for the daemon to reload its caches.

use std::time::Duration;

use sqlx::{postgres::PgListener, PgPool};
use tokio::{sync::mpsc, task::JoinHandle};

const CHANNEL: &str = "hookyard_catalog";
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Sends each catalog version newer than the last one seen; ends when the
/// receiver is dropped.
pub(super) fn spawn(pool: PgPool, versions: mpsc::Sender<u64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = read_version(&pool).await.unwrap_or(0);
        let mut listener: Option<PgListener> = None;
        let mut check = tokio::time::interval(CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if listener.is_none() {
                listener = listen(&pool).await;
            }
            let version = tokio::select! {
                _ = versions.closed() => return,
                notified = next_notification(&mut listener) => match notified {
                    Some(payload) => payload.parse::<u64>().ok(),
                    None => {
                        listener = None;
                        None
                    }
                },
                _ = check.tick() => read_version(&pool).await,
            };
            if let Some(version) = version.filter(|v| *v > seen) {
                seen = version;
                if versions.send(version).await.is_err() {
                    return;
                }
            }
        }
    })
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::debug!(%error, "Cannot listen for catalog changes yet; checking the version instead.");
            return None;
        }
    };
    match listener.listen(CHANNEL).await {
        Ok(()) => Some(listener),
        Err(error) => {
            tracing::debug!(%error, "Cannot listen for catalog changes yet; checking the version instead.");
            None
        }
    }
}

/// The next notification's payload; `None` when the connection failed.
/// Without a listener, waits forever (the periodic check goes on).
async fn next_notification(listener: &mut Option<PgListener>) -> Option<String> {
    match listener {
        Some(l) => match l.try_recv().await {
            Ok(Some(notification)) => Some(notification.payload().to_string()),
            // The connection was lost (and will be made again): anything
            // sent meanwhile is caught by the periodic check.
            Ok(None) => Some(String::new()),
            Err(error) => {
                tracing::debug!(%error, "Lost the catalog notification connection.");
                None
            }
        },
        None => std::future::pending().await,
    }
}

async fn read_version(pool: &PgPool) -> Option<u64> {
    sqlx::query_scalar::<_, i64>("SELECT version FROM catalog_version")
        .fetch_one(pool)
        .await
        .ok()
        .map(|v| v.max(0) as u64)
}
