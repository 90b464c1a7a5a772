//! `hookyard migrate` brings the schema up to date and says what it did;
//! a database migrated by a newer build is refused by `migrate` and `serve`
//! alike, with a message that says so, and nothing is changed in it.

use sqlx::Connection;

use crate::{
    harness::{Daemon, TestConfig},
    sink::{Behaviour, TestReceiver},
};

/// A migration version no build has: what a newer Hookyard would leave.
const NEWER: i64 = 29_991_231_000_001;

#[tokio::test]
async fn migrate_reports_what_it_applied_and_a_newer_schema_is_refused() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let mut daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    daemon.stop().await;

    let (status, stdout, stderr) = daemon.run_subcommand("migrate").await;
    assert!(status.success(), "migrate failed: {stderr}");
    assert!(
        stdout.contains("the schema is up to date"),
        "serve already migrated: {stdout}"
    );

    record_newer_migration(&daemon).await;
    for subcommand in ["migrate", "serve"] {
        let (status, _, stderr) = daemon.run_subcommand(subcommand).await;
        assert!(!status.success(), "{subcommand} accepted a newer schema");
        assert!(
            stderr.contains("newer than this build of Hookyard knows")
                && stderr.contains(&NEWER.to_string()),
            "{subcommand} should name the newer schema: {stderr}"
        );
    }
}

/// Adds a row to sqlx's migration table as a newer build's migration would.
async fn record_newer_migration(daemon: &Daemon) {
    const INSERT: &str = "INSERT INTO _sqlx_migrations \
        (version, description, success, checksum, execution_time) \
        VALUES ($1, 'from a newer build', TRUE, $2, 1)";
    match daemon.postgres_url() {
        Some(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(INSERT)
                .bind(NEWER)
                .bind(vec![0u8; 48])
                .execute(&mut conn)
                .await
                .expect("record a newer migration");
        }
        None => {
            let path = daemon.data_path().join("hookyard.db");
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
                .await
                .expect("open the database");
            sqlx::query(INSERT)
                .bind(NEWER)
                .bind(vec![0u8; 48])
                .execute(&mut conn)
                .await
                .expect("record a newer migration");
        }
    }
}
