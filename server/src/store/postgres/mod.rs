//! The PostgreSQL backend, for several daemons sharing one database. Reads
//! go through a pool; events, deliveries, attempt results and run changes
//! are written by the committer (`committer`), one transaction per group
//! commit, as on SQLite. Every connection runs with `synchronous_commit =
//! on` whatever the server's default, so a commit has reached the server's
//! log on disk before anything is acknowledged.
//!
//! Rows map to the model with the same code as on SQLite (`store::rows`):
//! the schema (`migrations/postgres`) has the same tables and columns.

mod catalog_watch;
mod cluster;
mod committer;
mod event_types;
pub(super) mod feed_bus;
mod flows;
mod replay;
mod retention;
mod runs;
mod sources;
mod stats;

use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, PgPool, Row,
};

pub(super) use self::committer::Committer;
use super::{
    rows::{
        attempt_from_row, delivery_from_row, due_from_rows, endpoint_from_row, event_from_row,
        schedule_to_json, subscription_from_row, to_json,
    },
    DeliveryPage, Error, Result,
};
use crate::model::{
    now_ms, Attempt, Delivery, DeliveryFilter, DueCursor, DueDelivery, Endpoint, EndpointState,
    StoredEvent, Subscription,
};

pub(super) static MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("src/store/migrations/postgres");

/// Rows scanned per query when a filter must be applied in Rust.
const SCAN_CHUNK: i64 = 500;
/// Rows scanned at most for one page of a filtered listing.
const SCAN_LIMIT: usize = 20_000;
/// Connections for reads (Admin API, dispatcher reloads, the flow engine);
/// the committer has a pool of its own.
const READ_CONNECTIONS: u32 = 8;
/// How long a statement may wait for a connection before the caller hears
/// that storage is unavailable (PostgreSQL down or every connection busy).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// This daemon among those sharing the database (see `named`).
    node_id: std::sync::Arc<str>,
}

/// Parses `storage.postgres_url`; the message names the setting.
pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let options: PgConnectOptions = url.parse().map_err(|e| {
        Error::Unavailable(format!("storage.postgres_url is not a PostgreSQL URL: {e}"))
    })?;
    Ok(options
        .application_name("hookyard")
        .options([("synchronous_commit", "on")])
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// A pool of `size` connections to `url`.
pub(super) async fn pool(url: &str, size: u32) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(connect_options(url)?)
        .await?)
}

impl PgStore {
    /// Connects, brings the schema up to date (refusing one newer than this
    /// build knows) and returns the store plus the committer.
    pub async fn open(url: &str) -> Result<(PgStore, Committer)> {
        let pool = pool(url, READ_CONNECTIONS).await?;
        migrate(&pool).await?;
        let committer = Committer::connect(url).await?;
        let node_id = new_node_id();
        Ok((PgStore { pool, node_id }, committer))
    }

    /// Newer catalog versions, whichever daemon made the change.
    pub(super) fn watch_catalog(&self) -> tokio::sync::mpsc::Receiver<u64> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        catalog_watch::spawn(self.pool.clone(), tx);
        rx
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Names this daemon `host/listen`: two live daemons cannot hold the same
    /// address on one host, so the name is unique among live daemons, and a
    /// daemon restarted after a crash on the same host and address resumes
    /// its predecessor's leases at once instead of waiting for them to
    /// expire.
    pub fn named(mut self, listen: std::net::SocketAddr) -> PgStore {
        self.node_id = format!("{}/{listen}", host_name()).into();
        self
    }

    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- endpoints ----

    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        let rows = sqlx::query("SELECT * FROM endpoints ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(endpoint_from_row).collect()
    }

    pub async fn get_endpoint(&self, id: &str) -> Result<Endpoint> {
        let row = sqlx::query("SELECT * FROM endpoints WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("endpoint", id))?;
        endpoint_from_row(&row)
    }

    pub async fn create_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        let now = now_ms();
        let result = bind_endpoint(
            sqlx::query(
                "INSERT INTO endpoints (url, tenant_id, secret, headers, timeout_ms, retry_schedule_ms, \
                 max_in_flight, state, description, id, options, previous_secret, previous_secret_until_ms, \
                 disabled_reason, failing_since_ms, version, created_ms, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $16, $17)",
            ),
            e,
        )
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await;
        match result {
            Err(err) if is_unique_violation(&err) => Err(Error::AlreadyExists(format!(
                "endpoint `{}` already exists",
                e.id
            ))),
            Err(err) => Err(err.into()),
            Ok(_) => self.get_endpoint(&e.id).await,
        }
    }

    pub async fn update_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        let query = sqlx::query(
            "UPDATE endpoints SET url = $1, tenant_id = $2, secret = $3, headers = $4, timeout_ms = $5, \
             retry_schedule_ms = $6, max_in_flight = $7, state = $8, description = $9, \
             options = $11, previous_secret = $12, previous_secret_until_ms = $13, \
             disabled_reason = $14, failing_since_ms = $15, \
             version = version + 1, updated_ms = $16 WHERE id = $10 AND version = $17",
        );
        let done = bind_endpoint(query, e)
            .bind(now_ms())
            .bind(e.version as i64)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            let current = self.get_endpoint(&e.id).await?;
            return Err(Error::StaleVersion {
                what: "endpoint",
                id: e.id.clone(),
                current: current.version,
                given: e.version,
            });
        }
        self.get_endpoint(&e.id).await
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<()> {
        let in_use: Option<String> =
            sqlx::query_scalar("SELECT name FROM subscriptions WHERE target = $1 LIMIT 1")
                .bind(format!("endpoint:{id}"))
                .fetch_optional(&self.pool)
                .await?;
        if let Some(name) = in_use {
            return Err(Error::FailedPrecondition(format!(
                "endpoint `{id}` is the target of subscription `{name}`; delete or retarget it first"
            )));
        }
        let done = sqlx::query("DELETE FROM endpoints WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("endpoint", id));
        }
        Ok(())
    }

    pub async fn set_endpoint_state(&self, id: &str, state: EndpointState) -> Result<()> {
        sqlx::query(
            "UPDATE endpoints SET state = $1, version = version + 1, updated_ms = $2 WHERE id = $3",
        )
        .bind(state.as_str())
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- subscriptions ----

    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        let rows = sqlx::query("SELECT * FROM subscriptions ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    pub async fn get_subscription(&self, id: &str) -> Result<Subscription> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("subscription", id))?;
        subscription_from_row(&row)
    }

    pub async fn find_subscription_by_name(&self, name: &str) -> Result<Option<Subscription>> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    pub async fn create_subscription(&self, s: &Subscription) -> Result<Subscription> {
        let now = now_ms();
        let result = sqlx::query(
            "INSERT INTO subscriptions (id, name, patterns, exclude, tenant_id, target, enabled, \
             description, inputs, filter, ordering_key, version, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $12, $13, 1, $10, $11)",
        )
        .bind(&s.id)
        .bind(&s.name)
        .bind(to_json(&s.patterns))
        .bind(to_json(&s.exclude))
        .bind(&s.tenant_id)
        .bind(&s.target)
        .bind(s.enabled)
        .bind(&s.description)
        .bind(to_json(&s.inputs))
        .bind(now)
        .bind(now)
        .bind(&s.filter)
        .bind(&s.ordering_key)
        .execute(&self.pool)
        .await;
        match result {
            Err(err) if is_unique_violation(&err) => Err(Error::AlreadyExists(format!(
                "a subscription named `{}` already exists",
                s.name
            ))),
            Err(err) => Err(err.into()),
            Ok(_) => self.get_subscription(&s.id).await,
        }
    }

    pub async fn update_subscription(&self, s: &Subscription) -> Result<Subscription> {
        let result = sqlx::query(
            "UPDATE subscriptions SET name = $1, patterns = $2, exclude = $3, tenant_id = $4, target = $5, \
             enabled = $6, description = $7, inputs = $8, filter = $12, ordering_key = $13, version = version + 1, \
             updated_ms = $9 WHERE id = $10 AND version = $11",
        )
        .bind(&s.name)
        .bind(to_json(&s.patterns))
        .bind(to_json(&s.exclude))
        .bind(&s.tenant_id)
        .bind(&s.target)
        .bind(s.enabled)
        .bind(&s.description)
        .bind(to_json(&s.inputs))
        .bind(now_ms())
        .bind(&s.id)
        .bind(s.version as i64)
        .bind(&s.filter)
        .bind(&s.ordering_key)
        .execute(&self.pool)
        .await;
        let done = match result {
            Err(err) if is_unique_violation(&err) => {
                return Err(Error::AlreadyExists(format!(
                    "a subscription named `{}` already exists",
                    s.name
                )))
            }
            other => other?,
        };
        if done.rows_affected() == 0 {
            let current = self.get_subscription(&s.id).await?;
            return Err(Error::StaleVersion {
                what: "subscription",
                id: s.id.clone(),
                current: current.version,
                given: s.version,
            });
        }
        self.get_subscription(&s.id).await
    }

    pub async fn delete_subscription(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM subscriptions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found("subscription", id));
        }
        Ok(())
    }

    // ---- deliveries ----

    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page_size: usize,
        before: Option<u64>,
    ) -> Result<DeliveryPage> {
        let mut page = DeliveryPage::default();
        let mut cursor = before.map(|b| b as i64).unwrap_or(i64::MAX);
        let mut scanned = 0;
        loop {
            let rows = sqlx::query(&format!(
                "{DELIVERY_SELECT} WHERE d.id < $1 AND ($2 IS NULL OR d.status = $3) \
                 AND ($4 IS NULL OR d.endpoint_id = $5) AND ($6 IS NULL OR d.subscription_id = $7) \
                 ORDER BY d.id DESC LIMIT $8"
            ))
            .bind(cursor)
            .bind(filter.status.map(|s| s.as_str()))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(&filter.endpoint_id)
            .bind(&filter.endpoint_id)
            .bind(&filter.subscription_id)
            .bind(&filter.subscription_id)
            .bind(SCAN_CHUNK)
            .fetch_all(&self.pool)
            .await?;
            let exhausted = (rows.len() as i64) < SCAN_CHUNK;
            for row in &rows {
                let delivery = delivery_from_row(row)?;
                cursor = delivery.id as i64;
                scanned += 1;
                if filter.matches(&delivery) {
                    page.deliveries.push(delivery);
                    if page.deliveries.len() == page_size {
                        page.next_before = Some(cursor as u64);
                        return Ok(page);
                    }
                }
            }
            if exhausted {
                return Ok(page);
            }
            if scanned >= SCAN_LIMIT {
                // Hand the caller a cursor rather than scanning without end.
                page.next_before = Some(cursor as u64);
                return Ok(page);
            }
        }
    }

    pub async fn get_delivery(&self, id: u64) -> Result<(Delivery, StoredEvent, Vec<Attempt>)> {
        let row = sqlx::query(&format!("{DELIVERY_SELECT} WHERE d.id = $1"))
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("delivery", &id.to_string()))?;
        let delivery = delivery_from_row(&row)?;
        let event_row = sqlx::query("SELECT * FROM events WHERE seq = $1")
            .bind(delivery.event_seq as i64)
            .fetch_one(&self.pool)
            .await?;
        let event = event_from_row(&event_row)?;
        let attempts = sqlx::query("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY number")
            .bind(id as i64)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(attempt_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok((delivery, event, attempts))
    }

    /// The event with this id, and its deliveries' ids in creation order.
    pub async fn find_event(&self, id: &str) -> Result<Option<(StoredEvent, Vec<u64>)>> {
        let Some(row) = sqlx::query("SELECT * FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let event = event_from_row(&row)?;
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM deliveries WHERE event_seq = $1 ORDER BY id")
                .bind(event.seq as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(Some((event, ids.into_iter().map(|i| i as u64).collect())))
    }

    pub async fn resend_delivery(&self, id: u64) -> Result<(Delivery, DueDelivery)> {
        let now = now_ms();
        let new_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO deliveries (event_seq, subscription_id, endpoint_id, status, attempts, next_attempt_ms, created_ms, updated_ms, also_subscriptions) SELECT event_seq, subscription_id, endpoint_id, 'pending', 0, $1, $2, $3, also_subscriptions FROM deliveries WHERE id = $4 RETURNING id",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        let new_id = new_id.ok_or_else(|| not_found("delivery", &id.to_string()))?;
        let (delivery, _, _) = self.get_delivery(new_id as u64).await?;
        // Whichever node holds the endpoint's lease picks it up.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(cluster::DELIVERIES_CHANNEL)
            .bind(&delivery.endpoint_id)
            .execute(&self.pool)
            .await?;
        let due = self
            .load_due_where("d.id = $1", new_id, 1)
            .await?
            .pop()
            .ok_or_else(|| not_found("delivery", &new_id.to_string()))?;
        Ok((delivery, due))
    }

    pub async fn recover_endpoint(&self, endpoint_id: &str, since_ms: i64) -> Result<u64> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'failed', next_attempt_ms = $1, updated_ms = $2 WHERE endpoint_id = $3 AND status IN ('failed', 'dead') AND created_ms >= $4",
        )
        .bind(now)
        .bind(now)
        .bind(endpoint_id)
        .bind(since_ms)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() > 0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(cluster::DELIVERIES_CHANNEL)
                .bind(endpoint_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(done.rows_affected())
    }

    pub async fn set_endpoint_failing_since(&self, id: &str, since_ms: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE endpoints SET failing_since_ms = $1 WHERE id = $2")
            .bind(since_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn disable_failing_endpoint(
        &self,
        id: &str,
        reason: &str,
        since_ms: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE endpoints SET state = 'failing', disabled_reason = $1, version = version + 1, updated_ms = $2, failing_since_ms = $3 WHERE id = $4 AND state = 'enabled'",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(since_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn schedule_retry(&self, id: u64) -> Result<(Delivery, DueDelivery)> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'failed', next_attempt_ms = $1, updated_ms = $2 \
             WHERE id = $3 AND status IN ('failed', 'dead')",
        )
        .bind(now)
        .bind(now)
        .bind(id as i64)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            // Whichever node holds the endpoint's lease picks it up.
            sqlx::query("SELECT pg_notify($1, endpoint_id) FROM deliveries WHERE id = $2")
                .bind(cluster::DELIVERIES_CHANNEL)
                .bind(id as i64)
                .execute(&self.pool)
                .await?;
        }
        if done.rows_affected() == 0 {
            let (current, _, _) = self.get_delivery(id).await?;
            return Err(Error::FailedPrecondition(format!(
                "delivery {id} is {}; only failed or dead deliveries can be retried",
                current.status.as_str()
            )));
        }
        let (delivery, _, _) = self.get_delivery(id).await?;
        let due = self
            .load_due_where("d.id = $1", id as i64, 1)
            .await?
            .pop()
            .ok_or_else(|| not_found("delivery", &id.to_string()))?;
        Ok((delivery, due))
    }

    pub async fn claim_due(
        &self,
        endpoint_id: &str,
        now_ms: i64,
        max_id: u64,
        after: Option<DueCursor>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>> {
        let after = after.unwrap_or(DueCursor {
            due_ms: i64::MIN,
            id: 0,
        });
        let rows = sqlx::query(CLAIM_DUE)
            .bind(endpoint_id)
            .bind(now_ms)
            .bind(max_id as i64)
            .bind(after.due_ms)
            .bind(after.id as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        due_from_rows(&rows)
    }

    async fn load_due_where(&self, clause: &str, arg: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let rows = sqlx::query(&format!("{DUE_SELECT} WHERE {clause} LIMIT $2"))
            .bind(arg)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        due_from_rows(&rows)
    }

    pub async fn next_due(&self, endpoint_id: &str, after_ms: i64) -> Result<Option<i64>> {
        let next: Option<i64> = sqlx::query_scalar(NEXT_DUE)
            .bind(endpoint_id)
            .bind(after_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(next)
    }

    /// Makes due every parked delivery that no longer waits behind anything:
    /// the earliest unfinished one of its endpoint and ordering key. Run on
    /// start, so nothing stays parked for good whatever happened before.
    pub async fn unpark_orphans(&self) -> Result<u64> {
        let done = sqlx::query(UNPARK_ORPHANS)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn due_endpoints(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(DUE_ENDPOINTS).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("endpoint_id")?, row.try_get("due")?)))
            .collect()
    }

    pub async fn max_delivery_id(&self) -> Result<u64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM deliveries")
            .fetch_one(&self.pool)
            .await?;
        Ok(max.unwrap_or(0).max(0) as u64)
    }
}

const DELIVERY_SELECT: &str = "SELECT d.id, d.event_seq, e.id AS event_id, e.name AS event_name, \
    e.tenant_id, d.subscription_id, COALESCE(s.name, '') AS subscription_name, d.also_subscriptions, d.endpoint_id, d.ordering_key, \
    d.status, d.attempts, d.last_status_code, d.last_error, d.last_duration_ms, d.next_attempt_ms, \
    d.created_ms, d.updated_ms \
    FROM deliveries d JOIN events e ON e.seq = d.event_seq \
    LEFT JOIN subscriptions s ON s.id = d.subscription_id";

const DUE_SELECT: &str = "SELECT d.id, d.subscription_id, d.endpoint_id, d.attempts, \
    d.next_attempt_ms, d.ordering_key IS NOT NULL AS ordered, e.seq, e.id AS event_id, e.name, e.source, e.tenant_id, e.time_ms, e.payload \
    FROM deliveries d JOIN events e ON e.seq = d.event_seq";

// The due queries walk `deliveries_endpoint_due` (endpoint, due time, id)
// over pending rows only; a page never sorts the endpoint's whole backlog.
const CLAIM_DUE: &str = "SELECT d.id, d.subscription_id, d.endpoint_id, d.attempts, \
    d.next_attempt_ms, d.ordering_key IS NOT NULL AS ordered, e.seq, e.id AS event_id, e.name, e.source, e.tenant_id, e.time_ms, e.payload \
    FROM deliveries d JOIN events e ON e.seq = d.event_seq \
    WHERE d.endpoint_id = $1 AND d.status IN ('pending', 'failed') AND d.next_attempt_ms <= $2 \
    AND d.id <= $3 AND (d.next_attempt_ms, d.id) > ($4, $5) \
    ORDER BY d.next_attempt_ms, d.id LIMIT $6";

const UNPARK_ORPHANS: &str = "UPDATE deliveries SET next_attempt_ms = $1 \
    WHERE status = 'pending' AND next_attempt_ms = 9223372036854775807 \
    AND ordering_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries e \
    WHERE e.endpoint_id = deliveries.endpoint_id AND e.ordering_key = deliveries.ordering_key \
    AND e.status IN ('pending', 'failed') AND e.id < deliveries.id)";

const NEXT_DUE: &str = "SELECT MIN(next_attempt_ms) FROM deliveries \
    WHERE endpoint_id = $1 AND status IN ('pending', 'failed') AND next_attempt_ms > $2 \
    AND next_attempt_ms < 9223372036854775807";

const DUE_ENDPOINTS: &str = "SELECT endpoint_id, MIN(next_attempt_ms) AS due FROM deliveries \
    WHERE status IN ('pending', 'failed') \
    AND next_attempt_ms < 9223372036854775807 GROUP BY endpoint_id";

fn bind_endpoint<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    e: &'q Endpoint,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(&e.url)
        .bind(&e.tenant_id)
        .bind(&e.secret)
        .bind(to_json(&e.headers))
        .bind(e.timeout.map(|d| d.as_millis() as i64))
        .bind(schedule_to_json(&e.retry_schedule))
        .bind(e.max_in_flight.map(i64::from))
        .bind(e.state.as_str())
        .bind(&e.description)
        .bind(&e.id)
        .bind(to_json(&e.options))
        .bind(
            e.previous_secret
                .as_ref()
                .map(|(secret, _)| secret.as_str()),
        )
        .bind(e.previous_secret.as_ref().map(|&(_, until)| until))
        .bind(&e.disabled_reason)
        .bind(e.failing_since_ms)
}

/// `host-pid-random`, until the daemon names itself (`PgStore::named`).
fn new_node_id() -> std::sync::Arc<str> {
    let tag: u32 = rand::random();
    format!("{}-{}-{tag:08x}", host_name(), std::process::id()).into()
}

/// This machine's name, for node ids.
pub(super) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.to_string(),
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Applies the migrations this build has that the database lacks, and
/// returns their versions. Refuses a database migrated by a newer build:
/// this one would not know what its tables mean.
async fn migrate(pool: &PgPool) -> Result<Vec<i64>> {
    let applied = applied_versions(pool).await?;
    super::refuse_newer_schema(&applied, &MIGRATIONS)?;
    MIGRATIONS.run(pool).await?;
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

/// `hookyard migrate` on PostgreSQL.
pub(super) async fn migrate_url(url: &str) -> Result<Vec<i64>> {
    let pool = pool(url, 1).await?;
    let applied = migrate(&pool).await;
    pool.close().await;
    applied
}
