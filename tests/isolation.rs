//! Isolation tests: one endpoint's trouble never delays another's. They
//! measure latency (a p99 under 50 ms), so they have a test binary of their
//! own, which cargo runs after the end-to-end binary and not beside its
//! hundred daemons, and they take turns: what they measure is the daemon,
//! not the machine's other load.

/// These tests run on SQLite; `e2e_postgres.rs` runs them on PostgreSQL.
mod backend {
    pub const POSTGRES: bool = false;
}

#[allow(dead_code)]
#[path = "e2e/api.rs"]
mod api;
#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;
#[path = "isolation/cases.rs"]
mod isolation;
