//! The bodies a source may post: JSON (partners) and
//! `application/x-www-form-urlencoded` (HTML forms post those). A form becomes
//! a JSON object of strings; a field given several times becomes an array.

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::intake::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Form,
}

impl Kind {
    pub fn of(headers: &HeaderMap) -> Result<Kind, ApiError> {
        let (content_type, essence) = crate::intake::http::content_type(headers);
        if essence.eq_ignore_ascii_case("application/json") {
            Ok(Kind::Json)
        } else if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            Ok(Kind::Form)
        } else {
            let given = if content_type.is_empty() {
                "content-type is missing".to_string()
            } else {
                format!("content-type `{content_type}` is not supported")
            };
            Err(ApiError::UnsupportedMediaType(format!(
                "{given}; send application/json or application/x-www-form-urlencoded"
            )))
        }
    }

    /// Parses the body; malformed JSON is a 400 naming the line and column.
    pub fn parse(self, bytes: &[u8]) -> Result<Value, ApiError> {
        match self {
            Kind::Json => serde_json::from_slice(bytes).map_err(|e| ApiError::Malformed {
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            }),
            Kind::Form => Ok(Value::Object(form(bytes))),
        }
    }
}

fn form(bytes: &[u8]) -> Map<String, Value> {
    let mut map = Map::new();
    for (key, value) in form_urlencoded::parse(bytes) {
        let value = Value::String(value.into_owned());
        match map.get_mut(key.as_ref()) {
            None => {
                map.insert(key.into_owned(), value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn forms_become_objects_and_repeats_arrays() {
        let parsed = Kind::Form.parse(b"email=a%40b.c&first_name=Ada+L&tag=x&tag=y");
        assert_eq!(
            parsed.ok(),
            Some(json!({"email": "a@b.c", "first_name": "Ada L", "tag": ["x", "y"]}))
        );
    }

    #[test]
    fn malformed_json_names_line_and_column() {
        match Kind::Json.parse(b"{\n \"a\": }") {
            Err(ApiError::Malformed { line, column, .. }) => assert_eq!((line, column), (2, 7)),
            other => panic!("{other:?}"),
        }
    }
}
