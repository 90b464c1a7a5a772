//! Flow-run changes inside the committer's transaction: a run starts in the
//! transaction of the event that started it, `cancel_on` cancels in the
//! transaction of the cancelling event, and the engine's step results share
//! the writer's fsyncs. Reads of runs are in `store::flows`, on the pool.

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::super::flows::ACTIVE;
use crate::{
    model::run::{Advance, NewRun, OnConflict, Run, RunCancel, RunState, StartOutcome},
    store::{Error, Result},
};

/// Creates a run, applying the flow's concurrency policy for its key.
pub(super) fn start_run(
    tx: &Transaction,
    new: &NewRun,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<StartOutcome> {
    let mut wake = Some(now);
    if let (Some(policy), Some(key), None) = (&new.concurrency, &new.key, &new.failed) {
        let active = active_with_key(tx, &new.flow_id, key)?;
        if active.len() >= policy.per_key as usize {
            match policy.on_conflict {
                OnConflict::Skip => {
                    return Ok(StartOutcome::Skipped {
                        active: active.into_iter().next().unwrap_or_default(),
                    })
                }
                OnConflict::Queue => wake = None,
                OnConflict::Replace => {
                    let reason = format!("replaced by run {}", new.id);
                    for id in active {
                        if let Some(run) = cancel_one(tx, &id, &reason, now)? {
                            changed.push(run);
                        }
                    }
                }
            }
        }
    }
    let (state, error) = match &new.failed {
        Some(error) => (RunState::Failed, Some(error.as_str())),
        None => (RunState::Created, None),
    };
    let inserted = tx
        .prepare_cached(
            "INSERT INTO flow_runs (id, flow_id, flow_version, state, correlation_key, inputs, \
             trigger, trigger_data, step_index, step_waited, attempt, attempt_group, wake_ms, \
             steps, error, created_ms, updated_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0, 0, 1, ?9, '{}', ?10, ?11, ?11) \
             ON CONFLICT (id) DO NOTHING RETURNING *",
        )?
        .query_row(
            params![
                new.id,
                new.flow_id,
                new.flow_version as i64,
                state.as_str(),
                new.key,
                new.inputs,
                new.trigger,
                new.trigger_data,
                if state == RunState::Failed {
                    None
                } else {
                    wake
                },
                error,
                now,
            ],
            run_from_row,
        )
        .optional()?;
    let run = match inserted {
        Some(run) => run?,
        // The same run id again (an emitted or retried start): the first stands.
        None => {
            let run = tx
                .prepare_cached("SELECT * FROM flow_runs WHERE id = ?1")?
                .query_row([&new.id], run_from_row)??;
            return Ok(StartOutcome::Started(Box::new(run)));
        }
    };
    changed.push(run.clone());
    Ok(StartOutcome::Started(Box::new(run)))
}

/// Active runs of a flow with a key, oldest first.
fn active_with_key(tx: &Transaction, flow_id: &str, key: &str) -> Result<Vec<String>> {
    let mut query = tx.prepare_cached(&format!(
        "SELECT id FROM flow_runs WHERE flow_id = ?1 AND correlation_key = ?2 AND {ACTIVE} \
         AND wake_ms IS NOT NULL ORDER BY created_ms"
    ))?;
    let ids = query
        .query_map([flow_id, key], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

/// Cancels every active run of a flow with a key.
pub(super) fn cancel_by_key(
    tx: &Transaction,
    cancel: &RunCancel,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<()> {
    let runs = tx
        .prepare_cached(&format!(
            "UPDATE flow_runs SET state = 'CANCELLED', wake_ms = NULL, error = ?1, \
             updated_ms = ?2 WHERE flow_id = ?3 AND correlation_key = ?4 AND {ACTIVE} RETURNING *"
        ))?
        .query_map(
            params![cancel.reason, now, cancel.flow_id, cancel.key],
            run_from_row,
        )?
        .collect::<rusqlite::Result<Vec<Result<Run>>>>()?;
    for run in runs {
        let run = run?;
        log(tx, &run.id, now, "", &cancel.reason)?;
        changed.push(run);
    }
    Ok(())
}

/// Cancels one run (an admin's CancelRun); the next queued run with its key starts.
pub(super) fn cancel_run(
    tx: &Transaction,
    id: &str,
    reason: &str,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<Run> {
    if let Some(run) = cancel_one(tx, id, reason, now)? {
        changed.push(run.clone());
        promote_queued(tx, &run, now, changed)?;
        return Ok(run);
    }
    let state: Option<String> = tx
        .prepare_cached("SELECT state FROM flow_runs WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?;
    match state {
        None => Err(Error::NotFound {
            what: "run",
            id: id.to_string(),
        }),
        Some(state) => Err(Error::FailedPrecondition(format!(
            "run `{id}` has already finished ({state})"
        ))),
    }
}

fn cancel_one(tx: &Transaction, id: &str, reason: &str, now: i64) -> Result<Option<Run>> {
    let run = tx
        .prepare_cached(&format!(
            "UPDATE flow_runs SET state = 'CANCELLED', wake_ms = NULL, error = ?1, \
             updated_ms = ?2 WHERE id = ?3 AND {ACTIVE} RETURNING *"
        ))?
        .query_row(params![reason, now, id], run_from_row)
        .optional()?;
    match run {
        Some(run) => {
            log(tx, id, now, "", reason)?;
            Ok(Some(run?))
        }
        None => Ok(None),
    }
}

/// Applies a step's result if the run is still where the engine left it.
pub(super) fn advance(
    tx: &Transaction,
    a: &Advance,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<Option<Run>> {
    let run = tx
        .prepare_cached(&format!(
            "UPDATE flow_runs SET state = ?1, step_index = ?2, step_waited = ?3, attempt = ?4, \
             attempt_group = ?5, wake_ms = ?6, steps = ?7, error = ?8, updated_ms = ?9 \
             WHERE id = ?10 AND step_index = ?11 AND attempt = ?12 AND {ACTIVE} RETURNING *"
        ))?
        .query_row(
            params![
                a.state.as_str(),
                a.step_index,
                a.step_waited,
                a.attempt,
                a.attempt_group,
                a.wake_ms,
                a.steps,
                a.error,
                now,
                a.run_id,
                a.from_step,
                a.from_attempt,
            ],
            run_from_row,
        )
        .optional()?;
    let Some(run) = run else {
        return Ok(None);
    };
    let run = run?;
    for line in &a.log {
        log(tx, &run.id, line.time_ms, &line.step_id, &line.message)?;
    }
    changed.push(run.clone());
    if run.state.is_finished() {
        promote_queued(tx, &run, now, changed)?;
    }
    Ok(Some(run))
}

/// A run with a key finished: the oldest run queued behind it may start.
fn promote_queued(
    tx: &Transaction,
    finished: &Run,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<()> {
    let Some(key) = &finished.key else {
        return Ok(());
    };
    let promoted = tx
        .prepare_cached(
            "UPDATE flow_runs SET wake_ms = ?1, updated_ms = ?1 WHERE id = (SELECT id FROM \
             flow_runs WHERE flow_id = ?2 AND correlation_key = ?3 AND state = 'CREATED' \
             AND wake_ms IS NULL ORDER BY created_ms, id LIMIT 1) RETURNING *",
        )?
        .query_row(params![now, finished.flow_id, key], run_from_row)
        .optional()?;
    if let Some(run) = promoted {
        changed.push(run?);
    }
    Ok(())
}

fn log(tx: &Transaction, run_id: &str, time_ms: i64, step_id: &str, message: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO flow_run_log (run_id, time_ms, step_id, message) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![run_id, time_ms, step_id, message])?;
    Ok(())
}

/// `rows::run_from_row` in the shape rusqlite's query closures take: a row
/// that cannot be mapped is an error of its own (inside `Ok`), so it is not
/// mistaken for a missing row.
fn run_from_row(row: &Row) -> rusqlite::Result<Result<Run>> {
    Ok(crate::store::rows::run_from_row(row))
}
