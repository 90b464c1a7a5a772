//! What replay and bulk retry read and write: stored events page by page in
//! publish order, fresh deliveries for replayed events, and dead deliveries
//! made due again a page at a time.

use std::sync::Arc;

use sqlx::Row;

use super::SqliteStore;
use crate::{
    model::{Route, StoredEvent},
    store::{rows::event_from_row, Result, RetryScope},
};

impl SqliteStore {
    /// The first event at or after `seq`, and when it was received.
    pub async fn event_received_at(&self, seq: u64) -> Result<Option<(u64, i64)>> {
        let row =
            sqlx::query("SELECT seq, received_ms FROM events WHERE seq >= ? ORDER BY seq LIMIT 1")
                .bind(seq as i64)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| {
            Ok((
                r.try_get::<i64, _>("seq")? as u64,
                r.try_get("received_ms")?,
            ))
        })
        .transpose()
    }

    /// Up to `limit` events after `after_seq`, in publish order, with when
    /// each was received.
    pub async fn events_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(StoredEvent, i64)>> {
        sqlx::query("SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after_seq as i64)
            .bind(limit as i64)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| Ok((event_from_row(row)?, row.try_get("received_ms")?)))
            .collect()
    }

    /// New deliveries, due now, of stored events (one transaction); their
    /// ids and endpoints.
    pub async fn insert_replayed(
        &self,
        routes: &[(u64, Route)],
        now: i64,
    ) -> Result<Vec<(u64, Arc<str>)>> {
        let mut tx = self.pool().begin().await?;
        let mut made = Vec::with_capacity(routes.len());
        for (seq, route) in routes {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO deliveries (event_seq, subscription_id, endpoint_id, status, attempts, \
                 next_attempt_ms, created_ms, updated_ms, also_subscriptions) \
                 VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?) RETURNING id",
            )
            .bind(*seq as i64)
            .bind(&*route.subscription_id)
            .bind(&*route.endpoint_id)
            .bind(now)
            .bind(now)
            .bind(now)
            .bind(crate::store::rows::also_json(route))
            .fetch_one(&mut *tx)
            .await?;
            made.push((id as u64, route.endpoint_id.clone()));
        }
        tx.commit().await?;
        Ok(made)
    }

    /// Makes up to `limit` dead deliveries (and failed ones, with
    /// `include_failed`) after `after_id`, created in `[from_ms, to_ms)` (of
    /// one endpoint when given), due now; their ids and endpoints.
    pub async fn retry_dead_page(
        &self,
        scope: &RetryScope<'_>,
        after_id: u64,
        limit: usize,
        now: i64,
    ) -> Result<Vec<(u64, Arc<str>)>> {
        sqlx::query(
            "UPDATE deliveries SET status = 'failed', next_attempt_ms = ?1, updated_ms = ?1 \
             WHERE id IN (SELECT id FROM deliveries WHERE (status = 'dead' OR (?7 AND status = 'failed')) AND id > ?2 \
             AND created_ms >= ?3 AND created_ms < ?4 AND (?5 IS NULL OR endpoint_id = ?5) \
             ORDER BY id LIMIT ?6) RETURNING id, endpoint_id",
        )
        .bind(now)
        .bind(after_id as i64)
        .bind(scope.from_ms)
        .bind(scope.to_ms)
        .bind(scope.endpoint_id)
        .bind(limit as i64)
        .bind(scope.include_failed)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<i64, _>("id")? as u64,
                Arc::from(row.try_get::<String, _>("endpoint_id")?),
            ))
        })
        .collect()
    }
}
