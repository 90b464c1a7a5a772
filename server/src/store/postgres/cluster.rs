//! What several daemons sharing one database agree on through it: who is
//! alive (`nodes`), which daemon sends each endpoint's deliveries
//! (`endpoint_leases`), which one steps a flow run (`run_leases`), and
//! which endpoints just got deliveries and that runs changed
//! (`hookyard_deliveries` and `hookyard_runs` notifications, sent by the
//! committer).
//!
//! Every time is the database's clock (`NOW_MS`), never a daemon's, so
//! daemons whose clocks disagree still agree on which lease has expired.
//!
//! A lease row is never deleted: releasing one sets it expired and keeps its
//! token, so the next holder's token is always higher than every earlier
//! one and a write fenced by an old token cannot match again.

use std::time::Duration;

use sqlx::{postgres::PgListener, PgPool, Row};
use tokio::sync::mpsc;

use super::PgStore;
use crate::store::{DeliveriesHint, Lease, Result};

/// The database's clock in milliseconds since the epoch.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::int8";

pub(super) const DELIVERIES_CHANNEL: &str = "hookyard_deliveries";
pub(super) const RUNS_CHANNEL: &str = "hookyard_runs";
/// Most bytes of endpoint ids in one notification (PostgreSQL takes up to
/// 8000 per payload).
const NOTIFY_BYTES: usize = 7000;

/// A node's row and leases are forgotten this many lease timeouts after its
/// last heartbeat.
const FORGET_AFTER: i64 = 100;

impl PgStore {
    /// Says this node is alive, renews its run leases, and answers how many
    /// nodes are alive (this one included).
    pub async fn heartbeat(&self, lease: Duration) -> Result<u64> {
        let lease_ms = lease_ms(lease);
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO nodes (node_id, started_ms, heartbeat_ms) VALUES ($1, {NOW_MS}, {NOW_MS}) \
             ON CONFLICT (node_id) DO UPDATE SET heartbeat_ms = EXCLUDED.heartbeat_ms"
        ))
        .bind(&*self.node_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE run_leases SET expires_ms = {NOW_MS} + $2 WHERE node_id = $1"
        ))
        .bind(&*self.node_id)
        .bind(lease_ms)
        .execute(&mut *tx)
        .await?;
        let others: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM nodes WHERE node_id <> $1 AND heartbeat_ms > {NOW_MS} - $2"
        ))
        .bind(&*self.node_id)
        .bind(lease_ms)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM nodes WHERE heartbeat_ms < {NOW_MS} - $1"
        ))
        .bind(lease_ms.saturating_mul(FORGET_AFTER))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM run_leases WHERE expires_ms < {NOW_MS} - $1"
        ))
        .bind(lease_ms.saturating_mul(FORGET_AFTER))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(others.max(0) as u64 + 1)
    }

    /// Extends every endpoint lease this node holds; returns them. A lease
    /// missing from the answer was taken over by another node.
    pub async fn renew_endpoint_leases(&self, lease: Duration) -> Result<Vec<Lease>> {
        let rows = sqlx::query(&format!(
            "UPDATE endpoint_leases SET expires_ms = {NOW_MS} + $2 WHERE node_id = $1 \
             RETURNING endpoint_id, token"
        ))
        .bind(&*self.node_id)
        .bind(lease_ms(lease))
        .fetch_all(&self.pool)
        .await?;
        leases_from(&rows)
    }

    /// Takes up to `limit` of `candidates` whose lease is free or expired,
    /// in random order (so nodes starting together do not all reach for
    /// the same ones); returns what it took.
    pub async fn acquire_endpoint_leases(
        &self,
        candidates: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Lease>> {
        if candidates.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "INSERT INTO endpoint_leases (endpoint_id, node_id, token, expires_ms) \
             SELECT c.id, $1, 1, {NOW_MS} + $3 FROM UNNEST($2::text[]) AS c(id) \
             LEFT JOIN endpoint_leases l ON l.endpoint_id = c.id \
             WHERE l.endpoint_id IS NULL OR l.expires_ms < {NOW_MS} \
             ORDER BY random() LIMIT $4 \
             ON CONFLICT (endpoint_id) DO UPDATE SET node_id = EXCLUDED.node_id, \
             token = endpoint_leases.token + 1, expires_ms = EXCLUDED.expires_ms \
             WHERE endpoint_leases.expires_ms < {NOW_MS} \
             RETURNING endpoint_id, token"
        ))
        .bind(&*self.node_id)
        .bind(candidates)
        .bind(lease_ms(lease))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        leases_from(&rows)
    }

    /// Gives a lease up: expired at once and no node's, its token kept.
    pub async fn release_endpoint_lease(&self, endpoint_id: &str, token: i64) -> Result<()> {
        sqlx::query(
            "UPDATE endpoint_leases SET expires_ms = 0, node_id = '' \
             WHERE endpoint_id = $1 AND node_id = $2 AND token = $3",
        )
        .bind(endpoint_id)
        .bind(&*self.node_id)
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A clean stop: every lease given up, the node's row gone.
    pub async fn leave_cluster(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE endpoint_leases SET expires_ms = 0, node_id = '' WHERE node_id = $1")
            .bind(&*self.node_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM run_leases WHERE node_id = $1")
            .bind(&*self.node_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM nodes WHERE node_id = $1")
            .bind(&*self.node_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// When each of these endpoints' earliest delivery still to be made
    /// falls due; endpoints with none are left out. One index lookup each.
    pub async fn due_of(&self, endpoint_ids: &[String]) -> Result<Vec<(String, i64)>> {
        if endpoint_ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT c.id, (SELECT MIN(d.next_attempt_ms) FROM deliveries d \
             WHERE d.endpoint_id = c.id AND d.status IN ('pending', 'failed')) AS due \
             FROM UNNEST($1::text[]) AS c(id)",
        )
        .bind(endpoint_ids)
        .fetch_all(&self.pool)
        .await?;
        let mut due = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(at) = row.try_get::<Option<i64>, _>("due")? {
                due.push((row.try_get("id")?, at));
            }
        }
        Ok(due)
    }

    /// Endpoints that have deliveries still to make but no longer exist
    /// (deleted while no node held their lease, so no node would ever send
    /// or dead-letter them). A loose scan of the due index: one index probe
    /// per endpoint with a backlog, however deep the backlogs are.
    pub async fn orphaned_endpoints(&self) -> Result<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "WITH RECURSIVE due(endpoint_id) AS ( \
               (SELECT endpoint_id FROM deliveries WHERE status IN ('pending', 'failed') \
                ORDER BY endpoint_id LIMIT 1) \
               UNION ALL \
               SELECT (SELECT d.endpoint_id FROM deliveries d \
                       WHERE d.status IN ('pending', 'failed') AND d.endpoint_id > due.endpoint_id \
                       ORDER BY d.endpoint_id LIMIT 1) \
               FROM due WHERE due.endpoint_id IS NOT NULL) \
             SELECT endpoint_id FROM due WHERE endpoint_id IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM endpoints e WHERE e.id = due.endpoint_id)",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Takes the run for this node unless another node holds a live lease
    /// on it.
    pub async fn claim_run(&self, run_id: &str, lease: Duration) -> Result<bool> {
        let taken = sqlx::query(&format!(
            "INSERT INTO run_leases (run_id, node_id, expires_ms) VALUES ($1, $2, {NOW_MS} + $3) \
             ON CONFLICT (run_id) DO UPDATE SET node_id = EXCLUDED.node_id, \
             expires_ms = EXCLUDED.expires_ms \
             WHERE run_leases.expires_ms < {NOW_MS} OR run_leases.node_id = EXCLUDED.node_id"
        ))
        .bind(run_id)
        .bind(&*self.node_id)
        .bind(lease_ms(lease))
        .execute(&self.pool)
        .await?;
        Ok(taken.rows_affected() == 1)
    }

    pub async fn release_run(&self, run_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM run_leases WHERE run_id = $1 AND node_id = $2")
            .bind(run_id)
            .bind(&*self.node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Which endpoints got deliveries, from any node, as they commit.
    pub fn watch_deliveries(&self) -> mpsc::Receiver<DeliveriesHint> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(listen(
            self.pool.clone(),
            DELIVERIES_CHANNEL,
            tx,
            |payload| match payload {
                Some(ids) => DeliveriesHint::Endpoints(
                    ids.split('\n')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                ),
                None => DeliveriesHint::Any,
            },
        ));
        rx
    }

    /// A message each time runs changed on any node (and when such news
    /// may have been lost).
    pub fn watch_runs(&self) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(listen(self.pool.clone(), RUNS_CHANNEL, tx, |_| ()));
        rx
    }
}

fn lease_ms(lease: Duration) -> i64 {
    lease.as_millis().min(i64::MAX as u128) as i64
}

fn leases_from(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<Lease>> {
    rows.iter()
        .map(|row| {
            Ok(Lease {
                endpoint_id: row.try_get("endpoint_id")?,
                token: row.try_get("token")?,
            })
        })
        .collect()
}

/// The endpoint ids of a batch's deliveries as notification payloads: one
/// id per line, each payload under PostgreSQL's limit.
pub(super) fn hint_payloads<'a>(endpoint_ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut payloads: Vec<String> = Vec::new();
    let mut current = String::new();
    for id in endpoint_ids {
        if !current.is_empty() && current.len() + id.len() + 1 > NOTIFY_BYTES {
            payloads.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(id);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// Forwards each notification on `channel`, made into a message by
/// `message` (`None`: notifications may have been lost, at the start and
/// after the listening connection dropped). Ends when the receiver does.
async fn listen<T>(
    pool: PgPool,
    channel: &'static str,
    out: mpsc::Sender<T>,
    message: impl Fn(Option<&str>) -> T,
) {
    let mut listener: Option<PgListener> = None;
    loop {
        if listener.is_none() {
            listener = connect_listener(&pool, channel).await;
            if listener.is_some() && out.send(message(None)).await.is_err() {
                return;
            }
        }
        let Some(l) = listener.as_mut() else {
            tokio::select! {
                _ = out.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        };
        let next = tokio::select! {
            _ = out.closed() => return,
            received = l.try_recv() => match received {
                Ok(Some(n)) => message(Some(n.payload())),
                // Reconnected by itself: what was sent meanwhile is lost.
                Ok(None) => message(None),
                Err(error) => {
                    tracing::debug!(%error, channel, "Lost a notification connection.");
                    listener = None;
                    continue;
                }
            },
        };
        if out.send(next).await.is_err() {
            return;
        }
    }
}

async fn connect_listener(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    match listener.listen(channel).await {
        Ok(()) => Some(listener),
        Err(error) => {
            tracing::debug!(%error, channel, "Cannot listen for notifications yet.");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_split_under_the_payload_limit() {
        let ids: Vec<String> = (0..2000).map(|i| format!("endpoint-{i:05}")).collect();
        let payloads = hint_payloads(ids.iter().map(String::as_str));
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= NOTIFY_BYTES));
        let back: Vec<&str> = payloads.iter().flat_map(|p| p.split('\n')).collect();
        assert_eq!(back, ids);
        assert!(hint_payloads(std::iter::empty()).is_empty());
    }
}
