//! What one delivery's request carries, before any I/O: the body in the
//! endpoint's format (or made by its transform), the content type, the
//! CloudEvents attributes in binary mode, the Standard Webhooks headers
//! signed with the endpoint's secret (and with the previous one while a
//! rotation's grace lasts), and the endpoint's authentication. The sender
//! and `SendTestEvent` build requests here, so a test event is exactly what
//! a real delivery would be.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use base64::Engine as _;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};

use super::signing::{self, SigningSecret};
use crate::{
    flows::template,
    model::{Endpoint, EndpointAuth, EventEnvelope, PayloadFormat},
    timestamp::format_rfc3339_millis,
};

/// Work one transform may do (minijinja fuel): rendering a whole payload
/// at the body limit fits, a runaway loop does not.
const TRANSFORM_FUEL: u64 = 100_000;

/// The request to send: body and headers (names lower-case).
pub struct Outbound {
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

/// Builds the request of `event` for `endpoint`, signed at `timestamp`
/// (seconds); `now_ms` decides whether a rotated-out secret still signs.
pub fn build(
    event: &EventEnvelope,
    endpoint: &Endpoint,
    transforms: &Transforms,
    timestamp: i64,
    now_ms: i64,
) -> Result<Outbound, String> {
    let format = endpoint.options.format;
    let body = match &endpoint.options.transform {
        Some(source) => transforms.get(source)?.render(event)?,
        None => body(event, format),
    };
    let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(12);
    headers.push(("content-type", content_type(format).into()));
    if format == PayloadFormat::CloudeventsBinary {
        cloudevents_headers(event, &mut headers);
    }
    let secrets = signing_secrets(endpoint, now_ms)?;
    headers.push(("webhook-id", event.id.clone()));
    headers.push(("webhook-timestamp", timestamp.to_string()));
    headers.push((
        "webhook-signature",
        signing::signature_header(&secrets, &event.id, timestamp, body.as_bytes()),
    ));
    if let Some(basic) = endpoint.options.auth.as_ref().and_then(basic_authorization) {
        headers.push(("authorization", basic));
    }
    Ok(Outbound { body, headers })
}

/// The current secret, then the previous one while its grace lasts.
fn signing_secrets(endpoint: &Endpoint, now_ms: i64) -> Result<Vec<SigningSecret>, String> {
    let mut secrets = vec![SigningSecret::parse(&endpoint.secret)
        .map_err(|e| format!("endpoint secret is unusable: {e}"))?];
    if let Some((previous, until)) = &endpoint.previous_secret {
        if now_ms < *until {
            if let Ok(previous) = SigningSecret::parse(previous) {
                secrets.push(previous);
            }
        }
    }
    Ok(secrets)
}

/// Basic credentials; an OAuth2 bearer token needs I/O, so the sender adds
/// it (`oauth`).
fn basic_authorization(auth: &EndpointAuth) -> Option<String> {
    match auth {
        EndpointAuth::Basic { username, password } => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )),
        EndpointAuth::Oauth2 { .. } => None,
    }
}

fn content_type(format: PayloadFormat) -> &'static str {
    match format {
        PayloadFormat::Cloudevents => "application/cloudevents+json",
        _ => "application/json",
    }
}

/// The body of a format. The payload is already compact JSON and goes in as
/// it is. Never panics, whatever the stored time: a panic here would jam
/// the endpoint.
pub fn body(event: &EventEnvelope, format: PayloadFormat) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let time = format_rfc3339_millis(event.time_ms);
    match format {
        PayloadFormat::Envelope => format!(
            r#"{{"id":{},"event_name":{},"timestamp":"{}","tenant_id":{},"payload":{}}}"#,
            quote(&event.id),
            quote(&event.name),
            time,
            event
                .tenant_id
                .as_deref()
                .map(quote)
                .unwrap_or_else(|| "null".into()),
            event.payload,
        ),
        PayloadFormat::StandardWebhooks => format!(
            r#"{{"type":{},"timestamp":"{}","data":{}}}"#,
            quote(&event.name),
            time,
            event.payload,
        ),
        PayloadFormat::Cloudevents => {
            let tenant = event
                .tenant_id
                .as_deref()
                .map(|t| format!(r#","tenantid":{}"#, quote(t)))
                .unwrap_or_default();
            format!(
                r#"{{"specversion":"1.0","id":{},"source":{},"type":{},"time":"{}","datacontenttype":"application/json"{tenant},"data":{}}}"#,
                quote(&event.id),
                quote(&cloudevents_source(event)),
                quote(&event.name),
                time,
                event.payload,
            )
        }
        PayloadFormat::CloudeventsBinary | PayloadFormat::Raw => event.payload.clone(),
    }
}

/// CloudEvents' `source` is a URI reference: the event's source (a door,
/// a source's name or a flow) under `/hookyard/`.
fn cloudevents_source(event: &EventEnvelope) -> String {
    let source: String = event
        .source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._~:/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("/hookyard/{source}")
}

fn cloudevents_headers(event: &EventEnvelope, headers: &mut Vec<(&'static str, String)>) {
    headers.push(("ce-specversion", "1.0".into()));
    headers.push(("ce-id", event.id.clone()));
    headers.push(("ce-source", cloudevents_source(event)));
    headers.push(("ce-type", event.name.clone()));
    headers.push(("ce-time", format_rfc3339_millis(event.time_ms)));
    if let Some(tenant) = &event.tenant_id {
        headers.push(("ce-tenantid", tenant.clone()));
    }
}

/// A compiled `transform:` template.
pub struct Transform {
    env: Environment<'static>,
}

impl Transform {
    /// Compiles a transform; the error says what is wrong with it.
    pub fn compile(source: &str) -> Result<Transform, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(TRANSFORM_FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_template_owned("transform", source.to_string())
            .map_err(|e| format!("does not compile: {}", template::describe(&e)))?;
        let template = env
            .get_template("transform")
            .map_err(|e| format!("does not compile: {}", template::describe(&e)))?;
        if let Some(unknown) = template
            .undeclared_variables(false)
            .into_iter()
            .find(|name| !matches!(name.as_str(), "event" | "range" | "dict" | "namespace"))
        {
            return Err(format!(
                "refers to `{unknown}`; a transform can read only `event` (id, name, source, \
                 tenant_id, time, payload)"
            ));
        }
        Ok(Transform { env })
    }

    /// The body for `event`: the rendered text, which must be JSON.
    pub fn render(&self, event: &EventEnvelope) -> Result<String, String> {
        let ctx = template::value(&serde_json::json!({
            "event": {
                "id": event.id,
                "name": event.name,
                "source": event.source,
                "tenant_id": event.tenant_id,
                "time": format_rfc3339_millis(event.time_ms),
                "time_ms": event.time_ms,
                "payload": serde_json::from_str::<serde_json::Value>(&event.payload)
                    .unwrap_or(serde_json::Value::Null),
            }
        }));
        let text = self
            .env
            .get_template("transform")
            .and_then(|t| t.render(ctx))
            .map_err(|e| match e.kind() {
                ErrorKind::OutOfFuel => "the transform ran out of fuel".to_string(),
                _ => format!("the transform failed: {}", template::describe(&e)),
            })?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(_) => Ok(text),
            Err(e) => Err(format!("the transform did not produce JSON: {e}")),
        }
    }
}

/// Compiled transforms by their source, shared by every attempt: an
/// endpoint's transform is compiled once, not per request.
#[derive(Default)]
pub struct Transforms {
    compiled: Mutex<HashMap<String, Arc<Transform>>>,
}

/// Transforms kept at most; past it the cache starts over (edits leave
/// stale entries behind).
const MAX_TRANSFORMS: usize = 1024;

impl Transforms {
    pub fn get(&self, source: &str) -> Result<Arc<Transform>, String> {
        if let Some(t) = self
            .compiled
            .lock()
            .ok()
            .and_then(|m| m.get(source).cloned())
        {
            return Ok(t);
        }
        let compiled = Arc::new(Transform::compile(source)?);
        if let Ok(mut map) = self.compiled.lock() {
            if map.len() >= MAX_TRANSFORMS {
                map.clear();
            }
            map.insert(source.to_string(), compiled.clone());
        }
        Ok(compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time_ms: i64) -> EventEnvelope {
        EventEnvelope {
            seq: 1,
            id: "ev\"1".into(),
            name: "lead.created".into(),
            source: "website form".into(),
            tenant_id: Some("acme".into()),
            time_ms,
            payload: r#"{"a":1}"#.into(),
        }
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_default()
    }

    #[test]
    fn every_format_is_json_with_its_fields() {
        let e = event(1_700_000_000_123);
        let envelope = json(&body(&e, PayloadFormat::Envelope));
        assert_eq!(envelope["id"], "ev\"1");
        assert_eq!(envelope["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(envelope["payload"]["a"], 1);
        let sw = json(&body(&e, PayloadFormat::StandardWebhooks));
        assert_eq!(sw["type"], "lead.created");
        assert_eq!(sw["data"]["a"], 1);
        let ce = json(&body(&e, PayloadFormat::Cloudevents));
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["source"], "/hookyard/website_form");
        assert_eq!(ce["tenantid"], "acme");
        assert_eq!(ce["data"]["a"], 1);
        assert_eq!(body(&e, PayloadFormat::Raw), r#"{"a":1}"#);
    }

    #[test]
    fn any_stored_time_formats_without_panicking() {
        for time_ms in [i64::MIN, -1, i64::MAX, 253_402_300_800_000] {
            for format in PayloadFormat::ALL {
                assert!(!body(&event(time_ms), format).is_empty());
            }
        }
    }

    #[test]
    fn transforms_make_json_or_fail_saying_why() {
        let t =
            Transform::compile(r#"{"text": {{ (event.name ~ " " ~ event.payload.a) | tojson }}}"#)
                .expect("compiles");
        assert_eq!(
            t.render(&event(0)).ok().as_deref(),
            Some(r#"{"text": "lead.created 1"}"#)
        );
        let not_json = Transform::compile("hello {{ event.name }}").expect("compiles");
        assert!(not_json.render(&event(0)).is_err());
        assert!(Transform::compile("{{ payload }}").is_err());
        assert!(Transform::compile("{% for %}").is_err());
        let runaway = Transform::compile(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .expect("compiles");
        assert!(runaway.render(&event(0)).is_err_and(|e| e.contains("fuel")));
    }
}
