//! Storage faults the end-to-end tests inject into the real binary, to prove
//! that the daemon stops instead of limping on (see `fail_stop`). They exist
//! in debug builds only, which is what the tests run: a release build reads
//! no variable and has no hook.
//!
//! - `HOOKYARD_FAULT_SYNC_FAIL_AFTER=N`: the log's first N syncs succeed,
//!   the next one reports EIO (and, as on Linux, the ones after it would
//!   succeed again).
//! - `HOOKYARD_FAULT_PANIC=checkpointer|committer`: that component panics
//!   the first time it has work (the checkpointer after the first commit,
//!   the committer (the commit thread) on its first batch).
//! - `HOOKYARD_FAULT_SETTLE_FAILS=N`: the first N commits that hold attempt
//!   results fail as on a full disk (nothing stored, nothing fatal), so the
//!   dispatcher's backoff can be watched from outside.

/// Syncs that succeed before one fails, if a failure is injected.
#[cfg(debug_assertions)]
pub(super) fn sync_fails_after() -> Option<u64> {
    std::env::var("HOOKYARD_FAULT_SYNC_FAIL_AFTER")
        .ok()?
        .parse()
        .ok()
}

#[cfg(not(debug_assertions))]
pub(super) fn sync_fails_after() -> Option<u64> {
    None
}

/// Whether `component` is to panic when it first has work.
#[cfg(debug_assertions)]
pub(super) fn panics(component: &str) -> bool {
    std::env::var("HOOKYARD_FAULT_PANIC").is_ok_and(|v| v == component)
}

#[cfg(not(debug_assertions))]
pub(super) fn panics(_component: &str) -> bool {
    false
}

/// Commits holding attempt results that are to fail before one succeeds.
#[cfg(debug_assertions)]
pub(super) fn settle_fails() -> u64 {
    std::env::var("HOOKYARD_FAULT_SETTLE_FAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(not(debug_assertions))]
pub(super) fn settle_fails() -> u64 {
    0
}
