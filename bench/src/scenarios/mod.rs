//! One function per scenario. Each prints a table and writes its JSON.

pub mod backlog;
pub mod end_to_end;
pub mod fanout;
pub mod flows;
pub mod intake;
pub mod isolation;
pub mod routing;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

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

/// Deliveries that reached the sink after one published later with the same
/// ordering key (`crate::load::key_of`). Only pairs whose publish order the
/// harness knows are compared: those sent by one load worker (request `i`
/// is worker `i mod workers`'s, which waits for each answer before sending
/// the next), whose ids (`<prefix>-<i>-<j>`) then rise with publish order.
/// `arrived`: each event id's first 2xx-answered arrival.
pub fn out_of_order(
    arrived: &HashMap<String, Instant>,
    prefix: &str,
    batch: usize,
    workers: usize,
    keys: u64,
) -> u64 {
    // (key, worker), arrival, (request, position in its batch).
    type Seen = ((u64, u64), Instant, (u64, usize));
    let mut seen: Vec<Seen> = arrived
        .iter()
        .filter_map(|(id, &at)| {
            let (i, j) = id
                .strip_prefix(prefix)?
                .strip_prefix('-')?
                .split_once('-')?;
            let (i, j) = (i.parse::<u64>().ok()?, j.parse::<usize>().ok()?);
            let key = crate::load::key_of(i, j, batch, keys);
            Some(((key, i % workers.max(1) as u64), at, (i, j)))
        })
        .collect();
    seen.sort_unstable_by_key(|&(group, at, _)| (group, at));
    seen.windows(2)
        .filter(|pair| pair[0].0 == pair[1].0 && pair[1].2 < pair[0].2)
        .count() as u64
}
