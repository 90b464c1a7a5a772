//! Events published over gRPC and HTTP reach the subscribed endpoint, signed;
//! excluded and unmatched events do not.

use serde_json::{json, Value};

use crate::{
    api::{grpc_event, http_event, publish_grpc, publish_http},
    harness::{Daemon, TestConfig, SECRET, WAIT},
    sink::{assert_signed, Behaviour, Received, TestReceiver},
    webhooks::{post, source, token_for},
};

#[tokio::test]
async fn published_events_reach_the_sink_signed_and_only_matching_ones() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut events = daemon.events_client();

    let created = publish_grpc(&mut events, grpc_event("lead.created")).await;
    assert_eq!(created.matched, 1);
    assert!(!created.duplicate);
    let mut updated_body = http_event("lead.updated");
    updated_body["tenant_id"] = json!("acme");
    let updated = publish_http(&daemon, &updated_body).await;
    assert_eq!(updated.matched, 1);
    assert!(!updated.duplicate);
    assert!(updated.seq > created.seq, "seq grows with each event");

    let excluded = publish_http(&daemon, &http_event("lead.test")).await;
    assert_eq!(excluded.matched, 0, "lead.test is excluded");
    let unmatched = publish_grpc(&mut events, grpc_event("order.created")).await;
    assert_eq!(
        unmatched.matched, 0,
        "order.created matches no subscription"
    );
    let marker = publish_http(&daemon, &http_event("lead.marker")).await;
    assert_eq!(marker.matched, 1);

    let expected = [created.id.as_str(), updated.id.as_str(), marker.id.as_str()];
    let mut received = sink.until_ids(&expected, WAIT).await;
    received.extend(sink.drain());
    for request in &received {
        assert!(
            expected.contains(&request.webhook_id()),
            "the sink got an event it should not have: {}",
            String::from_utf8_lossy(&request.body)
        );
        assert_signed(request, SECRET);
        assert_common_headers(request);
    }

    let find = |id: &str| {
        received
            .iter()
            .find(|r| r.webhook_id() == id)
            .expect("received")
    };
    assert_body(find(&created.id), &created.id, "lead.created", Value::Null);
    assert_body(
        find(&updated.id),
        &updated.id,
        "lead.updated",
        json!("acme"),
    );
}

fn assert_common_headers(request: &Received) {
    assert_eq!(request.path, "/hook");
    assert!(
        request
            .header("content-type")
            .starts_with("application/json"),
        "content-type {}",
        request.header("content-type")
    );
    assert_eq!(request.header("x-env"), "test");
    assert!(
        request.header("user-agent").starts_with("hookyard/"),
        "user-agent {}",
        request.header("user-agent")
    );
}

fn assert_body(request: &Received, id: &str, name: &str, tenant: Value) {
    let body = request.json();
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["event_name"], name, "{body}");
    assert_eq!(body["tenant_id"], tenant, "{body}");
    assert_eq!(
        body["payload"],
        json!({"email": "ada@example.com", "score": 87}),
        "{body}"
    );
    let timestamp = body["timestamp"].as_str().expect("a timestamp string");
    assert!(
        is_rfc3339(timestamp),
        "timestamp {timestamp:?} is not RFC 3339"
    );
}

/// `2026-11-22T13:48:00Z`, `...00.123+01:00`: the shape, not the calendar.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't'))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && (s.ends_with('Z')
            || s.ends_with('z')
            || s.get(19..).is_some_and(|zone| zone.contains(['+', '-'])))
}

/// The payload reaches the endpoint as the publisher wrote it, less the
/// whitespace between tokens: keys in their order, numbers digit for digit
/// (past what a 64-bit float holds), through every door: HTTP, gRPC, a
/// source's webhook URL and a structured CloudEvent.
#[tokio::test]
async fn payloads_arrive_as_sent_with_keys_in_order_and_numbers_exact() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::crm(&sink.url()).source(source("partner", "lead.created", json!({})));
    let daemon = Daemon::start(config).await;
    let mut events = daemon.events_client();

    let over_http = post_raw(
        daemon.post_events(),
        "application/json",
        "{\"name\": \"lead.created\",\n \"payload\": { \"z\": 1, \
         \"order\": 123456789012345678901234, \"amount\": 10.10, \"note\": \"a  b\" }}",
    )
    .await;

    let mut event = grpc_event("lead.created");
    event.payload = br#"{"z":2,"order":-123456789012345678901234,"rate":1e-7}"#.to_vec();
    let over_grpc = publish_grpc(&mut events, event).await.id;

    let over_source = post_raw(
        post(&daemon, &token_for("partner")),
        "application/json",
        "{ \"z\": 3, \"order\": 123456789012345678901236 }",
    )
    .await;

    let over_cloudevents = post_raw(
        daemon.post_events(),
        "application/cloudevents+json",
        r#"{"specversion":"1.0","id":"ce-as-sent","source":"/crm","type":"lead.created",
            "data": {"z": 4, "order": 123456789012345678901237}}"#,
    )
    .await;

    let ids = [
        over_http.as_str(),
        over_grpc.as_str(),
        over_source.as_str(),
        over_cloudevents.as_str(),
    ];
    let received = sink.until_ids(&ids, WAIT).await;
    let payload_of = |id: &str| {
        let request = received
            .iter()
            .find(|r| r.webhook_id() == id)
            .expect("received");
        let body = String::from_utf8_lossy(&request.body).into_owned();
        let start = body.find("\"payload\":").expect("a payload field") + "\"payload\":".len();
        body[start..body.len() - 1].to_string()
    };
    assert_eq!(
        payload_of(&over_http),
        r#"{"z":1,"order":123456789012345678901234,"amount":10.10,"note":"a  b"}"#
    );
    assert_eq!(
        payload_of(&over_grpc),
        r#"{"z":2,"order":-123456789012345678901234,"rate":1e-7}"#
    );
    assert_eq!(
        payload_of(&over_source),
        r#"{"z":3,"order":123456789012345678901236}"#
    );
    assert_eq!(
        payload_of(&over_cloudevents),
        r#"{"z":4,"order":123456789012345678901237}"#
    );
}

/// Posts `body` as it is and returns the accepted event's id.
async fn post_raw(
    request: reqwest::RequestBuilder,
    content_type: &str,
    body: &'static str,
) -> String {
    let response = request
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().expect("an id").to_string()
}
