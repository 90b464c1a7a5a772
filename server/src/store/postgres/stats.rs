//! Numbers for the admin screens on PostgreSQL, as on SQLite, read from the
//! deliveries table: how many
//! deliveries each subscription made and how each endpoint fared since a
//! point in time. The window is found by its first delivery id (ids grow
//! with creation time), so only the window's rows are read, without an index
//! on the creation time that every write would pay for.

use sqlx::{PgPool, Row};

use super::PgStore;
use crate::store::{DeliveryStats, Result};

impl PgStore {
    /// Counts for the deliveries made at or after `since_ms`, plus each
    /// endpoint's current backlog.
    pub async fn delivery_stats(&self, since_ms: i64) -> Result<DeliveryStats> {
        let pool = self.pool();
        let first = first_id_since(pool, since_ms).await?;
        let mut stats = DeliveryStats::default();

        let rows = sqlx::query(
            "SELECT subscription_id, COUNT(*) AS n FROM deliveries WHERE id >= $1 \
             GROUP BY subscription_id",
        )
        .bind(first)
        .fetch_all(pool)
        .await?;
        for row in rows {
            stats
                .matched
                .insert(row.try_get("subscription_id")?, count(&row, "n")?);
        }

        let rows = sqlx::query(
            "SELECT endpoint_id, COUNT(*) FILTER (WHERE status = 'succeeded') AS ok, \
             COUNT(*) FILTER (WHERE status IN ('failed', 'dead')) AS bad FROM deliveries \
             WHERE id >= $1 GROUP BY endpoint_id",
        )
        .bind(first)
        .fetch_all(pool)
        .await?;
        for row in rows {
            let e = stats
                .endpoints
                .entry(row.try_get("endpoint_id")?)
                .or_default();
            e.succeeded = count(&row, "ok")?;
            e.failed = count(&row, "bad")?;
        }

        // Same condition as the partial index `deliveries_endpoint_due`, which serves it.
        let rows = sqlx::query(
            "SELECT endpoint_id, COUNT(*) AS n FROM deliveries \
             WHERE status IN ('pending', 'failed') GROUP BY endpoint_id",
        )
        .fetch_all(pool)
        .await?;
        for row in rows {
            let e = stats
                .endpoints
                .entry(row.try_get("endpoint_id")?)
                .or_default();
            e.backlog = count(&row, "n")?;
        }

        // Each endpoint's newest delivery with an error in the window.
        let rows = sqlx::query(
            "SELECT DISTINCT ON (endpoint_id) endpoint_id, last_error, updated_ms \
             FROM deliveries WHERE id >= $1 AND last_error IS NOT NULL AND last_error <> '' \
             ORDER BY endpoint_id, id DESC",
        )
        .bind(first)
        .fetch_all(pool)
        .await?;
        for row in rows {
            let e = stats
                .endpoints
                .entry(row.try_get("endpoint_id")?)
                .or_default();
            e.last_error = Some((row.try_get("last_error")?, row.try_get("updated_ms")?));
        }
        Ok(stats)
    }
}

fn count(row: &sqlx::postgres::PgRow, column: &str) -> Result<u64> {
    let n: Option<i64> = row.try_get(column)?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// The first delivery id made at or after `since_ms` (one past the last id
/// when there is none): a binary search over ids, one indexed lookup a step.
async fn first_id_since(pool: &PgPool, since_ms: i64) -> Result<i64> {
    let bounds = sqlx::query("SELECT MIN(id) AS lo, MAX(id) AS hi FROM deliveries")
        .fetch_one(pool)
        .await?;
    let (Some(mut lo), Some(hi)): (Option<i64>, Option<i64>) =
        (bounds.try_get("lo")?, bounds.try_get("hi")?)
    else {
        return Ok(0);
    };
    let mut hi = hi + 1;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let created: Option<i64> = sqlx::query_scalar(
            "SELECT created_ms FROM deliveries WHERE id >= $1 ORDER BY id LIMIT 1",
        )
        .bind(mid)
        .fetch_optional(pool)
        .await?;
        match created {
            Some(ms) if ms < since_ms => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}
