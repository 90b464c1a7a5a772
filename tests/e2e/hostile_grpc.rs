//! Arbitrary events at the gRPC door (Publish, PublishBatch), including
//! times far outside what a calendar can print, and the regression for the
//! year-10000 event that once jammed its endpoint.

use hookyard::v1::{publish_result, Event, PublishBatchRequest, PublishRequest};
use proptest::{collection::btree_map, collection::vec, option, prelude::*};
use prost_types::Timestamp;
use serde_json::json;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    api::{expect_error, grpc_event, pointers},
    harness::{Daemon, TestConfig, WAIT},
    hostile::{
        assert_no_panic, assert_still_delivering, json, judge_status, name, object, raw_body, run,
        text,
    },
    sink::{Behaviour, TestReceiver},
};

/// 10000-01-01T00:00:00Z, the first second RFC 3339 cannot write.
const YEAR_10000: i64 = 253_402_300_800;

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    let seconds = prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        Just(YEAR_10000 - 1),
        Just(YEAR_10000),
        -100_000_000_000i64..400_000_000_000,
    ];
    let nanos = prop_oneof![
        any::<i32>(),
        Just(-1),
        Just(999_999_999),
        Just(1_000_000_000),
        0..1_000_000_000,
    ];
    option::of((seconds, nanos).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }))
}

fn event() -> impl Strategy<Value = Event> {
    let payload = prop_oneof![
        3 => btree_map(text(), json(), 0..4).prop_map(|m| object(m).to_string().into_bytes()),
        1 => json().prop_map(|v| v.to_string().into_bytes()),
        1 => raw_body(),
    ];
    (
        prop_oneof![2 => Just(String::new()), 1 => text(), 1 => "[A-Za-z0-9._:~-]{1,130}"],
        name(),
        text(),
        prop_oneof![2 => Just(String::new()), 1 => text()],
        timestamp(),
        payload,
        btree_map(text(), text(), 0..4),
        any::<u64>(),
    )
        .prop_map(
            |(id, name, source, tenant_id, time, payload, attributes, seq)| Event {
                id,
                name,
                source,
                tenant_id,
                time,
                payload,
                attributes: attributes.into_iter().collect(),
                seq,
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_with_arbitrary_events_never_breaks_the_daemon() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let events = daemon.events_client();
    run(
        || option::weighted(0.95, event()),
        |event| {
            let mut events = events.clone();
            async move {
                match events.publish(PublishRequest { event }).await {
                    Ok(_) => Ok(()),
                    Err(status) => judge_status("Publish", &status),
                }
            }
        },
    );
    assert_still_delivering(&daemon, &mut sink, "after-grpc-publish").await;
}

fn batch() -> impl Strategy<Value = Vec<Event>> {
    prop_oneof![
        8 => vec(event(), 0..8),
        // One past the limit, of events that are fine on their own.
        1 => Just(vec![grpc_event("lead.created"); 1001]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_publish_batch_with_arbitrary_events_never_breaks_the_daemon() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let events = daemon.events_client();
    run(batch, |batch| {
        let mut events = events.clone();
        async move {
            let sent = batch.len();
            let results = match events
                .publish_batch(PublishBatchRequest { events: batch })
                .await
            {
                Ok(answer) => answer.into_inner().results,
                Err(status) => return judge_status("PublishBatch", &status),
            };
            prop_assert_eq!(results.len(), sent, "one result per event");
            for result in results {
                let Some(publish_result::Result::Error(error)) = result.result else {
                    continue;
                };
                let code = Code::from(error.code);
                prop_assert!(
                    matches!(code, Code::InvalidArgument | Code::AlreadyExists),
                    "a batch event refused with {code:?}: {}",
                    error.message
                );
                if code == Code::InvalidArgument {
                    prop_assert!(
                        !error.field_violations.is_empty()
                            && error.field_violations.iter().all(|v| !v.field.is_empty()),
                        "a refusal that names no field: {error:?}"
                    );
                }
            }
            Ok(())
        }
    });
    assert_still_delivering(&daemon, &mut sink, "after-grpc-batch").await;
}

/// Twenty events dated in year 10000 used to be accepted over gRPC; the
/// sender then panicked formatting their time and the endpoint jammed.
#[tokio::test]
async fn events_dated_in_year_10000_are_refused_and_the_endpoint_keeps_delivering() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut events = daemon.events_client();
    let dated = |seconds: i64, nanos: i32| Event {
        time: Some(Timestamp { seconds, nanos }),
        ..grpc_event("lead.created")
    };

    let batch = events
        .publish_batch(PublishBatchRequest {
            events: vec![dated(YEAR_10000, 0); 20],
        })
        .await
        .expect("PublishBatch answers per event")
        .into_inner();
    assert_eq!(batch.results.len(), 20);
    for result in batch.results {
        let Some(publish_result::Result::Error(error)) = result.result else {
            panic!("an event in year 10000 was accepted: {result:?}");
        };
        assert_eq!(Code::from(error.code), Code::InvalidArgument);
        let fields: Vec<&str> = error
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["time"], "{error:?}");
    }

    for (seconds, nanos, field) in [
        (YEAR_10000, 0, "event.time"),
        (i64::MAX, 0, "event.time"),
        (-1, 0, "event.time"),
        (0, -1, "event.time.nanos"),
    ] {
        let status = events
            .publish(PublishRequest {
                event: Some(dated(seconds, nanos)),
            })
            .await
            .expect_err("a time out of range is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations = status
            .get_details_bad_request()
            .map(|b| b.field_violations)
            .unwrap_or_default();
        assert_eq!(violations.len(), 1, "{status:?}");
        assert_eq!(violations[0].field, field);
    }

    // The HTTP door and CloudEvents refuse the same times the same way.
    let http = daemon
        .post_events()
        .json(&json!({"name": "lead.created", "payload": {}, "time": "9999-12-31T23:59:59-01:00"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(
        pointers(&expect_error(http, 422, "validation_failed").await),
        ["/time"]
    );
    let binary = daemon
        .post_events()
        .header("ce-specversion", "1.0")
        .header("ce-id", "year-10000")
        .header("ce-source", "/crm")
        .header("ce-type", "lead.created")
        .header("ce-time", "10000-01-01T00:00:00Z")
        .body("{}")
        .send()
        .await
        .expect("POST");
    assert_eq!(
        pointers(&expect_error(binary, 422, "validation_failed").await),
        ["/time"]
    );

    // The last millisecond of year 9999 is accepted and delivered, its time
    // written in full; so is an ordinary event after it.
    let last = events
        .publish(PublishRequest {
            event: Some(Event {
                id: "last-ms-of-9999".into(),
                ..dated(YEAR_10000 - 1, 999_999_999)
            }),
        })
        .await
        .expect("the last millisecond of 9999 is in range")
        .into_inner();
    let received = sink.until_ids(&[&last.id], WAIT).await;
    let body = received
        .iter()
        .find(|r| r.webhook_id() == last.id)
        .expect("delivered")
        .json();
    assert_eq!(body["timestamp"], "9999-12-31T23:59:59.999Z");
    assert_still_delivering(&daemon, &mut sink, "after-year-10000").await;
    assert_no_panic(&daemon);
}
