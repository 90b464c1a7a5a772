//! The database's write-ahead log, synced by hand, and the latch that makes
//! its first failure final.
//!
//! The committer commits with `synchronous=NORMAL`: SQLite writes the
//! transaction's frames into the log but does not wait for the disk. The
//! writer's answers wait for `sync`, an `fdatasync` of the log file, which
//! covers every commit written before it. So the fsync of one batch runs
//! while the next batch is already being written, one fsync covers several
//! commits, and nothing is answered before it is on disk. (The log file
//! itself exists, durably, from the migrations, which commit with
//! `synchronous=FULL` on the pool; it is removed only when the last
//! connection closes.)
//!
//! One failed sync leaves the log's state unknown for good (see
//! `fail_stop`): from then on `sync` fails without trying, the committer
//! writes nothing and the checkpointer copies nothing.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
};

pub(in crate::store) struct WalFile {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    failed: AtomicBool,
    /// Syncs so far, and the one that fails by injection (`u64::MAX`: none).
    syncs: AtomicU64,
    injected_failure: AtomicU64,
}

impl WalFile {
    pub(in crate::store) fn new(db: &Path) -> WalFile {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalFile {
            path: path.into(),
            file: Mutex::new(None),
            failed: AtomicBool::new(false),
            syncs: AtomicU64::new(0),
            injected_failure: AtomicU64::new(super::fault::sync_fails_after().unwrap_or(u64::MAX)),
        }
    }

    /// Flushes every commit written so far to disk. Blocking. After one
    /// failure, fails at once: a later sync that succeeded would not mean
    /// the earlier commits are on disk.
    pub(in crate::store) fn sync(&self) -> std::io::Result<()> {
        if self.has_failed() {
            return Err(std::io::Error::other(
                "an earlier sync of the log failed; its state on disk is unknown",
            ));
        }
        let synced = self.sync_data();
        if synced.is_err() {
            self.fail();
        }
        synced
    }

    /// Marks the log's state as unknown: nothing is acknowledged, written or
    /// checkpointed any more.
    pub(in crate::store) fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    pub(in crate::store) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Makes the sync after the next `after` ones report EIO.
    #[cfg(test)]
    pub(in crate::store) fn fail_sync_after(&self, after: u64) {
        let done = self.syncs.load(Ordering::SeqCst);
        self.injected_failure.store(done + after, Ordering::SeqCst);
    }

    fn sync_data(&self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("the log file handle was poisoned"))?;
        let current = std::fs::metadata(&self.path)?.ino();
        let stale = match file.as_ref() {
            Some(open) => open.metadata()?.ino() != current,
            None => true,
        };
        if stale {
            *file = Some(std::fs::File::open(&self.path)?);
        }
        let synced = match file.as_ref() {
            Some(open) => open.sync_data(),
            None => Err(std::io::Error::other("the log file is not open")),
        };
        let number = self.syncs.fetch_add(1, Ordering::SeqCst);
        if number == self.injected_failure.load(Ordering::SeqCst) {
            // EIO, as the kernel reports a failed writeback.
            return Err(std::io::Error::from_raw_os_error(5));
        }
        synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_one_failed_sync_every_later_sync_fails_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("latch.db");
        std::fs::write(dir.path().join("latch.db-wal"), b"frames").expect("a log file");
        let wal = WalFile::new(&db);
        wal.fail_sync_after(1);
        wal.sync().expect("the first sync succeeds");
        let error = wal.sync().expect_err("the injected failure");
        assert_eq!(error.raw_os_error(), Some(5));
        assert!(wal.has_failed());
        // The disk would now report success; the latch does not ask it.
        assert!(wal.sync().is_err());
        assert!(wal.sync().is_err());
    }
}
