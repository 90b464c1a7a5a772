//! Flow-run changes inside the committer's transaction, as on SQLite
//! (`sqlite/committer/runs.rs`): a run starts in the transaction of the
//! event that started it, `cancel_on` cancels in the transaction of the
//! cancelling event, and the engine's step results share group commits.
//! Reads of runs are in `flows`, on the pool.

use sqlx::PgConnection;

use super::{committer::no_nul, flows::ACTIVE};
use crate::{
    model::run::{Advance, NewRun, OnConflict, Run, RunCancel, RunState, StartOutcome},
    store::{rows::run_from_row, Error, Result},
};

/// Creates a run, applying the flow's concurrency policy for its key.
pub(super) async fn start_run(
    tx: &mut PgConnection,
    new: &NewRun,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<StartOutcome> {
    let mut wake = Some(now);
    if let (Some(policy), Some(key), None) = (&new.concurrency, &new.key, &new.failed) {
        let active = active_with_key(tx, &new.flow_id, key).await?;
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
                        if let Some(run) = cancel_one(tx, &id, &reason, now).await? {
                            changed.push(run);
                        }
                    }
                }
            }
        }
    }
    let (state, error) = match &new.failed {
        Some(error) => (RunState::Failed, Some(no_nul(error))),
        None => (RunState::Created, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO flow_runs (id, flow_id, flow_version, state, correlation_key, inputs, \
         trigger, trigger_data, step_index, step_waited, attempt, attempt_group, wake_ms, \
         steps, error, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, FALSE, 0, 1, $9, '{}', $10, $11, $11) \
         ON CONFLICT (id) DO NOTHING RETURNING *",
    )
    .bind(&new.id)
    .bind(&new.flow_id)
    .bind(new.flow_version as i64)
    .bind(state.as_str())
    .bind(&new.key)
    .bind(&new.inputs)
    .bind(&new.trigger)
    .bind(&new.trigger_data)
    .bind(if state == RunState::Failed {
        None
    } else {
        wake
    })
    .bind(error.as_deref())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = inserted else {
        // The same run id again (an emitted or retried start): the first stands.
        let row = sqlx::query("SELECT * FROM flow_runs WHERE id = $1")
            .bind(&new.id)
            .fetch_one(&mut *tx)
            .await?;
        return Ok(StartOutcome::Started(Box::new(run_from_row(&row)?)));
    };
    let run = run_from_row(&row)?;
    changed.push(run.clone());
    Ok(StartOutcome::Started(Box::new(run)))
}

/// Active runs of a flow with a key, oldest first.
async fn active_with_key(tx: &mut PgConnection, flow_id: &str, key: &str) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT id FROM flow_runs WHERE flow_id = $1 AND correlation_key = $2 AND {ACTIVE} \
         AND wake_ms IS NOT NULL ORDER BY created_ms"
    ))
    .bind(flow_id)
    .bind(key)
    .fetch_all(&mut *tx)
    .await?)
}

/// Cancels every active run of a flow with a key.
pub(super) async fn cancel_by_key(
    tx: &mut PgConnection,
    cancel: &RunCancel,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<()> {
    let rows = sqlx::query(&format!(
        "UPDATE flow_runs SET state = 'CANCELLED', wake_ms = NULL, error = $1, \
         updated_ms = $2 WHERE flow_id = $3 AND correlation_key = $4 AND {ACTIVE} RETURNING *"
    ))
    .bind(no_nul(&cancel.reason))
    .bind(now)
    .bind(&cancel.flow_id)
    .bind(&cancel.key)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let run = run_from_row(&row)?;
        log(tx, &run.id, now, "", &cancel.reason).await?;
        changed.push(run);
    }
    Ok(())
}

/// Cancels one run (an admin's CancelRun); the next queued run with its key starts.
pub(super) async fn cancel_run(
    tx: &mut PgConnection,
    id: &str,
    reason: &str,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<Run> {
    if let Some(run) = cancel_one(tx, id, reason, now).await? {
        changed.push(run.clone());
        promote_queued(tx, &run, now, changed).await?;
        return Ok(run);
    }
    let state: Option<String> = sqlx::query_scalar("SELECT state FROM flow_runs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
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

async fn cancel_one(
    tx: &mut PgConnection,
    id: &str,
    reason: &str,
    now: i64,
) -> Result<Option<Run>> {
    let row = sqlx::query(&format!(
        "UPDATE flow_runs SET state = 'CANCELLED', wake_ms = NULL, error = $1, \
         updated_ms = $2 WHERE id = $3 AND {ACTIVE} RETURNING *"
    ))
    .bind(no_nul(reason))
    .bind(now)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some(row) => {
            log(tx, id, now, "", reason).await?;
            Ok(Some(run_from_row(&row)?))
        }
        None => Ok(None),
    }
}

/// Applies a step's result if the run is still where the engine left it.
pub(super) async fn advance(
    tx: &mut PgConnection,
    a: &Advance,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<Option<Run>> {
    let row = sqlx::query(&format!(
        "UPDATE flow_runs SET state = $1, step_index = $2, step_waited = $3, attempt = $4, \
         attempt_group = $5, wake_ms = $6, steps = $7, error = $8, updated_ms = $9 \
         WHERE id = $10 AND step_index = $11 AND attempt = $12 AND {ACTIVE} RETURNING *"
    ))
    .bind(a.state.as_str())
    .bind(i64::from(a.step_index))
    .bind(a.step_waited)
    .bind(i64::from(a.attempt))
    .bind(i64::from(a.attempt_group))
    .bind(a.wake_ms)
    .bind(no_nul(&a.steps))
    .bind(a.error.as_deref().map(no_nul))
    .bind(now)
    .bind(&a.run_id)
    .bind(i64::from(a.from_step))
    .bind(i64::from(a.from_attempt))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let run = run_from_row(&row)?;
    for line in &a.log {
        log(tx, &run.id, line.time_ms, &line.step_id, &line.message).await?;
    }
    changed.push(run.clone());
    if run.state.is_finished() {
        promote_queued(tx, &run, now, changed).await?;
    }
    Ok(Some(run))
}

/// A run with a key finished: the oldest run queued behind it may start.
async fn promote_queued(
    tx: &mut PgConnection,
    finished: &Run,
    now: i64,
    changed: &mut Vec<Run>,
) -> Result<()> {
    let Some(key) = &finished.key else {
        return Ok(());
    };
    let promoted = sqlx::query(
        "UPDATE flow_runs SET wake_ms = $1, updated_ms = $1 WHERE id = (SELECT id FROM \
         flow_runs WHERE flow_id = $2 AND correlation_key = $3 AND state = 'CREATED' \
         AND wake_ms IS NULL ORDER BY created_ms, id LIMIT 1) RETURNING *",
    )
    .bind(now)
    .bind(&finished.flow_id)
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = promoted {
        changed.push(run_from_row(&row)?);
    }
    Ok(())
}

async fn log(
    tx: &mut PgConnection,
    run_id: &str,
    time_ms: i64,
    step_id: &str,
    message: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO flow_run_log (run_id, time_ms, step_id, message) VALUES ($1, $2, $3, $4)",
    )
    .bind(run_id)
    .bind(time_ms)
    .bind(step_id)
    .bind(no_nul(message))
    .execute(&mut *tx)
    .await?;
    Ok(())
}
