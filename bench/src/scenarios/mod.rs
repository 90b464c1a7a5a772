//! One function per scenario. Each prints a table and writes its JSON.

pub mod backlog;
pub mod end_to_end;
pub mod fanout;
pub mod flows;
pub mod intake;
pub mod isolation;
pub mod routing;

use std::{path::PathBuf, time::Duration};

use crate::storage::Storage;

/// Settings every scenario shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub hookyard: PathBuf,
    pub warmup: Duration,
    pub duration: Duration,
    pub json: PathBuf,
    pub storage: Storage,
    /// Daemons on one database, one run each (`--nodes`; `[1]` by default).
    pub nodes: Vec<usize>,
}

/// A unique prefix for event ids, so two runs never collide as duplicates.
pub fn run_prefix(scenario: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{scenario}-{:x}", nanos % 0xffff_ffff)
}

/// CPU time between two readings of a `CpuClock`, in µs per unit of work.
pub fn cpu_per(before: Option<Duration>, after: Option<Duration>, count: u64) -> Option<f64> {
    let spent = after?.checked_sub(before?)?;
    (count > 0).then(|| spent.as_secs_f64() * 1e6 / count as f64)
}
