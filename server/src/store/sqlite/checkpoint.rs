//! WAL checkpoints on their own connection, off the writer's path.
//!
//! In WAL mode every commit appends pages to the log; a checkpoint copies
//! them back into the database file. SQLite runs it by default inside the
//! commit that crosses 1 000 log pages, so one publisher in a few waits for a
//! copy of everything written since the last one, and the single writer does
//! nothing else meanwhile. Here a separate connection (with its own SQLite
//! thread) checkpoints after commits, alongside the writer: a passive
//! checkpoint neither blocks nor waits for the writer.
//!
//! The log starts over from its beginning only when a write transaction
//! begins with every frame already copied, which a busy writer never sees
//! behind a checkpoint on another connection. So once the log is long, the
//! checkpointer catches up (a few passes back to back, each shorter than the
//! last) and then asks the writer to checkpoint once between two
//! transactions: it copies only the little committed since that last pass,
//! and its next commit starts the log over. The writer also keeps SQLite's own
//! checkpoint, at a higher threshold, as a safety net should this task stop.
//!
//! A checkpoint syncs the log and the database file; an I/O error there is
//! fail-stop like a failed sync of the writer's (see `fail_stop`).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::{sqlite::SqliteConnectOptions, Connection, SqliteConnection};
use tokio::{sync::watch, task::JoinHandle};

use super::{fail_stop::is_fatal_sqlx, wal::WalFile};

/// The least time between two checkpoints: each ends with an fsync of the
/// database file, which competes with the log's, and a page written by many
/// commits in between is copied once.
const SPACING: Duration = Duration::from_millis(100);

/// Log frames (pages) past which the writer is asked to start the log over.
pub(super) const RESTART_AT: i64 = 4_000;

/// Extra passes before the writer is asked to start the log over.
const CATCH_UP_PASSES: usize = 2;

/// Log pages past which the writer checkpoints by itself (SQLite's default
/// is 1 000): only reached if the checkpointer stops.
pub(super) const WRITER_AUTOCHECKPOINT: u32 = 20_000;

/// Bytes the log file is cut back to when it starts over: without it, it
/// stays as large as it ever grew.
pub(super) const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// The writer's side of the checkpointer.
pub(super) struct Checkpoints {
    commits: watch::Sender<u64>,
    restart_wanted: Arc<AtomicBool>,
}

impl Checkpoints {
    /// After each commit.
    pub(super) fn committed(&self) {
        self.commits.send_modify(|commits| *commits += 1);
    }

    /// Before a transaction: the writer should checkpoint now, once.
    pub(super) fn take_restart(&self) -> bool {
        self.restart_wanted.swap(false, Ordering::Relaxed)
    }
}

/// Starts the checkpointer; it stops when the returned `Checkpoints` is
/// dropped, and fails (marking the log failed) on an error that leaves the
/// files' state unknown (see `fail_stop`). Once the log has failed it copies
/// nothing more: frames whose sync failed must not reach the database file.
pub(super) async fn spawn(
    options: &SqliteConnectOptions,
    wal: Arc<WalFile>,
) -> super::Result<(Checkpoints, JoinHandle<super::Result<()>>)> {
    let mut conn = SqliteConnection::connect_with(options).await?;
    let (commits_tx, commits) = watch::channel(0u64);
    let restart_wanted = Arc::new(AtomicBool::new(false));
    let wanted = restart_wanted.clone();
    let task = tokio::spawn(async move {
        let checkpointed = checkpoint_after_commits(&mut conn, commits, &wanted, &wal).await;
        if checkpointed.is_err() {
            wal.fail();
        }
        let _ = conn.close().await;
        checkpointed
    });
    Ok((
        Checkpoints {
            commits: commits_tx,
            restart_wanted,
        },
        task,
    ))
}

async fn checkpoint_after_commits(
    conn: &mut SqliteConnection,
    mut commits: watch::Receiver<u64>,
    restart_wanted: &AtomicBool,
    wal: &WalFile,
) -> super::Result<()> {
    let panic_on_pass = super::fault::panics("checkpointer");
    // `changed` marks the count seen; commits during a checkpoint or the
    // pause after it are caught by the next one.
    while commits.changed().await.is_ok() {
        if panic_on_pass {
            panic!("injected fault: the checkpointer panics");
        }
        if wal.has_failed() {
            continue;
        }
        match passive_checkpoint(conn).await {
            Ok(frames) if frames >= RESTART_AT => {
                catch_up(conn).await?;
                restart_wanted.store(true, Ordering::Relaxed)
            }
            Ok(_) => {}
            Err(error) if is_fatal_sqlx(&error) => return Err(fatal(error)),
            Err(error) => {
                tracing::warn!(%error, "WAL checkpoint failed; the writer will checkpoint instead.")
            }
        }
        tokio::time::sleep(SPACING).await;
    }
    Ok(())
}

/// Copies, pass after pass, what the writer committed during the previous
/// pass. Each pass is shorter than the one before, so what the writer is
/// then left to copy itself, holding up its commits, is small: after a
/// single pass it was whatever came in during that pass, 13-22 ms of copying
/// and syncing on the writer's thread under full load.
async fn catch_up(conn: &mut SqliteConnection) -> super::Result<()> {
    for _ in 0..CATCH_UP_PASSES {
        match passive_checkpoint(conn).await {
            Ok(_) => {}
            Err(error) if is_fatal_sqlx(&error) => return Err(fatal(error)),
            Err(error) => {
                tracing::warn!(%error, "WAL checkpoint failed.");
                break;
            }
        }
    }
    Ok(())
}

fn fatal(error: sqlx::Error) -> super::Error {
    super::Error::Fatal(format!("WAL checkpoint failed: {error}"))
}

/// Copies what it can of the log; returns how many frames the log holds.
async fn passive_checkpoint(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    // (busy, frames in the log, frames copied)
    let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(conn)
        .await?;
    Ok(frames)
}
