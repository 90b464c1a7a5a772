//! Arbitrary input for the daemon's doors (proptest strategies) and the
//! properties every door keeps whatever it is sent:
//! - every request gets an answer (a dropped connection means a handler
//!   panicked or the daemon died);
//! - a refusal is the client's fault: HTTP 4xx, never 5xx, a 422 lists the
//!   fields; gRPC INVALID_ARGUMENT (with `BadRequest` field violations),
//!   NOT_FOUND, ALREADY_EXISTS or FAILED_PRECONDITION, never INTERNAL,
//!   UNKNOWN or UNAVAILABLE;
//! - nothing panics anywhere in the daemon (its log says so), and after the
//!   run an ordinary event still reaches the sink.
//!
//! Cases run one after another against one daemon per test, on the test's
//! own runtime (`block_in_place`), so proptest can shrink a failure to the
//! smallest request that shows it.

use std::{collections::BTreeMap, future::Future};

use proptest::{
    collection::{btree_map, vec},
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{json, Map, Value};
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    api::publish_http,
    harness::{Daemon, WAIT},
    sink::TestReceiver,
};

/// Cases per door: enough to reach the odd corners, few enough that the
/// suite stays fast against a real daemon. `PROPTEST_CASES` asks for more.
pub const CASES: u32 = 96;

/// Runs `check` on `CASES` generated values, failing with the smallest one
/// that breaks a property. `strategy` makes the strategy (they are not all
/// `Send`). Needs a multi-thread runtime. Generation runs on
/// a thread with a large stack: the nested strategies' frames are big in
/// debug builds.
pub fn run<S, F>(strategy: impl FnOnce() -> S + Send, check: impl Fn(S::Value) -> F + Send)
where
    S: Strategy,
    F: Future<Output = Result<(), TestCaseError>>,
{
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(CASES),
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(STACK)
                .spawn_scoped(scope, move || {
                    runner
                        .run(&strategy(), |value| handle.block_on(check(value)))
                        .map_err(|e| e.to_string())
                })
                .expect("a thread for the cases")
                .join()
                .unwrap_or_else(|_| Err("the cases' thread panicked".into()))
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

const STACK: usize = 64 * 1024 * 1024;

/// An HTTP answer that keeps the properties.
pub async fn judge_http(
    what: &str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(), TestCaseError> {
    let response = sent.map_err(|e| TestCaseError::fail(format!("{what}: no answer: {e:?}")))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    prop_assert!(
        !status.is_server_error(),
        "{what}: answered {status}: {text}"
    );
    if status == 422 {
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{what}: 422 without JSON ({e}): {text}")))?;
        let fields = body["error"]["fields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        prop_assert!(
            !fields.is_empty() && fields.iter().all(|f| f["pointer"].is_string()),
            "{what}: a 422 that names no field: {text}"
        );
    }
    Ok(())
}

/// A gRPC refusal that keeps the properties.
pub fn judge_status(what: &str, status: &Status) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition
        ),
        "{what}: answered {:?}: {}",
        status.code(),
        status.message()
    );
    if status.code() == Code::InvalidArgument {
        let violations = status
            .get_details_bad_request()
            .map(|b| b.field_violations)
            .unwrap_or_default();
        prop_assert!(
            !violations.is_empty() && violations.iter().all(|v| !v.field.is_empty()),
            "{what}: INVALID_ARGUMENT that names no field: {} ({violations:?})",
            status.message()
        );
    }
    Ok(())
}

/// The daemon still answers, logged no panic, and delivers an ordinary
/// `lead.created` to `sink` (the endpoint the test config routes `lead.*` to).
pub async fn assert_still_delivering(daemon: &Daemon, sink: &mut TestReceiver, id: &str) {
    let health = daemon
        .http
        .get(daemon.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz after the run");
    assert_eq!(health.status().as_u16(), 200);
    publish_http(
        daemon,
        &json!({"id": id, "name": "lead.created", "payload": {"after": "the run"}}),
    )
    .await;
    sink.until_ids(&[id], WAIT).await;
    assert_no_panic(daemon);
}

pub fn assert_no_panic(daemon: &Daemon) {
    let log = daemon.log();
    if let Some(at) = log.find("panicked at") {
        let start = log[..at].rfind('\n').map_or(0, |n| n + 1);
        let excerpt: String = log[start..].lines().take(12).collect::<Vec<_>>().join("\n");
        panic!("the daemon panicked:\n{excerpt}");
    }
}

// ---- strategies ----

/// Strings that stress parsers: empty, long, control characters, non-ASCII,
/// JSON and template syntax, percent signs.
pub fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9._-]{0,12}",
        2 => any::<String>(),
        1 => "[\\x00-\\x1f%~/\\\\\"{}\\[\\]é€😀]{0,8}",
        1 => Just("{{ 1/0 }}{% for x in range(99999999) %}x{% endfor %}".to_string()),
        1 => (0usize..600).prop_map(|n| "x".repeat(n)),
    ]
}

/// Mostly event names, some almost names, some anything.
pub fn name() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("lead".to_string()),
        Just("created".to_string()),
        "[A-Za-z0-9_-]{1,6}",
        Just(String::new()),
        Just("*".to_string()),
        Just("**".to_string()),
        ".{1,3}",
    ];
    prop_oneof![
        3 => vec(segment, 1..4).prop_map(|s| s.join(".")),
        1 => text(),
    ]
}

/// RFC 3339-shaped times across and beyond the accepted years, with odd
/// offsets and fractions, and things that only look like times.
pub fn time_text() -> impl Strategy<Value = String> {
    let zone = prop_oneof![
        Just("Z".to_string()),
        Just("z".to_string()),
        Just(String::new()),
        (0u32..100, 0u32..100, any::<bool>())
            .prop_map(|(h, m, plus)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
    ];
    let fraction = prop_oneof![Just(String::new()), "\\.[0-9]{1,12}"];
    let shaped = (
        prop_oneof![0u32..=99_999, 1969u32..=1971, 9998u32..=10_001],
        0u32..=13,
        0u32..=32,
        0u32..=25,
        0u32..=61,
        0u32..=61,
        fraction,
        zone,
    )
        .prop_map(|(y, mo, d, h, mi, s, f, z)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{f}{z}")
        });
    prop_oneof![
        6 => shaped,
        1 => Just("9999-12-31T23:59:59.999999999-23:59".to_string()),
        1 => Just("+10000-01-01T00:00:00Z".to_string()),
        1 => text(),
    ]
}

/// Any JSON value, nested a little, with times and odd numbers among the leaves.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
        time_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(text(), inner, 0..6).prop_map(object),
        ]
    })
}

pub fn object(map: BTreeMap<String, Value>) -> Value {
    Value::Object(map.into_iter().collect::<Map<_, _>>())
}

/// Bytes that are not quite JSON: random bytes, token soup, deep nesting,
/// numbers past any float.
pub fn raw_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        "[\\[\\]{}\",:0-9a-z \\\\.eE+-]{0,64}".prop_map(String::into_bytes),
        (1usize..5000).prop_map(|n| "[".repeat(n).into_bytes()),
        (1usize..5000).prop_map(|n| {
            format!(
                r#"{{"name":"lead.deep","payload":{}1{}}}"#,
                r#"{"a":"#.repeat(n),
                "}".repeat(n)
            )
            .into_bytes()
        }),
        Just(br#"{"name":"lead.big","payload":{"n":1e999999}}"#.to_vec()),
        Just(br#"{"name":"lead.surrogate","payload":{"s":"\ud800"}}"#.to_vec()),
    ]
}

/// Header values HTTP can carry (visible ASCII, space, tab, obs-text),
/// including percent signs and broken percent-encoding.
pub fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[ -~]{0,24}".prop_map(String::into_bytes),
        1 => "(%[0-9A-Fa-f]{2}|%[0-9A-Za-z]?|[a-z])*".prop_map(String::into_bytes),
        1 => vec(prop_oneof![0x20u8..=0x7e, 0x80u8..=0xff, Just(b'\t')], 0..16),
        1 => time_text().prop_map(String::into_bytes),
    ]
}

/// The content types a client might send, sensible or not; `None` sends none.
pub fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("application/json".to_string())),
        Just(Some("application/json; charset=utf-8".to_string())),
        Just(Some("APPLICATION/JSON".to_string())),
        Just(Some("application/cloudevents+json".to_string())),
        Just(Some("application/cloudevents-batch+json".to_string())),
        Just(Some("application/x-www-form-urlencoded".to_string())),
        Just(Some("text/plain".to_string())),
        Just(Some("multipart/form-data; boundary=x".to_string())),
        "[ -~]{0,30}".prop_map(Some),
    ]
}

/// A header name: mostly ones the doors read, some made up.
pub fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ce-specversion".to_string()),
        Just("ce-time".to_string()),
        Just("ce-type".to_string()),
        Just("x-forwarded-for".to_string()),
        Just("webhook-timestamp".to_string()),
        Just("stripe-signature".to_string()),
        Just("origin".to_string()),
        Just("content-encoding".to_string()),
        "[a-z][a-z0-9-]{0,15}",
    ]
}

/// Extra headers to add to a request; a value the client library refuses
/// is left out.
pub fn odd_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    vec((header_name(), header_value()), 0..4)
}

/// Adds `headers` (and a content type) to `request`.
pub fn with_headers(
    mut request: reqwest::RequestBuilder,
    content_type: &Option<String>,
    headers: &[(String, Vec<u8>)],
) -> reqwest::RequestBuilder {
    if let Some(ct) = content_type {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(ct) {
            request = request.header(reqwest::header::CONTENT_TYPE, value);
        }
    }
    for (name, value) in headers {
        if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value) {
            request = request.header(name.as_str(), value);
        }
    }
    request
}

/// `key=value&…`, percent-encoded or deliberately not.
pub fn form_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec((text(), text()), 0..6).prop_map(|pairs| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(pairs)
                .finish()
                .into_bytes()
        }),
        "([a-z%=&+]|%[0-9A-F]{2}|%[g-z]){0,40}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..64),
    ]
}
