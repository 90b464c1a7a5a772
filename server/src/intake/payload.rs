//! An event's payload as it is stored and delivered: the JSON object the
//! publisher sent, with the whitespace between tokens taken out and nothing
//! else changed.
//!
//! Parsing it into a tree and printing it again would reorder its keys and
//! round numbers past what an `f64` holds (an order id of
//! 123456789012345678901234 would reach the endpoint as
//! 1.2345678901234568e23), and builds a tree only to throw it away. Here the
//! text is checked in place instead: one pass that keeps nothing, then one
//! that drops whitespace outside strings, allocating only if there is any.
//!
//! Every door keeps the text: `POST /v1/events`, gRPC, CloudEvents `data`
//! and a source's JSON body. What never was JSON text (a source's form
//! fields, a flow's `emit` step rendered from templates) is printed from
//! its tree with [`from_map`].

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a payload was refused; the message completes "payload ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadError {
    NotUtf8,
    NotJson(String),
    NotObject,
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::NotUtf8 => f.write_str("is not valid UTF-8"),
            PayloadError::NotJson(error) => write!(f, "is not valid JSON: {error}"),
            PayloadError::NotObject => f.write_str("must be a JSON object"),
        }
    }
}

/// A payload sent as bytes (gRPC `Event.payload`); empty means `{}`.
pub fn from_bytes(bytes: Vec<u8>) -> Result<String, PayloadError> {
    if bytes.is_empty() {
        return Ok("{}".to_string());
    }
    let text = String::from_utf8(bytes).map_err(|_| PayloadError::NotUtf8)?;
    from_text(text)
}

/// A payload sent as JSON text: checked to be one object, then compacted.
pub fn from_text(text: String) -> Result<String, PayloadError> {
    check_object(&text)?;
    Ok(match compact(&text) {
        Some(compacted) => compacted,
        None => text,
    })
}

/// A payload a door already parsed: printed compactly.
pub fn from_map(map: Map<String, Value>) -> String {
    Value::Object(map).to_string()
}

/// One JSON object and nothing after it. Strings are unescaped as they are
/// read (so a lone surrogate such as `"\ud800"` is refused, as it would be by
/// any parser the payload later meets), numbers are range-checked, nothing
/// is kept.
fn check_object(text: &str) -> Result<(), PayloadError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    Checked::deserialize(&mut deserializer)
        .and_then(|_| deserializer.end())
        .map_err(|e| PayloadError::NotJson(e.to_string()))?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => Ok(()),
        _ => Err(PayloadError::NotObject),
    }
}

/// A JSON value read and dropped as it goes.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// `text` (valid JSON) without whitespace between tokens; `None` when it
/// has none to take out. Strings are copied whole, found by their closing
/// quote.
fn compact(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if memchr::memchr3(b' ', b'\n', b'\r', bytes).is_none()
        && memchr::memchr(b'\t', bytes).is_none()
    {
        return None;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = if b == b'"' {
            string_end(bytes, i + 1)
        } else {
            i + 1
        };
        if is_space(b) {
            out.get_or_insert_with(|| {
                let mut started = Vec::with_capacity(bytes.len());
                started.extend_from_slice(&bytes[..i]);
                started
            });
        } else if let Some(out) = &mut out {
            out.extend_from_slice(&bytes[i..next]);
        }
        i = next;
    }
    // Only ASCII whitespace outside strings was dropped, so the rest is
    // still UTF-8.
    out.and_then(|out| String::from_utf8(out).ok())
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index just past the quote that closes the string starting at `from`.
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(found) = bytes
        .get(from..)
        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
    {
        let at = from + found;
        if bytes[at] == b'"' {
            return at + 1;
        }
        // An escape: skip the backslash and the character it escapes.
        from = at + 2;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ok(text: &str) -> String {
        from_text(text.to_string()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn keys_order_and_numbers_stay_as_sent() {
        let text = r#"{"b":1,"a":123456789012345678901234,"c":1.10,"d":1e2}"#;
        assert_eq!(ok(text), text);
    }

    #[test]
    fn whitespace_between_tokens_goes_and_inside_strings_stays() {
        assert_eq!(
            ok("{\n  \"a b\" : [ 1 , \"x \\\" y\" ],\t\"c\":{ } }\r\n"),
            r#"{"a b":[1,"x \" y"],"c":{}}"#
        );
        assert_eq!(ok(r#"{"s":"\\"}"#), r#"{"s":"\\"}"#);
        assert_eq!(
            ok(r#"{ "s" : "\\" , "t" : "\" x \\\"" }"#),
            r#"{"s":"\\","t":"\" x \\\""}"#
        );
        assert_eq!(ok(r#"{"s":"é \u00e9"}"#), r#"{"s":"é \u00e9"}"#);
    }

    #[test]
    fn bad_payloads_say_why() {
        let err = |text: &str| from_text(text.to_string()).err();
        assert_eq!(err("[1]"), Some(PayloadError::NotObject));
        assert_eq!(err(" \"x\""), Some(PayloadError::NotObject));
        for bad in [
            "{",
            "{\"a\":1}{}",
            "{\"a\":1,}",
            "{\"s\":\"\\ud800\"}",
            "{\"n\":1e400}",
            "{\"s\":\"\u{1}\"}",
        ] {
            assert!(
                matches!(err(bad), Some(PayloadError::NotJson(_))),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(
            from_bytes(vec![b'{', 0xff, b'}']),
            Err(PayloadError::NotUtf8)
        );
        assert_eq!(from_bytes(Vec::new()).as_deref(), Ok("{}"));
    }

    #[test]
    fn a_parsed_map_prints_compactly() {
        let map = serde_json::json!({"b": [1, 2], "a": "x"});
        let Value::Object(map) = map else {
            unreachable!("an object literal")
        };
        assert_eq!(from_map(map), r#"{"a":"x","b":[1,2]}"#);
    }

    /// Any JSON value, with strings full of what compaction must leave
    /// alone: spaces, newlines, quotes, backslashes, non-ASCII.
    fn json_value() -> impl Strategy<Value = Value> {
        let text = "[ a\\n\"\\\\\t:,{}\\[\\]é€😀]{0,12}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Pretty or compact, a payload comes out as serde_json's compact
        /// printing of the same value, and reads back as that value.
        #[test]
        fn compaction_keeps_every_token(
            fields in prop::collection::btree_map("[a-z ]{1,6}", json_value(), 0..6)
        ) {
            let value = Value::Object(fields.into_iter().collect());
            let compact = value.to_string();
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            prop_assert_eq!(from_text(pretty), Ok(compact.clone()));
            prop_assert_eq!(from_text(compact.clone()), Ok(compact.clone()));
            let back: Value = serde_json::from_str(&compact).unwrap_or_default();
            prop_assert_eq!(back, value);
        }
    }
}
