//! Reading a row the same way whichever SQLite driver returned it: the read
//! pool's (sqlx) or the committer's (rusqlite), so each table has one row
//! mapping (`run_from_row`) rather than one per driver.

use rusqlite::types::FromSql;
use sqlx::{sqlite::SqliteRow, Decode, Row, Sqlite, Type};

use crate::{
    model::run::{Run, RunState},
    store::{Error, Result},
};

/// A column read by name.
pub(super) trait Columns {
    fn get<T>(&self, name: &str) -> Result<T>
    where
        T: FromSql + for<'r> Decode<'r, Sqlite> + Type<Sqlite>;
}

impl Columns for SqliteRow {
    fn get<T>(&self, name: &str) -> Result<T>
    where
        T: FromSql + for<'r> Decode<'r, Sqlite> + Type<Sqlite>,
    {
        Ok(self.try_get(name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn get<T>(&self, name: &str) -> Result<T>
    where
        T: FromSql + for<'r> Decode<'r, Sqlite> + Type<Sqlite>,
    {
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
