//! Sources on PostgreSQL, as on SQLite. The policy is one JSON column (it is read whole and
//! compiled whole); token hashes are columns so the unique index keeps two
//! sources from sharing a token. Deletes are soft: the row stays, with
//! `deleted_ms` set, and is no longer loaded for intake.

use super::PgStore;
use crate::{
    model::{
        now_ms,
        source::{Source, SourceStatus},
    },
    store::{rows::source_from_row, Error, Result},
};

impl PgStore {
    pub async fn list_sources(&self, include_deleted: bool) -> Result<Vec<Source>> {
        let rows =
            sqlx::query("SELECT * FROM sources WHERE ($1 OR deleted_ms IS NULL) ORDER BY name, id")
                .bind(include_deleted)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(source_from_row).collect()
    }

    /// The source, deleted or not.
    pub async fn get_source(&self, id: &str) -> Result<Source> {
        let row = sqlx::query("SELECT * FROM sources WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| not_found(id))?;
        source_from_row(&row)
    }

    pub async fn create_source(&self, s: &Source) -> Result<Source> {
        let now = now_ms();
        let result = sqlx::query(
            "INSERT INTO sources (id, name, description, token_hash, status, tenant_id, policy, \
             version, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9)",
        )
        .bind(&s.id)
        .bind(&s.name)
        .bind(&s.description)
        .bind(&s.token_hash[..])
        .bind(s.status.as_str())
        .bind(&s.tenant_id)
        .bind(policy_json(s)?)
        .bind(now)
        .bind(now)
        .execute(self.pool())
        .await;
        match result {
            Err(e) if is_unique_violation(&e) => Err(Error::AlreadyExists(format!(
                "source `{}` already exists, or its token is another source's",
                s.id
            ))),
            Err(e) => Err(e.into()),
            Ok(_) => self.get_source(&s.id).await,
        }
    }

    /// Replaces everything but the token, if `s.version` is the stored one
    /// and the source is not deleted.
    pub async fn update_source(&self, s: &Source) -> Result<Source> {
        let done = sqlx::query(
            "UPDATE sources SET name = $1, description = $2, status = $3, tenant_id = $4, policy = $5, \
             version = version + 1, updated_ms = $6 WHERE id = $7 AND version = $8 AND deleted_ms IS NULL",
        )
        .bind(&s.name)
        .bind(&s.description)
        .bind(s.status.as_str())
        .bind(&s.tenant_id)
        .bind(policy_json(s)?)
        .bind(now_ms())
        .bind(&s.id)
        .bind(s.version as i64)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            let current = self.get_source(&s.id).await?;
            if current.deleted_ms.is_some() {
                return Err(deleted(&s.id));
            }
            return Err(Error::StaleVersion {
                what: "source",
                id: s.id.clone(),
                current: current.version,
                given: s.version,
            });
        }
        self.get_source(&s.id).await
    }

    /// Creates or replaces (by id) a source declared in the config file,
    /// with the token the file gives; a changed token takes effect at once.
    pub async fn upsert_source(&self, s: &Source) -> Result<Source> {
        match self.get_source(&s.id).await {
            Err(Error::NotFound { .. }) => self.create_source(s).await,
            Err(e) => Err(e),
            Ok(current) => {
                let mut next = s.clone();
                next.version = current.version;
                sqlx::query(
                    "UPDATE sources SET deleted_ms = NULL, token_hash = $1, \
                     previous_token_hash = CASE WHEN token_hash = $2 THEN previous_token_hash END, \
                     previous_token_expires_ms = CASE WHEN token_hash = $3 THEN previous_token_expires_ms END \
                     WHERE id = $4",
                )
                .bind(&s.token_hash[..])
                .bind(&s.token_hash[..])
                .bind(&s.token_hash[..])
                .bind(&s.id)
                .execute(self.pool())
                .await
                .map_err(|e| unique_or(e, &s.id))?;
                self.update_source(&next).await
            }
        }
    }

    /// Soft delete: the token stops working at once.
    pub async fn delete_source(&self, id: &str) -> Result<()> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE sources SET deleted_ms = $1, updated_ms = $2, version = version + 1 \
             WHERE id = $3 AND deleted_ms IS NULL",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        Ok(())
    }

    /// Installs a new token; the current one keeps working until `grace_ends_ms`.
    pub async fn rotate_source_token(
        &self,
        id: &str,
        new_hash: &[u8; 32],
        grace_ends_ms: i64,
    ) -> Result<Source> {
        let done = sqlx::query(
            "UPDATE sources SET previous_token_hash = token_hash, previous_token_expires_ms = $1, \
             token_hash = $2, version = version + 1, updated_ms = $3 WHERE id = $4 AND deleted_ms IS NULL",
        )
        .bind(grace_ends_ms)
        .bind(&new_hash[..])
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await
        .map_err(|e| unique_or(e, id))?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        self.get_source(id).await
    }

    pub async fn set_source_status(&self, id: &str, status: SourceStatus) -> Result<Source> {
        let done = sqlx::query(
            "UPDATE sources SET status = $1, version = version + 1, updated_ms = $2 \
             WHERE id = $3 AND deleted_ms IS NULL",
        )
        .bind(status.as_str())
        .bind(now_ms())
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(id));
        }
        self.get_source(id).await
    }
}

fn policy_json(s: &Source) -> Result<String> {
    serde_json::to_string(&s.policy)
        .map_err(|e| Error::Unavailable(format!("could not encode the policy: {e}")))
}

fn not_found(id: &str) -> Error {
    Error::NotFound {
        what: "source",
        id: id.to_string(),
    }
}

fn deleted(id: &str) -> Error {
    Error::FailedPrecondition(format!("source `{id}` is deleted"))
}

fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn unique_or(e: sqlx::Error, id: &str) -> Error {
    if is_unique_violation(&e) {
        Error::AlreadyExists(format!(
            "the token of source `{id}` is already another source's"
        ))
    } else {
        e.into()
    }
}
