//! Limits at the doors against the real daemon: the API key is checked
//! before a gRPC message is read, messages larger than their method allows
//! are refused from their length prefix, a unary call that never finishes
//! ends at the request timeout, API keys and flow webhooks are rate limited,
//! and an unreadable X-Forwarded-For cannot open a source's allow-list.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hookyard::v1::{Event, PublishBatchRequest, PublishRequest, StartRunRequest};
use serde_json::{json, Value};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    api::{expect_error, grpc_event},
    harness::{Daemon, TestConfig, API_KEY},
    webhooks::{expect_accepted, post, source, token_for},
};

/// A gRPC call over plain HTTP/2 whose body is `head` and then never ends.
async fn stalled_call(
    daemon: &Daemon,
    method: &str,
    key: Option<&str>,
    head: Vec<u8>,
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client");
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(head)) });
    let body = reqwest::Body::wrap_stream(first.chain(futures::stream::pending()));
    let mut request = client
        .post(daemon.url(&format!("/hookyard.v1.Events/{method}")))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.expect("the call was answered")
}

/// The 5-byte gRPC prefix of an uncompressed message of `len` bytes, and a
/// few bytes of it.
fn message_head(len: u32) -> Vec<u8> {
    let mut head = vec![0];
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[0x0a, 0x00]);
    head
}

fn grpc_status(response: &reqwest::Response) -> (String, String) {
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    (header("grpc-status"), header("grpc-message"))
}

fn event_with_payload(bytes: usize) -> Event {
    let payload = format!(r#"{{"pad":"{}"}}"#, "x".repeat(bytes));
    Event {
        payload: payload.into_bytes(),
        ..grpc_event("lead.created")
    }
}

#[tokio::test]
async fn an_unauthenticated_call_is_refused_before_its_message_is_read() {
    let daemon = Daemon::start(TestConfig::new()).await;
    // 64 MiB declared, a few bytes sent, the rest never: only an answer
    // that did not wait for the message can come back.
    for key in [None, Some("hy_not_a_key_0123456789abcdef")] {
        let start = Instant::now();
        let response = stalled_call(&daemon, "PublishBatch", key, message_head(64 << 20)).await;
        let (status, message) = grpc_status(&response);
        assert_eq!(status, "16", "UNAUTHENTICATED for key {key:?}: {message}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
    // The same through the generated client, with a batch over every size
    // limit: the key is what is refused, not the size.
    let events = (0..6).map(|_| event_with_payload(1 << 20)).collect();
    let refused = daemon
        .events_client_with_key(None)
        .publish_batch(PublishBatchRequest { events })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

#[tokio::test]
async fn messages_larger_than_their_method_allows_are_refused_naming_the_limit() {
    let daemon = Daemon::start(
        TestConfig::new()
            .body_limit(1024)
            .set("http.batch_body_limit", json!(8192)),
    )
    .await;
    let mut events = daemon.events_client();

    let big = events
        .publish(PublishRequest {
            event: Some(event_with_payload(2000)),
        })
        .await
        .expect_err("too large for Publish");
    assert_eq!(big.code(), Code::ResourceExhausted, "{big:?}");
    assert!(
        big.message().contains("1024 bytes http.body_limit allows"),
        "{}",
        big.message()
    );

    // A batch may be larger than one event, up to its own limit.
    let fits = (0..4).map(|_| event_with_payload(1500)).collect();
    let answer = events
        .publish_batch(PublishBatchRequest { events: fits })
        .await
        .expect("a batch within http.batch_body_limit")
        .into_inner();
    assert_eq!(answer.results.len(), 4);
    let too_many = (0..8).map(|_| event_with_payload(1500)).collect();
    let refused = events
        .publish_batch(PublishBatchRequest { events: too_many })
        .await
        .expect_err("too large for PublishBatch");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("8192 bytes http.batch_body_limit allows"),
        "{}",
        refused.message()
    );

    // Refused from the length prefix: the rest of the message never comes.
    let start = Instant::now();
    let response = stalled_call(&daemon, "Publish", Some(API_KEY), message_head(2000)).await;
    let (status, message) = grpc_status(&response);
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED: {message}");
    assert!(message.contains("http.body_limit"), "{message}");
    assert!(start.elapsed() < Duration::from_secs(3));

    // CloudEvents batches over HTTP take the batch limit too.
    let batch: Vec<Value> = (0..3)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("ce-{i}"), "source": "/e2e",
                "type": "lead.created", "data": {"pad": "x".repeat(1000)}})
        })
        .collect();
    let response = daemon
        .post_events()
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&batch).expect("json"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 202);
    let single = daemon
        .post_events()
        .json(&json!({"name": "lead.created", "payload": {"pad": "x".repeat(2000)}}))
        .send()
        .await
        .expect("post");
    expect_error(single, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_unary_call_whose_message_never_arrives_ends_at_the_request_timeout() {
    let daemon = Daemon::start(TestConfig::new().set("http.request_timeout", json!("1s"))).await;
    let start = Instant::now();
    let response = stalled_call(&daemon, "Publish", Some(API_KEY), message_head(100)).await;
    let waited = start.elapsed();
    let (status, message) = grpc_status(&response);
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    assert!(message.contains("http.request_timeout"), "{message}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "answered after {waited:?}"
    );
}

const HTTP_KEY: &str = "hy_http_key_0123456789abcdef";
const GRPC_KEY: &str = "hy_grpc_key_0123456789abcdef";
const FLOW_KEY: &str = "hy_flow_key_0123456789abcdef";

fn key(name: &str, key: &str) -> Value {
    json!({"name": name, "key": key, "rate_limit": {"per_second": 1, "burst": 2}})
}

/// Sends until `send` reports a refusal; how many passed first, and the
/// refusal. A burst of 2 refilling at 1/s lets 2 through, or a few more on
/// a slow machine.
async fn until_refused<R, F, Fut>(mut send: F) -> (usize, R)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), R>>,
{
    for passed in 0..8 {
        if let Err(refusal) = send().await {
            return (passed, refusal);
        }
    }
    panic!("8 calls passed a limit with a burst of 2");
}

/// `Err(response)` unless the response has `status`.
async fn expect_status(
    request: reqwest::RequestBuilder,
    status: u16,
) -> Result<(), reqwest::Response> {
    let response = request.send().await.expect("send");
    if response.status().as_u16() == status {
        Ok(())
    } else {
        Err(response)
    }
}

fn message(error: &Value) -> &str {
    error["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn every_door_an_api_key_opens_is_rate_limited_per_key() {
    let daemon = Daemon::start(
        TestConfig::new()
            .set(
                "api_keys",
                json!([
                    {"name": "crm-service", "key": API_KEY},
                    key("http-client", HTTP_KEY),
                    key("grpc-client", GRPC_KEY),
                    key("flow-client", FLOW_KEY),
                ]),
            )
            .flow(json!({"id": "noop", "steps": [{"id": "note", "log": "started"}]})),
    )
    .await;
    let event = json!({"name": "lead.created", "payload": {"a": 1}});

    // HTTP events: 429 with Retry-After, naming the key.
    let (passed, limited) = until_refused(|| {
        let request = daemon
            .http
            .post(daemon.url("/v1/events"))
            .bearer_auth(HTTP_KEY)
            .json(&event);
        expect_status(request, 202)
    })
    .await;
    assert!((2..5).contains(&passed), "{passed} passed");
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    let error = expect_error(limited, 429, "rate_limited").await;
    assert!(message(&error).contains("API key `http-client`"), "{error}");
    // A CloudEvents batch costs one per event: three never fit a burst of two.
    let batch: Vec<Value> = (0..3)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("b-{i}"), "source": "/e2e",
                "type": "lead.created"})
        })
        .collect();
    let response = daemon
        .http
        .post(daemon.url("/v1/events"))
        .bearer_auth(HTTP_KEY)
        .header("content-type", "application/cloudevents-batch+json")
        .body(serde_json::to_vec(&batch).expect("json"))
        .send()
        .await
        .expect("post");
    let error = expect_error(response, 400, "bad_request").await;
    assert!(message(&error).contains("burst of 2"), "{error}");
    // Other keys are not touched.
    let other = daemon
        .post_events()
        .json(&event)
        .send()
        .await
        .expect("post");
    assert_eq!(other.status().as_u16(), 202);

    // gRPC Publish: RESOURCE_EXHAUSTED with a retry hint.
    let grpc = daemon.events_client_with_key(Some(GRPC_KEY));
    let (_, refusal) = until_refused(|| {
        let mut grpc = grpc.clone();
        async move {
            grpc.publish(PublishRequest {
                event: Some(grpc_event("lead.created")),
            })
            .await
            .map(drop)
        }
    })
    .await;
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    let retry = refusal.get_details_retry_info().and_then(|r| r.retry_delay);
    assert!(
        retry.is_some_and(|d| d >= Duration::from_secs(1)),
        "{refusal:?}"
    );
    let batch = (0..3).map(|_| grpc_event("lead.created")).collect();
    let too_big = grpc
        .clone()
        .publish_batch(PublishBatchRequest { events: batch })
        .await
        .expect_err("a batch over the burst");
    assert_eq!(too_big.code(), Code::InvalidArgument, "{too_big:?}");
    assert!(
        too_big.message().contains("burst of 2"),
        "{}",
        too_big.message()
    );

    // Flow runs, over HTTP and over gRPC.
    let (_, limited) = until_refused(|| {
        let request = daemon
            .http
            .post(daemon.url("/v1/flows/noop/runs"))
            .bearer_auth(FLOW_KEY)
            .json(&json!({"inputs": {}}));
        expect_status(request, 201)
    })
    .await;
    expect_error(limited, 429, "rate_limited").await;
    let flows = daemon.events_client_with_key(Some(FLOW_KEY));
    let (_, refused) = until_refused(|| {
        let mut flows = flows.clone();
        async move {
            flows
                .start_run(StartRunRequest {
                    flow_id: "noop".into(),
                    inputs: b"{}".to_vec(),
                })
                .await
                .map(drop)
        }
    })
    .await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
}

#[tokio::test]
async fn each_flow_webhook_has_its_own_rate_limit_with_a_default() {
    const FORM_KEY: &str = "form_key_0123456789abcdef";
    const BIG_KEY: &str = "big_key_0123456789abcdef";
    let steps = json!([{"id": "note", "log": "started"}]);
    let daemon = Daemon::start(
        TestConfig::new()
            .set(
                "flow_runner.webhook_rate_limit",
                json!({"per_second": 1, "burst": 2}),
            )
            .flow(json!({"id": "form", "webhook": {"key": FORM_KEY}, "steps": steps}))
            .flow(json!({"id": "big", "steps": steps,
                "webhook": {"key": BIG_KEY, "rate_limit": {"per_second": 1, "burst": 6}}})),
    )
    .await;
    let hook = |flow: &str, key: &str| {
        daemon
            .http
            .post(daemon.url(&format!("/hooks/{flow}/{key}")))
            .json(&json!({}))
    };

    let (passed, limited) = until_refused(|| expect_status(hook("form", FORM_KEY), 201)).await;
    assert!(
        (2..5).contains(&passed),
        "{passed} passed the default limit"
    );
    assert!(limited.headers().contains_key("retry-after"));
    let error = expect_error(limited, 429, "rate_limited").await;
    assert!(message(&error).contains("flow `form`"), "{error}");
    // A wrong key is still a 404, not a 429.
    let wrong = hook("form", "not_the_key_0123456789")
        .send()
        .await
        .expect("post");
    expect_error(wrong, 404, "not_found").await;

    // The flow that sets its own limit has its own budget.
    for i in 0..6 {
        let response = hook("big", BIG_KEY).send().await.expect("post");
        assert_eq!(response.status().as_u16(), 201, "run {i} of a burst of 6");
    }
}

#[tokio::test]
async fn an_unreadable_forwarded_for_leaves_the_caller_unknown_and_an_allow_list_refuses() {
    let daemon = Daemon::start(
        TestConfig::new()
            .trusted_proxies(&["127.0.0.1/32"])
            .source(source("open", "lead.open", json!({})))
            .source(source(
                "near",
                "lead.near",
                json!({"allowed_cidrs": ["127.0.0.0/8"]}),
            ))
            .source(source(
                "far",
                "lead.far",
                json!({"allowed_cidrs": ["10.0.0.0/8"]}),
            )),
    )
    .await;
    let lead = json!({"email": "ada@example.com"});
    let send = |id: &str, forwarded: Option<&str>| {
        let mut request = post(&daemon, &token_for(id)).json(&lead);
        if let Some(forwarded) = forwarded {
            request = request.header("x-forwarded-for", forwarded);
        }
        async move { request.send().await.expect("post") }
    };

    // Garbage where the proxy's hop should be: the caller is unknown, not
    // the proxy (whose 127.0.0.1 the list holds).
    for forwarded in ["garbage", "10.1.2.3, garbage", "10.1.2.3,"] {
        let refused = expect_error(send("near", Some(forwarded)).await, 403, "forbidden").await;
        assert!(
            refused["message"]
                .as_str()
                .unwrap_or("")
                .contains("X-Forwarded-For"),
            "{forwarded}: {refused}"
        );
        expect_error(send("far", Some(forwarded)).await, 403, "forbidden").await;
    }
    // Without the header the request is the proxy's own.
    expect_accepted(send("near", None).await).await;
    // What the client wrote left of the proxy's hop is not read.
    expect_accepted(send("far", Some("garbage, 10.1.2.3")).await).await;
    expect_error(
        send("near", Some("garbage, 10.1.2.3")).await,
        403,
        "forbidden",
    )
    .await;
    // A source without an allow-list does not care who the caller is.
    expect_accepted(send("open", Some("garbage")).await).await;
}
