//! The end-to-end tests again, on PostgreSQL: the same files as `e2e.rs`,
//! each daemon with a database of its own on the server `./scripts/test`
//! starts (`HOOKYARD_TEST_POSTGRES_URL`). Left out, as they test SQLite's
//! own files: fail_stop and faults_disk (its log's fsync and a full disk),
//! faults_settle (a fault hook in SQLite's committer) and private_files
//! (the database file's mode).

mod backend {
    pub const POSTGRES: bool = true;
}

#[path = "e2e/admin.rs"]
mod admin;
#[path = "e2e/api.rs"]
mod api;
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
#[path = "e2e/faults_backlog.rs"]
mod faults_backlog;
#[path = "e2e/faults_kill.rs"]
mod faults_kill;
#[path = "e2e/faults_sink.rs"]
mod faults_sink;
#[path = "e2e/feeds_nodes.rs"]
mod feeds_nodes;
#[path = "e2e/flow_examples.rs"]
mod flow_examples;
#[path = "e2e/flows.rs"]
mod flows;
#[allow(dead_code)]
#[path = "e2e/harness.rs"]
mod harness;
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
#[path = "e2e/postgres_nodes.rs"]
mod postgres_nodes;
#[path = "e2e/postgres_outage.rs"]
mod postgres_outage;
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
#[path = "e2e/runs.rs"]
mod runs;
#[path = "e2e/sink.rs"]
mod sink;
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
#[path = "e2e/webhooks.rs"]
mod webhooks;
