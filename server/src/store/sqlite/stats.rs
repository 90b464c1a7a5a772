//! Numbers for the admin screens, read from the deliveries table: how many
//! deliveries each subscription made and how each endpoint fared since a
//! point in time. The window is found by its first delivery id (ids grow
//! with creation time), so only the window's rows are read, without an index
//! on the creation time that every write would pay for.

use sqlx::{Row, SqlitePool};

use super::SqliteStore;
use crate::store::{DeliveryStats, Result};

impl SqliteStore {
    /// Counts for the deliveries made at or after `since_ms`, plus each
    /// endpoint's current backlog.
    pub async fn delivery_stats(&self, since_ms: i64) -> Result<DeliveryStats> {
        let pool = self.pool();
        let first = first_id_since(pool, since_ms).await?;
        let mut stats = DeliveryStats::default();

        let rows = sqlx::query(
            "SELECT subscription_id, COUNT(*) AS n FROM deliveries WHERE id >= ? \
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
            "SELECT endpoint_id, SUM(status = 'succeeded') AS ok, \
             SUM(status IN ('failed', 'dead')) AS bad FROM deliveries WHERE id >= ? \
             GROUP BY endpoint_id",
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

        // SQLite takes the bare columns from the row that holds MAX(id).
        let rows = sqlx::query(
            "SELECT endpoint_id, MAX(id) AS last, last_error, updated_ms FROM deliveries \
             WHERE id >= ? AND last_error IS NOT NULL AND last_error <> '' \
             GROUP BY endpoint_id",
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

fn count(row: &sqlx::sqlite::SqliteRow, column: &str) -> Result<u64> {
    let n: Option<i64> = row.try_get(column)?;
    Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// The first delivery id made at or after `since_ms` (one past the last id
/// when there is none): a binary search over ids, one indexed lookup a step.
async fn first_id_since(pool: &SqlitePool, since_ms: i64) -> Result<i64> {
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
            "SELECT created_ms FROM deliveries WHERE id >= ? ORDER BY id LIMIT 1",
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool_with(created: &[(i64, i64)]) -> SqlitePool {
        let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query(
            "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        for (id, ms) in created {
            sqlx::query("INSERT INTO deliveries (id, created_ms) VALUES (?, ?)")
                .bind(id)
                .bind(ms)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool
    }

    #[tokio::test]
    async fn the_window_starts_at_the_first_delivery_made_since() {
        // Ids with gaps, as deleted rows or rolled-back batches leave them.
        let pool = pool_with(&[(1, 100), (2, 200), (5, 300), (6, 300), (9, 400)]).await;
        assert_eq!(first_id_since(&pool, 0).await.unwrap(), 1);
        assert_eq!(first_id_since(&pool, 200).await.unwrap(), 2);
        assert_eq!(first_id_since(&pool, 201).await.unwrap(), 3);
        assert_eq!(first_id_since(&pool, 300).await.unwrap(), 3);
        assert_eq!(first_id_since(&pool, 400).await.unwrap(), 7);
        assert_eq!(first_id_since(&pool, 401).await.unwrap(), 10);
        let empty = pool_with(&[]).await;
        assert_eq!(first_id_since(&empty, 0).await.unwrap(), 0);
    }
}
