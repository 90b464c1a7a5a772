//! Arbitrary requests at the HTTP doors of the real daemon: `POST
//! /v1/events` (Hookyard events and CloudEvents in all three modes), source
//! webhooks and flow starts. Each door keeps the properties in `hostile`:
//! an answer for every request, refusals that are 4xx naming the field, no
//! panic, and delivery still working afterwards.

use std::collections::BTreeMap;

use proptest::{collection::btree_map, collection::vec, option, prelude::*};
use serde_json::{json, Value};

use crate::{
    harness::{Daemon, TestConfig, API_KEY},
    hostile::{
        assert_still_delivering, content_type, form_body, header_value, json, judge_http, name,
        object, odd_headers, raw_body, run, text, time_text, with_headers,
    },
    sink::{Behaviour, TestReceiver},
    webhooks::{source, token_for},
};

/// A body: JSON (sent as text) or bytes that may be anything.
#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Json(v) => v.to_string().into_bytes(),
            Body::Raw(b) => b.clone(),
        }
    }
}

/// Percent-encodes every byte, so any text is one path segment.
fn segment(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Objects shaped like events, each field odd in its own way.
fn event_object() -> impl Strategy<Value = Value> {
    let string_or_any = || prop_oneof![3 => text().prop_map(Value::String), 1 => json()];
    (
        option::of(string_or_any()),
        option::of(prop_oneof![3 => name().prop_map(Value::String), 1 => json()]),
        option::of(string_or_any()),
        option::of(string_or_any()),
        option::of(prop_oneof![4 => time_text().prop_map(Value::String), 1 => json()]),
        option::of(prop_oneof![3 => btree_map(text(), json(), 0..5).prop_map(object), 1 => json()]),
        option::of(prop_oneof![
            3 => btree_map(text(), text().prop_map(Value::String), 0..5).prop_map(object),
            1 => json(),
        ]),
        btree_map(text(), json(), 0..2),
    )
        .prop_map(
            |(id, name, source, tenant, time, payload, attributes, mut extra)| {
                for (key, value) in [
                    ("id", id),
                    ("name", name),
                    ("source", source),
                    ("tenant_id", tenant),
                    ("time", time),
                    ("payload", payload),
                    ("attributes", attributes),
                ] {
                    if let Some(value) = value {
                        extra.insert(key.to_string(), value);
                    }
                }
                object(extra)
            },
        )
}

/// Events that pass validation but for the odd value, so accepted ones are
/// delivered too: the endpoint's sender meets whatever got through.
fn nearly_valid_event() -> impl Strategy<Value = Value> {
    (
        option::of("[A-Za-z0-9._:~-]{1,24}"),
        "lead\\.[a-z_-]{1,8}",
        option::of(time_text()),
        btree_map(text(), json(), 0..5),
        btree_map("[a-z0-9_.-]{1,8}", text(), 0..3),
        option::of("[a-z0-9._:~-]{1,12}"),
    )
        .prop_map(|(id, name, time, payload, attributes, tenant)| {
            json!({"id": id, "name": name, "time": time, "payload": object(payload),
                "attributes": attributes, "tenant_id": tenant})
        })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        3 => nearly_valid_event().prop_map(Body::Json),
        4 => event_object().prop_map(Body::Json),
        1 => json().prop_map(Body::Json),
        2 => raw_body().prop_map(Body::Raw),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_events_with_arbitrary_bodies_and_headers_never_break_the_daemon() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let json_type =
        || prop_oneof![4 => Just(Some("application/json".to_string())), 1 => content_type()];
    run(
        || (body(), json_type(), odd_headers()),
        |(body, ct, headers)| {
            let request = with_headers(daemon.post_events(), &ct, &headers).body(body.bytes());
            async move { judge_http("POST /v1/events", request.send().await).await }
        },
    );
    assert_still_delivering(&daemon, &mut sink, "after-http-events").await;
}

/// A structured-mode CloudEvent: the attributes a receiver reads, each odd.
fn cloudevent() -> impl Strategy<Value = Value> {
    let attribute = || prop_oneof![4 => text().prop_map(Value::String), 1 => json()];
    (
        option::of(prop_oneof![4 => Just(json!("1.0")), 1 => attribute()]),
        option::of(attribute()),
        option::of(attribute()),
        option::of(prop_oneof![3 => name().prop_map(Value::String), 1 => json()]),
        option::of(prop_oneof![4 => time_text().prop_map(Value::String), 1 => json()]),
        option::of(json()),
        option::of(attribute()),
        btree_map(
            prop_oneof![
                Just("tenantid".to_string()),
                Just("datacontenttype".to_string()),
                Just("data_base64".to_string()),
                text()
            ],
            json(),
            0..3,
        ),
    )
        .prop_map(
            |(specversion, id, source, kind, time, data, subject, mut extra)| {
                for (key, value) in [
                    ("specversion", specversion),
                    ("id", id),
                    ("source", source),
                    ("type", kind),
                    ("time", time),
                    ("data", data),
                    ("subject", subject),
                ] {
                    if let Some(value) = value {
                        extra.insert(key.to_string(), value);
                    }
                }
                object(extra)
            },
        )
}

/// One request in one of the three modes.
#[derive(Debug, Clone)]
enum CloudEventRequest {
    Structured(Body, String),
    Batch(Body),
    Binary {
        headers: Vec<(String, Vec<u8>)>,
        content_type: Option<String>,
        body: Body,
    },
}

fn binary_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let core = |name: &'static str, value: BoxedStrategy<Vec<u8>>| {
        option::of(value).prop_map(move |v| v.map(|v| (name.to_string(), v)))
    };
    (
        core(
            "ce-specversion",
            prop_oneof![4 => Just(b"1.0".to_vec()), 1 => header_value()].boxed(),
        ),
        core("ce-id", header_value().boxed()),
        core("ce-source", header_value().boxed()),
        core(
            "ce-type",
            prop_oneof![name().prop_map(String::into_bytes), header_value()].boxed(),
        ),
        core(
            "ce-time",
            prop_oneof![time_text().prop_map(String::into_bytes), header_value()].boxed(),
        ),
        vec(("ce-[a-z0-9]{1,12}", header_value()), 0..3),
    )
        .prop_map(|(a, b, c, d, e, mut rest)| {
            let mut headers: Vec<_> = [a, b, c, d, e].into_iter().flatten().collect();
            headers.append(&mut rest);
            // Binary mode is chosen by ce-specversion being present at all.
            if !headers.iter().any(|(n, _)| n == "ce-specversion") {
                headers.push(("ce-specversion".into(), b"1.0".to_vec()));
            }
            headers
        })
}

fn cloudevent_request() -> impl Strategy<Value = CloudEventRequest> {
    let structured_type = prop_oneof![
        Just("application/cloudevents+json".to_string()),
        Just("application/cloudevents+json; charset=utf-8".to_string()),
    ];
    prop_oneof![
        (prop_oneof![3 => cloudevent().prop_map(Body::Json), 1 => raw_body().prop_map(Body::Raw)], structured_type)
            .prop_map(|(b, ct)| CloudEventRequest::Structured(b, ct)),
        prop_oneof![
            3 => vec(prop_oneof![4 => cloudevent(), 1 => json()], 0..5)
                .prop_map(|items| Body::Json(Value::Array(items))),
            1 => json().prop_map(Body::Json),
            1 => raw_body().prop_map(Body::Raw),
        ]
        .prop_map(CloudEventRequest::Batch),
        (
            binary_headers(),
            prop_oneof![2 => Just(None), 2 => Just(Some("application/json".to_string())), 1 => content_type()],
            prop_oneof![3 => json().prop_map(Body::Json), 1 => raw_body().prop_map(Body::Raw),
                1 => Just(Body::Raw(Vec::new()))],
        )
            .prop_map(|(headers, content_type, body)| CloudEventRequest::Binary {
                headers,
                content_type,
                body,
            }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_in_three_modes_with_arbitrary_attributes_never_break_the_daemon() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    run(cloudevent_request, |request| {
        let built = match &request {
            CloudEventRequest::Structured(body, ct) => {
                with_headers(daemon.post_events(), &Some(ct.clone()), &[]).body(body.bytes())
            }
            CloudEventRequest::Batch(body) => with_headers(
                daemon.post_events(),
                &Some("application/cloudevents-batch+json".into()),
                &[],
            )
            .body(body.bytes()),
            CloudEventRequest::Binary {
                headers,
                content_type,
                body,
            } => with_headers(daemon.post_events(), content_type, headers).body(body.bytes()),
        };
        async move { judge_http("POST /v1/events (CloudEvents)", built.send().await).await }
    });
    assert_still_delivering(&daemon, &mut sink, "after-cloudevents").await;
}

const STRIPE_SECRET: &str = "whsec_hostile_stripe_secret_0123";
const SOURCES: &[&str] = &["open", "typed", "strict", "stripe", "standard"];

fn sources_config(sink: &TestReceiver) -> TestConfig {
    TestConfig::crm(&sink.url())
        .source(source("open", "lead.open", json!({})))
        .source(source(
            "typed",
            "unused.name",
            json!({"event_name": {"template": "lead.{{ payload.kind }}"}, "required": ["kind"]}),
        ))
        .source(source(
            "strict",
            "lead.strict",
            json!({"schema": {"type": "object", "required": ["email"],
                "properties": {"email": {"type": "string", "format": "email"},
                    "score": {"type": "integer", "maximum": 100}}}}),
        ))
        .source(source(
            "stripe",
            "lead.stripe",
            json!({"signature": {"scheme": "stripe", "secret": STRIPE_SECRET}}),
        ))
        .source(source(
            "standard",
            "lead.standard",
            json!({"signature": {"scheme": "standard_webhooks",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}),
        ))
}

fn webhook_body() -> impl Strategy<Value = (Body, Option<String>)> {
    prop_oneof![
        3 => btree_map(
            prop_oneof![Just("kind".to_string()), Just("email".to_string()),
                Just("score".to_string()), text()],
            json(),
            0..5,
        )
        .prop_map(|m| (Body::Json(object(m)), Some("application/json".to_string()))),
        2 => form_body().prop_map(|b| (Body::Raw(b), Some("application/x-www-form-urlencoded".to_string()))),
        1 => (json().prop_map(Body::Json), content_type()),
        1 => (raw_body().prop_map(Body::Raw), content_type()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_webhooks_with_arbitrary_bodies_never_break_the_daemon() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(sources_config(&sink)).await;
    let token = || {
        prop_oneof![
            5 => proptest::sample::select(SOURCES).prop_map(token_for),
            1 => text().prop_map(|t| segment(&t)),
        ]
    };
    run(
        || (token(), webhook_body(), odd_headers()),
        |(token, (body, ct), headers)| {
            let url = daemon.url(&format!("/webhook/v1/{token}"));
            let request = with_headers(daemon.http.post(url), &ct, &headers).body(body.bytes());
            async move { judge_http("POST /webhook/v1/{token}", request.send().await).await }
        },
    );
    assert_still_delivering(&daemon, &mut sink, "after-source-webhooks").await;
}

const FLOW_KEY: &str = "hostile-flow-webhook-key-0123";

/// A flow whose inputs cover every type and whose waits are rendered from
/// them, so odd times and durations reach `until` and `plus`.
fn flow_config(sink: &TestReceiver) -> TestConfig {
    TestConfig::crm(&sink.url()).flow(json!({
        "id": "fuzz",
        "inputs": {
            "email": {"type": "email"},
            "when": {"type": "datetime"},
            "span": {"type": "string"},
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "ok": {"type": "boolean"},
            "level": {"type": "enum", "values": ["low", "high"]},
            "obj": {"type": "object"}
        },
        "webhook": {"key": FLOW_KEY},
        "steps": [
            {"id": "wait", "until": "{{ inputs.when }}"},
            {"id": "later", "until": "{{ inputs.when | plus(inputs.span) }}"},
            {"id": "note", "log": "{{ inputs.email }} {{ inputs.n }} {{ inputs.obj }}"}
        ]
    }))
}

fn inputs() -> impl Strategy<Value = BTreeMap<String, Value>> {
    let key = prop_oneof![
        5 => proptest::sample::select(&["email", "when", "span", "n", "x", "ok", "level", "obj"][..])
            .prop_map(str::to_string),
        1 => text(),
    ];
    let value = prop_oneof![
        2 => time_text().prop_map(Value::String),
        2 => "[0-9]{1,22}(ns|ms|s|m|h|d|w|y)".prop_map(Value::String),
        1 => Just(json!("1970-01-01T00:00:00Z")),
        3 => json(),
    ];
    btree_map(key, value, 0..6)
}

#[derive(Debug, Clone)]
enum Start {
    Api {
        flow: String,
        body: Body,
    },
    Hook {
        flow: String,
        key: String,
        body: Body,
        content_type: Option<String>,
    },
}

fn start() -> impl Strategy<Value = Start> {
    let flow = || prop_oneof![5 => Just("fuzz".to_string()), 1 => text()];
    prop_oneof![
        (
            flow(),
            prop_oneof![
                4 => inputs().prop_map(|i| Body::Json(json!({"inputs": object(i)}))),
                1 => json().prop_map(Body::Json),
                1 => raw_body().prop_map(Body::Raw),
            ],
        )
            .prop_map(|(flow, body)| Start::Api { flow, body }),
        (
            flow(),
            prop_oneof![5 => Just(FLOW_KEY.to_string()), 1 => text()],
            prop_oneof![
                3 => inputs().prop_map(|i| (Body::Json(object(i)), Some("application/json".to_string()))),
                1 => form_body().prop_map(|b| (Body::Raw(b), Some("application/x-www-form-urlencoded".to_string()))),
                1 => (raw_body().prop_map(Body::Raw), content_type()),
            ],
        )
            .prop_map(|(flow, key, (body, content_type))| Start::Hook {
                flow,
                key,
                body,
                content_type,
            }),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_starts_with_arbitrary_inputs_never_break_the_daemon() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(flow_config(&sink)).await;
    run(start, |start| {
        let (what, request) = match &start {
            Start::Api { flow, body } => (
                "POST /v1/flows/{id}/runs",
                daemon
                    .http
                    .post(daemon.url(&format!("/v1/flows/{}/runs", segment(flow))))
                    .bearer_auth(API_KEY)
                    .header("content-type", "application/json")
                    .body(body.bytes()),
            ),
            Start::Hook {
                flow,
                key,
                body,
                content_type,
            } => (
                "POST /hooks/{flow}/{key}",
                with_headers(
                    daemon.http.post(daemon.url(&format!(
                        "/hooks/{}/{}",
                        segment(flow),
                        segment(key)
                    ))),
                    content_type,
                    &[],
                )
                .body(body.bytes()),
            ),
        };
        async move { judge_http(what, request.send().await).await }
    });
    assert_still_delivering(&daemon, &mut sink, "after-flow-starts").await;
}
