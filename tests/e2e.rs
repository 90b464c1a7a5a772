//! End-to-end tests: each starts the real `hookyard` binary (build it first:
//! `cargo build --workspace --bins`) in its own temp dir, with a webhook sink
//! in the test process.

/// These tests run on SQLite; `e2e_postgres.rs` runs them on PostgreSQL.
mod backend {
    pub const POSTGRES: bool = false;
}

#[path = "e2e/api.rs"]
mod api;
// Shared with the isolation tests' binary; each uses part of it.
#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/runs.rs"]
mod runs;
#[path = "e2e/sink.rs"]
mod sink;
#[path = "e2e/webhooks.rs"]
mod webhooks;

#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/backup.rs"]
mod backup;
#[path = "e2e/breaker.rs"]
mod breaker;
#[path = "e2e/check_config.rs"]
mod check_config;
#[path = "e2e/cloudevents.rs"]
mod cloudevents;
#[path = "e2e/config_ranges.rs"]
mod config_ranges;
#[path = "e2e/connections.rs"]
mod connections;
#[path = "e2e/crash.rs"]
mod crash;
#[path = "e2e/ctl.rs"]
mod ctl;
#[path = "e2e/delivery_depth.rs"]
mod delivery_depth;
#[path = "e2e/duplicates.rs"]
mod duplicates;
#[path = "e2e/endpoint_auth.rs"]
mod endpoint_auth;
#[path = "e2e/errors.rs"]
mod errors;
#[path = "e2e/event_types.rs"]
mod event_types;
#[path = "e2e/fail_stop.rs"]
mod fail_stop;
#[path = "e2e/faults_backlog.rs"]
mod faults_backlog;
#[path = "e2e/faults_disk.rs"]
mod faults_disk;
#[path = "e2e/faults_kill.rs"]
mod faults_kill;
#[path = "e2e/faults_settle.rs"]
mod faults_settle;
#[path = "e2e/faults_sink.rs"]
mod faults_sink;
#[path = "e2e/flow_examples.rs"]
mod flow_examples;
#[path = "e2e/flows.rs"]
mod flows;
#[path = "e2e/health.rs"]
mod health;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/hostile_admin.rs"]
mod hostile_admin;
#[path = "e2e/hostile_grpc.rs"]
mod hostile_grpc;
#[path = "e2e/hostile_http.rs"]
mod hostile_http;
#[path = "e2e/limits.rs"]
mod limits;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/migrate.rs"]
mod migrate;
#[path = "e2e/ordering.rs"]
mod ordering;
#[path = "e2e/packaging.rs"]
mod packaging;
#[path = "e2e/private_files.rs"]
mod private_files;
#[path = "e2e/publish.rs"]
mod publish;
#[path = "e2e/publish_stream.rs"]
mod publish_stream;
#[path = "e2e/reads.rs"]
mod reads;
#[path = "e2e/reload.rs"]
mod reload;
#[path = "e2e/replay.rs"]
mod replay;
#[path = "e2e/retention.rs"]
mod retention;
#[path = "e2e/retry.rs"]
mod retry;
#[path = "e2e/sources_admin.rs"]
mod sources_admin;
#[path = "e2e/sources_checks.rs"]
mod sources_checks;
#[path = "e2e/sources_signatures.rs"]
mod sources_signatures;
#[path = "e2e/ssrf.rs"]
mod ssrf;
#[path = "e2e/stats.rs"]
mod stats;
#[path = "e2e/template_limits.rs"]
mod template_limits;
#[path = "e2e/tenants.rs"]
mod tenants;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/tui.rs"]
mod tui;
#[path = "e2e/watch.rs"]
mod watch;
