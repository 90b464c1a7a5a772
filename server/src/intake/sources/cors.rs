//! CORS for sources that browsers post to. A source lists the origins it
//! accepts; a request carrying another `Origin` is refused before anything
//! else is read, and answers to allowed origins carry
//! `Access-Control-Allow-Origin` — errors included, so a form can show them.
//! A source with no origins listed is not meant for browsers: it gets no CORS
//! headers and `Origin` is not checked.

use axum::http::{header, HeaderMap, HeaderValue};

/// Headers a browser may send with a webhook post.
const ALLOW_HEADERS: &str = "content-type, webhook-id, webhook-timestamp, webhook-signature, \
     x-hub-signature-256, x-github-delivery, stripe-signature, idempotency-key";
const MAX_AGE_SECS: &str = "600";

/// Whether `origin` may post to a source allowing `allowed`.
pub fn allowed(allowed: &[String], origin: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The request's `Origin`, when it sent one.
pub fn origin(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// Adds the headers that let `origin` read the answer.
pub fn decorate(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// The extra headers of a successful preflight.
pub fn preflight(headers: &mut HeaderMap, origin: &str) {
    decorate(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE_SECS),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_wildcard() {
        let list = vec!["https://shop.example.com/".to_string()];
        assert!(allowed(&list, "https://shop.example.com"));
        assert!(!allowed(&list, "https://evil.example.com"));
        assert!(!allowed(&list, "http://shop.example.com"));
        assert!(allowed(&["*".to_string()], "https://any.example"));
    }
}
