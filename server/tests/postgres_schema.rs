//! The PostgreSQL schema, on a real server: its migrations apply to an empty
//! database and, run again, change nothing; it has every table, column, key
//! and index of the SQLite schema, so both backends can map rows the same
//! way (this is what keeps the two from drifting); and every catalog change
//! bumps `catalog_version` and notifies the other nodes.
//!
//! The server comes from `HOOKYARD_TEST_POSTGRES_URL`, which `./scripts/test`
//! sets after starting one. Without it these tests fail, rather than pass
//! having checked nothing, unless `HOOKYARD_SKIP_POSTGRES=1`. Each test works
//! in a database of its own, dropped at the end.
//!
//! The migrations are read from their directory when the test runs (not
//! embedded with `sqlx::migrate!`, which does not see a file added since the
//! last build), so a test run always checks the files as they are.

#[path = "postgres_schema/describe.rs"]
mod describe;

use std::{future::Future, panic::AssertUnwindSafe, path::PathBuf, time::Duration};

use describe::{differences, postgres_schema, sqlite_schema, Kind, MIGRATOR_TABLE};
use futures::FutureExt;
use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions},
    Connection, PgConnection, SqliteConnection,
};

const SQLITE_MIGRATIONS: &str = "src/store/migrations/sqlite";
const POSTGRES_MIGRATIONS: &str = "src/store/migrations/postgres";

/// Tables only several nodes sharing one database need: leases (endpoints
/// and runs), nodes, the catalog's version.
const POSTGRES_ONLY: &[&str] = &["nodes", "endpoint_leases", "run_leases", "catalog_version"];

/// How long a notification may take to arrive.
const NOTIFY_WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_change_nothing() {
    with_scratch_database(|pool| async move {
        let migrator = migrator(POSTGRES_MIGRATIONS).await;
        migrator.run(&pool).await.expect("the migrations apply");
        let schema = postgres_schema(&pool).await;
        let tables: Vec<&str> = schema.keys().map(String::as_str).collect();
        let mut expected = vec![
            "attempts",
            "catalog_version",
            "deliveries",
            "endpoint_leases",
            "endpoints",
            "event_types",
            "events",
            "flow_run_log",
            "flow_runs",
            "flow_versions",
            "flows",
            "nodes",
            "run_leases",
            "sources",
            "subscriptions",
            MIGRATOR_TABLE,
        ];
        expected.sort_unstable();
        assert_eq!(tables, expected);

        let leases = &schema["endpoint_leases"];
        assert_eq!(leases.primary_key, ["endpoint_id"]);
        for (name, kind) in [
            ("endpoint_id", Kind::Text),
            ("node_id", Kind::Text),
            ("token", Kind::Integer),
            ("expires_ms", Kind::Integer),
        ] {
            let column = &leases.columns[name];
            assert_eq!((&column.kind, column.not_null), (&kind, true), "{name}");
        }

        migrator
            .run(&pool)
            .await
            .expect("the migrations apply again");
        let applied: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {MIGRATOR_TABLE} WHERE success"
        ))
        .fetch_one(&pool)
        .await
        .expect("count the applied migrations");
        assert_eq!(applied as usize, migrator.iter().count());
        assert_eq!(postgres_schema(&pool).await, schema);
    })
    .await;
}

#[tokio::test]
async fn the_postgres_schema_has_every_table_column_key_and_index_of_the_sqlite_schema() {
    with_scratch_database(|pool| async move {
        migrator(POSTGRES_MIGRATIONS)
            .await
            .run(&pool)
            .await
            .expect("the PostgreSQL migrations apply");
        let mut postgres = postgres_schema(&pool).await;
        postgres.retain(|table, _| !POSTGRES_ONLY.contains(&table.as_str()));
        let mut sqlite = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("an in-memory SQLite");
        migrator(SQLITE_MIGRATIONS)
            .await
            .run(&mut sqlite)
            .await
            .expect("the SQLite migrations apply");
        let sqlite = sqlite_schema(&mut sqlite).await;
        assert!(sqlite.contains_key("events"), "read no SQLite schema");
        let differences = differences(&sqlite, &postgres);
        assert!(
            differences.is_empty(),
            "the SQLite and PostgreSQL schemas differ (a migration added to one \
             needs its twin in the other):\n  {}",
            differences.join("\n  ")
        );
    })
    .await;
}

#[tokio::test]
async fn every_catalog_change_bumps_the_version_and_notifies() {
    with_scratch_database(|pool| async move {
        migrator(POSTGRES_MIGRATIONS)
            .await
            .run(&pool)
            .await
            .expect("the migrations apply");
        let mut listener = PgListener::connect_with(&pool).await.expect("listener");
        listener.listen("hookyard_catalog").await.expect("LISTEN");
        let reader = &pool;
        let version = || async move {
            sqlx::query_scalar::<_, i64>("SELECT version FROM catalog_version")
                .fetch_one(reader)
                .await
                .expect("read the version")
        };
        assert_eq!(version().await, 0);

        execute(
            &pool,
            "INSERT INTO endpoints (id, url, secret, headers, state, description, version, \
             created_ms, updated_ms) VALUES ('e', 'https://example.com', 's', '{}', 'enabled', \
             '', 1, 1, 1)",
        )
        .await;
        assert_eq!(next_notification(&mut listener).await, "1");
        assert_eq!(version().await, 1);

        // Neither a change rolled back nor event traffic is a catalog change.
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("UPDATE endpoints SET description = 'changed'")
            .execute(&mut *tx)
            .await
            .expect("update");
        tx.rollback().await.expect("rollback");
        execute(
            &pool,
            "INSERT INTO events (id, name, source, time_ms, payload, attributes, body_hash, \
             matched, received_ms) VALUES ('ev', 'x', 's', 1, '{}', '{}', '\\x00', 0, 1)",
        )
        .await;
        assert_eq!(version().await, 1);

        let statements = [
            "INSERT INTO subscriptions (id, name, patterns, exclude, target, enabled, \
             description, version, created_ms, updated_ms) \
             VALUES ('s', 's', '[]', '[]', 'endpoint:e', true, '', 1, 1, 1)",
            "INSERT INTO sources (id, name, description, token_hash, status, policy, version, \
             created_ms, updated_ms) VALUES ('src', 'src', '', '\\x01', 'active', '{}', 1, 1, 1)",
            "INSERT INTO flows (id, version, created_ms, updated_ms) VALUES ('f', 1, 1, 1)",
            "INSERT INTO flow_versions (flow_id, version, yaml, created_ms) VALUES ('f', 1, '', 1)",
            "INSERT INTO event_types (id, pattern, description, schema, version, created_ms, \
             updated_ms) VALUES ('t', 'order.*', '', '{}', 1, 1, 1)",
            "UPDATE endpoints SET state = 'gone'",
            "DELETE FROM subscriptions",
        ];
        for (statement, expected) in statements.into_iter().zip(2..) {
            execute(&pool, statement).await;
            assert_eq!(
                next_notification(&mut listener).await,
                expected.to_string(),
                "{statement}"
            );
            assert_eq!(version().await, expected, "{statement}");
        }

        for second_row in [
            "INSERT INTO catalog_version (version) VALUES (0)",
            "INSERT INTO catalog_version (only_row, version) VALUES (false, 0)",
        ] {
            sqlx::query(second_row)
                .execute(&pool)
                .await
                .expect_err("catalog_version has one row only");
        }
    })
    .await;
}

#[tokio::test]
async fn the_test_server_keeps_commits_durable() {
    let Some(server) = server() else { return };
    let mut conn = PgConnection::connect_with(&server)
        .await
        .expect("connect to HOOKYARD_TEST_POSTGRES_URL");
    for setting in ["fsync", "synchronous_commit"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(&mut conn)
            .await
            .expect("SHOW");
        assert_eq!(
            value, "on",
            "{setting} is {value}: the daemon answers only after a commit is durable, and \
             the tests that crash the server rely on it"
        );
    }
}

// ---- the test database ----

/// The server to test against; `None` when PostgreSQL tests are skipped.
fn server() -> Option<PgConnectOptions> {
    match std::env::var("HOOKYARD_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            Some(url.parse().unwrap_or_else(|e| {
                panic!("HOOKYARD_TEST_POSTGRES_URL is not a PostgreSQL URL: {e}")
            }))
        }
        _ if std::env::var("HOOKYARD_SKIP_POSTGRES").as_deref() == Ok("1") => {
            eprintln!("HOOKYARD_SKIP_POSTGRES=1: PostgreSQL test skipped");
            None
        }
        _ => panic!(
            "HOOKYARD_TEST_POSTGRES_URL is not set. Run the tests with ./scripts/test, which \
             starts a PostgreSQL for them (or eval \"$(scripts/postgres start)\" and export \
             the variables it prints); HOOKYARD_SKIP_POSTGRES=1 skips the PostgreSQL tests"
        ),
    }
}

/// Runs `test` with a pool on a new, empty database, then drops the
/// database, whether the test passed or not.
async fn with_scratch_database<F, Fut>(test: F)
where
    F: FnOnce(PgPool) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(server) = server() else { return };
    let name = format!("hookyard_test_{:016x}", rand::random::<u64>());
    let mut admin = PgConnection::connect_with(&server)
        .await
        .expect("connect to HOOKYARD_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("could not create a database (the role needs CREATEDB): {e}"));
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(server.clone().database(&name))
        .await
        .expect("connect to the test database");
    let outcome = AssertUnwindSafe(test(pool.clone())).catch_unwind().await;
    pool.close().await;
    let dropped = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    dropped.expect("drop the test database");
}

async fn migrator(dir: &str) -> Migrator {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
    Migrator::new(path.clone())
        .await
        .unwrap_or_else(|e| panic!("read the migrations in {}: {e}", path.display()))
}

async fn execute(pool: &PgPool, statement: &str) {
    sqlx::query(statement)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn next_notification(listener: &mut PgListener) -> String {
    tokio::time::timeout(NOTIFY_WAIT, listener.recv())
        .await
        .expect("a notification in time")
        .expect("a notification")
        .payload()
        .to_string()
}
