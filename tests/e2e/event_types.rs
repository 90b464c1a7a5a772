//! The event-type catalog: a JSON Schema per event name pattern, written
//! over the Admin API or declared in the config file, checked at every door
//! before anything is stored (HTTP, gRPC, CloudEvents, source webhooks, a
//! flow's `emit`), and changed or removed without a restart, on every daemon
//! sharing a PostgreSQL database.

use hookyard::v1::{
    CreateEventTypeRequest, DeleteEventTypeRequest, Event, EventType, GetEventTypeRequest,
    ListEventTypesRequest, PublishBatchRequest, PublishRequest, RunState, TestRouteRequest,
    UpdateEventTypeRequest,
};
use serde_json::{json, Value};
use tonic_types::StatusExt;

use crate::{
    api::{expect_error, pointers, publish_http},
    harness::{Admin, Daemon, EndpointSpec, TestConfig, API_KEY, WAIT},
    runs::{poll_until, started},
    sink::{Behaviour, TestReceiver},
    webhooks::{expect_accepted, post_json, source},
};

const AMOUNT: &str =
    r#"{"type":"object","required":["amount"],"properties":{"amount":{"type":"number"}}}"#;

fn config(sink: &TestReceiver) -> TestConfig {
    TestConfig::new()
        .endpoint(EndpointSpec::new("billing", &sink.url()))
        .subscription("orders", &["order.*"], &[], "endpoint:billing")
}

async fn create(
    admin: &mut Admin,
    id: &str,
    pattern: &str,
    schema: &str,
) -> Result<EventType, tonic::Status> {
    admin
        .create_event_type(CreateEventTypeRequest {
            event_type: Some(EventType {
                id: id.into(),
                pattern: pattern.into(),
                schema: schema.into(),
                description: "orders carry an amount".into(),
                ..EventType::default()
            }),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn listed(admin: &mut Admin) -> Vec<String> {
    admin
        .list_event_types(ListEventTypesRequest {})
        .await
        .expect("ListEventTypes")
        .into_inner()
        .event_types
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// POSTs an event and returns the status and body.
async fn post(daemon: &Daemon, body: &Value) -> reqwest::Response {
    daemon
        .post_events()
        .json(body)
        .send()
        .await
        .expect("POST /v1/events")
}

async fn stored(daemon: &Daemon, id: &str) -> bool {
    let response = daemon
        .http
        .get(daemon.url(&format!("/v1/events/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("GET /v1/events/{id}");
    match response.status().as_u16() {
        200 => true,
        404 => false,
        other => panic!("GET /v1/events/{id}: {other}"),
    }
}

fn grpc_order(id: &str, payload: &str) -> Event {
    Event {
        id: id.into(),
        name: "order.created".into(),
        payload: payload.as_bytes().to_vec(),
        ..Event::default()
    }
}

#[tokio::test]
async fn an_event_type_written_over_the_admin_api_refuses_bad_payloads_at_every_door() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(config(&sink)).await;
    let mut admin = daemon.admin_client();

    // A schema that does not compile, or a bad pattern, stores nothing.
    let bad = create(&mut admin, "order", "order.*", r#"{"type":"nope"}"#)
        .await
        .expect_err("a schema that does not compile");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    let fields: Vec<String> = bad
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["schema"], "{bad:?}");
    let bad = create(&mut admin, "order", "order.*x", AMOUNT)
        .await
        .expect_err("a bad pattern");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("pattern"), "{bad:?}");
    assert!(listed(&mut admin).await.is_empty());

    let created = create(&mut admin, "order", "order.*", AMOUNT)
        .await
        .expect("CreateEventType");
    assert_eq!(created.version, 1);
    let duplicate = create(&mut admin, "order-again", "order.*", AMOUNT)
        .await
        .expect_err("one event type per pattern");
    assert_eq!(duplicate.code(), tonic::Code::AlreadyExists);

    // TestRoute says what the event type would refuse, and routes anyway.
    let tested = admin
        .test_route(TestRouteRequest {
            name: "order.created".into(),
            payload: br#"{"amount":"ten"}"#.to_vec(),
            ..TestRouteRequest::default()
        })
        .await
        .expect("TestRoute")
        .into_inner();
    assert_eq!(tested.matched.len(), 1);
    let fields: Vec<&str> = tested
        .schema_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["payload.amount"], "{tested:?}");

    // HTTP: 422 naming the field inside the payload; nothing stored.
    let wrong = json!({"id": "bad-http", "name": "order.created", "payload": {"amount": "ten"}});
    let error = expect_error(post(&daemon, &wrong).await, 422, "validation_failed").await;
    assert_eq!(pointers(&error), ["/payload/amount"], "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("/payload/amount"),
        "{error}"
    );
    let missing = json!({"id": "bad-http-2", "name": "order.created", "payload": {}});
    let error = expect_error(post(&daemon, &missing).await, 422, "validation_failed").await;
    assert_eq!(pointers(&error), ["/payload/amount"], "{error}");
    assert!(!stored(&daemon, "bad-http").await);
    assert!(!stored(&daemon, "bad-http-2").await);

    // gRPC: INVALID_ARGUMENT with the field and the schema's message.
    let mut events = daemon.events_client();
    let refused = events
        .publish(PublishRequest {
            event: Some(grpc_order("bad-grpc", r#"{"amount":"ten"}"#)),
        })
        .await
        .expect_err("a bad payload over gRPC");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("event.payload.amount"),
        "{refused:?}"
    );
    let violations: Vec<String> = refused
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(violations, ["event.payload.amount"]);
    assert!(!stored(&daemon, "bad-grpc").await);

    // A batch answers per event, as for any other invalid event.
    let batch = events
        .publish_batch(PublishBatchRequest {
            events: vec![
                grpc_order("batch-bad", "{}"),
                grpc_order("batch-good", r#"{"amount":5}"#),
            ],
        })
        .await
        .expect("PublishBatch")
        .into_inner();
    use hookyard::v1::publish_result::Result as One;
    match &batch.results[0].result {
        Some(One::Error(e)) => {
            assert_eq!(e.code, tonic::Code::InvalidArgument as i32);
            assert_eq!(e.field_violations[0].field, "payload.amount", "{e:?}");
        }
        other => panic!("the bad one is refused: {other:?}"),
    }
    assert!(
        matches!(&batch.results[1].result, Some(One::Ok(_))),
        "{batch:?}"
    );
    assert!(!stored(&daemon, "batch-bad").await);
    assert!(stored(&daemon, "batch-good").await);

    // CloudEvents: the payload is `data`.
    let ce = json!({"specversion": "1.0", "id": "bad-ce", "source": "/shop", "type": "order.created",
        "datacontenttype": "application/json", "data": {"amount": false}});
    let response = daemon
        .post_events()
        .header("content-type", "application/cloudevents+json")
        .body(ce.to_string())
        .send()
        .await
        .expect("POST a CloudEvent");
    let error = expect_error(response, 422, "validation_failed").await;
    assert_eq!(pointers(&error), ["/data/amount"], "{error}");

    // A good one is delivered; a name no pattern covers is taken as it is.
    let good = publish_http(
        &daemon,
        &json!({"id": "good-http", "name": "order.created", "payload": {"amount": 12.5}}),
    )
    .await;
    assert_eq!(good.matched, 1);
    let received = sink.until_ids(&["batch-good", "good-http"], WAIT).await;
    assert_eq!(received.len(), 2, "only the good ones are delivered");
    assert!(received
        .iter()
        .any(|r| r.json()["payload"]["amount"] == 12.5));
    publish_http(&daemon, &json!({"name": "lead.created", "payload": {}})).await;
    publish_http(&daemon, &json!({"name": "order.created.v2", "payload": {}})).await;

    // A changed schema holds for the next event, without a restart.
    let mut current = admin
        .get_event_type(GetEventTypeRequest { id: "order".into() })
        .await
        .expect("GetEventType")
        .into_inner();
    assert_eq!(current.schema, AMOUNT);
    current.schema = json!({"type": "object", "required": ["amount", "currency"]}).to_string();
    let updated = admin
        .update_event_type(UpdateEventTypeRequest {
            event_type: Some(current.clone()),
        })
        .await
        .expect("UpdateEventType")
        .into_inner();
    assert_eq!(updated.version, 2);
    let stale = admin
        .update_event_type(UpdateEventTypeRequest {
            event_type: Some(current),
        })
        .await
        .expect_err("an old version");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    let error = expect_error(
        post(
            &daemon,
            &json!({"name": "order.created", "payload": {"amount": 1}}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(pointers(&error), ["/payload/currency"], "{error}");

    // Deleted: no longer enforced.
    admin
        .delete_event_type(DeleteEventTypeRequest { id: "order".into() })
        .await
        .expect("DeleteEventType");
    publish_http(
        &daemon,
        &json!({"id": "free-again", "name": "order.created", "payload": {"amount": "ten"}}),
    )
    .await;
    assert!(listed(&mut admin).await.is_empty());
    let gone = admin
        .delete_event_type(DeleteEventTypeRequest { id: "order".into() })
        .await
        .expect_err("deleted already");
    assert_eq!(gone.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn event_types_declared_in_the_config_file_hold_from_the_start() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let declared = json!([{
        "id": "order",
        "pattern": "order.*",
        "description": "orders carry an amount",
        "schema": {"type": "object", "required": ["amount"],
                   "properties": {"amount": {"type": "number", "minimum": 0}}}
    }]);
    let daemon = Daemon::start(config(&sink).set("event_types", declared)).await;
    let mut admin = daemon.admin_client();
    assert_eq!(listed(&mut admin).await, ["order"]);

    let error = expect_error(
        post(
            &daemon,
            &json!({"name": "order.paid", "payload": {"amount": -3}}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(pointers(&error), ["/payload/amount"], "{error}");
    publish_http(
        &daemon,
        &json!({"name": "order.paid", "payload": {"amount": 3}}),
    )
    .await;
}

#[tokio::test]
async fn a_config_file_with_a_bad_event_type_does_not_start() {
    let declared = json!([{"id": "order", "pattern": "order.*", "schema": {"type": "nope"}}]);
    let (status, stderr) =
        crate::harness::refused_start(TestConfig::new().set("event_types", declared)).await;
    assert!(!status.success());
    assert!(
        stderr.contains("event_types[0]") && stderr.contains("schema"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_source_webhook_and_a_flow_emit_are_checked_too() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let declared = json!([{"id": "order", "pattern": "order.*", "schema": serde_json::from_str::<Value>(AMOUNT).expect("JSON")}]);
    let flow = json!({"id": "emitter", "steps": [
        {"id": "announce", "emit": {"name": "order.created", "payload": {"note": "no amount"}}}
    ]});
    let daemon = Daemon::start(
        config(&sink)
            .set("event_types", declared)
            .source(source("shop", "order.created", json!({})))
            .flow(flow),
    )
    .await;

    // A source's body is the payload: named as its own schema names fields.
    let refused = post_json(&daemon, "shop", &json!({"amount": "ten"})).await;
    assert_eq!(refused.status().as_u16(), 422);
    let body: Value = refused.json().await.expect("a JSON error");
    assert_eq!(pointers(&body["error"]), ["/amount"], "{body}");
    expect_accepted(post_json(&daemon, "shop", &json!({"amount": 10})).await).await;

    // An emit the event type refuses fails its step, saying why.
    let mut admin = daemon.admin_client();
    let run = started(&daemon, "emitter", json!({})).await;
    let detail = poll_until(&mut admin, &run, RunState::Failed).await;
    let step = &detail.steps[0];
    assert_eq!(step.state, "failed");
    assert!(step.error.contains("amount"), "{step:?}");
}

#[tokio::test]
async fn an_event_type_made_on_one_daemon_holds_on_another_within_a_second() {
    if !crate::backend::POSTGRES {
        return;
    }
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let first = Daemon::start(config(&sink)).await;
    let url = first.postgres_url().expect("PostgreSQL").to_string();
    let second = Daemon::start(config(&sink).set("storage.postgres_url", json!(url))).await;
    let bad = json!({"name": "order.created", "payload": {}});
    publish_http(&second, &bad).await;

    create(&mut first.admin_client(), "order", "order.*", AMOUNT)
        .await
        .expect("CreateEventType on the first daemon");
    let changed = std::time::Instant::now();
    loop {
        if post(&second, &bad).await.status().as_u16() == 422 {
            break;
        }
        assert!(
            changed.elapsed() < std::time::Duration::from_secs(1),
            "the second daemon still takes the bad payload a second after the change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
