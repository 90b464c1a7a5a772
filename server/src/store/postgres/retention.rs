//! The janitor's deletes on PostgreSQL (see `store::retention` for the
//! policy): one short transaction per bounded window; autovacuum makes the
//! freed space reusable. Several daemons may prune at once: a row deleted by
//! one is simply not there for the other.

use sqlx::Row;

use super::PgStore;
use crate::store::{retention::Window, Result};

const DELETABLE_EVENTS: &str = "SELECT e.seq FROM events e \
    WHERE e.seq > $1 AND e.seq <= $2 AND e.received_ms < $3 \
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq \
        AND (d.status IN ('pending', 'failed') OR (d.status = 'dead' AND e.received_ms >= $4)))";

impl PgStore {
    pub async fn event_seq_range(&self) -> Result<Option<(i64, i64)>> {
        range(self, "SELECT MIN(seq) AS lo, MAX(seq) AS hi FROM events").await
    }

    pub async fn delivery_id_range(&self) -> Result<Option<(i64, i64)>> {
        range(self, "SELECT MIN(id) AS lo, MAX(id) AS hi FROM deliveries").await
    }

    /// As on SQLite: the window's old events whose deliveries all ended go,
    /// with their deliveries and attempts. The deletes check the statuses
    /// again, so a delivery retried meanwhile keeps its event.
    pub async fn prune_event_window(
        &self,
        after: i64,
        upto: i64,
        cutoff_ms: i64,
        dead_cutoff_ms: i64,
    ) -> Result<Window> {
        let mut tx = self.pool().begin().await?;
        let recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE seq > $1 AND seq <= $2 AND received_ms >= $3",
        )
        .bind(after)
        .bind(upto)
        .bind(cutoff_ms)
        .fetch_one(&mut *tx)
        .await?;
        let seqs: Vec<i64> = sqlx::query_scalar(DELETABLE_EVENTS)
            .bind(after)
            .bind(upto)
            .bind(cutoff_ms)
            .bind(dead_cutoff_ms)
            .fetch_all(&mut *tx)
            .await?;
        if seqs.is_empty() {
            return Ok(Window::new(recent, 0));
        }
        sqlx::query(
            "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries \
             WHERE event_seq = ANY($1) AND status IN ('succeeded', 'dead'))",
        )
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM deliveries WHERE event_seq = ANY($1) AND status IN ('succeeded', 'dead')",
        )
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
        let deleted = sqlx::query(
            "DELETE FROM events e WHERE e.seq = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_seq = e.seq)",
        )
        .bind(&seqs)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Window::new(recent, deleted))
    }

    pub async fn prune_attempt_window(
        &self,
        after: i64,
        upto: i64,
        cutoff_ms: i64,
    ) -> Result<Window> {
        let recent: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE id > $1 AND id <= $2 AND created_ms >= $3",
        )
        .bind(after)
        .bind(upto)
        .bind(cutoff_ms)
        .fetch_one(self.pool())
        .await?;
        let deleted = sqlx::query(
            "DELETE FROM attempts WHERE delivery_id > $1 AND delivery_id <= $2 AND started_ms < $3",
        )
        .bind(after)
        .bind(upto)
        .bind(cutoff_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(Window::new(recent, deleted))
    }

    pub async fn prune_runs(&self, cutoff_ms: i64, limit: usize) -> Result<u64> {
        let mut tx = self.pool().begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM flow_runs WHERE created_ms < $1 AND updated_ms < $1 \
             AND state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') LIMIT $2",
        )
        .bind(cutoff_ms)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        sqlx::query("DELETE FROM flow_run_log WHERE run_id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query(
            "DELETE FROM flow_runs WHERE id = ANY($1) \
             AND state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

async fn range(store: &PgStore, sql: &str) -> Result<Option<(i64, i64)>> {
    let row = sqlx::query(sql).fetch_one(store.pool()).await?;
    let (lo, hi): (Option<i64>, Option<i64>) = (row.try_get("lo")?, row.try_get("hi")?);
    Ok(lo.zip(hi))
}
