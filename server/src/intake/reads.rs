//! JSON reads over HTTP for callers that cannot speak gRPC (a website
//! showing an order's webhook status, scripts that poll a run as they did
//! Kestra's executions API): `GET /v1/events/{id}` with its deliveries and
//! attempts, `GET /v1/runs/{id}` with its steps and log. An API key is
//! required; a key bound to a tenant sees only that tenant's events and its
//! flows' runs, and anything else is 404, as if it did not exist.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap},
    routing::get,
    Json, Router,
};
use serde_json::{json, Value};

use super::{auth::Principal, ApiError, Intake};
use crate::{
    model::{
        run::{LogLine, Run},
        Attempt, Delivery, StoredEvent,
    },
    store::{self, Store},
    timestamp::format_rfc3339_millis as time,
};

#[derive(Clone)]
struct Reads {
    intake: Arc<Intake>,
    store: Store,
}

pub fn router(intake: Arc<Intake>, store: Store) -> Router {
    Router::new()
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/runs/{id}", get(get_run))
        .with_state(Reads { intake, store })
}

fn caller(reads: &Reads, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let key = reads
        .intake
        .keys
        .authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?;
    reads.intake.keys.admit(&key.name, 1)?;
    Ok(key)
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{what} `{id}` does not exist"))
}

fn storage(error: store::Error, what: &str, id: &str) -> ApiError {
    match error {
        store::Error::NotFound { .. } | store::Error::FailedPrecondition(_) => not_found(what, id),
        other => ApiError::Unavailable(other.to_string()),
    }
}

async fn get_event(
    State(reads): State<Reads>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = caller(&reads, &headers)?;
    let (event, deliveries) = reads
        .store
        .get_event(&id)
        .await
        .map_err(|e| storage(e, "event", &id))?;
    if key.tenant.is_some() && key.tenant.as_deref() != event.tenant_id.as_deref() {
        return Err(not_found("event", &id));
    }
    Ok(Json(event_json(&event, &deliveries)))
}

async fn get_run(
    State(reads): State<Reads>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = caller(&reads, &headers)?;
    let (run, log) = reads
        .store
        .get_run(&id)
        .await
        .map_err(|e| storage(e, "run", &id))?;
    if let Some(tenant) = key.tenant.as_deref() {
        let flow = reads
            .intake
            .flows
            .version(&run.flow_id, run.flow_version)
            .await
            .map_err(|e| storage(e, "run", &id))?;
        if flow.def.tenant_id.as_deref() != Some(tenant) {
            return Err(not_found("run", &id));
        }
    }
    Ok(Json(run_json(&run, &log)))
}

fn event_json(event: &StoredEvent, deliveries: &[(Delivery, Vec<Attempt>)]) -> Value {
    json!({
        "id": event.id,
        "seq": event.seq,
        "name": event.name,
        "source": event.source,
        "tenant_id": event.tenant_id,
        "time": time(event.time_ms),
        "payload": serde_json::from_str::<Value>(&event.payload).unwrap_or(Value::Null),
        "attributes": event.attributes,
        "deliveries": deliveries.iter().map(|(d, attempts)| delivery_json(d, attempts)).collect::<Vec<_>>(),
    })
}

fn delivery_json(d: &Delivery, attempts: &[Attempt]) -> Value {
    json!({
        "id": d.id,
        "subscription": d.subscription_name,
        "endpoint_id": d.endpoint_id,
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_ms.map(time),
        "created_at": time(d.created_ms),
        "updated_at": time(d.updated_ms),
        "attempt_log": attempts.iter().map(|a| json!({
            "number": a.number,
            "started_at": time(a.started_ms),
            "duration_ms": a.duration_ms,
            "status_code": a.status_code,
            "error": a.error,
        })).collect::<Vec<_>>(),
    })
}

fn run_json(run: &Run, log: &[LogLine]) -> Value {
    json!({
        "id": run.id,
        "flow_id": run.flow_id,
        "flow_version": run.flow_version,
        "state": run.state.as_str(),
        "key": run.key,
        "trigger": run.trigger,
        "inputs": serde_json::from_str::<Value>(&run.inputs).unwrap_or(Value::Null),
        "step_index": run.step_index,
        "steps": serde_json::from_str::<Value>(&run.steps).unwrap_or(Value::Null),
        "wake_at": run.wake_ms.map(time),
        "error": run.error,
        "created_at": time(run.created_ms),
        "updated_at": time(run.updated_ms),
        "log": log.iter().map(|l| json!({
            "time": time(l.time_ms),
            "step": l.step_id,
            "message": l.message,
        })).collect::<Vec<_>>(),
    })
}
