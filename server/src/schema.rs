//! A JSON Schema compiled once and checked against many documents: a
//! source's (against each webhook body) and an event type's (against each
//! payload of its events). It sits below intake and publish, which both use
//! it. Each
//! violation becomes one field error at its JSON pointer; a missing required
//! property points at the property itself (`/email`), not at its parent, so
//! a form can highlight the field. Remote `$ref`s are never fetched.

use jsonschema::{error::ValidationErrorKind, paths::LocationSegment, Validator};
use serde_json::Value;

use crate::model::FieldError;

pub struct Schema(Validator);

impl Schema {
    pub fn compile(schema: &Value) -> Result<Schema, String> {
        jsonschema::validator_for(schema)
            .map(Schema)
            .map_err(|e| format!("is not a valid JSON Schema: {e}"))
    }

    /// Every violation, in the order the validator reports them.
    pub fn check(&self, instance: &Value) -> Vec<FieldError> {
        self.check_first(instance, usize::MAX)
    }

    /// Whether `instance` is valid, without collecting why not.
    pub fn accepts(&self, instance: &Value) -> bool {
        self.0.is_valid(instance)
    }

    /// The first `limit` violations: enough to fix a payload, and a hostile
    /// one cannot make the answer grow with its size.
    pub fn check_first(&self, instance: &Value, limit: usize) -> Vec<FieldError> {
        self.0
            .iter_errors(instance)
            .take(limit)
            .map(|error| {
                let mut path: Vec<String> = error
                    .instance_path()
                    .iter()
                    .map(|segment| match segment {
                        LocationSegment::Property(p) => p.to_string(),
                        LocationSegment::Index(i) => i.to_string(),
                    })
                    .collect();
                let message = match error.kind() {
                    ValidationErrorKind::Required { property } => {
                        path.push(property.as_str().unwrap_or_default().to_string());
                        "is required".to_string()
                    }
                    _ => error.to_string(),
                };
                FieldError { path, message }
            })
            .collect()
    }
}

/// `required: [a, b]` as the schema it stands for.
pub fn from_required(fields: &[String]) -> Value {
    serde_json::json!({"type": "object", "required": fields})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_failing_field_is_named_by_pointer() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "required": ["email", "first_name"],
            "properties": {"score": {"type": "integer"}, "tags": {"items": {"type": "string"}}}
        }))
        .unwrap();
        let errors = schema.check(&json!({"score": "high", "tags": ["a", 3]}));
        let pointers: Vec<String> = errors.iter().map(FieldError::pointer).collect();
        for expected in ["/email", "/first_name", "/score", "/tags/1"] {
            assert!(pointers.contains(&expected.to_string()), "{pointers:?}");
        }
        assert!(schema
            .check(&json!({"email": "a@b.c", "first_name": "A"}))
            .is_empty());
    }

    #[test]
    fn an_invalid_schema_is_refused() {
        assert!(Schema::compile(&json!({"type": "nope"})).is_err());
    }
}
