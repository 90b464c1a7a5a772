//! `GET /v1/events/{id}` and `GET /v1/runs/{id}`: JSON reads with an API
//! key, for callers that cannot speak gRPC; a tenant's key sees only its
//! tenant's.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    api::publish_http,
    harness::{Daemon, TestConfig, API_KEY, WAIT},
    runs::started,
    sink::{Behaviour, TestReceiver},
};

const ACME_KEY: &str = "hy_acme_read_0123456789abcdef";

async fn read(daemon: &Daemon, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = daemon.http.get(daemon.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Reads `path` until `done` holds of the answer.
async fn read_until(daemon: &Daemon, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = read(daemon, path, Some(API_KEY)).await;
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_event_and_a_run_read_over_http_with_their_deliveries_steps_and_log() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({
        "id": "welcome",
        "inputs": {"email": {"type": "email", "required": true}},
        "steps": [{"id": "mail", "http": {"url": sink.url(), "body": {"to": "{{ inputs.email }}"}}}]
    });
    let daemon = Daemon::start(TestConfig::crm(&sink.url()).flow(flow).api_key(
        "acme",
        ACME_KEY,
        Some("acme"),
    ))
    .await;

    let body =
        json!({"name": "lead.created", "payload": {"email": "ada@example.com", "score": 87}});
    let id = publish_http(&daemon, &body).await.id;
    sink.next().await;
    let path = format!("/v1/events/{id}");
    let event = read_until(&daemon, &path, |e| {
        e["deliveries"][0]["status"] == "succeeded"
    })
    .await;
    assert_eq!(event["name"], "lead.created");
    assert_eq!(event["payload"], body["payload"]);
    let delivery = &event["deliveries"][0];
    assert_eq!(delivery["endpoint_id"], "crm");
    assert_eq!(delivery["attempt_log"][0]["status_code"], 200);

    assert_eq!(read(&daemon, &path, None).await.0, 401, "a key is required");
    assert_eq!(
        read(&daemon, "/v1/events/no-such-event", Some(API_KEY))
            .await
            .0,
        404
    );
    assert_eq!(
        read(&daemon, &path, Some(ACME_KEY)).await.0,
        404,
        "another tenant's key does not see the event"
    );

    let run = started(&daemon, "welcome", json!({"email": "bob@example.com"})).await;
    let path = format!("/v1/runs/{run}");
    let run = read_until(&daemon, &path, |r| r["state"] == "SUCCEEDED").await;
    assert_eq!(run["flow_id"], "welcome");
    assert_eq!(run["inputs"]["email"], "bob@example.com");
    assert!(run["steps"]["mail"].is_object(), "{run}");
    assert!(!run["log"].as_array().expect("a log").is_empty(), "{run}");
    assert_eq!(read(&daemon, &path, Some(ACME_KEY)).await.0, 404);
    assert_eq!(read(&daemon, "/v1/runs/nope", Some(API_KEY)).await.0, 404);
}
