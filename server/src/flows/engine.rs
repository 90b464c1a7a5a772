//! The flow engine: wakes when runs fall due and executes them. Due runs
//! come from the index over wake-up times — the engine sleeps until the
//! earliest one or until the writer says runs changed, so it never polls and
//! a waiting run costs nothing but its row. Each due run is claimed in
//! memory (one task per executing run, bounded by a semaphore) and stepped
//! until it waits, finishes or is cancelled, committing after every step.
//!
//! When several daemons share a PostgreSQL database, every one of them sees
//! the same due runs; a run is also claimed in storage (a lease renewed with
//! the node's heartbeat) so one daemon steps it at a time, and a run another
//! daemon holds is left alone for a second. Each step's commit is
//! conditional on where the run stood, so a daemon that stalled past its
//! lease cannot overwrite what the next one did.

use std::{
    collections::{HashMap, HashSet},
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
/// How long a run that another daemon is stepping is left alone.
const HELD_ELSEWHERE: Duration = Duration::from_secs(1);

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
    /// How long a run's claim in shared storage outlives this daemon.
    pub lease_timeout: Duration,
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
    /// Runs another daemon is stepping, and until when to leave them alone.
    elsewhere: Mutex<HashMap<String, i64>>,
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
            elsewhere: Mutex::default(),
        })
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        // Shared storage: another daemon's runs wake this one by notification;
        // a look every third of the lease catches one that was lost.
        let max_sleep = match self.store.is_shared() {
            true => MAX_SLEEP.min(self.config.lease_timeout / 3),
            false => MAX_SLEEP,
        };
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
                .unwrap_or(max_sleep)
                .min(max_sleep);
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
        let elsewhere = self.held_elsewhere(now);
        for run in self.store.due_runs(now, DUE_BATCH).await? {
            if elsewhere.contains_key(&run.id) {
                continue;
            }
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
        let next = self.store.next_run_wake_after(now).await?;
        let retry_elsewhere = elsewhere.values().min().copied();
        Ok(match (next, retry_elsewhere) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Runs held by other daemons that are still to be left alone; forgets
    /// the rest.
    fn held_elsewhere(&self, now: i64) -> HashMap<String, i64> {
        let Ok(mut elsewhere) = self.elsewhere.lock() else {
            return HashMap::new();
        };
        elsewhere.retain(|_, until| *until > now);
        elsewhere.clone()
    }

    /// Claims the run in shared storage (always granted with one daemon).
    async fn lease(&self, run_id: &str) -> bool {
        match self
            .store
            .claim_run(run_id, self.config.lease_timeout)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                if let Ok(mut elsewhere) = self.elsewhere.lock() {
                    let until = now_ms().saturating_add(HELD_ELSEWHERE.as_millis() as i64);
                    elsewhere.insert(run_id.to_string(), until);
                }
                false
            }
            Err(error) => {
                tracing::warn!(%run_id, %error, "Could not claim a due run; trying again shortly.");
                tokio::time::sleep(STORAGE_BACKOFF).await;
                false
            }
        }
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

    /// Steps one run, claimed in storage when the storage is shared.
    async fn execute(&self, due: Run) {
        let shared = self.store.is_shared();
        if shared && !self.lease(&due.id).await {
            return;
        }
        let run_id = due.id.clone();
        self.step_run(due).await;
        if shared {
            if let Err(error) = self.store.release_run(&run_id).await {
                tracing::debug!(%run_id, %error, "Could not release a run's claim; it expires by itself.");
            }
        }
    }

    /// Steps one run until it waits, finishes or is cancelled.
    async fn step_run(&self, due: Run) {
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
            crate::metrics::step(&run.flow_id, step_outcome(&transition));
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

/// How a step's execution is counted in `/metrics`.
fn step_outcome(transition: &Transition) -> &'static str {
    match transition {
        Transition::Done { .. } => "ok",
        Transition::Wait { .. } => "waiting",
        Transition::Retry { .. } => "retry",
        Transition::Fail { .. } => "failed",
        Transition::Defer(_) => "deferred",
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
