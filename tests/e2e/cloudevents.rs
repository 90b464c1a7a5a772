//! CloudEvents 1.0 on `POST /v1/events` in structured, batched and binary
//! mode reach the subscribed endpoint with their fields mapped; bad ones are
//! refused field by field; the webhook abuse-protection handshake is answered.

use hookyard::v1::{DeliveryFilter, Event, GetDeliveryRequest, ListDeliveriesRequest};
use serde_json::{json, Value};

use crate::{
    api::{expect_error, pointers},
    harness::{Admin, Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

/// The stored event behind `event_id`'s delivery.
async fn stored_event(admin: &mut Admin, event_id: &str) -> Event {
    let deliveries = admin
        .list_deliveries(ListDeliveriesRequest {
            filter: Some(DeliveryFilter::default()),
            ..Default::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    let delivery = deliveries
        .iter()
        .find(|d| d.event_id == event_id)
        .unwrap_or_else(|| panic!("no delivery for {event_id}"));
    admin
        .get_delivery(GetDeliveryRequest { id: delivery.id })
        .await
        .expect("GetDelivery")
        .into_inner()
        .event
        .expect("the event")
}

fn cloudevent(id: &str, kind: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/crm/leads",
        "type": kind,
        "time": "2026-01-31T12:00:00Z",
        "subject": "ada",
        "tenantid": "acme",
        "region": "eu",
        "datacontenttype": "application/json",
        "data": {"email": "ada@example.com", "score": 87}
    })
}

#[tokio::test]
async fn cloudevents_in_all_three_modes_arrive_mapped() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();

    let structured = daemon
        .post_events()
        .header("content-type", "application/cloudevents+json")
        .body(cloudevent("ce-structured-1", "lead.created").to_string())
        .send()
        .await
        .expect("POST structured");
    assert_eq!(structured.status().as_u16(), 202);

    let batch = json!([
        cloudevent("ce-batch-1", "lead.batched"),
        cloudevent("ce-batch-2", "lead.batched")
    ]);
    let batched = daemon
        .post_events()
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .expect("POST batch");
    assert_eq!(batched.status().as_u16(), 202);
    let answer: Value = batched.json().await.expect("JSON");
    assert_eq!(answer["events"][1]["id"], "ce-batch-2");
    assert_eq!(answer["events"][1]["matched"], 1);

    let binary = daemon
        .post_events()
        .header("ce-specversion", "1.0")
        .header("ce-id", "ce-binary-1")
        .header("ce-source", "/crm/leads")
        .header("ce-type", "lead.binary")
        .header("ce-time", "2026-01-31T12:00:00Z")
        .header("ce-tenantid", "acme")
        .header("ce-region", "eu")
        .header("content-type", "application/json")
        .body(r#"{"email":"ada@example.com","score":87}"#)
        .send()
        .await
        .expect("POST binary");
    assert_eq!(binary.status().as_u16(), 202);

    let ids = ["ce-structured-1", "ce-batch-1", "ce-batch-2", "ce-binary-1"];
    let received = sink.until_ids(&ids, WAIT).await;
    for request in &received {
        let body = request.json();
        let id = request.webhook_id();
        let expected_name = match id {
            "ce-structured-1" => "lead.created",
            "ce-binary-1" => "lead.binary",
            _ => "lead.batched",
        };
        assert_eq!(body["event_name"], expected_name, "{body}");
        assert_eq!(body["tenant_id"], "acme");
        assert_eq!(
            body["payload"],
            json!({"email": "ada@example.com", "score": 87})
        );
        let event = stored_event(&mut admin, id).await;
        assert_eq!(event.source, "/crm/leads");
        assert_eq!(event.time.map(|t| t.seconds), Some(1_769_860_800));
        assert_eq!(
            event.attributes.get("region").map(String::as_str),
            Some("eu")
        );
        assert!(!event.attributes.contains_key("specversion"));
    }
}

#[tokio::test]
async fn bad_cloudevents_are_refused_by_field_and_the_handshake_is_answered() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let batch =
        json!([cloudevent("ok-1", "lead.created"), {"specversion": "0.3", "id": "x", "data": [1]}]);
    let response = daemon
        .post_events()
        .header("content-type", "application/cloudevents-batch+json")
        .body(batch.to_string())
        .send()
        .await
        .expect("POST");
    let error = expect_error(response, 422, "validation_failed").await;
    let got = pointers(&error);
    for expected in ["/1/specversion", "/1/source", "/1/type", "/1/data"] {
        assert!(
            got.contains(&expected.to_string()),
            "{expected} missing from {error}"
        );
    }
    let unauthenticated = daemon
        .http
        .post(daemon.url("/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(cloudevent("x-1", "lead.created").to_string())
        .send()
        .await
        .expect("POST");
    expect_error(unauthenticated, 401, "unauthorized").await;

    let handshake = daemon
        .http
        .request(reqwest::Method::OPTIONS, daemon.url("/v1/events"))
        .header("webhook-request-origin", "eventemitter.example.com")
        .header("webhook-request-rate", "120")
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(handshake.status().as_u16(), 200);
    let header = |name: &str| {
        handshake
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(
        header("webhook-allowed-origin").as_deref(),
        Some("eventemitter.example.com")
    );
    assert_eq!(header("webhook-allowed-rate").as_deref(), Some("*"));
}

/// The request the CloudEvents Python SDK makes for
/// `requests.post(url, headers=h, data=b)` where
/// `h, b = to_binary(CloudEvent({"type": "lead.created", "source": "https://crm.example.com/leads"}, data))`:
/// `ce-*` headers for specversion, id (a UUID4), source, type and time (from
/// `datetime.now(timezone.utc).isoformat()`, so microseconds and `+00:00`),
/// the body `json.dumps(data)` (with its spaces), and no `Content-Type`,
/// since the event has no `datacontenttype`. Written out by hand rather
/// than run through Python: the suite needs no interpreter or packages.
#[tokio::test]
async fn a_binary_cloudevent_without_content_type_is_json_as_the_python_sdk_sends_it() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let id = "4b1c9e4e-2f57-4a5e-9d3c-0c5f1e7a9b21";
    let response = daemon
        .post_events()
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "https://crm.example.com/leads")
        .header("ce-type", "lead.created")
        .header("ce-time", "2026-01-31T12:00:00.123456+00:00")
        .body(r#"{"email": "ada@example.com", "score": 87}"#)
        .send()
        .await
        .expect("POST binary without content-type");
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, 202, "{answer}");

    let received = sink.until_ids(&[id], WAIT).await;
    let body = received
        .iter()
        .find(|r| r.webhook_id() == id)
        .expect("delivered")
        .json();
    assert_eq!(body["event_name"], "lead.created");
    assert_eq!(
        body["payload"],
        json!({"email": "ada@example.com", "score": 87})
    );
    assert_eq!(body["timestamp"], "2026-01-31T12:00:00.123Z");
    let event = stored_event(&mut admin, id).await;
    assert_eq!(event.source, "https://crm.example.com/leads");
    assert!(!event.attributes.contains_key("datacontenttype"));

    // A body that is not JSON is still refused, as malformed JSON.
    let garbled = daemon
        .post_events()
        .header("ce-specversion", "1.0")
        .header("ce-id", "not-json-1")
        .header("ce-source", "/crm")
        .header("ce-type", "lead.created")
        .body("email=ada@example.com")
        .send()
        .await
        .expect("POST");
    expect_error(garbled, 400, "malformed_json").await;
}
