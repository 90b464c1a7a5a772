//! A repeated id with the same body is a duplicate, answered like the first
//! and not routed again; with a different body it is a conflict.

use hookyard::v1::{ListDeliveriesRequest, PublishRequest};
use serde_json::json;
use tonic::Code;

use crate::{
    api::{expect_error, grpc_event, http_event, publish_grpc, publish_http},
    harness::{Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

#[tokio::test]
async fn http_duplicate_is_answered_alike_and_delivered_once() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut body = http_event("lead.created");
    body["id"] = json!("dup-http-1");

    let first = publish_http(&daemon, &body).await;
    assert_eq!(
        (first.id.as_str(), first.duplicate, first.matched),
        ("dup-http-1", false, 1)
    );
    let again = publish_http(&daemon, &body).await;
    assert_eq!(
        (again.id.as_str(), again.seq),
        (first.id.as_str(), first.seq)
    );
    assert!(again.duplicate);
    assert_eq!(again.matched, 0, "a duplicate is not routed again");

    body["payload"]["score"] = json!(12);
    let conflict = daemon.post_events().json(&body).send().await.expect("POST");
    expect_error(conflict, 409, "conflict").await;

    assert_delivered_once(&daemon, &mut sink, "dup-http-1").await;
}

#[tokio::test]
async fn grpc_duplicate_is_answered_alike_and_delivered_once() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut events = daemon.events_client();
    let mut event = grpc_event("lead.created");
    event.id = "dup-grpc-1".to_string();

    let first = publish_grpc(&mut events, event.clone()).await;
    assert_eq!(
        (first.id.as_str(), first.duplicate, first.matched),
        ("dup-grpc-1", false, 1)
    );
    let again = publish_grpc(&mut events, event.clone()).await;
    assert_eq!(
        (again.id.as_str(), again.seq),
        (first.id.as_str(), first.seq)
    );
    assert!(again.duplicate);
    assert_eq!(again.matched, 0, "a duplicate is not routed again");

    event.payload = br#"{"email":"ada@example.com","score":12}"#.to_vec();
    let status = events
        .publish(PublishRequest { event: Some(event) })
        .await
        .expect_err("same id, different body");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    assert_delivered_once(&daemon, &mut sink, "dup-grpc-1").await;
}

/// One delivery in storage, and one request at the sink by the time a later
/// marker event has arrived.
async fn assert_delivered_once(daemon: &Daemon, sink: &mut TestReceiver, id: &str) {
    let marker = publish_http(daemon, &http_event("lead.marker")).await;
    let mut received = sink.until_ids(&[id, &marker.id], WAIT).await;
    received.extend(sink.drain());
    let copies = received.iter().filter(|r| r.webhook_id() == id).count();
    assert_eq!(copies, 1, "{id} reached the sink {copies} times");

    let deliveries = daemon
        .admin_client()
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    let stored = deliveries.iter().filter(|d| d.event_id == id).count();
    assert_eq!(stored, 1, "{id} has {stored} deliveries: {deliveries:?}");
}
