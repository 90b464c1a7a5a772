//! Event types on PostgreSQL, as on SQLite: one row each, the schema as JSON text (it is read
//! whole and compiled whole). The unique pattern keeps one schema per pattern.

use super::PgStore;
use crate::{
    model::{now_ms, EventType},
    store::{rows::event_type_from_row, Error, Result},
};

impl PgStore {
    pub async fn list_event_types(&self) -> Result<Vec<EventType>> {
        let rows = sqlx::query("SELECT * FROM event_types ORDER BY pattern, id")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(event_type_from_row).collect()
    }

    pub async fn get_event_type(&self, id: &str) -> Result<EventType> {
        let row = sqlx::query("SELECT * FROM event_types WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| not_found(id))?;
        event_type_from_row(&row)
    }

    pub async fn create_event_type(&self, t: &EventType) -> Result<EventType> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO event_types (id, pattern, description, schema, version, created_ms, \
             updated_ms) VALUES ($1, $2, $3, $4, 1, $5, $6)",
        )
        .bind(&t.id)
        .bind(&t.pattern)
        .bind(&t.description)
        .bind(&t.schema)
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| unique_or(e, t))?;
        self.get_event_type(&t.id).await
    }

    /// Replaces the event type if `t.version` is the stored one.
    pub async fn update_event_type(&self, t: &EventType) -> Result<EventType> {
        let done = sqlx::query(
            "UPDATE event_types SET pattern = $1, description = $2, schema = $3, \
             version = version + 1, updated_ms = $4 WHERE id = $5 AND version = $6",
        )
        .bind(&t.pattern)
        .bind(&t.description)
        .bind(&t.schema)
        .bind(now_ms())
        .bind(&t.id)
        .bind(t.version as i64)
        .execute(self.pool())
        .await
        .map_err(|e| unique_or(e, t))?;
        if done.rows_affected() == 0 {
            let current = self.get_event_type(&t.id).await?;
            return Err(Error::StaleVersion {
                what: "event type",
                id: t.id.clone(),
                current: current.version,
                given: t.version,
            });
        }
        self.get_event_type(&t.id).await
    }

    pub async fn delete_event_type(&self, id: &str) -> Result<()> {
        let done = sqlx::query("DELETE FROM event_types WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        what: "event type",
        id: id.to_string(),
    }
}

fn unique_or(e: sqlx::Error, t: &EventType) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => Error::AlreadyExists(format!(
            "event type `{}` already exists, or another event type has the pattern `{}`",
            t.id, t.pattern
        )),
        _ => e.into(),
    }
}
