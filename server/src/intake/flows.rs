//! Starting flow runs from outside: `POST /v1/flows/{id}/runs` (API key),
//! `POST /hooks/{flow_id}/{key}` (the flow's webhook key: forms and partners,
//! like Kestra's webhook trigger) and `Events.StartRun` over gRPC. Inputs are
//! checked before a run exists; the answer comes once the run is committed.
//! API-key doors count against the key's rate limit; the webhook door against
//! the flow's (`webhook.rate_limit`, else `flow_runner.webhook_rate_limit`).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::{
    auth::Principal,
    http::read_body,
    rate::{self, Buckets},
    sources::body::Kind,
    ApiError, Intake,
};
use crate::{
    flows::{
        start::{self, Trigger},
        webhook_key_hash,
    },
    model::{
        run::{Run, StartOutcome},
        RateLimit,
    },
    store::FlowOp,
};

impl Intake {
    /// Checks `given` against the flow's inputs and commits the run.
    /// `caller` is the API key, when one is the credential: a key bound to a
    /// tenant sees only that tenant's flows, and any other is answered like
    /// one that does not exist, so it learns nothing about them.
    pub async fn start_run(
        &self,
        flow_id: &str,
        given: Map<String, Value>,
        trigger: Trigger,
        caller: Option<&Principal>,
    ) -> Result<Run, ApiError> {
        let flow = self
            .flows
            .get()
            .get(flow_id)
            .filter(|f| caller.is_none_or(|key| key.may_start(f.def.tenant_id.as_deref())))
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("flow `{flow_id}` does not exist")))?;
        let new = start::from_inputs(&flow, given, trigger).map_err(ApiError::InvalidInputs)?;
        match self.writer.flow(|reply| FlowOp::Start(new, reply)).await? {
            StartOutcome::Started(run) => Ok(*run),
            StartOutcome::Skipped { active } => Err(ApiError::Conflict(format!(
                "run `{active}` of flow `{flow_id}` is already active for this key \
                 (concurrency on_conflict: skip); nothing was started"
            ))),
        }
    }
}

/// The webhook door's rate limits: a flow's key sits in public pages, and
/// each run may send email or call partners.
#[derive(Clone)]
struct Doors {
    intake: Arc<Intake>,
    /// For flows whose `webhook` sets no `rate_limit`.
    webhook_default: RateLimit,
    webhook_buckets: Arc<Buckets>,
}

pub fn router(intake: Arc<Intake>, webhook_default: RateLimit) -> Router {
    Router::new()
        .route("/v1/flows/{id}/runs", post(start_by_api))
        .route("/hooks/{flow_id}/{key}", post(start_by_webhook))
        .with_state(Doors {
            intake,
            webhook_default,
            webhook_buckets: Arc::default(),
        })
}

impl Doors {
    fn admit_webhook(&self, flow_id: &str) -> Result<(), ApiError> {
        let limit = self
            .intake
            .flows
            .get()
            .get(flow_id)
            .and_then(|flow| flow.def.webhook.as_ref()?.rate_limit)
            .unwrap_or(self.webhook_default);
        let limiter = self.webhook_buckets.get(flow_id, limit);
        rate::admit(&limiter, 1, format_args!("the webhook of flow `{flow_id}`"))
    }
}

fn created(run: &Run) -> Response {
    (
        StatusCode::CREATED,
        Json(json!({"id": run.id, "state": run.state.as_str()})),
    )
        .into_response()
}

/// `{"inputs": {...}}` with an API key.
async fn start_by_api(
    State(doors): State<Doors>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let intake = &doors.intake;
    let key = intake
        .keys
        .authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?;
    intake.keys.admit(&key.name, 1)?;
    if Kind::of(&headers)? != Kind::Json {
        return Err(ApiError::UnsupportedMediaType(
            "send application/json: {\"inputs\": {...}}".into(),
        ));
    }
    let bytes = read_body(body, &headers, intake.body_limit).await?;
    let inputs = match Kind::Json.parse(&bytes)? {
        Value::Object(mut body) => {
            let inputs = body.remove("inputs").unwrap_or(Value::Object(Map::new()));
            if let Some(other) = body.keys().next() {
                return Err(ApiError::InvalidInputs(vec![
                    super::event::FieldError::new(
                        &[other],
                        "unknown field; the body is {\"inputs\": {...}}",
                    ),
                ]));
            }
            match inputs {
                Value::Object(inputs) => inputs,
                _ => {
                    return Err(ApiError::InvalidInputs(vec![
                        super::event::FieldError::new(&["inputs"], "must be a JSON object"),
                    ]))
                }
            }
        }
        _ => {
            return Err(ApiError::InvalidInputs(vec![
                super::event::FieldError::new(
                    &[],
                    "the body must be a JSON object: {\"inputs\": {...}}",
                ),
            ]))
        }
    };
    let run = intake
        .start_run(&id, inputs, Trigger::Api, Some(&key))
        .await?;
    Ok(created(&run))
}

/// A JSON or form body; the key in the path is the credential. An unknown
/// flow and a wrong key get the same 404.
async fn start_by_webhook(
    State(doors): State<Doors>,
    Path((flow_id, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let intake = &doors.intake;
    let not_found = || ApiError::NotFound(format!("no webhook at /hooks/{flow_id}/…"));
    let presented = webhook_key_hash(&key);
    let known = intake
        .flows
        .get()
        .webhook_key_hash(&flow_id)
        .map(<[u8]>::to_vec);
    let matches = known.is_some_and(|k| bool::from(k.as_slice().ct_eq(&presented)));
    if !matches {
        return Err(not_found());
    }
    doors.admit_webhook(&flow_id)?;
    let kind = Kind::of(&headers)?;
    let bytes = read_body(body, &headers, intake.body_limit).await?;
    let body = kind.parse(&bytes)?;
    let given = match &body {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let headers = headers
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION && *name != header::COOKIE)
        .filter_map(|(name, value)| {
            Some((
                name.to_string(),
                Value::String(value.to_str().ok()?.to_string()),
            ))
        })
        .collect();
    let run = intake
        .start_run(&flow_id, given, Trigger::Webhook { body, headers }, None)
        .await?;
    Ok(created(&run))
}
