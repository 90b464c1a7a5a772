//! The SQLite backend: a read pool for the Admin API and the dispatcher's
//! reloads, plus one dedicated connection that only the writer uses, because
//! SQLite has a single write lock and one writer batching everything beats many
//! writers queueing on it. WAL with `synchronous=FULL`: a commit is on disk when
//! it returns.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use sqlx::{
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
    Connection, Row, SqliteConnection, SqlitePool,
};

use super::{
    flows,
    writer::{Done, FlowAnswer, FlowOp, Rejection, Settled},
    DeliveryPage, Error, Result,
};
use crate::flows::run::Run;
use crate::model::{
    now_ms, Attempt, Delivery, DeliveryFilter, DeliveryStatus, DueCursor, DueDelivery, Endpoint,
    EndpointState, EventEnvelope, NewEvent, Published, Route, StoredEvent, Subscription,
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
        // this size; at sqlx's default (50) a 256-row `RETURNING` or a
        // 1 024-row reload page blocks the worker every 50 rows, and each
        // block is a pair of thread wake-ups.
        .row_buffer_size(ROW_BUFFER)
}

const ROW_BUFFER: usize = 1024;

impl SqliteStore {
    /// Opens the database, migrates it, and returns the store plus the
    /// connection reserved for the writer.
    pub async fn open(path: &Path) -> Result<(SqliteStore, WriterConn)> {
        let options = connect_options(path);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await?;
        MIGRATIONS.run(&pool).await?;
        let checkpoints = super::checkpoint::spawn(&options).await?;
        let writer_options = options
            .pragma(
                "wal_autocheckpoint",
                super::checkpoint::WRITER_AUTOCHECKPOINT.to_string(),
            )
            .pragma(
                "journal_size_limit",
                super::checkpoint::WAL_SIZE_LIMIT.to_string(),
            )
            // The writer's commits are made durable by `WalFile::sync`, after
            // the commit and outside SQLite's write lock (see `WalFile`).
            .synchronous(SqliteSynchronous::Normal);
        let writer = SqliteConnection::connect_with(&writer_options).await?;
        let wal = Arc::new(WalFile::new(path));
        Ok((
            SqliteStore { pool },
            WriterConn::new(writer, checkpoints, wal),
        ))
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
                 max_in_flight, state, description, id, version, created_ms, updated_ms) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
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
        let done = sqlx::query(
            "UPDATE endpoints SET url = ?, tenant_id = ?, secret = ?, headers = ?, timeout_ms = ?, \
             retry_schedule_ms = ?, max_in_flight = ?, state = ?, description = ?, \
             version = version + 1, updated_ms = ? WHERE id = ? AND version = ?",
        )
        .bind(&e.url)
        .bind(&e.tenant_id)
        .bind(&e.secret)
        .bind(to_json(&e.headers))
        .bind(e.timeout.map(|d| d.as_millis() as i64))
        .bind(schedule_to_json(&e.retry_schedule))
        .bind(e.max_in_flight.map(i64::from))
        .bind(e.state.as_str())
        .bind(&e.description)
        .bind(now_ms())
        .bind(&e.id)
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

    pub async fn upsert_endpoint(&self, e: &Endpoint) -> Result<Endpoint> {
        match self.get_endpoint(&e.id).await {
            Ok(current) => {
                let mut next = e.clone();
                next.version = current.version;
                self.update_endpoint(&next).await
            }
            Err(Error::NotFound { .. }) => self.create_endpoint(e).await,
            Err(other) => Err(other),
        }
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

    async fn find_subscription_by_name(&self, name: &str) -> Result<Option<Subscription>> {
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
             description, inputs, version, created_ms, updated_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
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
            "UPDATE subscriptions SET name = ?, patterns = ?, exclude = ?, tenant_id = ?, target = ?, \
             enabled = ?, description = ?, inputs = ?, version = version + 1, updated_ms = ? \
             WHERE id = ? AND version = ?",
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

    pub async fn upsert_subscription(&self, s: &Subscription) -> Result<Subscription> {
        match self.find_subscription_by_name(&s.name).await? {
            Some(current) => {
                let mut next = s.clone();
                next.id = current.id;
                next.version = current.version;
                self.update_subscription(&next).await
            }
            None => self.create_subscription(s).await,
        }
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

    pub async fn load_due(
        &self,
        now_ms: i64,
        max_id: u64,
        after: Option<DueCursor>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>> {
        let after = after.unwrap_or(DueCursor {
            due_ms: i64::MIN,
            id: 0,
        });
        let rows = sqlx::query(LOAD_DUE)
            .bind(now_ms)
            .bind(max_id as i64)
            .bind(after.due_ms)
            .bind(after.id as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        Ok(due_from_rows(&rows))
    }

    async fn load_due_where(&self, clause: &str, arg: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        let rows = sqlx::query(&format!("{DUE_SELECT} WHERE {clause} LIMIT ?"))
            .bind(arg)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(due_from_rows(&rows))
    }

    pub async fn next_due_after(&self, now_ms: i64) -> Result<Option<i64>> {
        let next: Option<i64> = sqlx::query_scalar(NEXT_DUE)
            .bind(now_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(next)
    }

    pub async fn max_delivery_id(&self) -> Result<u64> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM deliveries")
            .fetch_one(&self.pool)
            .await?;
        Ok(max.unwrap_or(0).max(0) as u64)
    }
}

const DELIVERY_SELECT: &str = "SELECT d.id, d.event_seq, e.id AS event_id, e.name AS event_name, \
    e.tenant_id, d.subscription_id, COALESCE(s.name, '') AS subscription_name, d.endpoint_id, \
    d.status, d.attempts, d.last_status_code, d.last_error, d.last_duration_ms, d.next_attempt_ms, \
    d.created_ms, d.updated_ms \
    FROM deliveries d JOIN events e ON e.seq = d.event_seq \
    LEFT JOIN subscriptions s ON s.id = d.subscription_id";

const DUE_SELECT: &str = "SELECT d.id, d.subscription_id, d.endpoint_id, d.attempts, \
    d.next_attempt_ms, e.seq, e.id AS event_id, e.name, e.tenant_id, e.time_ms, e.payload \
    FROM deliveries d JOIN events e ON e.seq = d.event_seq";

// The due queries name their index: without statistics the planner prefers
// `deliveries_status`, which means reading and sorting every pending row (a
// million in a backlog) for each page.
const LOAD_DUE: &str = "SELECT d.id, d.subscription_id, d.endpoint_id, d.attempts, \
    d.next_attempt_ms, e.seq, e.id AS event_id, e.name, e.tenant_id, e.time_ms, e.payload \
    FROM deliveries d INDEXED BY deliveries_due JOIN events e ON e.seq = d.event_seq \
    WHERE d.status IN ('pending', 'failed') AND d.next_attempt_ms <= ? \
    AND d.id <= ? AND (d.next_attempt_ms, d.id) > (?, ?) \
    ORDER BY d.next_attempt_ms, d.id LIMIT ?";

const NEXT_DUE: &str = "SELECT MIN(next_attempt_ms) FROM deliveries INDEXED BY deliveries_due \
    WHERE status IN ('pending', 'failed') AND next_attempt_ms > ?";

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
}

fn due_from_rows(rows: &[SqliteRow]) -> Vec<DueDelivery> {
    // Deliveries of one event share one envelope, as they do on the hot path.
    let mut last: Option<Arc<EventEnvelope>> = None;
    rows.iter()
        .map(|row| {
            let seq = row.get::<i64, _>("seq") as u64;
            let event = match &last {
                Some(e) if e.seq == seq => e.clone(),
                _ => {
                    let e = Arc::new(EventEnvelope {
                        seq,
                        id: row.get("event_id"),
                        name: row.get("name"),
                        tenant_id: row.get("tenant_id"),
                        time_ms: row.get("time_ms"),
                        payload: row.get("payload"),
                    });
                    last = Some(e.clone());
                    e
                }
            };
            DueDelivery {
                id: row.get::<i64, _>("id") as u64,
                subscription_id: Arc::from(row.get::<&str, _>("subscription_id")),
                endpoint_id: Arc::from(row.get::<&str, _>("endpoint_id")),
                attempts: row.get::<i64, _>("attempts") as u32,
                due_ms: row.get::<Option<i64>, _>("next_attempt_ms").unwrap_or(0),
                event,
            }
        })
        .collect()
}

fn endpoint_from_row(row: &SqliteRow) -> Result<Endpoint> {
    let state: String = row.try_get("state")?;
    Ok(Endpoint {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        tenant_id: row.try_get("tenant_id")?,
        secret: row.try_get("secret")?,
        headers: from_json(&row.try_get::<String, _>("headers")?)?,
        timeout: row
            .try_get::<Option<i64>, _>("timeout_ms")?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        retry_schedule: schedule_from_json(row.try_get("retry_schedule_ms")?)?,
        max_in_flight: row
            .try_get::<Option<i64>, _>("max_in_flight")?
            .map(|n| n.clamp(0, u32::MAX as i64) as u32),
        state: EndpointState::parse(&state).ok_or_else(|| corrupt("endpoint state", &state))?,
        description: row.try_get("description")?,
        version: row.try_get::<i64, _>("version")? as u64,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn subscription_from_row(row: &SqliteRow) -> Result<Subscription> {
    Ok(Subscription {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        patterns: from_json(&row.try_get::<String, _>("patterns")?)?,
        exclude: from_json(&row.try_get::<String, _>("exclude")?)?,
        tenant_id: row.try_get("tenant_id")?,
        target: row.try_get("target")?,
        enabled: row.try_get("enabled")?,
        description: row.try_get("description")?,
        inputs: from_json(&row.try_get::<String, _>("inputs")?)?,
        version: row.try_get::<i64, _>("version")? as u64,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn delivery_from_row(row: &SqliteRow) -> Result<Delivery> {
    let status: String = row.try_get("status")?;
    Ok(Delivery {
        id: row.try_get::<i64, _>("id")? as u64,
        event_seq: row.try_get::<i64, _>("event_seq")? as u64,
        event_id: row.try_get("event_id")?,
        event_name: row.try_get("event_name")?,
        tenant_id: row.try_get("tenant_id")?,
        subscription_id: row.try_get("subscription_id")?,
        subscription_name: row.try_get("subscription_name")?,
        endpoint_id: row.try_get("endpoint_id")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| corrupt("delivery status", &status))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        last_status_code: row
            .try_get::<Option<i64>, _>("last_status_code")?
            .map(|c| c as u16),
        last_error: row.try_get("last_error")?,
        last_duration_ms: row
            .try_get::<Option<i64>, _>("last_duration_ms")?
            .map(|d| d as u32),
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        created_ms: row.try_get("created_ms")?,
        updated_ms: row.try_get("updated_ms")?,
    })
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: row.try_get::<i64, _>("seq")? as u64,
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        source: row.try_get("source")?,
        tenant_id: row.try_get("tenant_id")?,
        time_ms: row.try_get("time_ms")?,
        payload: row.try_get("payload")?,
        attributes: from_json(&row.try_get::<String, _>("attributes")?)?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> Result<Attempt> {
    Ok(Attempt {
        number: row.try_get::<i64, _>("number")? as u32,
        started_ms: row.try_get("started_ms")?,
        duration_ms: row.try_get::<i64, _>("duration_ms")? as u32,
        status_code: row
            .try_get::<Option<i64>, _>("status_code")?
            .map(|c| c as u16),
        error: row.try_get("error")?,
        response_body: row.try_get("response_body")?,
        request_headers: from_json::<BTreeMap<String, String>>(
            &row.try_get::<String, _>("request_headers")?,
        )?,
    })
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt("JSON column", &e.to_string()))
}

fn schedule_to_json(schedule: &Option<Vec<Duration>>) -> Option<String> {
    schedule
        .as_ref()
        .map(|s| to_json(&s.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>()))
}

fn schedule_from_json(value: Option<String>) -> Result<Option<Vec<Duration>>> {
    value
        .map(|s| {
            from_json::<Vec<u64>>(&s).map(|ms| ms.into_iter().map(Duration::from_millis).collect())
        })
        .transpose()
}

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.to_string(),
    }
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Unavailable(format!("stored {what} is unreadable: {value}"))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

// ---- the writer's transaction ----

/// The writer's connection, and the next event seq and delivery id it will
/// hand out. The writer is the only one to insert events and deliveries, so
/// it can number them itself and insert without `RETURNING`: reading every
/// inserted row back from SQLite's worker thread cost more than the insert.
/// Both are read from storage at the start of the first batch and again after
/// any failed batch, so a rollback never leaves a gap or a reuse behind.
pub struct WriterConn {
    conn: SqliteConnection,
    wal: Arc<WalFile>,
    next: Option<NextIds>,
    /// Told of each commit, so the log is copied back off this path.
    checkpoints: super::checkpoint::Checkpoints,
}

#[derive(Debug, Clone, Copy)]
struct NextIds {
    seq: i64,
    delivery: i64,
}

impl WriterConn {
    fn new(
        conn: SqliteConnection,
        checkpoints: super::checkpoint::Checkpoints,
        wal: Arc<WalFile>,
    ) -> WriterConn {
        WriterConn {
            conn,
            wal,
            next: None,
            checkpoints,
        }
    }

    /// What makes this writer's commits durable.
    pub(super) fn wal(&self) -> Arc<WalFile> {
        self.wal.clone()
    }
}

/// The database's write-ahead log, synced by hand.
///
/// The writer commits with `synchronous=NORMAL`: SQLite writes the
/// transaction's frames into the log but does not wait for the disk. The
/// writer's answers wait for `sync`, an `fdatasync` of the log file, which
/// covers every commit written before it. So the fsync of one batch runs
/// while the next batch is already being written, one fsync covers several
/// commits, and nothing is answered before it is on disk. (The log file
/// itself exists, durably, from the migrations, which commit with
/// `synchronous=FULL` on the pool; it is removed only when the last
/// connection closes.)
pub(super) struct WalFile {
    path: std::path::PathBuf,
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl WalFile {
    fn new(db: &Path) -> WalFile {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalFile {
            path: path.into(),
            file: std::sync::Mutex::new(None),
        }
    }

    /// Flushes every commit written so far to disk. Blocking.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("the log file handle was poisoned"))?;
        let current = std::fs::metadata(&self.path)?.ino();
        let stale = match file.as_ref() {
            Some(open) => open.metadata()?.ino() != current,
            None => true,
        };
        if stale {
            *file = Some(std::fs::File::open(&self.path)?);
        }
        match file.as_ref() {
            Some(open) => open.sync_data(),
            None => Err(std::io::Error::other("the log file is not open")),
        }
    }
}

/// Past the highest ever used, deleted rows included (`AUTOINCREMENT` keeps
/// that in `sqlite_sequence`).
async fn read_next_ids(conn: &mut SqliteConnection) -> Result<NextIds> {
    let next = |table: &'static str, column: &'static str| {
        format!(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0), \
             COALESCE((SELECT MAX({column}) FROM {table}), 0)) + 1"
        )
    };
    let seq: i64 = sqlx::query_scalar(&next("events", "seq"))
        .fetch_one(&mut *conn)
        .await?;
    let delivery: i64 = sqlx::query_scalar(&next("deliveries", "id"))
        .fetch_one(&mut *conn)
        .await?;
    Ok(NextIds { seq, delivery })
}

/// Commits one group: every event with its deliveries and flow runs, every
/// attempt result and every flow op, in a single transaction.
pub(super) async fn commit_batch(
    writer: &mut WriterConn,
    publishes: &[&[NewEvent]],
    settles: &[Settled],
    flow_ops: &[FlowOp],
) -> Result<Done> {
    if writer.checkpoints.take_restart() {
        // The log is long: copy its tail here, so the next commit starts it
        // over. A failure only means it stays long a while.
        if let Err(error) = super::checkpoint::passive_checkpoint(&mut writer.conn).await {
            tracing::warn!(%error, "WAL checkpoint failed.");
        }
    }
    let next = writer.next.take();
    let result = commit_numbered(&mut writer.conn, next, publishes, settles, flow_ops).await;
    // After a failure the numbers are read again from what was committed.
    result.map(|(done, next)| {
        writer.next = Some(next);
        writer.checkpoints.committed();
        done
    })
}

async fn commit_numbered(
    conn: &mut SqliteConnection,
    next: Option<NextIds>,
    publishes: &[&[NewEvent]],
    settles: &[Settled],
    flow_ops: &[FlowOp],
) -> Result<(Done, NextIds)> {
    let now = now_ms();
    let mut tx = conn.begin().await?;
    let mut next = match next {
        Some(next) => next,
        None => read_next_ids(&mut tx).await?,
    };
    let mut done = Done {
        outcomes: Vec::with_capacity(publishes.len()),
        due: Vec::new(),
        flow_answers: Vec::with_capacity(flow_ops.len()),
        runs: Vec::new(),
    };
    let events: Vec<&NewEvent> = publishes.iter().flat_map(|p| p.iter()).collect();
    let inserted = insert_events(&mut tx, &events, now, &mut next).await?;
    let mut claimed: HashSet<&str> = HashSet::with_capacity(inserted.len());
    let mut routed: Vec<(Arc<EventEnvelope>, &Route)> = Vec::new();
    for events in publishes {
        let mut outcome = Vec::with_capacity(events.len());
        for event in *events {
            // The first of several events with one id is the one inserted;
            // the others are duplicates of it or conflicts with it.
            let seq = match inserted.get(event.id.as_str()) {
                Some(&seq) if claimed.insert(event.id.as_str()) => seq,
                _ => {
                    outcome.push(existing_event_outcome(&mut tx, event).await?);
                    continue;
                }
            };
            if !event.routes.is_empty() {
                let envelope = Arc::new(EventEnvelope {
                    seq: seq as u64,
                    id: event.id.clone(),
                    name: event.name.clone(),
                    tenant_id: event.tenant_id.clone(),
                    time_ms: event.time_ms,
                    payload: event.payload.clone(),
                });
                routed.extend(event.routes.iter().map(|r| (envelope.clone(), r)));
            }
            // Flow runs start and cancel in event order, as published.
            for start in &event.flow_starts {
                flows::start_run(&mut tx, start, now, &mut done.runs).await?;
            }
            for cancel in &event.cancels {
                flows::cancel_by_key(&mut tx, cancel, now, &mut done.runs).await?;
            }
            outcome.push(Ok(Published {
                seq: seq as u64,
                duplicate: false,
                matched: matched(event),
            }));
        }
        done.outcomes.push(outcome);
    }
    done.due = insert_deliveries(&mut tx, &routed, now, &mut next).await?;
    record_settled(&mut tx, settles, now).await?;
    for op in flow_ops {
        let answer = apply_flow_op(&mut tx, op, now, &mut done.runs).await;
        done.flow_answers.push(match answer {
            Err(e @ Error::Unavailable(_)) => return Err(e),
            Err(refused) => FlowAnswer::Refused(refused),
            Ok(answer) => answer,
        });
    }
    tx.commit().await?;
    Ok((done, next))
}

async fn apply_flow_op(
    conn: &mut SqliteConnection,
    op: &FlowOp,
    now: i64,
    runs: &mut Vec<Run>,
) -> Result<FlowAnswer> {
    Ok(match op {
        FlowOp::Start(new, _) => FlowAnswer::Started(flows::start_run(conn, new, now, runs).await?),
        FlowOp::Advance(advance, _) => {
            FlowAnswer::Advanced(flows::advance(conn, advance, now, runs).await?)
        }
        FlowOp::Cancel { run_id, reason, .. } => {
            FlowAnswer::Cancelled(flows::cancel_run(conn, run_id, reason, now, runs).await?)
        }
    })
}

/// Subscriptions and flows the event was routed to.
fn matched(e: &NewEvent) -> u32 {
    (e.routes.len() + e.flow_starts.len()) as u32
}

/// Rows per multi-row INSERT. Chunks are powers of two up to this, so only a
/// few distinct statements reach the prepared-statement cache.
const MAX_ROWS_PER_INSERT: usize = 256;

/// Splits `len` rows into chunks of decreasing powers of two.
fn chunk_sizes(mut len: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if len == 0 {
            return None;
        }
        let size = if len >= MAX_ROWS_PER_INSERT {
            MAX_ROWS_PER_INSERT
        } else {
            1 << (usize::BITS - 1 - len.leading_zeros())
        };
        len -= size;
        Some(size)
    })
}

/// A multi-row statement: `head`, then `rows` copies of `group`, then
/// `tail`. The text for each chunk size is made once and kept, so building a
/// chunk's statement costs no formatting and the prepared-statement cache
/// finds it by the same text.
struct MultiRow {
    head: &'static str,
    group: &'static str,
    tail: &'static str,
    /// One per power of two up to `MAX_ROWS_PER_INSERT`.
    texts: [OnceLock<String>; CHUNK_SIZES],
}

const CHUNK_SIZES: usize = MAX_ROWS_PER_INSERT.trailing_zeros() as usize + 1;

impl MultiRow {
    const fn new(head: &'static str, group: &'static str, tail: &'static str) -> MultiRow {
        MultiRow {
            head,
            group,
            tail,
            texts: [const { OnceLock::new() }; CHUNK_SIZES],
        }
    }

    fn sql(&'static self, rows: usize) -> Cow<'static, str> {
        let text = || {
            format!(
                "{}{}{}",
                self.head,
                vec![self.group; rows].join(", "),
                self.tail
            )
        };
        if !rows.is_power_of_two() || rows > MAX_ROWS_PER_INSERT {
            return Cow::Owned(text());
        }
        Cow::Borrowed(self.texts[rows.trailing_zeros() as usize].get_or_init(text))
    }
}

static INSERT_NUMBERED_EVENTS: MultiRow = MultiRow::new(
    "INSERT INTO events (seq, id, name, source, tenant_id, time_ms, payload, attributes, \
     body_hash, matched, received_ms) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "",
);

static INSERT_EVENTS_SKIPPING_TAKEN: MultiRow = MultiRow::new(
    "INSERT INTO events (id, name, source, tenant_id, time_ms, payload, attributes, \
     body_hash, matched, received_ms) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    " ON CONFLICT (id) DO NOTHING RETURNING id, seq",
);

static INSERT_NUMBERED_DELIVERIES: MultiRow = MultiRow::new(
    "INSERT INTO deliveries (id, event_seq, subscription_id, endpoint_id, status, attempts, \
     next_attempt_ms, created_ms, updated_ms) VALUES ",
    "(?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
    "",
);

static INSERT_ATTEMPTS: MultiRow = MultiRow::new(
    "INSERT OR REPLACE INTO attempts (delivery_id, number, started_ms, duration_ms, \
     status_code, error, response_body, request_headers) VALUES ",
    "(?, ?, ?, ?, ?, ?, ?, ?)",
    "",
);

// v.column1 … v.column7: id, status, attempts, next attempt, status code,
// error, duration.
static UPDATE_SETTLED_DELIVERIES: MultiRow = MultiRow::new(
    "UPDATE deliveries SET status = v.column2, attempts = v.column3, \
     next_attempt_ms = v.column4, \
     last_status_code = COALESCE(v.column5, deliveries.last_status_code), \
     last_error = v.column6, \
     last_duration_ms = COALESCE(v.column7, deliveries.last_duration_ms), updated_ms = ? \
     FROM (VALUES ",
    "(?, ?, ?, ?, ?, ?, ?)",
    ") AS v WHERE deliveries.id = v.column1",
);

/// Inserts the events with one statement per chunk (each statement is a trip
/// to SQLite's worker thread, and one row per trip made those trips the
/// writer's main cost), numbered by the writer. Returns the seq of each id
/// that was inserted; ids already taken are left out.
async fn insert_events<'e>(
    conn: &mut SqliteConnection,
    events: &[&'e NewEvent],
    now: i64,
    next: &mut NextIds,
) -> Result<HashMap<&'e str, i64>> {
    let mut inserted = HashMap::with_capacity(events.len());
    let mut rest = events;
    for size in chunk_sizes(events.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        match insert_numbered_events(conn, chunk, now, next.seq).await {
            Ok(()) => {
                for (seq, e) in (next.seq..).zip(chunk) {
                    inserted.insert(e.id.as_str(), seq);
                }
                next.seq += size as i64;
            }
            // An id is taken (a duplicate, rare): SQLite backed out just
            // this statement; insert the chunk again, skipping taken ids.
            Err(error) if is_unique_violation(&error) => {
                insert_events_skipping_taken(conn, chunk, now, &mut inserted).await?;
                *next = read_next_ids(conn).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(inserted)
}

fn bind_event<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    e: &'q NewEvent,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(&e.id)
        .bind(&e.name)
        .bind(&e.source)
        .bind(&e.tenant_id)
        .bind(e.time_ms)
        .bind(&e.payload)
        .bind(to_json(&e.attributes))
        .bind(&e.body_hash[..])
        .bind(i64::from(matched(e)))
        .bind(now)
}

async fn insert_numbered_events(
    conn: &mut SqliteConnection,
    chunk: &[&NewEvent],
    now: i64,
    first_seq: i64,
) -> std::result::Result<(), sqlx::Error> {
    let sql = INSERT_NUMBERED_EVENTS.sql(chunk.len());
    let mut query = sqlx::query(&sql);
    for (seq, e) in (first_seq..).zip(chunk) {
        query = bind_event(query.bind(seq), e, now);
    }
    query.execute(conn).await?;
    Ok(())
}

async fn insert_events_skipping_taken<'e>(
    conn: &mut SqliteConnection,
    chunk: &[&'e NewEvent],
    now: i64,
    inserted: &mut HashMap<&'e str, i64>,
) -> Result<()> {
    let sql = INSERT_EVENTS_SKIPPING_TAKEN.sql(chunk.len());
    let mut query = sqlx::query(&sql);
    for e in chunk {
        query = bind_event(query, e, now);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let by_id: HashMap<&str, &'e NewEvent> = chunk.iter().map(|e| (e.id.as_str(), *e)).collect();
    for row in rows {
        let id: &str = row.try_get("id")?;
        let seq: i64 = row.try_get("seq")?;
        if let Some(event) = by_id.get(id) {
            inserted.insert(event.id.as_str(), seq);
        }
    }
    Ok(())
}

/// Inserts one pending delivery per routed event, in chunks, numbered by the
/// writer, and returns them due now, in the order given.
async fn insert_deliveries(
    conn: &mut SqliteConnection,
    routed: &[(Arc<EventEnvelope>, &Route)],
    now: i64,
    next: &mut NextIds,
) -> Result<Vec<DueDelivery>> {
    let mut due = Vec::with_capacity(routed.len());
    let mut rest = routed;
    for size in chunk_sizes(routed.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        if let Err(error) = insert_numbered_deliveries(conn, chunk, now, next.delivery).await {
            if !is_unique_violation(&error) {
                return Err(error.into());
            }
            // Someone else numbered deliveries: read the numbers again.
            *next = read_next_ids(conn).await?;
            insert_numbered_deliveries(conn, chunk, now, next.delivery).await?;
        }
        for (id, (event, route)) in (next.delivery..).zip(chunk) {
            due.push(DueDelivery {
                id: id as u64,
                subscription_id: route.subscription_id.clone(),
                endpoint_id: route.endpoint_id.clone(),
                attempts: 0,
                due_ms: now,
                event: event.clone(),
            });
        }
        next.delivery += size as i64;
    }
    Ok(due)
}

async fn insert_numbered_deliveries(
    conn: &mut SqliteConnection,
    chunk: &[(Arc<EventEnvelope>, &Route)],
    now: i64,
    first_id: i64,
) -> std::result::Result<(), sqlx::Error> {
    let sql = INSERT_NUMBERED_DELIVERIES.sql(chunk.len());
    let mut query = sqlx::query(&sql);
    for (id, (event, route)) in (first_id..).zip(chunk) {
        query = query
            .bind(id)
            .bind(event.seq as i64)
            .bind(&*route.subscription_id)
            .bind(&*route.endpoint_id)
            .bind(now)
            .bind(now)
            .bind(now);
    }
    query.execute(conn).await?;
    Ok(())
}

/// The id is taken: the same body is a duplicate (answered, not routed
/// again), a different body is a conflict.
async fn existing_event_outcome(
    conn: &mut SqliteConnection,
    e: &NewEvent,
) -> Result<Result<Published, Rejection>> {
    let (seq, hash): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, body_hash FROM events WHERE id = ?")
            .bind(&e.id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(if hash == e.body_hash {
        Ok(Published {
            seq: seq as u64,
            duplicate: true,
            matched: 0,
        })
    } else {
        Err(Rejection::Conflict { seq: seq as u64 })
    })
}

/// Records attempt results: the attempts and the deliveries' new states
/// with one statement per chunk each, like the events.
async fn record_settled(conn: &mut SqliteConnection, settles: &[Settled], now: i64) -> Result<()> {
    let attempts: Vec<(i64, &Attempt)> = settles
        .iter()
        .filter_map(|s| s.attempt.as_ref().map(|a| (s.delivery.id as i64, a)))
        .collect();
    let mut rest = attempts.as_slice();
    for size in chunk_sizes(attempts.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = INSERT_ATTEMPTS.sql(size);
        let mut query = sqlx::query(&sql);
        for (id, a) in chunk {
            query = query
                .bind(id)
                .bind(a.number as i64)
                .bind(a.started_ms)
                .bind(a.duration_ms as i64)
                .bind(a.status_code.map(i64::from))
                .bind(&a.error)
                .bind(&a.response_body)
                .bind(to_json(&a.request_headers));
        }
        query.execute(&mut *conn).await?;
    }
    let mut rest = settles;
    for size in chunk_sizes(settles.len()) {
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let sql = UPDATE_SETTLED_DELIVERIES.sql(size);
        let mut query = sqlx::query(&sql).bind(now);
        for s in chunk {
            query = query
                .bind(s.delivery.id as i64)
                .bind(s.status.as_str())
                .bind(s.delivery.attempts as i64)
                .bind(s.next_attempt_ms)
                .bind(
                    s.attempt
                        .as_ref()
                        .and_then(|a| a.status_code)
                        .map(i64::from),
                )
                .bind(&s.last_error)
                .bind(s.attempt.as_ref().map(|a| a.duration_ms as i64));
        }
        query.execute(&mut *conn).await?;
    }
    for s in settles.iter().filter(|s| s.endpoint_gone) {
        sqlx::query(
            "UPDATE endpoints SET state = 'gone', version = version + 1, updated_ms = ? \
             WHERE id = ? AND state = 'enabled'",
        )
        .bind(now)
        .bind(&*s.delivery.endpoint_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
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

    fn event(id: &str, routes: usize) -> NewEvent {
        NewEvent {
            id: id.to_string(),
            name: "lead.created".to_string(),
            source: "test".to_string(),
            tenant_id: None,
            time_ms: 1,
            payload: "{}".to_string(),
            attributes: Default::default(),
            body_hash: [7; 32],
            routes: (0..routes)
                .map(|i| Route {
                    subscription_id: Arc::from(format!("sub-{i}")),
                    endpoint_id: Arc::from("crm"),
                })
                .collect(),
            flow_starts: Vec::new(),
            cancels: Vec::new(),
        }
    }

    fn seqs(done: &Done) -> Vec<Vec<(u64, bool)>> {
        done.outcomes
            .iter()
            .map(|o| {
                o.iter()
                    .map(|r| r.as_ref().map(|p| (p.seq, p.duplicate)).expect("accepted"))
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_writer_numbers_rows_itself_and_recovers_from_duplicates_and_outside_inserts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, mut writer) = SqliteStore::open(&dir.path().join("ids.db"))
            .await
            .expect("open");
        let (a, b, a_again) = (event("a", 2), event("b", 2), event("a", 2));
        let done = commit_batch(&mut writer, &[&[a, b], &[a_again]], &[], &[])
            .await
            .expect("commit");
        // The duplicate inside the group falls back to reading ids back.
        assert_eq!(seqs(&done), [vec![(1, false), (2, false)], vec![(1, true)]]);
        let ids: Vec<u64> = done.due.iter().map(|d| d.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);

        // Rows numbered by someone else are stepped over, not collided with.
        sqlx::query(
            "INSERT INTO events (seq, id, name, source, time_ms, payload, attributes, \
             body_hash, matched, received_ms) VALUES (3, 'outside', 'x', 's', 1, '{}', '{}', x'00', 0, 1)",
        )
        .execute(&store.pool)
        .await
        .expect("outside event");
        sqlx::query(
            "INSERT INTO deliveries (id, event_seq, subscription_id, endpoint_id, status, \
             created_ms, updated_ms) VALUES (5, 3, 's', 'e', 'dead', 1, 1)",
        )
        .execute(&store.pool)
        .await
        .expect("outside delivery");
        let done = commit_batch(&mut writer, &[&[event("c", 1)]], &[], &[])
            .await
            .expect("commit after outside inserts");
        assert_eq!(seqs(&done), [vec![(4, false)]]);
        assert_eq!(done.due.iter().map(|d| d.id).collect::<Vec<_>>(), [6]);
        let done = commit_batch(&mut writer, &[&[event("d", 1)]], &[], &[])
            .await
            .expect("commit");
        assert_eq!(seqs(&done), [vec![(5, false)]]);
        assert_eq!(done.due.iter().map(|d| d.id).collect::<Vec<_>>(), [7]);
    }

    #[tokio::test]
    async fn committed_pages_are_copied_into_the_database_file_off_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checkpoint.db");
        let (_store, mut writer) = SqliteStore::open(&path).await.expect("open");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        let events: Vec<NewEvent> = (0..500)
            .map(|i| NewEvent {
                payload: format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000)),
                ..event(&format!("e{i}"), 0)
            })
            .collect();
        commit_batch(&mut writer, &[&events], &[], &[])
            .await
            .expect("commit");
        // Far below the writer's own threshold: only the checkpointer copies.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() < before + 400_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file is still {} bytes (was {before})",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_log_starts_over_while_commits_keep_coming() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("restart.db");
        let (_store, mut writer) = SqliteStore::open(&path).await.expect("open");
        // About 24 000 pages of events, committed back to back: the log never
        // gets to start over by itself (it grows to about 34 000 pages).
        for batch in 0..96 {
            let events: Vec<NewEvent> = (0..1000)
                .map(|i| NewEvent {
                    payload: format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000)),
                    ..event(&format!("e{batch}-{i}"), 0)
                })
                .collect();
            commit_batch(&mut writer, &[&events], &[], &[])
                .await
                .expect("commit");
        }
        // The log file is as long as the log ever was.
        let wal = std::fs::metadata(dir.path().join("restart.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        let pages = wal / 4096;
        assert!(
            pages < 3 * super::super::checkpoint::RESTART_AT as u64,
            "the log grew to {pages} pages"
        );
    }

    #[test]
    fn multi_row_statements_have_one_group_per_row() {
        static S: MultiRow = MultiRow::new("INSERT INTO t VALUES ", "(?, ?)", " RETURNING a");
        assert_eq!(S.sql(1), "INSERT INTO t VALUES (?, ?) RETURNING a");
        assert_eq!(S.sql(4).matches("(?, ?)").count(), 4);
        assert!(matches!(S.sql(4), Cow::Borrowed(_)), "kept");
        assert_eq!(S.sql(3).matches("(?, ?)").count(), 3);
        assert_eq!(S.sql(512).matches("(?, ?)").count(), 512);
    }

    #[tokio::test]
    async fn due_queries_walk_the_due_index_without_sorting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _writer) = SqliteStore::open(&dir.path().join("plan.db"))
            .await
            .expect("open");
        for (sql, args) in [(LOAD_DUE, 5), (NEXT_DUE, 1)] {
            let plan = plan(&store, sql, args).await;
            assert!(plan.contains("deliveries_due"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }
}
