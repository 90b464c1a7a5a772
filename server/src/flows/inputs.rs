//! Checking a run's inputs against the flow's declared inputs before the run
//! exists: every failing field is reported (HTTP 422 / INVALID_ARGUMENT), and
//! defaults are applied. Strings from HTML forms are read as the declared
//! number or boolean when they spell one exactly.

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use super::definition::{InputDef, InputType};
use crate::intake::event::FieldError;

/// The inputs as the run will see them, or every problem with them.
pub fn validate(
    declared: &BTreeMap<String, InputDef>,
    given: Map<String, Value>,
    allow_unknown: bool,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    for (name, value) in given {
        match declared.get(&name) {
            None if allow_unknown => {}
            None => errors.push(FieldError::new(
                &[&name],
                format!("is not an input of this flow; it takes {}", names(declared)),
            )),
            Some(_) if value.is_null() => {}
            Some(def) => match check(def, value) {
                Ok(value) => {
                    out.insert(name, value);
                }
                Err(message) => errors.push(FieldError::new(&[&name], message)),
            },
        }
    }
    for (name, def) in declared {
        if out.contains_key(name) {
            continue;
        }
        if let Some(default) = &def.default {
            out.insert(name.clone(), default.clone());
        } else if def.required && !errors.iter().any(|e| e.path.first() == Some(name)) {
            errors.push(FieldError::new(&[name], "is required"));
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn names(declared: &BTreeMap<String, InputDef>) -> String {
    if declared.is_empty() {
        return "no inputs".to_string();
    }
    declared
        .keys()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check(def: &InputDef, value: Value) -> Result<Value, String> {
    match (def.kind, value) {
        (InputType::String, Value::String(s)) => Ok(Value::String(s)),
        (InputType::Email, Value::String(s)) if is_email(&s) => Ok(Value::String(s)),
        (InputType::Email, _) => Err("must be an email address (name@domain)".into()),
        (InputType::Datetime, Value::String(s)) => datetime(s),
        (InputType::Datetime, _) => {
            Err("must be an RFC 3339 time such as 2025-12-01T10:30:00Z".into())
        }
        (InputType::Enum, Value::String(s)) if def.values.contains(&s) => Ok(Value::String(s)),
        (InputType::Enum, _) => Err(format!("must be one of {}", def.values.join(", "))),
        (InputType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
        (InputType::Integer, Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| "must be an integer".into()),
        (InputType::Number, Value::Number(n)) => Ok(Value::Number(n)),
        (InputType::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "must be a number".into()),
        (InputType::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (InputType::Boolean, Value::String(s)) if s == "true" || s == "false" => {
            Ok(Value::Bool(s == "true"))
        }
        (InputType::Object, Value::Object(o)) => Ok(Value::Object(o)),
        (kind, _) => Err(format!("must be {}", describe(kind))),
    }
}

/// RFC 3339 with a zone, in the years every door accepts (1970-9999), so
/// templates that read it (`until`, `plus`) get a time they can use.
fn datetime(s: String) -> Result<Value, String> {
    let at = chrono::DateTime::parse_from_rfc3339(s.trim())
        .map_err(|e| format!("must be an RFC 3339 time such as 2025-12-01T10:30:00Z: {e}"))?;
    crate::timestamp::check(at.timestamp_millis()).map_err(|e| e.to_string())?;
    Ok(Value::String(s))
}

fn describe(kind: InputType) -> &'static str {
    match kind {
        InputType::String => "a string",
        InputType::Integer => "an integer",
        InputType::Number => "a number",
        InputType::Boolean => "true or false",
        InputType::Email => "an email address",
        InputType::Datetime => "an RFC 3339 time",
        InputType::Enum => "one of the listed values",
        InputType::Object => "a JSON object",
    }
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
        && s.len() <= 254
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn def(kind: InputType, required: bool) -> InputDef {
        InputDef {
            kind,
            required,
            default: None,
            values: vec!["low".into(), "high".into()],
            description: String::new(),
        }
    }

    fn declared() -> BTreeMap<String, InputDef> {
        let mut d = BTreeMap::new();
        d.insert("email".into(), def(InputType::Email, true));
        d.insert("age".into(), def(InputType::Integer, false));
        d.insert("when".into(), def(InputType::Datetime, false));
        d.insert("level".into(), def(InputType::Enum, false));
        let mut with_default = def(InputType::Boolean, false);
        with_default.default = Some(json!(true));
        d.insert("opt_in".into(), with_default);
        d
    }

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn good_inputs_get_defaults_and_form_strings_are_read() {
        let out = validate(
            &declared(),
            given(json!({"email": "ada@example.com", "age": "42", "when": "2025-12-01T10:30:00+01:00"})),
            false,
        )
        .unwrap();
        assert_eq!(out["age"], json!(42));
        assert_eq!(out["opt_in"], json!(true));
    }

    #[test]
    fn every_bad_field_is_listed() {
        let errors = validate(
            &declared(),
            given(json!({"age": 1.5, "when": "yesterday", "level": "mid", "colour": "red"})),
            false,
        )
        .unwrap_err();
        let mut fields: Vec<String> = errors.iter().map(|e| e.pointer()).collect();
        fields.sort();
        assert_eq!(fields, ["/age", "/colour", "/email", "/level", "/when"]);
    }

    #[test]
    fn datetimes_lie_in_the_years_1970_to_9999() {
        for when in [
            "1969-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
        ] {
            let errors = validate(
                &declared(),
                given(json!({"email": "a@b.co", "when": when})),
                false,
            )
            .unwrap_err();
            assert!(
                errors[0].message.contains("1970 to 9999"),
                "{when}: {errors:?}"
            );
        }
        assert!(validate(
            &declared(),
            given(json!({"email": "a@b.co", "when": "9999-12-31T23:59:59Z"})),
            false
        )
        .is_ok());
    }

    #[test]
    fn unknown_fields_may_be_ignored_for_webhook_bodies() {
        let out = validate(
            &declared(),
            given(json!({"email": "a@b.co", "calendly_event_id": "evt_1"})),
            true,
        )
        .unwrap();
        assert!(!out.contains_key("calendly_event_id"));
        assert!(validate(&declared(), given(json!({"email": "not-an-email"})), true).is_err());
    }
}
