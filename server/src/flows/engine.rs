//! The flow engine: wakes when runs fall due and executes them. Due runs
//! come from the index over wake-up times — the engine sleeps until the
//! earliest one or until the writer says runs changed, so it never polls and
//! a waiting run costs nothing but its row. Each due run is claimed in
//! memory (one task per executing run, bounded by a semaphore) and stepped
//! until it waits, finishes or is cancelled, committing after every step.

use std::{
    collections::HashSet,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::FutureExt;
use serde_json::{json, Value};
use tokio::{
    sync::{Notify, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{
    compiled::CompiledFlow,
    step::{self, StepEnv, Transition},
    template, FlowCatalog,
};
use crate::{
    delivery::Sender,
    model::{
        now_ms,
        run::{Advance, LogLine, Run, RunState, StepRecord, StepRecords},
    },
    publish::Publisher,
    store::{FlowOp, Store, Writer},
};

/// Due runs read per wake-up; more than the engine may execute at once, so
/// runs it is already executing do not hide the others.
const DUE_BATCH: usize = 512;
/// How long a run whose step could not be committed waits before it is tried again.
const STORAGE_BACKOFF: Duration = Duration::from_secs(1);
const MAX_SLEEP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Waits are multiplied by this (1.0 in production; tests compress days
    /// into seconds).
    pub time_scale: f64,
    /// Runs executed at once.
    pub concurrency: usize,
    /// Delays before each retry of an HTTP step without its own `retry`.
    pub default_retry: Vec<Duration>,
    pub default_timeout: Duration,
}

pub struct Engine {
    config: EngineConfig,
    store: Store,
    writer: Writer,
    catalog: Arc<FlowCatalog>,
    publisher: Arc<Publisher>,
    sender: Arc<Sender>,
    wake: Arc<Notify>,
    claimed: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: EngineConfig,
        store: Store,
        writer: Writer,
        catalog: Arc<FlowCatalog>,
        publisher: Arc<Publisher>,
        sender: Arc<Sender>,
        wake: Arc<Notify>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
            config,
            store,
            writer,
            catalog,
            publisher,
            sender,
            wake,
            claimed: Mutex::default(),
        })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        loop {
            // A finished task keeps its memory until it is joined.
            while tasks.try_join_next().is_some() {}
            let now = now_ms();
            let next_wake = match self.start_due(now, &mut tasks).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, "Could not read due runs; trying again shortly.");
                    Some(now + STORAGE_BACKOFF.as_millis() as i64)
                }
            };
            // Woken early by the writer whenever runs change, so an hour's cap costs nothing.
            let sleep = next_wake
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.shutdown().await;
        tracing::info!("Flow engine stopped.");
    }

    /// Starts every due run it can; returns when to look again.
    async fn start_due(
        self: &Arc<Self>,
        now: i64,
        tasks: &mut JoinSet<()>,
    ) -> crate::store::Result<Option<i64>> {
        for run in self.store.due_runs(now, DUE_BATCH).await? {
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                // Busy: a finishing run wakes the loop.
                return Ok(None);
            };
            if !self.claim(&run.id) {
                continue;
            }
            let claim = RunClaim {
                engine: self.clone(),
                run_id: run.id.clone(),
            };
            tasks.spawn(async move {
                claim.engine.execute(run).await;
                // The claim and the permit are released however the task ends.
                drop((claim, permit));
            });
        }
        self.store.next_run_wake_after(now).await
    }

    fn claim(&self, id: &str) -> bool {
        self.claimed
            .lock()
            .map(|mut c| c.insert(id.to_string()))
            .unwrap_or(false)
    }

    fn release(&self, id: &str) {
        if let Ok(mut c) = self.claimed.lock() {
            c.remove(id);
        }
    }

    /// Steps one run until it waits, finishes or is cancelled.
    async fn execute(&self, due: Run) {
        let Some(mut run) = self.still_due(due).await else {
            return;
        };
        let flow = match self.catalog.version(&run.flow_id, run.flow_version).await {
            Ok(flow) => flow,
            Err(error @ crate::store::Error::Unavailable(_)) => {
                tracing::warn!(run_id = %run.id, %error, "Could not load the run's flow; trying again shortly.");
                tokio::time::sleep(STORAGE_BACKOFF).await;
                return;
            }
            Err(error) => {
                let message = format!(
                    "flow {}@{} cannot run: {error}",
                    run.flow_id, run.flow_version
                );
                let _ = self.commit(fail_run(&run, message)).await;
                return;
            }
        };
        let env = StepEnv {
            sender: &self.sender,
            publisher: &self.publisher,
            time_scale: self.config.time_scale,
            default_retry: &self.config.default_retry,
            default_timeout: self.config.default_timeout,
        };
        loop {
            let Some(step) = flow.steps.get(run.step_index as usize) else {
                let _ = self.commit(finish(&run)).await;
                return;
            };
            let mut records: StepRecords = serde_json::from_str(&run.steps).unwrap_or_default();
            let ctx = context(&run, &records);
            let transition = AssertUnwindSafe(step::execute(&env, &flow, step, &run, &ctx))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let message = crate::panic_message(&*panic);
                    tracing::error!(run_id = %run.id, step = %step.id, %message, "A step panicked; the run fails.");
                    step::crashed(&run, &message)
                });
            let advance = match transition {
                Transition::Defer(error) => {
                    tracing::warn!(run_id = %run.id, step = %step.id, %error, "Step deferred.");
                    tokio::time::sleep(STORAGE_BACKOFF).await;
                    return;
                }
                other => next(&run, &flow, &step.id, other, &mut records),
            };
            match self.commit(advance).await {
                Some(updated) if updated.state == RunState::Running => run = updated,
                _ => return,
            }
        }
    }

    /// The run as stored now, if it is still as the due list showed it. The
    /// list may have been read before the run's last step was committed by
    /// a task whose claim has since been released; stepping that stale copy
    /// would send the step's request again. Read under the claim, the run
    /// shows every commit made for it.
    async fn still_due(&self, due: Run) -> Option<Run> {
        match self.store.get_run(&due.id).await {
            Ok((fresh, _)) => {
                let unchanged = fresh.updated_ms == due.updated_ms
                    && fresh.step_index == due.step_index
                    && fresh.attempt == due.attempt
                    && fresh.state == due.state;
                unchanged.then_some(fresh)
            }
            Err(error) => {
                tracing::warn!(run_id = %due.id, %error, "Could not read a due run; trying again shortly.");
                tokio::time::sleep(STORAGE_BACKOFF).await;
                None
            }
        }
    }

    /// Commits a run's progress; `None` when it did not apply (cancelled
    /// meanwhile) or storage failed (the run stays due and is tried again).
    async fn commit(&self, advance: Advance) -> Option<Run> {
        let run_id = advance.run_id.clone();
        match self
            .writer
            .flow(|reply| FlowOp::Advance(Box::new(advance), reply))
            .await
        {
            Ok(run) => run,
            Err(error) => {
                tracing::warn!(%run_id, %error, "Could not commit a run's progress; it will run the step again.");
                tokio::time::sleep(STORAGE_BACKOFF).await;
                None
            }
        }
    }
}

/// A run this engine is executing; released when dropped, so a task that
/// ends any way at all (a panic included) never leaves its run claimed.
struct RunClaim {
    engine: Arc<Engine>,
    run_id: String,
}

impl Drop for RunClaim {
    fn drop(&mut self) {
        self.engine.release(&self.run_id);
    }
}

/// What templates see while a step runs.
fn context(run: &Run, records: &StepRecords) -> minijinja::Value {
    let inputs: Value = serde_json::from_str(&run.inputs).unwrap_or(json!({}));
    let data: Value = serde_json::from_str(&run.trigger_data).unwrap_or(json!({}));
    let (event, trigger) = if run.trigger.starts_with("event:") {
        (data.clone(), json!({"kind": "event", "event": data}))
    } else {
        (Value::Null, merge(json!({"kind": run.trigger}), data))
    };
    template::value(&json!({
        "inputs": inputs,
        "event": event,
        "trigger": trigger,
        "steps": records,
        "run": {
            "id": run.id,
            "flow": run.flow_id,
            "key": run.key,
            "attempt": run.attempt + 1,
            "created_ms": run.created_ms,
        },
    }))
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

/// The commit that follows a step's transition.
fn next(
    run: &Run,
    flow: &CompiledFlow,
    step_id: &str,
    transition: Transition,
    records: &mut StepRecords,
) -> Advance {
    let now = now_ms();
    let mut advance = Advance {
        run_id: run.id.clone(),
        from_step: run.step_index,
        from_attempt: run.attempt,
        state: RunState::Running,
        step_index: run.step_index,
        step_waited: run.step_waited,
        attempt: run.attempt,
        attempt_group: run.attempt_group,
        wake_ms: Some(now),
        steps: String::new(),
        error: None,
        log: Vec::new(),
    };
    let log = match transition {
        Transition::Wait { until_ms, log } => {
            records.insert(step_id.to_string(), waiting());
            advance.state = RunState::Waiting;
            advance.step_waited = true;
            advance.wake_ms = Some(until_ms);
            log
        }
        Transition::Done { record, log } => {
            records.insert(step_id.to_string(), record);
            advance.step_index += 1;
            advance.step_waited = false;
            advance.attempt = 0;
            if advance.step_index as usize >= flow.steps.len() {
                advance.state = RunState::Succeeded;
                advance.wake_ms = None;
            }
            log
        }
        Transition::Retry {
            record,
            until_ms,
            log,
        } => {
            records.insert(step_id.to_string(), record);
            advance.state = RunState::Waiting;
            advance.step_waited = true;
            advance.attempt += 1;
            advance.attempt_group += 1;
            advance.wake_ms = Some(until_ms);
            log
        }
        Transition::Fail { record, log } => {
            advance.error = Some(format!(
                "step `{step_id}` failed: {}",
                record.error.clone().unwrap_or_default()
            ));
            records.insert(step_id.to_string(), record);
            advance.state = RunState::Failed;
            advance.wake_ms = None;
            log
        }
        Transition::Defer(log) => log,
    };
    advance.steps = serde_json::to_string(records).unwrap_or_else(|_| "{}".into());
    advance.log.push(LogLine {
        time_ms: now,
        step_id: step_id.to_string(),
        message: flow.secrets.redact(&log),
    });
    advance
}

fn waiting() -> StepRecord {
    StepRecord {
        state: "waiting".into(),
        ..StepRecord::default()
    }
}

fn finish(run: &Run) -> Advance {
    Advance {
        run_id: run.id.clone(),
        from_step: run.step_index,
        from_attempt: run.attempt,
        state: RunState::Succeeded,
        step_index: run.step_index,
        step_waited: false,
        attempt: run.attempt,
        attempt_group: run.attempt_group,
        wake_ms: None,
        steps: run.steps.clone(),
        error: None,
        log: Vec::new(),
    }
}

fn fail_run(run: &Run, error: String) -> Advance {
    Advance {
        state: RunState::Failed,
        wake_ms: None,
        error: Some(error.clone()),
        log: vec![LogLine {
            time_ms: now_ms(),
            step_id: String::new(),
            message: error,
        }],
        ..finish(run)
    }
}
