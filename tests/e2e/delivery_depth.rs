//! Delivery depth, through the Admin API and real receivers: payload
//! filters, one delivery per endpoint, payload formats checked by the
//! official Standard Webhooks and CloudEvents libraries, secret rotation,
//! `webhook-delivery: abort`, rate limits, auto-disable with its operational
//! event, recovery, resend and test sends.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use hookyard::v1::{
    BasicAuth, CreateEndpointRequest, CreateSubscriptionRequest, DeliveryFilter, DeliveryStatus,
    Endpoint, EndpointRateLimit, EndpointState, GetEndpointRequest, ListDeliveriesRequest,
    PayloadFormat, RecoverEndpointRequest, ResendDeliveryRequest, RotateEndpointSecretRequest,
    SendTestEventRequest, Subscription, TestRouteRequest,
};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::{
    api::{publish_http, Watch},
    harness::{Admin, Daemon, TestConfig, SECRET},
    sink::{assert_signed, Behaviour, Received, TestReceiver},
};

fn endpoint(id: &str, url: &str) -> Endpoint {
    Endpoint {
        id: id.to_string(),
        url: url.to_string(),
        secret: SECRET.to_string(),
        retry_schedule_ms: vec![0, 200, 200],
        ..Endpoint::default()
    }
}

async fn create_endpoint(admin: &mut Admin, endpoint: Endpoint) -> Endpoint {
    admin
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint),
        })
        .await
        .expect("CreateEndpoint")
        .into_inner()
}

async fn subscribe(
    admin: &mut Admin,
    name: &str,
    patterns: &[&str],
    endpoint: &str,
    filter: &str,
) -> Result<Subscription, tonic::Status> {
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: name.to_string(),
                patterns: patterns.iter().map(|p| p.to_string()).collect(),
                target: format!("endpoint:{endpoint}"),
                enabled: true,
                filter: filter.to_string(),
                ..Subscription::default()
            }),
        })
        .await
        .map(|r| r.into_inner())
}

async fn publish(daemon: &Daemon, name: &str, payload: Value) -> String {
    publish_http(daemon, &json!({"name": name, "payload": payload}))
        .await
        .id
}

#[tokio::test]
async fn filters_take_events_by_payload_and_test_route_names_the_filter() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    create_endpoint(&mut admin, endpoint("billing", &sink.url())).await;

    let refused = subscribe(
        &mut admin,
        "bad",
        &["order.*"],
        "billing",
        "event.payload.amount >",
    )
    .await
    .expect_err("a filter that does not compile is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("filter") && refused.message().contains("character"),
        "{}",
        refused.message()
    );

    subscribe(
        &mut admin,
        "big-euro-orders",
        &["order.*"],
        "billing",
        r#"event.payload.amount > 100 and event.payload.currency == "EUR""#,
    )
    .await
    .expect("a good filter is stored");
    let small = publish(
        &daemon,
        "order.paid",
        json!({"amount": 50, "currency": "EUR"}),
    )
    .await;
    let dollars = publish(
        &daemon,
        "order.paid",
        json!({"amount": 500, "currency": "USD"}),
    )
    .await;
    let big = publish(
        &daemon,
        "order.paid",
        json!({"amount": 500, "currency": "EUR"}),
    )
    .await;
    let received = sink.next().await;
    assert_eq!(received.webhook_id(), big);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later: Vec<String> = sink
        .drain()
        .iter()
        .map(|r| r.webhook_id().to_string())
        .collect();
    assert!(
        !later.contains(&small) && !later.contains(&dollars),
        "filtered-out events were delivered: {later:?}"
    );

    let route = admin
        .test_route(TestRouteRequest {
            name: "order.paid".into(),
            payload: br#"{"amount": 5, "currency": "EUR"}"#.to_vec(),
            ..TestRouteRequest::default()
        })
        .await
        .expect("TestRoute")
        .into_inner();
    assert!(route.matched.is_empty(), "{route:?}");
    assert_eq!(route.filtered_out.len(), 1, "{route:?}");
    assert_eq!(
        route.filtered_out[0]
            .subscription
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("big-euro-orders")
    );
}

#[tokio::test]
async fn several_subscriptions_to_one_endpoint_make_one_delivery() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let created = subscribe(&mut admin, "created-to-crm", &["lead.created"], "crm", "")
        .await
        .expect("a second subscription to crm");
    let accepted = publish_http(&daemon, &json!({"name": "lead.created", "payload": {}})).await;
    assert_eq!(accepted.matched, 2, "both subscriptions matched");
    sink.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.drain().is_empty(), "the endpoint got the event once");
    let listed = admin
        .list_deliveries(ListDeliveriesRequest {
            filter: Some(DeliveryFilter {
                endpoint_id: "crm".into(),
                ..DeliveryFilter::default()
            }),
            ..ListDeliveriesRequest::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let mut subscriptions = listed[0].also_subscription_ids.clone();
    subscriptions.push(listed[0].subscription_id.clone());
    assert!(subscriptions.contains(&created.id), "{listed:?}");
    assert_eq!(subscriptions.len(), 2);
}

/// Verifies `received` with the official Python libraries: the Standard
/// Webhooks verifier (signature over the raw body) and, for CloudEvents,
/// the SDK's `from_http`. Prints what they parsed as JSON.
async fn verify_in_python(received: &Received, secret: &str, cloudevent: bool) -> Value {
    const VERIFY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
request = json.load(sys.stdin)
body = request["body"].encode()
headers = request["headers"]
payload = Webhook(request["secret"]).verify(body, headers)
out = {"verified": payload}
if request["cloudevent"]:
    from cloudevents.v1.http import from_http
    event = from_http(headers, body)
    out["ce"] = {"id": event["id"], "type": event["type"], "source": event["source"], "data": event.data}
print(json.dumps(out))
"#;
    let headers: serde_json::Map<String, Value> = received
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
        .collect();
    let request = json!({
        "body": String::from_utf8_lossy(&received.body),
        "headers": headers,
        "secret": secret,
        "cloudevent": cloudevent,
    });
    let mut child = tokio::process::Command::new(crate::harness::python())
        .arg("-c")
        .arg(VERIFY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start Python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.to_string().as_bytes())
        .await
        .expect("write the request");
    drop(stdin);
    let out = child.wait_with_output().await.expect("Python ends");
    assert!(
        out.status.success(),
        "the receiver libraries refused the request: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from Python")
}

#[tokio::test]
async fn every_format_is_accepted_by_the_receiver_libraries() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let formats = [
        ("sw", PayloadFormat::StandardWebhooks, ""),
        ("ce", PayloadFormat::Cloudevents, ""),
        ("ceb", PayloadFormat::CloudeventsBinary, ""),
        ("raw", PayloadFormat::Raw, ""),
        (
            "chat",
            PayloadFormat::Envelope,
            r#"{"text": {{ (event.payload.email ~ " signed up") | tojson }}}"#,
        ),
    ];
    for (id, format, transform) in formats {
        let mut e = endpoint(id, &format!("{}/{id}", sink.url()));
        e.set_format(format);
        e.transform = transform.to_string();
        create_endpoint(&mut admin, e).await;
        subscribe(&mut admin, &format!("to-{id}"), &["lead.*"], id, "")
            .await
            .expect("subscribe");
    }
    let event_id = publish(&daemon, "lead.created", json!({"email": "ada@example.com"})).await;
    let mut by_path = std::collections::HashMap::new();
    for _ in 0..formats.len() {
        let r = sink.next().await;
        assert_eq!(r.webhook_id(), event_id);
        assert_signed(&r, SECRET);
        by_path.insert(r.path.rsplit('/').next().unwrap_or_default().to_string(), r);
    }
    let sw = verify_in_python(&by_path["sw"], SECRET, false).await;
    assert_eq!(sw["verified"]["type"], "lead.created");
    assert_eq!(sw["verified"]["data"]["email"], "ada@example.com");
    assert!(sw["verified"]["timestamp"].is_string());

    for id in ["ce", "ceb"] {
        let ce = verify_in_python(&by_path[id], SECRET, true).await;
        assert_eq!(ce["ce"]["id"], event_id.as_str(), "{id}: {ce}");
        assert_eq!(ce["ce"]["type"], "lead.created", "{id}: {ce}");
        assert_eq!(ce["ce"]["data"]["email"], "ada@example.com", "{id}: {ce}");
    }
    assert_eq!(
        by_path["ce"].header("content-type"),
        "application/cloudevents+json"
    );
    assert_eq!(by_path["ceb"].header("ce-specversion"), "1.0");

    assert_eq!(by_path["raw"].json(), json!({"email": "ada@example.com"}));
    assert_eq!(
        by_path["chat"].json(),
        json!({"text": "ada@example.com signed up"})
    );
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one_during_the_grace() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let rotated = admin
        .rotate_endpoint_secret(RotateEndpointSecretRequest {
            id: "crm".into(),
            grace_ms: None,
        })
        .await
        .expect("RotateEndpointSecret")
        .into_inner();
    let new_secret = rotated.secret.clone();
    assert!(new_secret.starts_with("whsec_") && new_secret != SECRET);
    let shown = rotated.endpoint.expect("the endpoint");
    assert!(shown.secret.is_empty(), "the secret is shown only once");
    assert!(shown.previous_secret_expires_at.is_some());

    publish(&daemon, "lead.created", json!({})).await;
    let received = sink.next().await;
    assert_signed(&received, SECRET);
    assert_signed(&received, &new_secret);
    assert_eq!(received.header("webhook-signature").split(' ').count(), 2);
    verify_in_python(&received, &new_secret, false).await;
    verify_in_python(&received, SECRET, false).await;

    // Without grace the new secret signs alone at once.
    let newest = admin
        .rotate_endpoint_secret(RotateEndpointSecretRequest {
            id: "crm".into(),
            grace_ms: Some(0),
        })
        .await
        .expect("RotateEndpointSecret")
        .into_inner()
        .secret;
    publish(&daemon, "lead.created", json!({})).await;
    let received = sink.next().await;
    assert_eq!(received.header("webhook-signature").split(' ').count(), 1);
    assert_signed(&received, &newest);
}

#[tokio::test]
async fn a_receiver_answering_abort_stops_the_retries_of_that_delivery() {
    let mut sink = TestReceiver::start(Behaviour::Abort(500)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let mut watch = Watch::all(&mut admin).await;
    let id = publish(&daemon, "lead.created", json!({})).await;
    let last = watch
        .until(&id, &[DeliveryStatus::Succeeded, DeliveryStatus::Dead])
        .await;
    assert_eq!(last.status(), DeliveryStatus::Dead);
    assert!(last.last_error.contains("abort"), "{}", last.last_error);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.drain().len(), 1, "no retry after abort");
    let crm = get_endpoint(&mut admin, "crm").await;
    assert_eq!(crm.state(), EndpointState::Enabled, "abort is not 410");
}

async fn get_endpoint(admin: &mut Admin, id: &str) -> Endpoint {
    admin
        .get_endpoint(GetEndpointRequest { id: id.into() })
        .await
        .expect("GetEndpoint")
        .into_inner()
}

#[tokio::test]
async fn a_rate_limited_endpoint_is_sent_no_faster_and_waiting_is_not_a_failure() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let mut e = endpoint("slow", &sink.url());
    e.rate_limit = Some(EndpointRateLimit {
        per_second: 5,
        burst: 1,
    });
    create_endpoint(&mut admin, e).await;
    subscribe(&mut admin, "to-slow", &["lead.*"], "slow", "")
        .await
        .expect("subscribe");
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(publish(&daemon, "lead.created", json!({})).await);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let received = sink.until_ids(&ids, Duration::from_secs(20)).await;
    assert_eq!(received.len(), 10, "each once, none failed");
    let spread = received[9].at.duration_since(received[0].at);
    assert!(
        spread >= Duration::from_millis(1600),
        "10 requests at 5/s with a burst of 1 took only {spread:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let listed = admin
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    assert!(
        listed
            .iter()
            .all(|d| d.attempts <= 1 && d.status() != DeliveryStatus::Failed),
        "waiting for the limit is never a failed attempt: {listed:?}"
    );
}

#[tokio::test]
async fn an_endpoint_failing_for_disable_after_is_disabled_and_announced() {
    let dead = TestReceiver::start(Behaviour::Always(500)).await;
    let mut ops = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let mut e = endpoint("flaky", &dead.url());
    e.retry_schedule_ms = vec![0, 300, 300, 300, 300, 300, 300, 300, 300, 300];
    e.disable_after_ms = Some(1000);
    create_endpoint(&mut admin, e).await;
    subscribe(&mut admin, "to-flaky", &["lead.*"], "flaky", "")
        .await
        .expect("subscribe");
    create_endpoint(&mut admin, endpoint("ops", &ops.url())).await;
    subscribe(
        &mut admin,
        "ops-alerts",
        &["hookyard.endpoint.*"],
        "ops",
        "",
    )
    .await
    .expect("subscribe");

    publish(&daemon, "lead.created", json!({})).await;
    let alert = ops.next_within(Duration::from_secs(15)).await.json();
    assert_eq!(alert["event_name"], "hookyard.endpoint.disabled", "{alert}");
    assert_eq!(alert["payload"]["endpoint_id"], "flaky", "{alert}");
    let flaky = get_endpoint(&mut admin, "flaky").await;
    assert_eq!(flaky.state(), EndpointState::Failing);
    assert!(
        flaky.disabled_reason.contains("failed"),
        "{}",
        flaky.disabled_reason
    );
    assert!(flaky.failing_since.is_some());
}

#[tokio::test]
async fn recover_requeues_dead_deliveries_and_resend_sends_a_succeeded_one_again() {
    let mut sink = TestReceiver::start(Behaviour::FailTimes(2, 500)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let mut e = endpoint("crm", &sink.url());
    e.retry_schedule_ms = vec![0];
    create_endpoint(&mut admin, e).await;
    subscribe(&mut admin, "to-crm", &["lead.*"], "crm", "")
        .await
        .expect("subscribe");
    let mut watch = Watch::all(&mut admin).await;
    let id = publish(&daemon, "lead.created", json!({})).await;
    let dead = watch
        .until(&id, &[DeliveryStatus::Succeeded, DeliveryStatus::Dead])
        .await;
    assert_eq!(dead.status(), DeliveryStatus::Dead);
    assert_eq!(sink.drain().len(), 2);

    let recovered = admin
        .recover_endpoint(RecoverEndpointRequest {
            endpoint_id: "crm".into(),
            since: None,
        })
        .await
        .expect("RecoverEndpoint")
        .into_inner();
    assert_eq!(recovered.requeued, 1);
    let done = watch
        .until(&id, &[DeliveryStatus::Succeeded, DeliveryStatus::Dead])
        .await;
    assert_eq!(done.status(), DeliveryStatus::Succeeded);
    assert_eq!(sink.next().await.webhook_id(), id);

    let resent = admin
        .resend_delivery(ResendDeliveryRequest { id: done.id })
        .await
        .expect("ResendDelivery")
        .into_inner();
    assert_ne!(resent.id, done.id, "a new delivery");
    assert_eq!(sink.next().await.webhook_id(), id, "the same event again");

    let missing = admin
        .recover_endpoint(RecoverEndpointRequest {
            endpoint_id: "nope".into(),
            since: None,
        })
        .await
        .expect_err("an unknown endpoint");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_test_event_is_sent_with_the_endpoints_format_and_auth() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let mut e = endpoint("crm", &sink.url());
    e.set_format(PayloadFormat::StandardWebhooks);
    e.basic_auth = Some(BasicAuth {
        username: "hook".into(),
        password: "s3cret".into(),
    });
    let created = create_endpoint(&mut admin, e).await;
    assert_eq!(
        created.basic_auth.as_ref().map(|b| b.password.as_str()),
        Some(""),
        "the password is never returned"
    );
    let answer = admin
        .send_test_event(SendTestEventRequest {
            endpoint_id: "crm".into(),
            ..SendTestEventRequest::default()
        })
        .await
        .expect("SendTestEvent")
        .into_inner();
    assert!(answer.succeeded, "{answer:?}");
    assert_eq!(answer.attempt.as_ref().map(|a| a.status_code), Some(200));
    let received = sink.next().await;
    assert_eq!(received.json()["type"], "hookyard.test");
    assert_eq!(received.header("authorization"), "Basic aG9vazpzM2NyZXQ=");
    assert_signed(&received, SECRET);
    let recorded = answer
        .attempt
        .map(|a| a.request_headers)
        .unwrap_or_default();
    assert_eq!(
        recorded.get("authorization").map(String::as_str),
        Some("<redacted>")
    );
}
