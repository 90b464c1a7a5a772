//! The optional event-type catalog in force: each event type's pattern and
//! compiled JSON Schema. Every event whose name matches a type's pattern must
//! have a payload that its schema accepts; an event no pattern matches is
//! taken as it is (the catalog is optional, and empty by default).
//!
//! It lives inside the routing [`Catalog`](crate::catalog::Catalog)
//! snapshot, so it is reloaded with it after an admin write, a config reload
//! or (PostgreSQL) another node's change, and the publish pipeline reads it
//! with the same lock-free load. With no event types the check is one
//! `is_empty` and allocates nothing; otherwise the payload (kept as compact
//! JSON text) is parsed once per event whose name a type matches, and not
//! at all for the others.
//!
//! This module also holds the rules for writing an event type (id, pattern,
//! schema), shared by the Admin API and the config file.

use std::sync::Arc;

use serde_json::Value;

use crate::{
    model::{EventType, FieldError, NewEvent},
    routing::{Pattern, PatternIndex},
    schema::Schema,
};

/// How many violations a refused event is told about, over all its types:
/// enough to fix a payload, and bounded however bad the payload is.
pub const MAX_VIOLATIONS: usize = 5;
const MAX_DESCRIPTION: usize = 4096;
/// Schemas are held compiled in memory by every daemon; 256 KiB is far above
/// any hand-written schema.
const MAX_SCHEMA_LEN: usize = 256 * 1024;

/// The compiled event types.
#[derive(Default)]
pub struct EventTypes {
    types: Vec<Compiled>,
    index: PatternIndex<u32>,
}

struct Compiled {
    event_type: Arc<EventType>,
    schema: Schema,
}

impl EventTypes {
    /// Compiles the stored event types. Storage only holds ones that
    /// compiled when written; one that no longer does (a newer jsonschema
    /// crate, a hand-edited row) is skipped loudly rather than refusing
    /// every event.
    pub fn build(stored: Vec<EventType>) -> EventTypes {
        let mut types = Vec::new();
        let mut index = PatternIndex::new();
        for event_type in stored {
            match compile(&event_type) {
                Ok((pattern, schema)) => {
                    index.insert(&pattern, types.len() as u32);
                    types.push(Compiled {
                        event_type: Arc::new(event_type),
                        schema,
                    });
                }
                Err(errors) => {
                    tracing::error!(event_type = %event_type.id, errors = %summary(&errors), "Stored event type does not compile; it checks nothing.");
                }
            }
        }
        EventTypes { types, index }
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Every event type, in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<EventType>> {
        self.types.iter().map(|c| &c.event_type)
    }

    /// Checks the event's payload against the schema of every type whose
    /// pattern matches its name. The errors' paths are inside the payload
    /// (`["amount"]`); each door names them in its own terms.
    pub fn check(&self, event: &NewEvent) -> Result<(), Vec<FieldError>> {
        if self.types.is_empty() {
            return Ok(());
        }
        let mut matched = Vec::new();
        self.index.find(&event.name, &mut matched);
        if matched.is_empty() {
            return Ok(());
        }
        matched.sort_unstable();
        matched.dedup();
        let payload: Value = serde_json::from_str(&event.payload).map_err(|e| {
            // Intake only lets JSON objects through; this is a bug, not the
            // publisher's mistake, but the event is still refused.
            vec![FieldError::new(&[], format!("is not valid JSON: {e}"))]
        })?;
        let mut errors = Vec::new();
        for i in matched {
            let Some(compiled) = self.types.get(i as usize) else {
                continue;
            };
            if compiled.schema.accepts(&payload) {
                continue;
            }
            let left = MAX_VIOLATIONS - errors.len();
            errors.extend(
                compiled
                    .schema
                    .check_first(&payload, left)
                    .into_iter()
                    .map(|mut e| {
                        e.message =
                            format!("{} (event type `{}`)", e.message, compiled.event_type.id);
                        e
                    }),
            );
            if errors.len() >= MAX_VIOLATIONS {
                break;
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Everything wrong with an event type about to be written, each naming its
/// field; empty when it may be stored.
pub fn validate(t: &EventType) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let id_ok = !t.id.is_empty()
        && t.id.len() <= 64
        && t.id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !id_ok {
        errors.push(FieldError::new(
            &["id"],
            "must be 1-64 characters of [A-Za-z0-9._-]",
        ));
    }
    if t.description.len() > MAX_DESCRIPTION {
        errors.push(FieldError::new(
            &["description"],
            format!("must be at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    if let Err(more) = compile(t) {
        errors.extend(more);
    }
    errors
}

/// The pattern and schema, compiled; or why not, naming `pattern` and
/// `schema`.
fn compile(t: &EventType) -> Result<(Pattern, Schema), Vec<FieldError>> {
    let mut errors = Vec::new();
    let pattern = Pattern::parse(&t.pattern)
        .map_err(|e| {
            errors.push(FieldError::new(
                &["pattern"],
                format!("`{}` {e}", t.pattern),
            ))
        })
        .ok();
    let schema = parse_schema(&t.schema)
        .and_then(|value| Schema::compile(&value))
        .map_err(|e| errors.push(FieldError::new(&["schema"], e)))
        .ok();
    match (pattern, schema) {
        (Some(pattern), Some(schema)) => Ok((pattern, schema)),
        _ => Err(errors),
    }
}

fn parse_schema(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Err("is required: a JSON Schema object".into());
    }
    if text.len() > MAX_SCHEMA_LEN {
        return Err(format!("must be at most {MAX_SCHEMA_LEN} bytes"));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ (Value::Object(_) | Value::Bool(_))) => Ok(value),
        Ok(_) => Err("must be a JSON Schema: an object (or true/false)".into()),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

/// `field: message; field: message`, for a one-line error.
pub fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.dotted(""), e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_type(id: &str, pattern: &str, schema: &str) -> EventType {
        EventType {
            id: id.into(),
            pattern: pattern.into(),
            description: String::new(),
            schema: schema.into(),
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn event(name: &str, payload: &str) -> NewEvent {
        NewEvent {
            id: "e".into(),
            name: name.into(),
            source: "test".into(),
            tenant_id: None,
            time_ms: 0,
            payload: payload.into(),
            attributes: Default::default(),
            body_hash: [0; 32],
            routes: vec![],
            flow_starts: vec![],
            cancels: vec![],
        }
    }

    const AMOUNT: &str =
        r#"{"type":"object","required":["amount"],"properties":{"amount":{"type":"number"}}}"#;

    #[test]
    fn a_matching_type_checks_the_payload_and_names_the_field() {
        let types = EventTypes::build(vec![event_type("order", "order.*", AMOUNT)]);
        assert!(types
            .check(&event("order.created", r#"{"amount":3}"#))
            .is_ok());
        let errors = types
            .check(&event("order.created", r#"{"amount":"3"}"#))
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pointer(), "/amount");
        assert!(
            errors[0].message.contains("`order`"),
            "{}",
            errors[0].message
        );
        let missing = types
            .check(&event("order.created", "{}"))
            .err()
            .unwrap_or_default();
        assert_eq!(missing[0].pointer(), "/amount");
        assert!(missing[0].message.starts_with("is required"));
    }

    #[test]
    fn an_event_no_pattern_matches_is_taken_as_it_is() {
        let types = EventTypes::build(vec![event_type("order", "order.*", AMOUNT)]);
        assert!(types.check(&event("lead.created", "{}")).is_ok());
        assert!(types.check(&event("order.created.v2", "{}")).is_ok());
        assert!(EventTypes::default().check(&event("order.x", "{}")).is_ok());
    }

    #[test]
    fn every_matching_type_checks_and_the_errors_are_bounded() {
        let many: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let schema = serde_json::json!({"type": "object", "required": many}).to_string();
        let types = EventTypes::build(vec![
            event_type("all", "**", &schema),
            event_type("order", "order.*", AMOUNT),
        ]);
        let errors = types
            .check(&event("order.created", "{}"))
            .err()
            .unwrap_or_default();
        assert_eq!(errors.len(), MAX_VIOLATIONS);
    }

    #[test]
    fn writing_names_the_bad_pattern_and_the_bad_schema() {
        let fields =
            |t: &EventType| -> Vec<String> { validate(t).iter().map(|e| e.dotted("")).collect() };
        assert!(validate(&event_type("order", "order.*", AMOUNT)).is_empty());
        assert_eq!(
            fields(&event_type("order", "order.*x", AMOUNT)),
            ["pattern"]
        );
        assert_eq!(
            fields(&event_type("order", "order.*", r#"{"type":"nope"}"#)),
            ["schema"]
        );
        assert_eq!(fields(&event_type("order", "order.*", "[1]")), ["schema"]);
        assert_eq!(fields(&event_type("order", "order.*", "{")), ["schema"]);
        assert_eq!(fields(&event_type("a b", "order.*", AMOUNT)), ["id"]);
    }

    #[test]
    fn a_stored_type_that_does_not_compile_checks_nothing() {
        let types = EventTypes::build(vec![event_type("bad", "order.*", r#"{"type":"nope"}"#)]);
        assert!(types.is_empty());
    }
}
