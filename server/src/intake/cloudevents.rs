//! CloudEvents 1.0 over HTTP on `POST /v1/events`, in the three modes of the
//! HTTP binding: structured (`application/cloudevents+json`), batched
//! (`application/cloudevents-batch+json`) and binary (`ce-*` headers, the
//! body is `data`). A CloudEvent maps one-to-one onto an event: `type` is the
//! name, `data` the payload, `id`, `source` and `time` keep their meaning,
//! and `subject`, `datacontenttype`, `dataschema` and extensions become
//! attributes — except the `tenantid` extension, which is the tenant.
//! A binary-mode body without a `Content-Type` is read as JSON. Also
//! answers the CloudEvents webhook abuse-protection handshake.

use crate::metrics::Door;
use std::collections::BTreeMap;

use axum::{
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, value::RawValue, Value};

use super::{
    auth::Principal,
    event::{self, Draft, FieldError},
    payload, ApiError, Intake, MAX_BATCH,
};
use crate::{model::NewEvent, publish::PublishError, routing::validate_name};

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";
const TENANT_EXTENSION: &str = "tenantid";
/// Context attributes that are fields of the event rather than attributes.
const CORE: &[&str] = &["specversion", "id", "source", "type", "time", "data"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batch,
    Binary,
}

/// The CloudEvents mode of a request, or `None` for a plain Hookyard event.
pub fn mode(headers: &HeaderMap) -> Option<Mode> {
    let essence = content_type(headers);
    if essence.eq_ignore_ascii_case(STRUCTURED) {
        Some(Mode::Structured)
    } else if essence.eq_ignore_ascii_case(BATCH) {
        Some(Mode::Batch)
    } else if headers.contains_key("ce-specversion") {
        Some(Mode::Binary)
    } else {
        None
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    super::http::content_type(headers).1
}

/// Validates and publishes what the request carries; answers like a plain
/// publish, or with one result per event for a batch.
pub async fn publish(
    intake: &Intake,
    mode: Mode,
    headers: &HeaderMap,
    body: &[u8],
    key: &Principal,
) -> Result<Response, ApiError> {
    let events = match mode {
        Mode::Structured => vec![structured(parse(body)?, key).map_err(ApiError::Validation)?],
        Mode::Binary => vec![binary(headers, body, key)?],
        Mode::Batch => batch(parse(body)?, key)?,
    };
    key.authorize(&events)?;
    intake.keys.admit(&key.name, events.len())?;
    if mode != Mode::Batch {
        let event = events
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Unavailable("no event was built".into()))?;
        let (id, published) = intake
            .publisher
            .publish_one(Door::CloudEvents, event)
            .await
            .map_err(|e| in_data(e, false))?;
        let answer = json!({"id": id, "seq": published.seq, "duplicate": published.duplicate,
            "matched": published.matched});
        return Ok((StatusCode::ACCEPTED, Json(answer)).into_response());
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    // All or nothing, as a batch with an invalid CloudEvent is.
    let outcomes = intake
        .publisher
        .publish(Door::CloudEvents, events)
        .await
        .map_err(|e| in_data(e, true))?;
    let results: Vec<Value> = ids
        .iter()
        .zip(outcomes)
        .map(|(id, outcome)| match outcome {
            Ok(p) => {
                json!({"id": id, "seq": p.seq, "duplicate": p.duplicate, "matched": p.matched})
            }
            Err(rejection) => {
                json!({"id": id, "error": {"code": "conflict",
                    "message": PublishError::rejected(id, rejection).to_string()}})
            }
        })
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({"events": results}))).into_response())
}

/// A schema violation named where a CloudEvent keeps its payload: `/data`,
/// after the event's index in a batch (`/3/data/amount`).
fn in_data(error: PublishError, batch: bool) -> ApiError {
    match error {
        PublishError::Invalid { index, fields } if batch => {
            ApiError::schema(&[&index.to_string(), "data"], fields)
        }
        PublishError::Invalid { fields, .. } => ApiError::schema(&["data"], fields),
        other => other.into(),
    }
}

/// Checks the body is JSON (a 400 naming the line and column if not) and
/// keeps it as text, so `data` can be kept as sent.
fn parse(body: &[u8]) -> Result<&RawValue, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}

fn batch(raw: &RawValue, key: &Principal) -> Result<Vec<NewEvent>, ApiError> {
    let not_array = || invalid(&[], "a batch must be a JSON array of CloudEvents");
    if !raw.get().starts_with('[') {
        return Err(not_array());
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).map_err(|_| not_array())?;
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(invalid(
            &[],
            &format!("a batch holds 1-{MAX_BATCH} CloudEvents"),
        ));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match structured(item, key) {
            Ok(event) => events.push(event),
            Err(fields) => errors.extend(fields.into_iter().map(|mut f| {
                f.path.insert(0, i.to_string());
                f
            })),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn invalid(path: &[&str], message: &str) -> ApiError {
    ApiError::Validation(vec![FieldError::new(path, message)])
}

/// One structured-mode CloudEvent (a JSON object). `data` is kept as sent;
/// the other attributes are read as values.
fn structured(raw: &RawValue, key: &Principal) -> Result<NewEvent, Vec<FieldError>> {
    let not_object = || vec![FieldError::new(&[], "a CloudEvent must be a JSON object")];
    if !raw.get().starts_with('{') {
        return Err(not_object());
    }
    let object: BTreeMap<String, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|_| not_object())?;
    let mut errors = Vec::new();
    if object.contains_key("data_base64") {
        errors.push(FieldError::new(
            &["data_base64"],
            "binary data is not supported; send JSON `data`",
        ));
    }
    let mut data = None;
    let mut context = BTreeMap::new();
    for (name, raw) in object {
        if name == "data" {
            data = Some(raw);
            continue;
        }
        let value = match serde_json::from_str::<Value>(raw.get()) {
            Ok(value) => value,
            Err(e) => {
                errors.push(FieldError::new(&[&name], format!("is not valid JSON: {e}")));
                continue;
            }
        };
        match value {
            Value::String(s) => {
                context.insert(name, s);
            }
            Value::Number(_) | Value::Bool(_) => {
                context.insert(name, value.to_string());
            }
            Value::Null => {}
            _ => errors.push(FieldError::new(
                &[&name],
                "must be a string, number or boolean",
            )),
        }
    }
    let payload = match data.map(RawValue::get) {
        None | Some("null") => "{}".to_string(),
        Some(text) => payload::from_text(text.to_string()).unwrap_or_else(|e| {
            errors.push(FieldError::new(&["data"], e.to_string()));
            String::new()
        }),
    };
    build(context, payload, key, errors)
}

/// A binary-mode CloudEvent: `ce-*` headers and a JSON body.
fn binary(headers: &HeaderMap, body: &[u8], key: &Principal) -> Result<NewEvent, ApiError> {
    let mut context = BTreeMap::new();
    for (name, value) in headers {
        if let Some(attribute) = name.as_str().strip_prefix("ce-") {
            let value = value
                .to_str()
                .ok()
                .and_then(percent_decode)
                .ok_or_else(|| {
                    invalid(
                        &[attribute],
                        &format!("the `{name}` header is not percent-encoded UTF-8"),
                    )
                })?;
            context.insert(attribute.to_string(), value);
        }
    }
    let media = content_type(headers);
    let payload = if body.is_empty() {
        "{}".to_string()
    } else if media.is_empty() {
        // Data without a datacontenttype is read as application/json (the
        // JSON event format says so); the Python SDK's binary output, for
        // one, sends no Content-Type.
        let text = parse(body)?.get().to_string();
        payload::from_text(text).map_err(|e| invalid(&["data"], &e.to_string()))?
    } else if media.eq_ignore_ascii_case("application/json") || media.ends_with("+json") {
        context.insert("datacontenttype".into(), media.to_string());
        let text = parse(body)?.get().to_string();
        payload::from_text(text).map_err(|e| invalid(&["data"], &e.to_string()))?
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "binary-mode data of type `{media}` is not supported; send application/json"
        )));
    };
    build(context, payload, key, Vec::new()).map_err(ApiError::Validation)
}

/// Binary-mode header values are percent-encoded (HTTP binding, 3.1.3.2).
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks the context attributes and turns them into an event.
fn build(
    mut context: BTreeMap<String, String>,
    payload: String,
    key: &Principal,
    mut errors: Vec<FieldError>,
) -> Result<NewEvent, Vec<FieldError>> {
    match context.get("specversion").map(String::as_str) {
        Some("1.0") => {}
        Some(other) => errors.push(FieldError::new(
            &["specversion"],
            format!("`{other}` is not supported; send 1.0"),
        )),
        None => errors.push(FieldError::new(&["specversion"], "is required")),
    }
    for required in ["id", "source", "type"] {
        if context.get(required).is_none_or(String::is_empty) {
            errors.push(FieldError::new(&[required], "is required"));
        }
    }
    let name = context.get("type").cloned().unwrap_or_default();
    if !name.is_empty() {
        if let Err(e) = validate_name(&name) {
            errors.push(FieldError::new(
                &["type"],
                format!("`{name}` is not a valid event name: {e}"),
            ));
        }
    }
    let time_ms = context.get("time").and_then(|t| {
        crate::timestamp::parse_rfc3339(t)
            .map_err(|e| errors.push(event::time_error(e)))
            .ok()
    });
    let draft = Draft {
        id: context.remove("id"),
        name,
        source: context.remove("source"),
        tenant_id: key.tenant_for(context.remove(TENANT_EXTENSION)),
        time_ms,
        payload,
        attributes: context
            .into_iter()
            .filter(|(k, _)| !CORE.contains(&k.as_str()))
            .collect(),
    };
    let built = event::finish(draft, &key.name, Vec::new());
    match (built, errors.is_empty()) {
        (Ok(event), true) => Ok(event),
        (Ok(_), false) => Err(errors),
        (Err(more), _) => {
            errors.extend(more.into_iter().map(to_cloudevents_pointer));
            Err(errors)
        }
    }
}

/// Field errors of the event, renamed to the CloudEvents attribute they
/// came from.
fn to_cloudevents_pointer(mut error: FieldError) -> FieldError {
    match error.path.first().map(String::as_str) {
        Some("attributes") => {
            error.path.remove(0);
        }
        Some("tenant_id") => error.path[0] = TENANT_EXTENSION.into(),
        _ => {}
    }
    error
}

/// The abuse-protection handshake (CloudEvents HTTP webhook spec, section
/// 4): an `OPTIONS` with `WebHook-Request-Origin` is answered with
/// `WebHook-Allowed-Origin`, and `WebHook-Allowed-Rate` when a rate was
/// asked for. Publishing still needs credentials, so any origin is allowed.
pub fn handshake(headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get("webhook-request-origin")?.clone();
    let mut response = StatusCode::OK.into_response();
    let out = response.headers_mut();
    out.insert("webhook-allowed-origin", origin);
    if headers.contains_key("webhook-request-rate") {
        out.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    }
    out.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    Some(response)
}

/// `OPTIONS /v1/events`.
pub async fn options(headers: HeaderMap) -> Response {
    handshake(&headers).unwrap_or_else(|| {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
        response
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn structured_text(text: &str) -> Result<NewEvent, Vec<FieldError>> {
        structured(
            serde_json::from_str(text).unwrap(),
            &Principal::new("k", None),
        )
    }

    #[test]
    fn a_structured_event_maps_its_fields() {
        let event = structured_text(
            r#"{"specversion": "1.0", "id": "A234-1234", "source": "/crm", "type": "lead.created",
                "time": "2026-01-31T12:00:00Z", "subject": "ada", "tenantid": "acme", "priority": 3,
                "data": {"email": "ada@example.com", "amount": 12345678901234567890.25}}"#,
        )
        .unwrap();
        assert_eq!(event.id, "A234-1234");
        assert_eq!(event.name, "lead.created");
        assert_eq!(event.source, "/crm");
        assert_eq!(event.tenant_id.as_deref(), Some("acme"));
        assert_eq!(event.time_ms, 1_769_860_800_000);
        assert_eq!(
            event.payload, r#"{"email":"ada@example.com","amount":12345678901234567890.25}"#,
            "data is kept as sent"
        );
        assert_eq!(
            event.attributes.get("subject").map(String::as_str),
            Some("ada")
        );
        assert_eq!(
            event.attributes.get("priority").map(String::as_str),
            Some("3")
        );
        assert!(!event.attributes.contains_key("specversion"));
    }

    #[test]
    fn binary_headers_are_percent_decoded() {
        assert_eq!(percent_decode("caf%C3%A9 %25").as_deref(), Some("café %"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%4", "%zz", "%C3"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_is_range_checked_and_offsets_are_read() {
        let event = |time: &str| {
            structured_text(&format!(
                r#"{{"specversion": "1.0", "id": "a", "source": "/s", "type": "a.b", "time": "{time}"}}"#
            ))
        };
        for time in [
            "10000-01-01T00:00:00Z",
            "9999-12-31T23:30:00-01:00",
            "tomorrow",
        ] {
            let errors = event(time).unwrap_err();
            let pointers: Vec<String> = errors.iter().map(FieldError::pointer).collect();
            assert_eq!(pointers, ["/time"], "{time}");
        }
        // What Python's datetime.isoformat() writes.
        let ok = event("2026-01-31T12:00:00.123456+00:00").unwrap();
        assert_eq!(ok.time_ms, 1_769_860_800_123);
    }

    #[test]
    fn binary_data_without_a_content_type_is_json() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "a"),
            ("ce-source", "/s"),
            ("ce-type", "a.b"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        let event = binary(
            &headers,
            br#"{"message": "Hello World!"}"#,
            &Principal::new("k", None),
        )
        .unwrap();
        assert_eq!(event.payload, r#"{"message":"Hello World!"}"#);
        assert!(!event.attributes.contains_key("datacontenttype"));
        assert!(matches!(
            binary(&headers, b"not json", &Principal::new("k", None)),
            Err(ApiError::Malformed { .. })
        ));
    }

    #[test]
    fn every_missing_attribute_is_named() {
        let errors = structured_text(r#"{"data": []}"#).unwrap_err();
        let pointers: Vec<String> = errors.iter().map(FieldError::pointer).collect();
        for p in ["/specversion", "/id", "/source", "/type", "/data"] {
            assert!(pointers.contains(&p.to_string()), "{pointers:?}");
        }
    }
}
