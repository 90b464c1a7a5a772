//! Flows as stored: each version's YAML is kept, so a run finishes on the
//! version it started with; and how runs are listed.

use super::run::RunState;

/// A flow's current version, as stored.
#[derive(Debug, Clone)]
pub struct StoredFlow {
    pub id: String,
    pub version: u64,
    pub yaml: String,
    pub webhook_key_hash: Option<Vec<u8>>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// Filters for ListRuns.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub flow_id: Option<String>,
    pub state: Option<RunState>,
    pub key: Option<String>,
}
