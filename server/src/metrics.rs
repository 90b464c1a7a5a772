//! Prometheus metrics, served as text (format 0.0.4) at `GET /metrics` on
//! the admin listener. Components record through the `metrics` facade (a
//! counter bump is a lookup in a sharded map, no lock held across an await,
//! no allocation for static labels); the exporter renders on scrape.
//!
//! Every name is declared here, with its help text, so the whole set reads in
//! one place. Labels are bounded: door, outcome, state and reason are fixed
//! words; endpoint, flow and source ids come from the configuration, never
//! from an event (no event, delivery or run ids).
//!
//! What storage holds (each endpoint's backlog) is read at scrape time, so
//! it is the truth rather than a count that drifts across restarts.

use std::{sync::Arc, sync::OnceLock, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{catalog::CatalogHandle, model::now_ms, store::Store};

/// What a scrape needs.
#[derive(Clone)]
pub struct Scrape {
    pub handle: PrometheusHandle,
    pub store: Store,
    pub catalog: Arc<CatalogHandle>,
}

/// `GET /metrics`, for the admin listener. Open like `/healthz`: the admin
/// listener is on loopback (or a private network) by default.
pub fn router(scrape: Scrape) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(scrape)
}

async fn render(State(scrape): State<Scrape>) -> Response {
    record_backlogs(&scrape).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.handle.render(),
    )
        .into_response()
}

/// Each endpoint's backlog as storage has it now; an endpoint with none
/// reads 0. When storage cannot be read the last values stay.
async fn record_backlogs(scrape: &Scrape) {
    match scrape.store.delivery_stats(now_ms()).await {
        Ok(stats) => {
            let catalog = scrape.catalog.get();
            for id in catalog.endpoint_ids() {
                backlog(id, stats.endpoints.get(id).map_or(0, |e| e.backlog));
            }
        }
        Err(error) => {
            tracing::warn!(%error, "Could not read the backlog for /metrics.");
        }
    }
}

pub const EVENTS: &str = "hookyard_events_total";
pub const ROUTED: &str = "hookyard_routed_total";
pub const ATTEMPTS: &str = "hookyard_attempts_total";
pub const ATTEMPT_SECONDS: &str = "hookyard_attempt_duration_seconds";
pub const DELIVERIES: &str = "hookyard_deliveries_total";
pub const IN_FLIGHT: &str = "hookyard_endpoint_in_flight";
pub const BACKLOG: &str = "hookyard_endpoint_backlog";
pub const BREAKER: &str = "hookyard_endpoint_breaker_state";
pub const WRITER_QUEUE: &str = "hookyard_writer_queue_depth";
pub const BATCH_SIZE: &str = "hookyard_commit_batch_size";
pub const COMMIT_SECONDS: &str = "hookyard_commit_duration_seconds";
pub const RUNS: &str = "hookyard_flow_runs_total";
pub const STEPS: &str = "hookyard_flow_steps_total";
pub const SOURCE_REFUSALS: &str = "hookyard_source_refusals_total";
pub const BUILD_INFO: &str = "hookyard_build_info";

/// Seconds: 0.5 ms to 60 s, roughly doubling.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Events per commit: 1 to the largest batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns the handle that
/// renders it. A second daemon started in the same process shares it.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(ATTEMPT_SECONDS.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(COMMIT_SECONDS.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        // Another recorder is in place (a host application's); ours renders
        // what it was given, which is nothing, rather than failing start.
        tracing::warn!("A metrics recorder was already installed; /metrics shows only its own.");
    }
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Drains histogram samples into their buckets now and then, so memory
/// stays flat between scrapes.
pub async fn upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

fn describe() {
    describe_counter!(
        EVENTS,
        "Events offered at each door (http, cloudevents, grpc, source, flow), by outcome: accepted, duplicate, conflict, invalid, schema_invalid (refused by an event type's schema), unauthorized, rate_limited, overloaded, unavailable."
    );
    describe_counter!(
        ROUTED,
        "Subscriptions matched by accepted events: deliveries made plus flow runs started."
    );
    describe_counter!(
        ATTEMPTS,
        "Delivery attempts by endpoint and outcome: success, retry (failed, to be retried), gone (410), dead (failed, no retry left)."
    );
    describe_histogram!(
        ATTEMPT_SECONDS,
        metrics::Unit::Seconds,
        "Time from sending a delivery's request to its answer (or failure), by endpoint."
    );
    describe_counter!(
        DELIVERIES,
        "Deliveries that ended, by endpoint and status: succeeded or dead."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Requests being made to the endpoint by this daemon now."
    );
    describe_gauge!(
        BACKLOG,
        "Deliveries of the endpoint still to be made (pending or failed and waiting for a retry), read from storage at scrape time."
    );
    describe_gauge!(
        BREAKER,
        "The endpoint's circuit breaker on this daemon: 0 closed, 1 probing, 2 open (sending paused)."
    );
    describe_gauge!(
        WRITER_QUEUE,
        "Publish requests and results waiting for the writer."
    );
    describe_histogram!(
        BATCH_SIZE,
        "Events committed per transaction (group commit)."
    );
    describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "Time to commit one group (transaction and, on SQLite, the log's fsync)."
    );
    describe_counter!(
        RUNS,
        "Flow runs by flow and state reached: CREATED when started, then SUCCEEDED, FAILED or CANCELLED."
    );
    describe_counter!(
        STEPS,
        "Flow steps executed by flow and outcome: ok, retry, failed, waiting."
    );
    describe_counter!(
        SOURCE_REFUSALS,
        "Webhooks refused at a source's URL, by source and reason."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version as a label.");
}

/// Where an event came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Http,
    CloudEvents,
    Grpc,
    Source,
    Flow,
    /// The daemon's own operational events (`hookyard.endpoint.disabled`).
    Daemon,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Http => "http",
            Door::CloudEvents => "cloudevents",
            Door::Grpc => "grpc",
            Door::Source => "source",
            Door::Flow => "flow",
            Door::Daemon => "daemon",
        }
    }
}

/// `n` events at `door` ended with `outcome`.
pub fn events(door: Door, outcome: &'static str, n: u64) {
    if n > 0 {
        counter!(EVENTS, "door" => door.as_str(), "outcome" => outcome).increment(n);
    }
}

/// Subscriptions matched by newly stored events.
pub fn routed(matched: u64) {
    if matched > 0 {
        counter!(ROUTED).increment(matched);
    }
}

/// One attempt's end; `finished` is the delivery's final status when the
/// attempt ended it.
pub fn attempt(
    endpoint: &str,
    outcome: &'static str,
    duration: Duration,
    finished: Option<&'static str>,
) {
    let endpoint = endpoint.to_string();
    counter!(ATTEMPTS, "endpoint" => endpoint.clone(), "outcome" => outcome).increment(1);
    histogram!(ATTEMPT_SECONDS, "endpoint" => endpoint.clone()).record(duration.as_secs_f64());
    if let Some(status) = finished {
        counter!(DELIVERIES, "endpoint" => endpoint, "status" => status).increment(1);
    }
}

/// Requests in flight to the endpoint changed by `delta`.
pub fn in_flight(endpoint: &str, delta: f64) {
    gauge!(IN_FLIGHT, "endpoint" => endpoint.to_string()).increment(delta);
}

pub fn breaker(endpoint: &str, state: f64) {
    gauge!(BREAKER, "endpoint" => endpoint.to_string()).set(state);
}

pub fn backlog(endpoint: &str, deliveries: u64) {
    gauge!(BACKLOG, "endpoint" => endpoint.to_string()).set(deliveries as f64);
}

pub fn writer_queue(depth: usize) {
    gauge!(WRITER_QUEUE).set(depth as f64);
}

pub fn commit(events: usize, took: Duration) {
    histogram!(BATCH_SIZE).record(events as f64);
    histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
}

pub fn run_state(flow: &str, state: &'static str) {
    counter!(RUNS, "flow" => flow.to_string(), "state" => state).increment(1);
}

pub fn step(flow: &str, outcome: &'static str) {
    counter!(STEPS, "flow" => flow.to_string(), "outcome" => outcome).increment(1);
}

pub fn source_refused(source: &str, reason: &'static str) {
    counter!(SOURCE_REFUSALS, "source" => source.to_string(), "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECLARED: &[&str] = &[
        EVENTS,
        ROUTED,
        ATTEMPTS,
        ATTEMPT_SECONDS,
        DELIVERIES,
        IN_FLIGHT,
        BACKLOG,
        BREAKER,
        WRITER_QUEUE,
        BATCH_SIZE,
        COMMIT_SECONDS,
        RUNS,
        STEPS,
        SOURCE_REFUSALS,
        BUILD_INFO,
    ];

    /// The dashboard in deploy/ plots only metrics the daemon exports.
    #[test]
    fn the_grafana_dashboard_uses_only_exported_metrics() {
        let dashboard = include_str!("../../deploy/grafana-dashboard.json");
        let mut used = 0;
        for (at, _) in dashboard.match_indices("hookyard_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            assert!(
                DECLARED.contains(&base),
                "the dashboard plots {name}, which is not exported"
            );
            used += 1;
        }
        assert!(used > 10, "the dashboard plots {used} metrics");
    }
}
