//! Which storage failures stop the daemon, and why.
//!
//! Nothing is acknowledged before the log is synced (`wal::WalFile`). A sync
//! that fails does not mean "try again": on Linux a failed `fsync` or
//! `fdatasync` may already have dropped the dirty pages it could not write
//! (they are marked clean, so the page cache no longer holds what is on disk
//! and what is not), and the error is reported once, so the next sync of the
//! same file can succeed while the lost pages stay lost. PostgreSQL learned
//! this in 2018 ("fsyncgate") and since then panics on a failed fsync and
//! recovers from its log. The same holds here: after one failed sync of the
//! log the file's state is unknown, and the only safe recovery is to start
//! again from what the log really holds, which is what SQLite's recovery does
//! when the daemon restarts (its frame checksums end the log at the first
//! frame that did not reach the disk).
//!
//! So a failure here is fail-stop. The log handle latches it: every batch
//! waiting for that sync, and every batch after it, is answered 503 /
//! UNAVAILABLE (a batch that committed but was not acknowledged may still be
//! there after the restart; its id makes the publisher's retry a duplicate),
//! nothing more is written or checkpointed, the writer's task ends with
//! [`Error::Fatal`], and the supervisor turns readiness off and exits
//! non-zero for the service manager to restart the daemon. Since Linux 4.13 a
//! writeback error is reported to every descriptor open on the file when it
//! happened, so the writer's own descriptor also sees an error that SQLite's
//! sync (in a checkpoint) hit first.
//!
//! The same goes for errors SQLite reports that leave the file's state
//! unknown: an I/O error (`SQLITE_IOERR`: a failed write, read or sync),
//! corruption (`SQLITE_CORRUPT`, `SQLITE_NOTADB`), a database that became
//! read-only or was moved (`SQLITE_READONLY`, as after a file system is
//! remounted read-only on errors) or whose files cannot be opened any more
//! (`SQLITE_CANTOPEN`).
//!
//! A full disk is not fail-stop. `write` refuses with `ENOSPC` before
//! anything is written, SQLite reports `SQLITE_FULL` and rolls the
//! transaction back, so the state is known: the batch is answered 503 with
//! Retry-After and the writer carries on, committing again once there is
//! room. That holds only while no sync failed: a full disk that makes a sync
//! fail (delayed allocation on ext4 reports `ENOSPC` from `fsync`) is a
//! failed sync like any other. Failures to grow the shared-memory index
//! (`-shm`, rebuilt from the log on every open, never durable state) and
//! running out of memory are treated like a full disk.

use super::Error;

/// Whether an error SQLite returned leaves the database's state on disk
/// unknown; `code` is its extended result code.
pub(super) fn is_fatal(code: i32) -> bool {
    use rusqlite::ffi;
    match code & 0xff {
        ffi::SQLITE_IOERR => !matches!(
            code,
            ffi::SQLITE_IOERR_NOMEM
                | ffi::SQLITE_IOERR_SHMOPEN
                | ffi::SQLITE_IOERR_SHMSIZE
                | ffi::SQLITE_IOERR_SHMLOCK
                | ffi::SQLITE_IOERR_SHMMAP
        ),
        ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB | ffi::SQLITE_READONLY | ffi::SQLITE_CANTOPEN => {
            true
        }
        _ => false,
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(failure, _) if is_fatal(failure.extended_code) => {
                Error::Fatal(e.to_string())
            }
            _ => Error::Unavailable(e.to_string()),
        }
    }
}

/// The same judgement for an error from an sqlx connection (the checkpointer's).
pub(super) fn is_fatal_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(is_fatal),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;

    #[test]
    fn io_errors_corruption_and_lost_files_are_fatal() {
        for code in [
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_IOERR_DIR_FSYNC,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_IOERR_READ,
            ffi::SQLITE_IOERR_SHORT_READ,
            ffi::SQLITE_IOERR_TRUNCATE,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_READONLY,
            ffi::SQLITE_READONLY_DBMOVED,
            ffi::SQLITE_CANTOPEN,
        ] {
            assert!(is_fatal(code), "{code} should be fatal");
        }
    }

    #[test]
    fn a_full_disk_a_busy_database_and_a_refused_row_are_retryable() {
        for code in [
            ffi::SQLITE_FULL,
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_IOERR_NOMEM,
            ffi::SQLITE_IOERR_SHMSIZE,
            ffi::SQLITE_IOERR_SHMMAP,
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_CONSTRAINT_UNIQUE,
        ] {
            assert!(!is_fatal(code), "{code} should be retryable");
        }
    }

    #[test]
    fn a_rusqlite_io_error_becomes_fatal_and_a_full_disk_unavailable() {
        let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        assert!(matches!(
            Error::from(failure(ffi::SQLITE_IOERR_FSYNC)),
            Error::Fatal(_)
        ));
        assert!(matches!(
            Error::from(failure(ffi::SQLITE_FULL)),
            Error::Unavailable(_)
        ));
    }
}
