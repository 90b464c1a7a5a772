//! An online copy of the database: `VACUUM INTO` on a connection of its own,
//! read-only. SQLite runs it as one read transaction, so the copy is a
//! consistent snapshot of everything committed when it began (the daemon's
//! log included: readers see the write-ahead log), while the daemon goes on
//! writing. The copy is compact and needs no log beside it.

use std::{path::Path, time::Duration};

use rusqlite::{Connection, OpenFlags};

use crate::store::{Error, Result};

/// How long the copy waits for a lock (the daemon checkpointing).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Copies the database at `db` into `to`, which must not exist; the copy is
/// readable by its owner only, like the database. Returns its size.
pub fn backup(db: &Path, to: &Path) -> Result<u64> {
    if !db.exists() {
        return Err(Error::NotFound {
            what: "database",
            id: db.display().to_string(),
        });
    }
    create_private(to)?;
    let copied = copy(db, to);
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied?;
    Ok(std::fs::metadata(to).map(|m| m.len()).unwrap_or(0))
}

fn copy(db: &Path, to: &Path) -> Result<()> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::Unavailable(format!("could not open {}: {e}", db.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    let target = to
        .to_str()
        .ok_or_else(|| Error::Unavailable(format!("{} is not a UTF-8 path", to.display())))?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|e| Error::Unavailable(format!("could not copy the database: {e}")))?;
    Ok(())
}

/// An empty file only the owner may read, made before any data goes in
/// (`VACUUM INTO` fills an existing empty file).
fn create_private(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists(format!(
            "{} already exists; a backup never overwrites a file",
            path.display()
        )),
        _ => Error::Unavailable(format!("could not create {}: {e}", path.display())),
    })
}
