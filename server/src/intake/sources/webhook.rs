//! `POST /webhook/v1/{token}` and its browser preflight. The checks run in a
//! fixed order, cheapest and most telling first: token (404), status (403),
//! caller address and origin (403), rate limit (429), body size, type and
//! syntax (413/415/400), signature (401), schema and event name (422), then
//! replay detection through the event id. Nothing is stored for a rejected
//! request; every rejection is counted for its source and reason. An
//! accepted webhook is routed and committed like any event before the 202.

use crate::metrics::Door;
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use ipnet::IpNet;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{body::Kind, cors, registry::Compiled, SourceRegistry, SourceStatus};
use crate::{
    intake::{
        event::{self, Draft, FieldError},
        http::read_body,
        payload, ApiError, Intake,
    },
    model::now_ms,
    publish::PublishError,
};

/// Headers whose value identifies one delivery of a webhook, so a resend is
/// recognised as a duplicate.
const REPLAY_HEADERS: &[&str] = &["webhook-id", "x-github-delivery", "idempotency-key"];
const MAX_EVENT_ID: usize = 128;

#[derive(Clone)]
pub struct WebhookState {
    pub intake: Arc<Intake>,
    pub sources: Arc<SourceRegistry>,
    pub trusted_proxies: Arc<[IpNet]>,
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhook/v1/{token}", post(receive).options(preflight))
        .with_state(state)
}

/// A rejection and the reason it is counted under.
struct Rejected(&'static str, ApiError);

impl From<ApiError> for Rejected {
    fn from(error: ApiError) -> Self {
        Rejected(error.code(), error)
    }
}

async fn receive(
    State(state): State<WebhookState>,
    Path(token): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(source) = state.sources.lookup(&token) else {
        state.sources.count_unknown_token();
        return unknown_token().into_response();
    };
    let client = super::client_ip::resolve(peer.ip(), &headers, &state.trusted_proxies);
    let mut response = match accept(&state, &source, client, &headers, body).await {
        Ok(response) => response,
        Err(Rejected(reason, error)) => {
            source.rejections.count(reason);
            crate::metrics::source_refused(&source.source.id, reason);
            tracing::debug!(source = %source.source.id, reason, "Refused a webhook.");
            error.into_response()
        }
    };
    if let Some(origin) = allowed_origin(&source, &headers) {
        cors::decorate(response.headers_mut(), origin);
    }
    response
}

async fn accept(
    state: &WebhookState,
    source: &Compiled,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Rejected> {
    check_status(source)?;
    check_caller(source, client, headers)?;
    check_rate(source)?;
    let limit = state.intake.body_limit;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::TooLarge { limit }.into());
    }
    let kind = Kind::of(headers)?;
    let bytes = read_body(body, headers, limit).await?;
    let parsed = kind.parse(&bytes)?;
    source
        .verifier
        .verify(headers, &bytes, now_ms() / 1000)
        .map_err(ApiError::BadSignature)?;
    let as_sent = (kind == Kind::Json).then_some(&bytes[..]);
    let event = to_event(source, parsed, as_sent, headers)?;
    let (id, published) = state
        .intake
        .publisher
        .publish_one(Door::Source, event)
        .await
        .map_err(|e| match e {
            // The body is the payload: named as the source's own schema
            // names its fields (`/email`).
            PublishError::Invalid { fields, .. } => ApiError::schema(&[], fields),
            other => ApiError::from(other),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": "ACCEPTED", "duplicate": published.duplicate})),
    )
        .into_response())
}

fn check_status(source: &Compiled) -> Result<(), Rejected> {
    let (reason, status) = match source.source.status {
        SourceStatus::Active => return Ok(()),
        SourceStatus::Inactive => ("inactive", "INACTIVE"),
        SourceStatus::Suspended => ("suspended", "SUSPENDED"),
    };
    Err(Rejected(
        reason,
        ApiError::Forbidden(format!(
            "source `{}` is {status} and accepts no webhooks",
            source.source.id
        )),
    ))
}

/// `client` is `None` when a trusted proxy's `X-Forwarded-For` could not be
/// read: an allow-list then refuses, since nothing shows the caller is on it.
fn check_caller(
    source: &Compiled,
    client: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<(), Rejected> {
    let policy = &source.source.policy;
    if !policy.allowed_cidrs.is_empty() {
        let refused = |message: String| {
            Err(Rejected(
                "address_not_allowed",
                ApiError::Forbidden(message),
            ))
        };
        match client {
            None => {
                return refused(
                    "the caller's address could not be read from X-Forwarded-For, \
                     and this source accepts only listed addresses"
                        .into(),
                )
            }
            Some(ip) if !policy.allowed_cidrs.iter().any(|n| n.contains(&ip)) => {
                return refused(format!(
                    "address {ip} is not allowed to post to this source"
                ))
            }
            Some(_) => {}
        }
    }
    match cors::origin(headers) {
        Some(origin)
            if !policy.allowed_origins.is_empty()
                && !cors::allowed(&policy.allowed_origins, origin) =>
        {
            Err(Rejected(
                "origin_not_allowed",
                ApiError::Forbidden(format!(
                    "origin `{origin}` is not allowed to post to this source"
                )),
            ))
        }
        _ => Ok(()),
    }
}

fn check_rate(source: &Compiled) -> Result<(), Rejected> {
    let Some(limiter) = &source.limiter else {
        return Ok(());
    };
    let scope = format!("source `{}`", source.source.id);
    Ok(crate::intake::rate::admit(limiter, 1, &scope)?)
}

/// Validates the body against the source's schema, derives the name, and
/// builds the event. A JSON body (`as_sent`) becomes the payload as it was
/// sent; a form becomes the object it was parsed into.
fn to_event(
    source: &Compiled,
    parsed: Value,
    as_sent: Option<&[u8]>,
    headers: &HeaderMap,
) -> Result<crate::model::NewEvent, Rejected> {
    let Value::Object(payload) = parsed else {
        return Err(ApiError::Validation(vec![FieldError::new(
            &[],
            "the body must be a JSON object (or a form)",
        )])
        .into());
    };
    if let Some(schema) = &source.schema {
        let errors = schema.check(&Value::Object(payload.clone()));
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors).into());
        }
    }
    let name = source
        .namer
        .derive(&payload)
        .map_err(|e| ApiError::Validation(vec![e]))?;
    let replay = replay_key(source, headers, &payload);
    let mut draft = Draft {
        id: replay
            .as_deref()
            .map(|key| event_id(&source.source.id, key)),
        name,
        source: Some(source.source.id.clone()),
        tenant_id: source.source.tenant_id.clone(),
        payload: payload_text(as_sent, payload),
        ..Draft::default()
    };
    if let Some(key) = replay {
        draft.attributes.insert("delivery_id".into(), truncate(key));
    }
    event::finish(draft, &source.source.id, Vec::new()).map_err(|e| ApiError::Validation(e).into())
}

/// The JSON body as it was sent (less whitespace between tokens), so a
/// partner's keys keep their order and its numbers every digit; a form's
/// fields printed as an object.
fn payload_text(as_sent: Option<&[u8]>, parsed: serde_json::Map<String, Value>) -> String {
    as_sent
        .and_then(|raw| String::from_utf8(raw.to_vec()).ok())
        .and_then(|text| payload::from_text(text).ok())
        .unwrap_or_else(|| payload::from_map(parsed))
}

/// What identifies this delivery: a replay header, or a Stripe event's id.
fn replay_key(
    source: &Compiled,
    headers: &HeaderMap,
    payload: &serde_json::Map<String, Value>,
) -> Option<String> {
    let from_header = REPLAY_HEADERS.iter().find_map(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    });
    if let Some(key) = from_header {
        return Some(key.to_string());
    }
    match source.source.policy.signature {
        super::Signature::Stripe { .. } => payload
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// `<source>:<key>` when that is a valid event id, else the key's hash, so
/// two sources can never collide and any key maps to a valid id.
fn event_id(source_id: &str, key: &str) -> String {
    let plain = format!("{source_id}:{key}");
    let valid = plain.len() <= MAX_EVENT_ID
        && plain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b));
    if valid {
        plain
    } else {
        format!(
            "{source_id}:{}",
            &hex::encode(Sha256::digest(key.as_bytes()))[..40]
        )
    }
}

fn truncate(mut key: String) -> String {
    let mut end = key.len().min(256);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    key.truncate(end);
    key
}

fn allowed_origin<'h>(source: &Compiled, headers: &'h HeaderMap) -> Option<&'h str> {
    let allowed = &source.source.policy.allowed_origins;
    cors::origin(headers).filter(|origin| !allowed.is_empty() && cors::allowed(allowed, origin))
}

fn unknown_token() -> ApiError {
    ApiError::NotFound("no source has this token".into())
}

/// The browser's CORS preflight, and the CloudEvents webhook abuse-protection
/// handshake for senders that validate a URL before posting to it.
async fn preflight(
    State(state): State<WebhookState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(source) = state.sources.lookup(&token) else {
        state.sources.count_unknown_token();
        return unknown_token().into_response();
    };
    if let Err(Rejected(reason, error)) = check_status(&source) {
        source.rejections.count(reason);
        return error.into_response();
    }
    if let Some(response) = crate::intake::cloudevents::handshake(&headers) {
        return response;
    }
    match (cors::origin(&headers), allowed_origin(&source, &headers)) {
        (_, Some(origin)) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            cors::preflight(response.headers_mut(), origin);
            response
        }
        (Some(origin), None) => {
            source.rejections.count("origin_not_allowed");
            ApiError::Forbidden(format!(
                "origin `{origin}` is not allowed to post to this source"
            ))
            .into_response()
        }
        (None, None) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            response
        }
    }
}
