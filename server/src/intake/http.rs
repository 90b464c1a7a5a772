//! HTTP intake: `POST /v1/events` (Hookyard events, or CloudEvents in any
//! of their three modes), plus `/healthz` and `/readyz`. Checks run
//! cheapest first — credentials, content type, size — so a bad request costs
//! little before it is refused.

use crate::metrics::Door;
use std::sync::Arc;

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use super::{cloudevents, event, ApiError, Intake};
use crate::{
    store::Store,
    supervise::{Health, Readiness},
};

#[derive(Clone)]
struct AppState {
    intake: Arc<Intake>,
    store: Store,
    health: Health,
}

pub fn router(intake: Arc<Intake>, store: Store, health: Health) -> Router {
    Router::new()
        .route(
            "/v1/events",
            post(post_event).options(super::cloudevents::options),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            intake,
            store,
            health,
        })
}

async fn post_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let answer = publish_event(&state, &headers, body).await;
    if let Some(refusal) = answer.as_ref().err().and_then(ApiError::refusal) {
        // Worked out only for a refusal: the accepted path pays nothing.
        let door = match cloudevents::mode(&headers) {
            Some(_) => Door::CloudEvents,
            None => Door::Http,
        };
        crate::metrics::events(door, refusal, 1);
    }
    answer
}

async fn publish_event(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let intake = &state.intake;
    let key = intake
        .keys
        .authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))?;
    if let Some(mode) = cloudevents::mode(headers) {
        let limit = match mode {
            cloudevents::Mode::Batch => intake.batch_body_limit,
            _ => intake.body_limit,
        };
        let bytes = read_body(body, headers, limit).await?;
        return cloudevents::publish(intake, mode, headers, &bytes, &key).await;
    }
    require_json(headers)?;
    intake.keys.admit(&key.name, 1)?;
    let bytes = read_body(body, headers, intake.body_limit).await?;
    let event = event::from_json(&bytes, &key).map_err(|e| match e {
        event::Invalid::Malformed {
            line,
            column,
            message,
        } => ApiError::Malformed {
            line,
            column,
            message,
        },
        event::Invalid::Fields(fields) => ApiError::Validation(fields),
    })?;
    key.authorize(std::slice::from_ref(&event))?;
    let (id, published) = intake.publisher.publish_one(Door::Http, event).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "id": id,
            "seq": published.seq,
            "duplicate": published.duplicate,
            "matched": published.matched,
        })),
    )
        .into_response())
}

/// The `content-type` header as sent ("" when missing) and its media type
/// without parameters.
pub(crate) fn content_type(headers: &HeaderMap) -> (&str, &str) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    (content_type, essence)
}

fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let (content_type, essence) = content_type(headers);
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else if content_type.is_empty() {
        Err(ApiError::UnsupportedMediaType(
            "content-type is missing; send application/json".into(),
        ))
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "content-type `{content_type}` is not supported; send application/json"
        )))
    }
}

/// Reads at most `limit` bytes; a declared or actual larger body is a 413.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::TooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "could not read the body: {e}"
        ))),
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready while every component runs and storage answers: a daemon that
/// cannot commit or deliver should not get traffic. The reason names the
/// component, not the detail (that is in the log).
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let unavailable = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        )
    };
    match state.health.readiness() {
        Readiness::Serving => {}
        Readiness::Stopping => return unavailable("the daemon is shutting down".into()),
        Readiness::Failed { component } => {
            return unavailable(format!("the {component} stopped; the daemon is restarting"))
        }
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(e) => unavailable(e.to_string()),
    }
}

/// The answer for every unknown path, HTTP or gRPC.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}
