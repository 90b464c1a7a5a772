//! Each database's own description of its schema (SQLite's pragmas,
//! PostgreSQL's catalogs) in one shape, and what differs between two.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{postgres::PgPool, Row, SqliteConnection};

/// The migrator's own table, on both sides.
pub const MIGRATOR_TABLE: &str = "_sqlx_migrations";

/// SQLite has no BOOLEAN: these INTEGER columns hold a Rust bool, which
/// PostgreSQL keeps as BOOLEAN (sqlx decodes a bool from either, but an i64
/// only from BIGINT). Every other SQLite INTEGER is a BIGINT there.
const BOOLEAN_COLUMNS: &[(&str, &str)] =
    &[("subscriptions", "enabled"), ("flow_runs", "step_waited")];

pub type Schema = BTreeMap<String, Table>;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: BTreeMap<String, Column>,
    pub primary_key: Vec<String>,
    /// UNIQUE constraints besides the primary key.
    unique: BTreeSet<Vec<String>>,
    /// (columns, referenced table, referenced columns).
    foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>)>,
    /// Indexes made by CREATE INDEX, by name.
    indexes: BTreeMap<String, Index>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Column {
    pub kind: Kind,
    /// A primary key column counts as NOT NULL on both sides (SQLite would
    /// take a NULL in a TEXT key; nothing writes one).
    pub not_null: bool,
    default: ColumnDefault,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Integer,
    Boolean,
    Text,
    Blob,
    Other(String),
}

#[derive(Debug, PartialEq, Eq)]
enum ColumnDefault {
    None,
    /// Numbered by the database (SQLite's INTEGER PRIMARY KEY, an identity).
    Generated,
    /// The default's SQL, with PostgreSQL's cast (`'{}'::text`) left off.
    Value(String),
}

/// Whether an index covers only some rows. Only the fact is compared: the
/// two databases print a predicate differently.
#[derive(Debug, PartialEq, Eq)]
struct Index {
    columns: Vec<String>,
    unique: bool,
    partial: bool,
}

pub async fn sqlite_schema(conn: &mut SqliteConnection) -> Schema {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("SQLite tables");
    let mut schema = Schema::new();
    for name in names {
        let mut table = Table::default();
        let columns = sqlx::query(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY pk",
        )
        .bind(&name)
        .fetch_all(&mut *conn)
        .await
        .expect("SQLite columns");
        let key_columns = columns.iter().filter(|c| c.get::<i64, _>("pk") > 0).count();
        for c in &columns {
            let column: String = c.get("name");
            let declared: String = c.get("type");
            let in_key = c.get::<i64, _>("pk") > 0;
            let kind = match declared.to_ascii_uppercase().as_str() {
                "INTEGER" if BOOLEAN_COLUMNS.contains(&(name.as_str(), column.as_str())) => {
                    Kind::Boolean
                }
                "INTEGER" => Kind::Integer,
                "TEXT" => Kind::Text,
                "BLOB" => Kind::Blob,
                _ => Kind::Other(declared.clone()),
            };
            // A lone INTEGER PRIMARY KEY is the rowid, which SQLite numbers.
            let default = if in_key && key_columns == 1 && kind == Kind::Integer {
                ColumnDefault::Generated
            } else {
                match c.get::<Option<String>, _>("dflt_value") {
                    Some(value) => ColumnDefault::Value(value),
                    None => ColumnDefault::None,
                }
            };
            if in_key {
                table.primary_key.push(column.clone());
            }
            let not_null = c.get::<i64, _>("notnull") != 0 || in_key;
            table.columns.insert(
                column,
                Column {
                    kind,
                    not_null,
                    default,
                },
            );
        }
        let indexes =
            sqlx::query("SELECT name, \"unique\", origin, partial FROM pragma_index_list(?)")
                .bind(&name)
                .fetch_all(&mut *conn)
                .await
                .expect("SQLite indexes");
        for i in &indexes {
            let index: String = i.get("name");
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(&mut *conn)
                    .await
                    .expect("SQLite index columns");
            match i.get::<String, _>("origin").as_str() {
                "u" => {
                    table.unique.insert(columns);
                }
                "c" => {
                    table.indexes.insert(
                        index,
                        Index {
                            columns,
                            unique: i.get::<i64, _>("unique") != 0,
                            partial: i.get::<i64, _>("partial") != 0,
                        },
                    );
                }
                // The primary key, already read from the columns.
                _ => {}
            }
        }
        let references = sqlx::query(
            "SELECT id, \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(&mut *conn)
        .await
        .expect("SQLite foreign keys");
        let mut keys: BTreeMap<i64, (Vec<String>, String, Vec<String>)> = BTreeMap::new();
        for r in &references {
            let key = keys
                .entry(r.get("id"))
                .or_insert_with(|| (Vec::new(), r.get("table"), Vec::new()));
            key.0.push(r.get("from"));
            key.2.push(r.get("to"));
        }
        table.foreign_keys = keys.into_values().collect();
        schema.insert(name, table);
    }
    schema
}

pub async fn postgres_schema(pool: &PgPool) -> Schema {
    let mut schema = Schema::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .expect("PostgreSQL tables");
    for table in tables {
        schema.insert(table, Table::default());
    }

    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, \
         is_nullable::text = 'NO' AS not_null, column_default::text, \
         is_identity::text = 'YES' AS identity \
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .fetch_all(pool)
    .await
    .expect("PostgreSQL columns");
    for c in &columns {
        let kind = match c.get::<String, _>("data_type").as_str() {
            "bigint" => Kind::Integer,
            "boolean" => Kind::Boolean,
            "text" => Kind::Text,
            "bytea" => Kind::Blob,
            other => Kind::Other(other.to_string()),
        };
        let default = match c.get::<Option<String>, _>("column_default") {
            _ if c.get::<bool, _>("identity") => ColumnDefault::Generated,
            Some(value) if value.starts_with("nextval(") => ColumnDefault::Generated,
            Some(value) => ColumnDefault::Value(without_cast(&value).to_string()),
            None => ColumnDefault::None,
        };
        table_of(&mut schema, c.get("table_name")).columns.insert(
            c.get("column_name"),
            Column {
                kind,
                not_null: c.get("not_null"),
                default,
            },
        );
    }

    let constraints = sqlx::query(
        "SELECT t.relname::text AS table_name, c.contype::text AS kind, \
         ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) \
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n \
               ORDER BY k.i) AS columns, \
         COALESCE(r.relname::text, '') AS referenced, \
         ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i) \
               JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n \
               ORDER BY k.i) AS referenced_columns \
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
         LEFT JOIN pg_class r ON r.oid = c.confrelid \
         WHERE t.relnamespace = current_schema()::regnamespace AND c.contype IN ('p', 'u', 'f')",
    )
    .fetch_all(pool)
    .await
    .expect("PostgreSQL constraints");
    for c in &constraints {
        let table = table_of(&mut schema, c.get("table_name"));
        let columns: Vec<String> = c.get("columns");
        match c.get::<String, _>("kind").as_str() {
            "p" => table.primary_key = columns,
            "u" => {
                table.unique.insert(columns);
            }
            _ => {
                table.foreign_keys.insert((
                    columns,
                    c.get("referenced"),
                    c.get("referenced_columns"),
                ));
            }
        }
    }

    // Indexes of their own, not those behind a key or UNIQUE constraint.
    let indexes = sqlx::query(
        "SELECT t.relname::text AS table_name, i.relname::text AS index_name, \
         ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(n, o) \
               JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.n \
               ORDER BY k.o) AS columns, \
         x.indisunique AS is_unique, x.indpred IS NOT NULL AS partial \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid \
         WHERE t.relnamespace = current_schema()::regnamespace AND NOT EXISTS ( \
             SELECT 1 FROM pg_constraint c \
             WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid)",
    )
    .fetch_all(pool)
    .await
    .expect("PostgreSQL indexes");
    for i in &indexes {
        table_of(&mut schema, i.get("table_name")).indexes.insert(
            i.get("index_name"),
            Index {
                columns: i.get("columns"),
                unique: i.get("is_unique"),
                partial: i.get("partial"),
            },
        );
    }
    schema
}

fn table_of(schema: &mut Schema, name: String) -> &mut Table {
    schema.entry(name).or_default()
}

/// `'{}'::text` is `'{}'`.
fn without_cast(default: &str) -> &str {
    match default.rsplit_once("::") {
        Some((value, cast)) if cast.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ') => value,
        _ => default,
    }
}

/// What differs between the two schemas, one line each; the migrator's own
/// table is left out of both.
pub fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut found = Vec::new();
    let names: BTreeSet<&String> = sqlite.keys().chain(postgres.keys()).collect();
    for name in names.into_iter().filter(|n| *n != MIGRATOR_TABLE) {
        let (s, p) = match (sqlite.get(name), postgres.get(name)) {
            (Some(s), Some(p)) => (s, p),
            (Some(_), None) => {
                found.push(format!("table {name}: only in SQLite"));
                continue;
            }
            _ => {
                found.push(format!(
                    "table {name}: only in PostgreSQL (if it is meant to be, list it in POSTGRES_ONLY)"
                ));
                continue;
            }
        };
        let columns: BTreeSet<&String> = s.columns.keys().chain(p.columns.keys()).collect();
        for column in columns {
            match (s.columns.get(column), p.columns.get(column)) {
                (Some(sc), Some(pc)) if sc != pc => found.push(format!(
                    "column {name}.{column}: SQLite {sc:?}, PostgreSQL {pc:?}"
                )),
                (Some(_), None) => found.push(format!("column {name}.{column}: only in SQLite")),
                (None, Some(_)) => {
                    found.push(format!("column {name}.{column}: only in PostgreSQL"))
                }
                _ => {}
            }
        }
        let mut compare = |what: &str, s: String, p: String| {
            if s != p {
                found.push(format!("{what} of {name}: SQLite {s}, PostgreSQL {p}"));
            }
        };
        compare(
            "primary key",
            format!("{:?}", s.primary_key),
            format!("{:?}", p.primary_key),
        );
        compare(
            "UNIQUE constraints",
            format!("{:?}", s.unique),
            format!("{:?}", p.unique),
        );
        compare(
            "foreign keys",
            format!("{:?}", s.foreign_keys),
            format!("{:?}", p.foreign_keys),
        );
        let indexes: BTreeSet<&String> = s.indexes.keys().chain(p.indexes.keys()).collect();
        for index in indexes {
            match (s.indexes.get(index), p.indexes.get(index)) {
                (Some(si), Some(pi)) if si != pi => found.push(format!(
                    "index {index} on {name}: SQLite {si:?}, PostgreSQL {pi:?}"
                )),
                (Some(_), None) => found.push(format!("index {index} on {name}: only in SQLite")),
                (None, Some(_)) => {
                    found.push(format!("index {index} on {name}: only in PostgreSQL"))
                }
                _ => {}
            }
        }
    }
    found
}
