//! A repeated id with the same body is a duplicate, answered like the first
//! and not routed again; with a different body it is a conflict.

use hookyard::v1::{
    publish_result::Result as Outcome, ListDeliveriesRequest, PublishBatchRequest, PublishRequest,
};
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

    assert_delivered_once(&daemon, &mut sink, &["dup-http-1"]).await;
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

    assert_delivered_once(&daemon, &mut sink, &["dup-grpc-1"]).await;
}

/// Repeats inside one PublishBatch: the first of an id is stored, a later
/// one with the same body is its duplicate, with another body a conflict;
/// the whole batch sent again is all duplicates. One delivery per id.
#[tokio::test]
async fn repeats_inside_one_batch_and_a_resent_batch_are_duplicates_or_conflicts() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut a = grpc_event("lead.created");
    a.id = "batch-dup-a".to_string();
    let mut b = grpc_event("lead.created");
    b.id = "batch-dup-b".to_string();
    let mut a_other = a.clone();
    a_other.payload = br#"{"email":"grace@example.com"}"#.to_vec();
    let batch = vec![a.clone(), b.clone(), a.clone(), a_other];

    let publish = |events: Vec<hookyard::v1::Event>| {
        let mut client = daemon.events_client();
        async move {
            client
                .publish_batch(PublishBatchRequest { events })
                .await
                .expect("PublishBatch")
                .into_inner()
                .results
                .into_iter()
                .map(|r| r.result.expect("a result"))
                .collect::<Vec<_>>()
        }
    };
    let first = publish(batch.clone()).await;
    let (
        Outcome::Ok(stored_a),
        Outcome::Ok(stored_b),
        Outcome::Ok(repeat_a),
        Outcome::Error(clash),
    ) = (&first[0], &first[1], &first[2], &first[3])
    else {
        panic!("unexpected outcomes: {first:?}");
    };
    assert!(!stored_a.duplicate && !stored_b.duplicate, "{first:?}");
    assert!(repeat_a.duplicate, "the repeat is a duplicate: {first:?}");
    assert_eq!(repeat_a.seq, stored_a.seq);
    assert_eq!(repeat_a.matched, 0, "a duplicate is not routed again");
    assert_eq!(clash.code, Code::AlreadyExists as i32, "{clash:?}");

    let again = publish(batch[..3].to_vec()).await;
    for (outcome, stored) in again.iter().zip([stored_a, stored_b, stored_a]) {
        match outcome {
            Outcome::Ok(ok) => assert!(ok.duplicate && ok.seq == stored.seq, "{again:?}"),
            Outcome::Error(e) => panic!("a resent event was refused: {e:?}"),
        }
    }
    assert_delivered_once(&daemon, &mut sink, &["batch-dup-a", "batch-dup-b"]).await;
}

/// One delivery in storage, and one request at the sink by the time a later
/// marker event has arrived, for each of `ids`.
async fn assert_delivered_once(daemon: &Daemon, sink: &mut TestReceiver, ids: &[&str]) {
    let marker = publish_http(daemon, &http_event("lead.marker")).await;
    let mut waiting = ids.to_vec();
    waiting.push(&marker.id);
    let mut received = sink.until_ids(&waiting, WAIT).await;
    received.extend(sink.drain());
    let deliveries = daemon
        .admin_client()
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    for id in ids {
        let copies = received.iter().filter(|r| r.webhook_id() == *id).count();
        assert_eq!(copies, 1, "{id} reached the sink {copies} times");
        let stored = deliveries.iter().filter(|d| d.event_id == *id).count();
        assert_eq!(stored, 1, "{id} has {stored} deliveries: {deliveries:?}");
    }
}
