//! One row mapping per table, whichever backend and driver read the row:
//! SQLite's read pool (sqlx), SQLite's committer (rusqlite) or PostgreSQL
//! (sqlx). Both schemas use the same table and column names, and every
//! column decodes into the same Rust type on both (integers as i64, hashes
//! as bytes, JSON as text), so a table's mapping is written once.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use rusqlite::types::FromSql;
use sqlx::{postgres::PgRow, sqlite::SqliteRow, Decode, Postgres, Row, Sqlite, Type};

use crate::{
    model::{
        flow::StoredFlow,
        run::{Run, RunState},
        source::{Source, SourceStatus},
        Attempt, Delivery, DeliveryStatus, DueDelivery, Endpoint, EndpointState, EventEnvelope,
        EventType, StoredEvent, Subscription,
    },
    store::{Error, Result},
};

/// A column type every driver decodes.
pub(super) trait Column:
    FromSql + for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Column for T where
    T: FromSql
        + for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
{
}

/// A row whose columns are read by name.
pub(super) trait Columns {
    fn get<T: Column>(&self, name: &str) -> Result<T>;
}

impl Columns for SqliteRow {
    fn get<T: Column>(&self, name: &str) -> Result<T> {
        Ok(self.try_get(name)?)
    }
}

impl Columns for PgRow {
    fn get<T: Column>(&self, name: &str) -> Result<T> {
        Ok(self.try_get(name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn get<T: Column>(&self, name: &str) -> Result<T> {
        Ok(rusqlite::Row::get(self, name)?)
    }
}

/// A run as stored. A state this build does not know is an error, like a
/// column that cannot be read.
pub(super) fn run_from_row(row: &impl Columns) -> Result<Run> {
    let state: String = row.get("state")?;
    Ok(Run {
        id: row.get("id")?,
        flow_id: row.get("flow_id")?,
        flow_version: row.get::<i64>("flow_version")? as u64,
        state: RunState::parse(&state)
            .ok_or_else(|| Error::Unavailable(format!("corrupt run state `{state}`")))?,
        key: row.get("correlation_key")?,
        inputs: row.get("inputs")?,
        trigger: row.get("trigger")?,
        trigger_data: row.get("trigger_data")?,
        step_index: row.get::<i64>("step_index")? as u32,
        step_waited: row.get("step_waited")?,
        attempt: row.get::<i64>("attempt")? as u32,
        attempt_group: row.get::<i64>("attempt_group")? as u32,
        wake_ms: row.get("wake_ms")?,
        steps: row.get("steps")?,
        error: row.get("error")?,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
    })
}

/// Due deliveries with their events, as the dispatcher takes them.
/// Deliveries of one event share one envelope, as they do on the hot path.
pub(super) fn due_from_rows(rows: &[impl Columns]) -> Result<Vec<DueDelivery>> {
    let mut last: Option<Arc<EventEnvelope>> = None;
    rows.iter()
        .map(|row| {
            let seq = row.get::<i64>("seq")? as u64;
            let event = match &last {
                Some(e) if e.seq == seq => e.clone(),
                _ => {
                    let e = Arc::new(EventEnvelope {
                        seq,
                        id: row.get("event_id")?,
                        name: row.get("name")?,
                        source: row.get("source")?,
                        tenant_id: row.get("tenant_id")?,
                        time_ms: row.get("time_ms")?,
                        payload: row.get("payload")?,
                    });
                    last = Some(e.clone());
                    e
                }
            };
            Ok(DueDelivery {
                id: row.get::<i64>("id")? as u64,
                subscription_id: Arc::from(row.get::<String>("subscription_id")?),
                endpoint_id: Arc::from(row.get::<String>("endpoint_id")?),
                attempts: row.get::<i64>("attempts")? as u32,
                due_ms: row.get::<Option<i64>>("next_attempt_ms")?.unwrap_or(0),
                event,
                ordered: row.get("ordered")?,
            })
        })
        .collect()
}

/// The other subscriptions a delivery stands for, as stored: NULL when
/// there are none (nearly always).
pub(super) fn also_json(route: &crate::model::Route) -> Option<String> {
    (!route.also.is_empty())
        .then(|| to_json(&route.also.iter().map(|s| &**s).collect::<Vec<&str>>()))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_string())
}

pub(super) fn endpoint_from_row(row: &impl Columns) -> Result<Endpoint> {
    let state: String = row.get("state")?;
    Ok(Endpoint {
        id: row.get("id")?,
        url: row.get("url")?,
        tenant_id: row.get("tenant_id")?,
        secret: row.get("secret")?,
        headers: from_json(&row.get::<String>("headers")?)?,
        timeout: row
            .get::<Option<i64>>("timeout_ms")?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        retry_schedule: schedule_from_json(row.get("retry_schedule_ms")?)?,
        max_in_flight: row
            .get::<Option<i64>>("max_in_flight")?
            .map(|n| n.clamp(0, u32::MAX as i64) as u32),
        state: EndpointState::parse(&state).ok_or_else(|| corrupt("endpoint state", &state))?,
        description: row.get("description")?,
        options: from_json(&row.get::<String>("options")?)?,
        previous_secret: match (
            row.get::<Option<String>>("previous_secret")?,
            row.get::<Option<i64>>("previous_secret_until_ms")?,
        ) {
            (Some(secret), Some(until)) => Some((secret, until)),
            _ => None,
        },
        disabled_reason: row.get("disabled_reason")?,
        failing_since_ms: row.get("failing_since_ms")?,
        version: row.get::<i64>("version")? as u64,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
    })
}

pub(super) fn subscription_from_row(row: &impl Columns) -> Result<Subscription> {
    Ok(Subscription {
        id: row.get("id")?,
        name: row.get("name")?,
        patterns: from_json(&row.get::<String>("patterns")?)?,
        exclude: from_json(&row.get::<String>("exclude")?)?,
        tenant_id: row.get("tenant_id")?,
        target: row.get("target")?,
        enabled: row.get("enabled")?,
        description: row.get("description")?,
        inputs: from_json(&row.get::<String>("inputs")?)?,
        filter: row.get("filter")?,
        ordering_key: row.get("ordering_key")?,
        version: row.get::<i64>("version")? as u64,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
    })
}

pub(super) fn delivery_from_row(row: &impl Columns) -> Result<Delivery> {
    let status: String = row.get("status")?;
    Ok(Delivery {
        id: row.get::<i64>("id")? as u64,
        event_seq: row.get::<i64>("event_seq")? as u64,
        event_id: row.get("event_id")?,
        event_name: row.get("event_name")?,
        tenant_id: row.get("tenant_id")?,
        subscription_id: row.get("subscription_id")?,
        subscription_name: row.get("subscription_name")?,
        also_subscriptions: row
            .get::<Option<String>>("also_subscriptions")?
            .map(|list| from_json(&list))
            .transpose()?
            .unwrap_or_default(),
        endpoint_id: row.get("endpoint_id")?,
        ordering_key: row.get("ordering_key")?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| corrupt("delivery status", &status))?,
        attempts: row.get::<i64>("attempts")? as u32,
        last_status_code: row
            .get::<Option<i64>>("last_status_code")?
            .map(|c| c as u16),
        last_error: row.get("last_error")?,
        last_duration_ms: row
            .get::<Option<i64>>("last_duration_ms")?
            .map(|d| d as u32),
        next_attempt_ms: row.get("next_attempt_ms")?,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
    })
}

pub(super) fn event_from_row(row: &impl Columns) -> Result<StoredEvent> {
    Ok(StoredEvent {
        seq: row.get::<i64>("seq")? as u64,
        id: row.get("id")?,
        name: row.get("name")?,
        source: row.get("source")?,
        tenant_id: row.get("tenant_id")?,
        time_ms: row.get("time_ms")?,
        payload: row.get("payload")?,
        attributes: from_json(&row.get::<String>("attributes")?)?,
    })
}

pub(super) fn attempt_from_row(row: &impl Columns) -> Result<Attempt> {
    Ok(Attempt {
        number: row.get::<i64>("number")? as u32,
        started_ms: row.get("started_ms")?,
        duration_ms: row.get::<i64>("duration_ms")? as u32,
        status_code: row.get::<Option<i64>>("status_code")?.map(|c| c as u16),
        error: row.get("error")?,
        response_body: row.get("response_body")?,
        request_headers: from_json::<BTreeMap<String, String>>(
            &row.get::<String>("request_headers")?,
        )?,
    })
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| corrupt("JSON column", &e.to_string()))
}

pub(super) fn schedule_to_json(schedule: &Option<Vec<Duration>>) -> Option<String> {
    schedule
        .as_ref()
        .map(|s| to_json(&s.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>()))
}

pub(super) fn schedule_from_json(value: Option<String>) -> Result<Option<Vec<Duration>>> {
    value
        .map(|s| {
            from_json::<Vec<u64>>(&s).map(|ms| ms.into_iter().map(Duration::from_millis).collect())
        })
        .transpose()
}

fn corrupt(what: &str, value: &str) -> Error {
    Error::Unavailable(format!("stored {what} is unreadable: {value}"))
}

pub(super) fn flow_from_row(row: &impl Columns) -> Result<StoredFlow> {
    Ok(StoredFlow {
        id: row.get("id")?,
        version: row.get::<i64>("version")? as u64,
        yaml: row.get("yaml")?,
        webhook_key_hash: row.get("webhook_key_hash")?,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
    })
}

pub(super) fn event_type_from_row(row: &impl Columns) -> Result<EventType> {
    Ok(EventType {
        id: row.get("id")?,
        pattern: row.get("pattern")?,
        description: row.get("description")?,
        schema: row.get("schema")?,
        version: row.get::<i64>("version")? as u64,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
    })
}

pub(super) fn source_from_row(row: &impl Columns) -> Result<Source> {
    let status: String = row.get("status")?;
    let policy: String = row.get("policy")?;
    let previous: Option<Vec<u8>> = row.get("previous_token_hash")?;
    let expires: Option<i64> = row.get("previous_token_expires_ms")?;
    Ok(Source {
        id: row.get("id")?,
        name: row.get("name")?,
        description: row.get("description")?,
        status: SourceStatus::parse(&status)
            .ok_or_else(|| corrupt_source(&format!("status `{status}`")))?,
        tenant_id: row.get("tenant_id")?,
        policy: serde_json::from_str(&policy)
            .map_err(|e| corrupt_source(&format!("policy: {e}")))?,
        token_hash: hash(row.get("token_hash")?)?,
        previous_token: match (previous, expires) {
            (Some(h), Some(e)) => Some((hash(h)?, e)),
            _ => None,
        },
        version: row.get::<i64>("version")? as u64,
        created_ms: row.get("created_ms")?,
        updated_ms: row.get("updated_ms")?,
        deleted_ms: row.get("deleted_ms")?,
    })
}

fn hash(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| corrupt_source("token hash of the wrong length"))
}

fn corrupt_source(what: &str) -> Error {
    Error::Unavailable(format!("stored source is unreadable: {what}"))
}
