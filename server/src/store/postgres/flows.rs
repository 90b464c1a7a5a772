//! Flows and runs on PostgreSQL. Reads go through the pool; every change to
//! a run goes through the writer (applied by `runs` in the committer's
//! transaction), as on SQLite.
//!
//! Due runs are found by the partial index over `wake_ms`; runs to cancel by
//! the index over `(flow_id, correlation_key)`. Nothing scans runs.

use sqlx::Row;

use super::PgStore;
use crate::{
    model::{
        flow::{RunFilter, StoredFlow},
        now_ms,
        run::{LogLine, Run, RunState},
    },
    store::{
        rows::{flow_from_row, run_from_row},
        Error, Result,
    },
};

pub(super) const ACTIVE: &str = "state IN ('CREATED', 'RUNNING', 'WAITING')";

impl PgStore {
    pub async fn list_flows(&self) -> Result<Vec<StoredFlow>> {
        let rows = sqlx::query(FLOW_SELECT_ALL).fetch_all(self.pool()).await?;
        rows.iter().map(flow_from_row).collect()
    }

    pub async fn get_flow(&self, id: &str) -> Result<StoredFlow> {
        let row = sqlx::query(&format!("{FLOW_SELECT} WHERE f.id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| not_found("flow", id))?;
        flow_from_row(&row)
    }

    /// The YAML of one version of a flow (runs keep the version they started with).
    pub async fn flow_version(&self, id: &str, version: u64) -> Result<String> {
        sqlx::query_scalar("SELECT yaml FROM flow_versions WHERE flow_id = $1 AND version = $2")
            .bind(id)
            .bind(version as i64)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| not_found("flow version", &format!("{id}@{version}")))
    }

    /// Stores a new flow (version 1) or, with `expected` set, a new version
    /// of an existing one if `expected` is its current version. With
    /// `expected` unset and the flow present, replaces it when the YAML
    /// differs (the config file's upsert).
    pub async fn save_flow(
        &self,
        id: &str,
        yaml: &str,
        expected: Option<u64>,
        create_only: bool,
    ) -> Result<StoredFlow> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let current: Option<(i64, String)> = sqlx::query_as(
            "SELECT f.version, v.yaml FROM flows f \
             JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version WHERE f.id = $1 \
             FOR UPDATE OF f",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let version = match (current, expected) {
            (Some(_), _) if create_only => {
                return Err(Error::AlreadyExists(format!("flow `{id}` already exists")))
            }
            (None, Some(_)) => return Err(not_found("flow", id)),
            (None, None) => {
                sqlx::query(
                    "INSERT INTO flows (id, version, created_ms, updated_ms) VALUES ($1, 1, $2, $3)",
                )
                .bind(id)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                1
            }
            (Some((current, _)), Some(given)) if current as u64 != given => {
                return Err(Error::StaleVersion {
                    what: "flow",
                    id: id.to_string(),
                    current: current as u64,
                    given,
                })
            }
            (Some((current, old)), None) if old == yaml => {
                tx.rollback().await?;
                let _ = current;
                return self.get_flow(id).await;
            }
            (Some((current, _)), _) => {
                let next = current + 1;
                sqlx::query("UPDATE flows SET version = $1, updated_ms = $2 WHERE id = $3")
                    .bind(next)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                next
            }
        };
        sqlx::query(
            "INSERT INTO flow_versions (flow_id, version, yaml, created_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (flow_id, version) \
             DO UPDATE SET yaml = EXCLUDED.yaml, created_ms = EXCLUDED.created_ms",
        )
        .bind(id)
        .bind(version)
        .bind(yaml)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_flow(id).await
    }

    /// Deletes a flow; its versions stay, so runs in progress finish.
    pub async fn delete_flow(&self, id: &str) -> Result<()> {
        let in_use: Option<String> =
            sqlx::query_scalar("SELECT name FROM subscriptions WHERE target = $1 LIMIT 1")
                .bind(format!("flow:{id}"))
                .fetch_optional(self.pool())
                .await?;
        if let Some(name) = in_use {
            return Err(Error::FailedPrecondition(format!(
                "flow `{id}` is the target of subscription `{name}`; delete or retarget it first"
            )));
        }
        let done = sqlx::query("DELETE FROM flows WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("flow", id));
        }
        Ok(())
    }

    pub async fn set_flow_webhook_key(&self, id: &str, hash: Option<&[u8]>) -> Result<()> {
        let done =
            sqlx::query("UPDATE flows SET webhook_key_hash = $1, updated_ms = $2 WHERE id = $3")
                .bind(hash)
                .bind(now_ms())
                .bind(id)
                .execute(self.pool())
                .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("flow", id));
        }
        Ok(())
    }

    pub async fn get_run(&self, id: &str) -> Result<(Run, Vec<LogLine>)> {
        let row = sqlx::query("SELECT * FROM flow_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| not_found("run", id))?;
        let run = run_from_row(&row)?;
        let log = sqlx::query(
            "SELECT time_ms, step_id, message FROM flow_run_log WHERE run_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(LogLine {
                time_ms: r.try_get("time_ms")?,
                step_id: r.try_get("step_id")?,
                message: r.try_get("message")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok((run, log))
    }

    /// Runs newest first, after `before` (a `created_ms`/id cursor).
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
        before: Option<(i64, String)>,
    ) -> Result<Vec<Run>> {
        let (before_ms, before_id) = before.unwrap_or((i64::MAX, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM flow_runs WHERE ($1 IS NULL OR flow_id = $2) AND ($3 IS NULL OR state = $4) \
             AND ($5 IS NULL OR correlation_key = $6) \
             AND (created_ms < $7 OR (created_ms = $8 AND ($9 = '' OR id < $10))) \
             ORDER BY created_ms DESC, id DESC LIMIT $11",
        )
        .bind(&filter.flow_id)
        .bind(&filter.flow_id)
        .bind(filter.state.map(RunState::as_str))
        .bind(filter.state.map(RunState::as_str))
        .bind(&filter.key)
        .bind(&filter.key)
        .bind(before_ms)
        .bind(before_ms)
        .bind(&before_id)
        .bind(&before_id)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Active runs due by `now_ms`, earliest first.
    pub async fn due_runs(&self, now_ms: i64, limit: usize) -> Result<Vec<Run>> {
        let rows = sqlx::query(&format!(
            "SELECT * FROM flow_runs WHERE {ACTIVE} AND wake_ms <= $1 ORDER BY wake_ms LIMIT $2"
        ))
        .bind(now_ms)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// The earliest wake-up after `now_ms`.
    pub async fn next_run_wake_after(&self, now_ms: i64) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT MIN(wake_ms) FROM flow_runs WHERE {ACTIVE} AND wake_ms > $1"
        ))
        .bind(now_ms)
        .fetch_one(self.pool())
        .await?)
    }
}

const FLOW_SELECT: &str =
    "SELECT f.id, f.version, f.webhook_key_hash, f.created_ms, f.updated_ms, \
    v.yaml FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version";
const FLOW_SELECT_ALL: &str = "SELECT f.id, f.version, f.webhook_key_hash, f.created_ms, \
    f.updated_ms, v.yaml FROM flows f JOIN flow_versions v ON v.flow_id = f.id \
    AND v.version = f.version ORDER BY f.id";

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.to_string(),
    }
}
