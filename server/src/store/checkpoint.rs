//! WAL checkpoints on their own connection, off the writer's path.
//!
//! In WAL mode every commit appends pages to the log; a checkpoint copies
//! them back into the database file. SQLite runs it by default inside the
//! commit that crosses 1 000 log pages, so one publisher in a few waits for a
//! copy of everything written since the last one, and the single writer does
//! nothing else meanwhile. Here a separate connection (with its own SQLite
//! thread) checkpoints after commits, alongside the writer: a passive
//! checkpoint neither blocks nor waits for the writer. The writer keeps
//! SQLite's own checkpoint as a safety net at a higher threshold, should
//! this one fall behind.

use std::time::Duration;

use sqlx::{sqlite::SqliteConnectOptions, Connection, SqliteConnection};
use tokio::sync::watch;

/// The least time between two checkpoints: each ends with an fsync of the
/// database file, which competes with the log's, and a page written by many
/// commits in between is copied once.
const SPACING: Duration = Duration::from_millis(100);

/// Log pages past which the writer checkpoints by itself (SQLite's default
/// is 1 000): only reached if the checkpointer falls behind.
pub(super) const WRITER_AUTOCHECKPOINT: u32 = 10_000;

/// Bytes the log file is cut back to when it starts over: without it, it
/// stays as large as it ever grew.
pub(super) const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// Starts the checkpointer. Each commit bumps the returned counter; the
/// checkpointer stops when it is dropped.
pub(super) async fn spawn(options: &SqliteConnectOptions) -> super::Result<watch::Sender<u64>> {
    let mut conn = SqliteConnection::connect_with(options).await?;
    let (commits_tx, mut commits) = watch::channel(0u64);
    tokio::spawn(async move {
        // A burst of commits during one checkpoint is caught by the next.
        while commits.changed().await.is_ok() {
            commits.mark_unchanged();
            if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut conn)
                .await
            {
                tracing::warn!(%error, "WAL checkpoint failed; the writer will checkpoint instead.");
            }
            tokio::time::sleep(SPACING).await;
        }
        let _ = conn.close().await;
    });
    Ok(commits_tx)
}
