//! Every rejected input gets a precise answer: one test per HTTP status, and
//! the gRPC codes with their field violations. (409 / ALREADY_EXISTS is in
//! `duplicates`.)

use hookyard::v1::{
    publish_result::Result as BatchResult, Event, ListEndpointsRequest, PublishBatchRequest,
    PublishRequest,
};
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::{
    api::{expect_error, grpc_event, http_event, pointers},
    harness::{Daemon, TestConfig, API_KEY, WAIT},
    sink::{Behaviour, TestReceiver},
};

async fn post_raw(
    daemon: &Daemon,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    daemon
        .post_events()
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("POST /v1/events")
}

#[tokio::test]
async fn http_400_malformed_json_names_line_and_column() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let body = "{\n  \"name\": \"lead.created\",\n  \"payload\": {]\n}";
    let error = expect_error(
        post_raw(&daemon, "application/json", body).await,
        400,
        "malformed_json",
    )
    .await;
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("line 3") && message.contains("column"),
        "the message should point at line 3 and a column: {message}"
    );
}

#[tokio::test]
async fn http_401_without_a_key_or_with_a_wrong_one() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let event = http_event("lead.created");
    let url = daemon.url("/v1/events");

    let missing = daemon
        .http
        .post(&url)
        .json(&event)
        .send()
        .await
        .expect("POST");
    expect_error(missing, 401, "unauthorized").await;
    let wrong = daemon
        .http
        .post(&url)
        .bearer_auth("hy_wrong_key_0123456789abcdef")
        .json(&event)
        .send()
        .await
        .expect("POST");
    expect_error(wrong, 401, "unauthorized").await;
}

#[tokio::test]
async fn http_404_unknown_route() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let response = daemon
        .http
        .post(daemon.url("/v1/no-such-route"))
        .bearer_auth(API_KEY)
        .json(&http_event("lead.created"))
        .send()
        .await
        .expect("POST");
    expect_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn http_413_body_over_the_limit() {
    let daemon = Daemon::start(TestConfig::new().body_limit(4096)).await;
    let body = json!({"name": "lead.created", "payload": {"notes": "x".repeat(8192)}});
    let response = daemon.post_events().json(&body).send().await.expect("POST");
    expect_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn http_415_wrong_content_type() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let body = http_event("lead.created").to_string();
    let response = post_raw(&daemon, "text/plain", body).await;
    expect_error(response, 415, "unsupported_media_type").await;
}

#[tokio::test]
async fn http_422_lists_every_failing_field() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let body = json!({
        "id": 7,
        "name": "lead..created",
        "tenant_id": 42,
        "payload": [1, 2],
        "attributes": {"region": 5, "channel": "web"},
        "colour": "red",
    });
    let response = daemon.post_events().json(&body).send().await.expect("POST");
    let error = expect_error(response, 422, "validation_failed").await;
    let named = pointers(&error);
    for pointer in [
        "/id",
        "/name",
        "/tenant_id",
        "/payload",
        "/attributes/region",
        "/colour",
    ] {
        assert!(
            named.iter().any(|p| p == pointer),
            "{pointer} missing from {error}"
        );
    }
    assert!(
        !named.iter().any(|p| p == "/attributes/channel"),
        "a valid attribute is not an error: {error}"
    );
}

#[tokio::test]
async fn grpc_invalid_event_gets_field_violations() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let event = Event {
        name: "lead..created".to_string(),
        payload: b"[1, 2]".to_vec(),
        ..Event::default()
    };
    let status = daemon
        .events_client()
        .publish(PublishRequest { event: Some(event) })
        .await
        .expect_err("an invalid event");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let fields = violated_fields(&status);
    for field in ["event.name", "event.payload"] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }
}

#[tokio::test]
async fn grpc_without_a_key_or_with_a_wrong_one_is_unauthenticated() {
    let daemon = Daemon::start(TestConfig::new()).await;
    for key in [None, Some("hy_wrong_key_0123456789abcdef")] {
        let status = daemon
            .events_client_with_key(key)
            .publish(PublishRequest {
                event: Some(grpc_event("lead.created")),
            })
            .await
            .expect_err("no valid key");
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "key {key:?}: {status:?}"
        );
    }
}

#[tokio::test]
async fn admin_with_a_wrong_token_is_unauthenticated() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let status = daemon
        .admin_client_with_token("not-the-admin-token")
        .list_endpoints(ListEndpointsRequest::default())
        .await
        .expect_err("a wrong admin token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn publish_batch_refuses_only_the_bad_event() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let events = vec![
        grpc_event("lead.created"),
        grpc_event("lead..broken"),
        grpc_event("lead.updated"),
    ];
    let results = daemon
        .events_client()
        .publish_batch(PublishBatchRequest { events })
        .await
        .expect("PublishBatch")
        .into_inner()
        .results;
    assert_eq!(results.len(), 3, "{results:?}");

    let ok = |i: usize| match &results[i].result {
        Some(BatchResult::Ok(published)) => published.clone(),
        other => panic!("event {i} should be accepted: {other:?}"),
    };
    let (first, third) = (ok(0), ok(2));
    assert_eq!((first.matched, third.matched), (1, 1));
    match &results[1].result {
        Some(BatchResult::Error(error)) => {
            assert_eq!(error.code, Code::InvalidArgument as i32, "{error:?}");
            assert!(
                error
                    .field_violations
                    .iter()
                    .any(|v| v.field.ends_with("name")),
                "the violation should name the field: {error:?}"
            );
        }
        other => panic!("event 1 should be refused: {other:?}"),
    }

    sink.until_ids(&[first.id.as_str(), third.id.as_str()], WAIT)
        .await;
}

fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| v.field.clone())
                .collect()
        })
        .unwrap_or_default()
}
