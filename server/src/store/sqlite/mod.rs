//! The SQLite backend: a read pool for the Admin API and the dispatcher's
//! reloads (WAL with `synchronous=FULL`: a commit is on disk when it
//! returns), plus the committer's connection, the only one that writes
//! events, deliveries and runs: SQLite has a single write lock and one writer
//! batching everything beats many writers queueing on it.

use std::{path::Path, sync::Arc, time::Duration};

use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    Row, SqlitePool,
};

pub(super) mod backup;
mod checkpoint;
pub(super) mod committer;
mod event_types;
mod fail_stop;
mod fault;
mod flows;
mod replay;
mod retention;
mod sources;
mod stats;
pub(super) mod wal;

use self::committer::Committer;
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

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// Rows scanned per query when a filter must be applied in Rust.
const SCAN_CHUNK: i64 = 500;
/// Rows scanned at most for one page of a filtered listing.
const SCAN_LIMIT: usize = 20_000;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

pub(super) fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // Rows come back from SQLite's worker thread through a channel of
        // this size; at sqlx's default (50) a 1 024-row reload page blocks
        // the worker every 50 rows, and each block is a pair of thread
        // wake-ups.
        .row_buffer_size(ROW_BUFFER)
}

const ROW_BUFFER: usize = 1024;

/// The database, its WAL and its shared memory hold every payload: mode
/// 0600, whatever the umask. SQLite gives the -wal and -shm files the mode
/// of the database file, so creating that one 0600 before SQLite does covers
/// them; files made by an older version are tightened here too (called
/// before opening and again once the -wal and -shm exist).
fn make_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let failed = |e: std::io::Error| {
            Error::Unavailable(format!("could not make {} private: {e}", path.display()))
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            // An existing database is kept as it is.
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(failed(e)),
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl SqliteStore {
    /// Opens the database, migrates it, and returns the store plus the
    /// committer, which holds the one connection that writes events.
    pub async fn open(path: &Path) -> Result<(SqliteStore, Committer)> {
        make_private(path)?;
        let options = connect_options(path);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        migrate_pool(&pool).await?;
        make_private(path)?;
        let wal = Arc::new(wal::WalFile::new(path));
        let (checkpoints, checkpointer) = checkpoint::spawn(&options, wal.clone()).await?;
        let committer = Committer::start(path, wal, checkpoints, checkpointer)?;
        Ok((SqliteStore { pool }, committer))
    }

    pub(super) fn pool(&self) -> &SqlitePool {
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
        let row = sqlx::query("SELECT * FROM endpoints WHERE id = ?")
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
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
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
            "UPDATE endpoints SET url = ?1, tenant_id = ?2, secret = ?3, headers = ?4, timeout_ms = ?5, \
             retry_schedule_ms = ?6, max_in_flight = ?7, state = ?8, description = ?9, \
             options = ?11, previous_secret = ?12, previous_secret_until_ms = ?13, \
             disabled_reason = ?14, failing_since_ms = ?15, \
             version = version + 1, updated_ms = ?16 WHERE id = ?10 AND version = ?17",
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
            sqlx::query_scalar("SELECT name FROM subscriptions WHERE target = ? LIMIT 1")
                .bind(format!("endpoint:{id}"))
                .fetch_optional(&self.pool)
                .await?;
        if let Some(name) = in_use {
            return Err(Error::FailedPrecondition(format!(
                "endpoint `{id}` is the target of subscription `{name}`; delete or retarget it first"
            )));
        }
        let done = sqlx::query("DELETE FROM endpoints WHERE id = ?")
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
            "UPDATE endpoints SET state = ?, version = version + 1, updated_ms = ? WHERE id = ?",
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
        let row = sqlx::query("SELECT * FROM subscriptions WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("subscription", id))?;
        subscription_from_row(&row)
    }

    pub async fn find_subscription_by_name(&self, name: &str) -> Result<Option<Subscription>> {
        let row = sqlx::query("SELECT * FROM subscriptions WHERE name = ?")
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?12, ?13, 1, ?10, ?11)",
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
            "UPDATE subscriptions SET name = ?1, patterns = ?2, exclude = ?3, tenant_id = ?4, target = ?5, \
             enabled = ?6, description = ?7, inputs = ?8, filter = ?12, ordering_key = ?13, version = version + 1, \
             updated_ms = ?9 WHERE id = ?10 AND version = ?11",
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
        let done = sqlx::query("DELETE FROM subscriptions WHERE id = ?")
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
                "{DELIVERY_SELECT} WHERE d.id < ? AND (? IS NULL OR d.status = ?) \
                 AND (? IS NULL OR d.endpoint_id = ?) AND (? IS NULL OR d.subscription_id = ?) \
                 ORDER BY d.id DESC LIMIT ?"
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
        let row = sqlx::query(&format!("{DELIVERY_SELECT} WHERE d.id = ?"))
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| not_found("delivery", &id.to_string()))?;
        let delivery = delivery_from_row(&row)?;
        let event_row = sqlx::query("SELECT * FROM events WHERE seq = ?")
            .bind(delivery.event_seq as i64)
            .fetch_one(&self.pool)
            .await?;
        let event = event_from_row(&event_row)?;
        let attempts = sqlx::query("SELECT * FROM attempts WHERE delivery_id = ? ORDER BY number")
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
        let Some(row) = sqlx::query("SELECT * FROM events WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let event = event_from_row(&row)?;
        let ids: Vec<i64> =
            sqlx::query_scalar("SELECT id FROM deliveries WHERE event_seq = ? ORDER BY id")
                .bind(event.seq as i64)
                .fetch_all(&self.pool)
                .await?;
        Ok(Some((event, ids.into_iter().map(|i| i as u64).collect())))
    }

    pub async fn resend_delivery(&self, id: u64) -> Result<(Delivery, DueDelivery)> {
        let now = now_ms();
        let new_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO deliveries (event_seq, subscription_id, endpoint_id, status, attempts, next_attempt_ms, created_ms, updated_ms, also_subscriptions) SELECT event_seq, subscription_id, endpoint_id, 'pending', 0, ?, ?, ?, also_subscriptions FROM deliveries WHERE id = ? RETURNING id",
        )
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(id as i64)
        .fetch_optional(&self.pool)
        .await?;
        let new_id = new_id.ok_or_else(|| not_found("delivery", &id.to_string()))?;
        let (delivery, _, _) = self.get_delivery(new_id as u64).await?;
        let due = self
            .load_due_where("d.id = ?", new_id, 1)
            .await?
            .pop()
            .ok_or_else(|| not_found("delivery", &new_id.to_string()))?;
        Ok((delivery, due))
    }

    pub async fn recover_endpoint(&self, endpoint_id: &str, since_ms: i64) -> Result<u64> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'failed', next_attempt_ms = ?, updated_ms = ? WHERE endpoint_id = ? AND status IN ('failed', 'dead') AND created_ms >= ?",
        )
        .bind(now)
        .bind(now)
        .bind(endpoint_id)
        .bind(since_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn set_endpoint_failing_since(&self, id: &str, since_ms: Option<i64>) -> Result<()> {
        sqlx::query("UPDATE endpoints SET failing_since_ms = ? WHERE id = ?")
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
            "UPDATE endpoints SET state = 'failing', disabled_reason = ?, version = version + 1, updated_ms = ?, failing_since_ms = ? WHERE id = ? AND state = 'enabled'",
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
            "UPDATE deliveries SET status = 'failed', next_attempt_ms = ?, updated_ms = ? \
             WHERE id = ? AND status IN ('failed', 'dead')",
        )
        .bind(now)
        .bind(now)
        .bind(id as i64)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            let (current, _, _) = self.get_delivery(id).await?;
            return Err(Error::FailedPrecondition(format!(
                "delivery {id} is {}; only failed or dead deliveries can be retried",
                current.status.as_str()
            )));
        }
        let (delivery, _, _) = self.get_delivery(id).await?;
        let due = self
            .load_due_where("d.id = ?", id as i64, 1)
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
        let rows = sqlx::query(&format!("{DUE_SELECT} WHERE {clause} LIMIT ?"))
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

// The due queries name their index: without statistics the planner may
// prefer another, which means reading and sorting every pending row (a
// million in a backlog) for each page.
const CLAIM_DUE: &str = "SELECT d.id, d.subscription_id, d.endpoint_id, d.attempts, \
    d.next_attempt_ms, d.ordering_key IS NOT NULL AS ordered, e.seq, e.id AS event_id, e.name, e.source, e.tenant_id, e.time_ms, e.payload \
    FROM deliveries d INDEXED BY deliveries_endpoint_due JOIN events e ON e.seq = d.event_seq \
    WHERE d.endpoint_id = ? AND d.status IN ('pending', 'failed') AND d.next_attempt_ms <= ? \
    AND d.id <= ? AND (d.next_attempt_ms, d.id) > (?, ?) \
    ORDER BY d.next_attempt_ms, d.id LIMIT ?";

const UNPARK_ORPHANS: &str = "UPDATE deliveries SET next_attempt_ms = ? \
    WHERE status = 'pending' AND next_attempt_ms = 9223372036854775807 \
    AND ordering_key IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries e \
    WHERE e.endpoint_id = deliveries.endpoint_id AND e.ordering_key = deliveries.ordering_key \
    AND e.status IN ('pending', 'failed') AND e.id < deliveries.id)";

const NEXT_DUE: &str = "SELECT MIN(next_attempt_ms) FROM deliveries \
    INDEXED BY deliveries_endpoint_due \
    WHERE endpoint_id = ? AND status IN ('pending', 'failed') AND next_attempt_ms > ? \
    AND next_attempt_ms < 9223372036854775807";

const DUE_ENDPOINTS: &str = "SELECT endpoint_id, MIN(next_attempt_ms) AS due FROM deliveries \
    INDEXED BY deliveries_endpoint_due WHERE status IN ('pending', 'failed') \
    AND next_attempt_ms < 9223372036854775807 GROUP BY endpoint_id";

fn bind_endpoint<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    e: &'q Endpoint,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
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

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.to_string(),
    }
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// `hookyard migrate` on SQLite: creates the database if needed.
pub(super) async fn migrate(path: &Path) -> Result<Vec<i64>> {
    make_private(path)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(connect_options(path))
        .await?;
    let applied = migrate_pool(&pool).await;
    pool.close().await;
    make_private(path)?;
    applied
}

/// Applies the migrations the database lacks and returns their versions;
/// refuses a database migrated by a newer build.
async fn migrate_pool(pool: &SqlitePool) -> Result<Vec<i64>> {
    let has_table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await?;
    let applied: Vec<i64> = match has_table {
        Some(_) => {
            sqlx::query_scalar(
                "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            )
            .fetch_all(pool)
            .await?
        }
        None => Vec::new(),
    };
    super::refuse_newer_schema(&applied, &MIGRATIONS)?;
    MIGRATIONS.run(pool).await?;
    Ok(MIGRATIONS
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn plan(store: &SqliteStore, sql: &str, args: usize) -> String {
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&sql);
        for _ in 0..args {
            query = query.bind(0i64);
        }
        let rows = query.fetch_all(&store.pool).await.expect("plan");
        rows.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[tokio::test]
    async fn due_queries_walk_the_due_index_without_sorting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _writer) = SqliteStore::open(&dir.path().join("plan.db"))
            .await
            .expect("open");
        for (sql, args) in [(CLAIM_DUE, 6), (NEXT_DUE, 2), (DUE_ENDPOINTS, 0)] {
            let plan = plan(&store, sql, args).await;
            assert!(plan.contains("deliveries_endpoint_due"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }
}
