//! Turning what a publisher sent (an HTTP JSON body or a protobuf `Event`)
//! into a `NewEvent`, or into a list of every problem with it. Both doors share
//! one set of rules so an event means the same thing however it arrives.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde_json::{value::RawValue, Value};
use sha2::{Digest, Sha256};

use super::{auth::Principal, payload};
use crate::{
    model::{now_ms, NewEvent},
    routing::validate_name,
    timestamp::{self, TimeError},
};

pub use crate::model::FieldError;

const MAX_ID_LEN: usize = 128;
const MAX_SOURCE_LEN: usize = 255;
const MAX_ATTRIBUTES: usize = 64;
const MAX_ATTRIBUTE_KEY_LEN: usize = 64;
const MAX_ATTRIBUTE_VALUE_LEN: usize = 1024;

/// Why an HTTP body is not an event.
#[derive(Debug)]
pub enum Invalid {
    /// Not JSON at all.
    Malformed {
        line: usize,
        column: usize,
        message: String,
    },
    Fields(Vec<FieldError>),
}

/// The fields of an event before defaults are applied.
#[derive(Debug, Default)]
pub struct Draft {
    pub id: Option<String>,
    pub name: String,
    pub source: Option<String>,
    pub tenant_id: Option<String>,
    pub time_ms: Option<i64>,
    /// Compact JSON text of an object (see `payload`).
    pub payload: String,
    pub attributes: BTreeMap<String, String>,
}

/// Parses and validates `POST /v1/events`. Each field is read from its own
/// slice of the body, so the payload is kept as sent.
pub fn from_json(body: &[u8], key: &Principal) -> Result<NewEvent, Invalid> {
    let malformed = |e: serde_json::Error| Invalid::Malformed {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    if body.trim_ascii_start().first() != Some(&b'{') {
        serde_json::from_slice::<IgnoredAny>(body).map_err(malformed)?;
        return Err(Invalid::Fields(vec![FieldError::new(
            &[],
            "the body must be a JSON object",
        )]));
    }
    let object: BTreeMap<String, &RawValue> = serde_json::from_slice(body).map_err(malformed)?;
    let mut errors = Vec::new();
    let mut draft = Draft::default();
    let mut saw_name = false;
    let mut saw_payload = false;
    for (key, raw) in object {
        if key == "payload" {
            saw_payload = true;
            match payload::from_text(raw.get().to_string()) {
                Ok(text) => draft.payload = text,
                Err(e) => errors.push(FieldError::new(&["payload"], e.to_string())),
            }
            continue;
        }
        let value: Value = match serde_json::from_str(raw.get()) {
            Ok(value) => value,
            Err(e) => {
                errors.push(FieldError::new(&[&key], format!("is not valid JSON: {e}")));
                continue;
            }
        };
        match key.as_str() {
            "id" => draft.id = optional_string(&value, "id", &mut errors),
            "name" => {
                saw_name = true;
                draft.name = optional_string(&value, "name", &mut errors).unwrap_or_default();
                check_name(&draft.name, &mut errors);
            }
            "source" => draft.source = optional_string(&value, "source", &mut errors),
            "tenant_id" => draft.tenant_id = optional_string(&value, "tenant_id", &mut errors),
            "time" => draft.time_ms = json_time(&value, &mut errors),
            "attributes" => draft.attributes = json_attributes(value, &mut errors),
            other => errors.push(FieldError::new(
                &[other],
                "unknown field; expected id, name, source, tenant_id, time, payload or attributes",
            )),
        }
    }
    if !saw_name {
        errors.push(FieldError::new(&["name"], "is required"));
    }
    if !saw_payload {
        errors.push(FieldError::new(
            &["payload"],
            "is required (use {} for none)",
        ));
    }
    draft.tenant_id = key.tenant_for(draft.tenant_id);
    finish(draft, &key.name, errors).map_err(Invalid::Fields)
}

/// Validates a protobuf `Event` (from Publish or PublishBatch).
pub fn from_proto(
    event: hookyard::v1::Event,
    key: &Principal,
) -> Result<NewEvent, Vec<FieldError>> {
    let mut errors = Vec::new();
    check_name(&event.name, &mut errors);
    let payload = payload::from_bytes(event.payload).unwrap_or_else(|e| {
        errors.push(FieldError::new(&["payload"], e.to_string()));
        String::new()
    });
    let time_ms = event.time.as_ref().and_then(|t| {
        timestamp::from_proto(t)
            .map_err(|e| errors.push(time_error(e)))
            .ok()
    });
    let draft = Draft {
        id: non_empty(event.id),
        name: event.name,
        source: non_empty(event.source),
        tenant_id: key.tenant_for(non_empty(event.tenant_id)),
        time_ms,
        payload,
        attributes: event.attributes.into_iter().collect(),
    };
    finish(draft, &key.name, errors)
}

/// Checks what every door shares and fills in defaults.
pub fn finish(
    draft: Draft,
    key_name: &str,
    mut errors: Vec<FieldError>,
) -> Result<NewEvent, Vec<FieldError>> {
    if let Some(id) = &draft.id {
        check_token(id, "id", MAX_ID_LEN, "[A-Za-z0-9._:~-]", &mut errors);
    }
    if let Some(tenant) = &draft.tenant_id {
        check_token(
            tenant,
            "tenant_id",
            MAX_ID_LEN,
            "[A-Za-z0-9._:~-]",
            &mut errors,
        );
    }
    if let Some(source) = &draft.source {
        if source.len() > MAX_SOURCE_LEN || source.chars().any(char::is_control) {
            errors.push(FieldError::new(
                &["source"],
                format!("must be at most {MAX_SOURCE_LEN} bytes without control characters"),
            ));
        }
    }
    check_attributes(&draft.attributes, &mut errors);
    if let Some(Err(e)) = draft.time_ms.map(timestamp::check) {
        errors.push(time_error(e));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let payload = draft.payload;
    let source = draft.source.unwrap_or_else(|| key_name.to_string());
    let body_hash = body_hash(
        &draft.name,
        &source,
        draft.tenant_id.as_deref(),
        &payload,
        &draft.attributes,
        draft.time_ms,
    );
    Ok(NewEvent {
        id: draft.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        name: draft.name,
        source,
        tenant_id: draft.tenant_id,
        time_ms: draft.time_ms.unwrap_or_else(now_ms),
        payload,
        attributes: draft.attributes,
        body_hash,
        routes: Vec::new(),
        flow_starts: Vec::new(),
        cancels: Vec::new(),
    })
}

/// What makes two publishes "the same event". The time counts only when the
/// publisher set it, so a retried publish without a time is still a duplicate.
fn body_hash(
    name: &str,
    source: &str,
    tenant: Option<&str>,
    payload: &str,
    attributes: &BTreeMap<String, String>,
    time_ms: Option<i64>,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [name, source, tenant.unwrap_or(""), payload] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    for (k, v) in attributes {
        hasher.update((k.len() as u64).to_le_bytes());
        hasher.update(k.as_bytes());
        hasher.update((v.len() as u64).to_le_bytes());
        hasher.update(v.as_bytes());
    }
    hasher.update(time_ms.unwrap_or(i64::MIN).to_le_bytes());
    hasher.finalize().into()
}

fn check_name(name: &str, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::new(&["name"], "is required"));
    } else if let Err(e) = validate_name(name) {
        errors.push(FieldError::new(
            &["name"],
            format!("`{name}` is not a valid event name: {e}"),
        ));
    }
}

fn check_token(value: &str, field: &str, max: usize, chars: &str, errors: &mut Vec<FieldError>) {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b));
    if !ok {
        errors.push(FieldError::new(
            &[field],
            format!("must be 1-{max} characters of {chars}"),
        ));
    }
}

fn check_attributes(attributes: &BTreeMap<String, String>, errors: &mut Vec<FieldError>) {
    if attributes.len() > MAX_ATTRIBUTES {
        errors.push(FieldError::new(
            &["attributes"],
            format!("at most {MAX_ATTRIBUTES} attributes"),
        ));
    }
    for (key, value) in attributes {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_ATTRIBUTE_KEY_LEN
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !key_ok {
            errors.push(FieldError::new(
                &["attributes", key],
                format!(
                    "attribute names are 1-{MAX_ATTRIBUTE_KEY_LEN} characters of [A-Za-z0-9_.-]"
                ),
            ));
        } else if value.len() > MAX_ATTRIBUTE_VALUE_LEN {
            errors.push(FieldError::new(
                &["attributes", key],
                format!("must be at most {MAX_ATTRIBUTE_VALUE_LEN} bytes"),
            ));
        }
    }
}

fn optional_string(value: &Value, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        _ => {
            errors.push(FieldError::new(&[field], "must be a string"));
            None
        }
    }
}

fn json_time(value: &Value, errors: &mut Vec<FieldError>) -> Option<i64> {
    let parsed = match value {
        Value::Null => return None,
        Value::String(s) => timestamp::parse_rfc3339(s),
        _ => Err(TimeError::NotRfc3339),
    };
    parsed.map_err(|e| errors.push(time_error(e))).ok()
}

/// A bad `time`, named as the field (or its `nanos`) at every door.
pub fn time_error(error: TimeError) -> FieldError {
    match error {
        TimeError::BadNanos => FieldError::new(&["time", "nanos"], error.to_string()),
        _ => FieldError::new(&["time"], error.to_string()),
    }
}

fn json_attributes(value: Value, errors: &mut Vec<FieldError>) -> BTreeMap<String, String> {
    let Value::Object(map) = value else {
        if !value.is_null() {
            errors.push(FieldError::new(
                &["attributes"],
                "must be an object of strings",
            ));
        }
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        match value {
            Value::String(s) => {
                out.insert(key, s);
            }
            _ => errors.push(FieldError::new(&["attributes", &key], "must be a string")),
        }
    }
    out
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Principal {
        Principal::new(name, None)
    }

    fn fields(body: &str) -> Vec<(String, String)> {
        match from_json(body.as_bytes(), &key("k")) {
            Err(Invalid::Fields(f)) => f.into_iter().map(|e| (e.pointer(), e.message)).collect(),
            other => panic!("expected field errors, got {other:?}"),
        }
    }

    #[test]
    fn a_good_event_gets_defaults() {
        let e = from_json(
            br#"{"name":"lead.created","payload":{"b":1,"a":2}}"#,
            &key("crm"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(e.source, "crm");
        assert_eq!(e.payload, r#"{"b":1,"a":2}"#);
        assert_eq!(e.id.len(), 36);
    }

    #[test]
    fn every_bad_field_is_listed() {
        let got = fields(
            r#"{"name":"lead..x","payload":[],"attributes":{"r":1},"extra":true,"id":"a b"}"#,
        );
        let pointers: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        for expected in ["/name", "/payload", "/attributes/r", "/extra", "/id"] {
            assert!(
                pointers.contains(&expected),
                "{expected} missing from {got:?}"
            );
        }
    }

    #[test]
    fn missing_fields_are_required() {
        let got = fields("{}");
        assert!(got
            .iter()
            .any(|(p, m)| p == "/name" && m.contains("required")));
        assert!(got
            .iter()
            .any(|(p, m)| p == "/payload" && m.contains("required")));
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        match from_json(b"{\n  \"name\": ", &key("k")) {
            Err(Invalid::Malformed { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn same_body_same_hash_different_body_different_hash() {
        let a = from_json(br#"{"id":"x","name":"a.b","payload":{"n":1}}"#, &key("k")).ok();
        let b = from_json(br#"{"payload":{"n":1},"name":"a.b","id":"x"}"#, &key("k")).ok();
        let c = from_json(br#"{"id":"x","name":"a.b","payload":{"n":2}}"#, &key("k")).ok();
        let d = from_json(
            b"{\"id\":\"x\",\"name\":\"a.b\",\"payload\":{ \"n\" :\n 1 }}",
            &key("k"),
        )
        .ok();
        let hash = |e: Option<NewEvent>| e.map(|e| e.body_hash);
        let (a, b, c, d) = (hash(a), hash(b), hash(c), hash(d));
        assert!(a.is_some());
        assert_eq!(a, b);
        assert_eq!(a, d, "whitespace between tokens is not part of the body");
        assert_ne!(a, c);
    }

    #[test]
    fn times_outside_the_years_1970_to_9999_are_refused() {
        for time in [
            "10000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "1969-12-31T23:59:59Z",
        ] {
            let body = format!(r#"{{"name":"a.b","payload":{{}},"time":"{time}"}}"#);
            let got = fields(&body);
            assert!(got.iter().any(|(p, _)| p == "/time"), "{time}: {got:?}");
        }
        let ok = from_json(
            br#"{"name":"a.b","payload":{},"time":"2026-01-31T13:00:00+01:00"}"#,
            &key("k"),
        );
        assert_eq!(ok.map(|e| e.time_ms).ok(), Some(1_769_860_800_000));
    }

    #[test]
    fn proto_times_are_range_checked_without_overflow() {
        let event = |seconds, nanos| hookyard::v1::Event {
            name: "a.b".into(),
            time: Some(prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        };
        for (seconds, nanos, field) in [
            (253_402_300_800, 0, "time"),
            (i64::MAX, 0, "time"),
            (i64::MIN, 0, "time"),
            (-1, 0, "time"),
            (0, -1, "time.nanos"),
            (0, 1_000_000_000, "time.nanos"),
        ] {
            let errors = from_proto(event(seconds, nanos), &key("k"))
                .err()
                .unwrap_or_default();
            let named: Vec<String> = errors.iter().map(|e| e.dotted("")).collect();
            assert_eq!(named, [field], "{seconds}s {nanos}ns");
        }
        let ok = from_proto(event(1_769_860_800, 999_999_999), &key("k")).map(|e| e.time_ms);
        assert_eq!(ok.ok(), Some(1_769_860_800_999));
    }

    #[test]
    fn a_tenant_bound_key_gives_its_tenant_before_the_hash_is_taken() {
        let body = br#"{"id":"x","name":"a.b","payload":{}}"#;
        let acme = from_json(body, &Principal::new("k", Some("acme"))).ok();
        let globex = from_json(body, &Principal::new("k", Some("globex"))).ok();
        let named = from_json(
            br#"{"id":"x","name":"a.b","tenant_id":"acme","payload":{}}"#,
            &key("k"),
        )
        .ok();
        assert_eq!(
            acme.as_ref().and_then(|e| e.tenant_id.as_deref()),
            Some("acme")
        );
        let hash = |e: &Option<NewEvent>| e.as_ref().map(|e| e.body_hash);
        assert_ne!(
            hash(&acme),
            hash(&globex),
            "the same body from two tenants is not a duplicate"
        );
        assert_eq!(
            hash(&acme),
            hash(&named),
            "naming the key's tenant or not is the same event"
        );
    }

    #[test]
    fn pointers_escape_and_dots_join() {
        let e = FieldError::new(&["attributes", "a/b~c"], "x");
        assert_eq!(e.pointer(), "/attributes/a~1b~0c");
        assert_eq!(e.dotted("event"), "event.attributes.a/b~c");
    }
}
