//! Runs as data: their states, what is stored about each step, and the
//! changes the engine and intake ask the writer to commit. A run moves
//! CREATED → RUNNING ↔ WAITING → SUCCEEDED | FAILED | CANCELLED; a CREATED run
//! without a wake-up time is queued behind another run with the same key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Created,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Created => "CREATED",
            RunState::Running => "RUNNING",
            RunState::Waiting => "WAITING",
            RunState::Succeeded => "SUCCEEDED",
            RunState::Failed => "FAILED",
            RunState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "CREATED" => RunState::Created,
            "RUNNING" => RunState::Running,
            "WAITING" => RunState::Waiting,
            "SUCCEEDED" => RunState::Succeeded,
            "FAILED" => RunState::Failed,
            "CANCELLED" => RunState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

/// A run as stored.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub flow_id: String,
    pub flow_version: u64,
    pub state: RunState,
    pub key: Option<String>,
    /// JSON object.
    pub inputs: String,
    /// `event:<id>`, `api`, `webhook`, `admin`.
    pub trigger: String,
    /// What templates see as `event` or `trigger`, as JSON.
    pub trigger_data: String,
    pub step_index: u32,
    /// Whether the current step's wait is over.
    pub step_waited: bool,
    /// Attempts of the current step so far.
    pub attempt: u32,
    /// Bumped each time an attempt was seen to fail: part of the HTTP
    /// `Idempotency-Key`, so an attempt interrupted by a crash is resent with
    /// the same key and a retry after a seen failure with a new one.
    pub attempt_group: u32,
    pub wake_ms: Option<i64>,
    /// JSON object: step id → `StepRecord`.
    pub steps: String,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What is kept about one step of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepRecord {
    /// waiting | succeeded | skipped | failed
    pub state: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What later steps see as `steps.<id>.body` (HTTP) or the emitted event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
}

pub type StepRecords = BTreeMap<String, StepRecord>;

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub flow_id: String,
    pub flow_version: u64,
    pub key: Option<String>,
    pub inputs: String,
    pub trigger: String,
    pub trigger_data: String,
    pub concurrency: Option<Concurrency>,
    /// A run that could not start (its inputs, rendered from an event, were
    /// bad): stored FAILED with this error so the failure is visible.
    pub failed: Option<String>,
}

/// What became of a start.
#[derive(Debug, Clone)]
pub enum StartOutcome {
    Started(Box<Run>),
    /// `on_conflict: skip` and a run with the key was active.
    Skipped {
        active: String,
    },
}

/// Cancel the active runs of a flow with a key (`cancel_on`).
#[derive(Debug, Clone)]
pub struct RunCancel {
    pub flow_id: String,
    pub key: String,
    pub reason: String,
}

/// One line of a run's log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub time_ms: i64,
    pub step_id: String,
    pub message: String,
}

/// A step's result and where the run goes next, committed before the next
/// side effect. Applied only if the run is still active at the step and
/// attempt the engine worked on (a cancel in between wins).
#[derive(Debug, Clone)]
pub struct Advance {
    pub run_id: String,
    pub from_step: u32,
    pub from_attempt: u32,
    pub state: RunState,
    pub step_index: u32,
    pub step_waited: bool,
    pub attempt: u32,
    pub attempt_group: u32,
    pub wake_ms: Option<i64>,
    pub steps: String,
    pub error: Option<String>,
    pub log: Vec<LogLine>,
}

/// How runs with the same correlation key share it (a flow's `concurrency:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Keep the running one; the new start is refused.
    #[default]
    Skip,
    /// Cancel the running one and start the new one.
    Replace,
    /// Start the new one when a running one finishes.
    Queue,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Runs that may be active at once for one correlation key.
    #[serde(default = "one")]
    pub per_key: u32,
    #[serde(default)]
    pub on_conflict: OnConflict,
}

fn one() -> u32 {
    1
}
