//! Helpers for source webhooks: declaring a source in the config and posting
//! to its URL.

use serde_json::{json, Value};

use crate::harness::Daemon;

/// A token long enough to be accepted, unique per source id.
pub fn token_for(id: &str) -> String {
    format!("tok_{id}_0123456789abcdefghijklmnop")
}

/// A `sources:` entry named `id` with a fixed event name, plus `extra` keys.
pub fn source(id: &str, event_name: &str, extra: Value) -> Value {
    let mut source = json!({
        "id": id,
        "name": format!("source {id}"),
        "token": token_for(id),
        "event_name": {"fixed": event_name},
    });
    if let (Some(map), Value::Object(extra)) = (source.as_object_mut(), extra) {
        map.extend(extra);
    }
    source
}

/// `POST /webhook/v1/<token>`.
pub fn post(daemon: &Daemon, token: &str) -> reqwest::RequestBuilder {
    daemon
        .http
        .post(daemon.url(&format!("/webhook/v1/{token}")))
}

/// Posts `body` as JSON to the source `id`'s URL.
pub async fn post_json(daemon: &Daemon, id: &str, body: &Value) -> reqwest::Response {
    post(daemon, &token_for(id))
        .json(body)
        .send()
        .await
        .expect("POST /webhook/v1/{token}")
}

/// Asserts a `202 {"id","state":"ACCEPTED"}` and returns the answer.
pub async fn expect_accepted(response: reqwest::Response) -> Value {
    let status = response.status();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status.as_u16(), 202, "expected 202, got {answer}");
    assert_eq!(answer["state"], "ACCEPTED", "{answer}");
    assert!(answer["id"].as_str().is_some_and(|id| !id.is_empty()));
    answer
}
