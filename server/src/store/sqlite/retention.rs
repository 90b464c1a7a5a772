//! The janitor's deletes on SQLite (see `store::retention` for the policy).
//! Each call is one short transaction over a bounded window of rows, so the
//! writer waits at most a few milliseconds for the lock between its
//! commits. Freed pages go to SQLite's free list and are reused by the next
//! inserts: under a steady load the file stops growing.

use sqlx::Row;

use super::SqliteStore;
use crate::store::{retention::Window, Result};

/// Rows of a window that are old enough, and the events among them that
/// may go: every delivery succeeded, or dead long enough.
const DELETABLE_EVENTS: &str = "SELECT e.seq FROM events e \
    WHERE e.seq > ?1 AND e.seq <= ?2 AND e.received_ms < ?3 \
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
        AND (d.status IN ('pending', 'failed') OR (d.status = 'dead' AND e.received_ms >= ?4)))";

impl SqliteStore {
    pub async fn event_seq_range(&self) -> Result<Option<(i64, i64)>> {
        range(self, "SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM events").await
    }

    pub async fn delivery_id_range(&self) -> Result<Option<(i64, i64)>> {
        range(self, "SELECT MIN(id) AS lo, MAX(id) AS hi FROM deliveries").await
    }

    /// Deletes the events of `(after, upto]` received before `cutoff_ms`
    /// whose deliveries are all finished (dead ones only when received before
    /// `dead_cutoff_ms`), with their deliveries and attempts. Every statement
    /// writes and names the rows by the same condition, so the transaction
    /// takes the write lock at its first statement and never has to upgrade
    /// a read (which SQLite may refuse while the writer commits).
    pub async fn prune_event_window(
        &self,
        after: i64,
        upto: i64,
        cutoff_ms: i64,
        dead_cutoff_ms: i64,
    ) -> Result<Window> {
        let mut tx = self.pool().begin().await?;
        for statement in [
            format!(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT d.id FROM deliveries d \
                 WHERE d.event_seq IN ({DELETABLE_EVENTS}))"
            ),
            format!("DELETE FROM deliveries WHERE event_seq IN ({DELETABLE_EVENTS})"),
        ] {
            sqlx::query(&statement)
                .bind(after)
                .bind(upto)
                .bind(cutoff_ms)
                .bind(dead_cutoff_ms)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query(&format!(
            "DELETE FROM events WHERE seq IN ({DELETABLE_EVENTS})"
        ))
        .bind(after)
        .bind(upto)
        .bind(cutoff_ms)
        .bind(dead_cutoff_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        let recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE seq > ?1 AND seq <= ?2 AND received_ms >= ?3",
        )
        .bind(after)
        .bind(upto)
        .bind(cutoff_ms)
        .fetch_one(self.pool())
        .await?;
        Ok(Window::new(recent, deleted))
    }

    /// Deletes the attempts made before `cutoff_ms` of the deliveries in
    /// `(after, upto]` created before it.
    pub async fn prune_attempt_window(
        &self,
        after: i64,
        upto: i64,
        cutoff_ms: i64,
    ) -> Result<Window> {
        let recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE id > ?1 AND id <= ?2 AND created_ms >= ?3",
        )
        .bind(after)
        .bind(upto)
        .bind(cutoff_ms)
        .fetch_one(self.pool())
        .await?;
        let deleted = sqlx::query(
            "DELETE FROM attempts WHERE delivery_id > ?1 AND delivery_id <= ?2 AND started_ms < ?3",
        )
        .bind(after)
        .bind(upto)
        .bind(cutoff_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(Window::new(recent, deleted))
    }

    /// Deletes up to `limit` runs that ended before `cutoff_ms`, with their
    /// logs (both statements pick the same runs: the first one's write lock
    /// keeps them as they are).
    pub async fn prune_runs(&self, cutoff_ms: i64, limit: usize) -> Result<u64> {
        const ENDED: &str = "SELECT id FROM flow_runs WHERE created_ms < ?1 AND updated_ms < ?1 \
            AND state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') ORDER BY created_ms LIMIT ?2";
        let mut tx = self.pool().begin().await?;
        sqlx::query(&format!(
            "DELETE FROM flow_run_log WHERE run_id IN ({ENDED})"
        ))
        .bind(cutoff_ms)
        .bind(limit as i64)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(&format!("DELETE FROM flow_runs WHERE id IN ({ENDED})"))
            .bind(cutoff_ms)
            .bind(limit as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

async fn range(store: &SqliteStore, sql: &str) -> Result<Option<(i64, i64)>> {
    let row = sqlx::query(sql).fetch_one(store.pool()).await?;
    let (lo, hi): (Option<i64>, Option<i64>) = (row.try_get("lo")?, row.try_get("hi")?);
    Ok(lo.zip(hi))
}
