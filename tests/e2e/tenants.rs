//! Tenants against the real daemon: an endpoint (or flow) of a tenant takes
//! only that tenant's events whatever its subscriptions say, contradictions
//! are refused where they are written, and an API key bound to a tenant
//! publishes and starts runs for that tenant only, at every door.

use hookyard::v1::{
    CreateSubscriptionRequest, DeliveryFilter, Event, GetEndpointRequest, ListDeliveriesRequest,
    ListRunsRequest, ListSubscriptionsRequest, PublishBatchRequest, PublishRequest, RunState,
    StartRunRequest, Subscription, TestRouteRequest, UpdateEndpointRequest, UpdateFlowRequest,
    UpdateSubscriptionRequest,
};
use serde_json::{json, Value};
use tonic_types::StatusExt;

use crate::{
    api::{expect_error, grpc_event, http_event},
    harness::{refused_start, Admin, Daemon, EndpointSpec, TestConfig, API_KEY},
    runs::{log_text, poll_until},
    sink::{Behaviour, TestReceiver},
};

const ACME_KEY: &str = "hy_acme_key_0123456789abcdef";
const GLOBEX_KEY: &str = "hy_globex_key_0123456789abcdef";

/// `acme-crm` (tenant acme) and `shared` (no tenant) both at `sink`, each
/// with a subscription to `lead.*` that names no tenant; keys for acme and
/// globex besides the unbound `API_KEY`.
fn two_endpoints(sink: &TestReceiver) -> TestConfig {
    TestConfig::new()
        .endpoint(EndpointSpec::new("acme-crm", &format!("{}/acme", sink.url())).tenant("acme"))
        .endpoint(EndpointSpec::new(
            "shared",
            &format!("{}/shared", sink.url()),
        ))
        .subscription("leads-to-acme", &["lead.*"], &[], "endpoint:acme-crm")
        .subscription("leads-to-shared", &["lead.*"], &[], "endpoint:shared")
        .api_key("acme-app", ACME_KEY, Some("acme"))
        .api_key("globex-app", GLOBEX_KEY, Some("globex"))
}

async fn publish_as(daemon: &Daemon, key: &str, body: &Value) -> reqwest::Response {
    daemon
        .http
        .post(daemon.url("/v1/events"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("POST /v1/events")
}

/// Publishes with `key` and insists on 202; returns `matched`.
async fn matched(daemon: &Daemon, key: &str, body: Value) -> u64 {
    let response = publish_as(daemon, key, &body).await;
    let status = response.status().as_u16();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, 202, "publishing {body}: {answer}");
    answer["matched"].as_u64().expect("matched")
}

fn tenant_event(id: &str, tenant: Option<&str>) -> Value {
    let mut event = http_event("lead.created");
    event["id"] = json!(id);
    if let Some(tenant) = tenant {
        event["tenant_id"] = json!(tenant);
    }
    event
}

/// Reads `count` requests from the sink; returns the (id, tenant) of those
/// whose path ends with `suffix`.
async fn received_at(sink: &mut TestReceiver, count: usize, suffix: &str) -> Vec<(String, Value)> {
    let mut found = Vec::new();
    for _ in 0..count {
        let received = sink.next().await;
        if received.path.ends_with(suffix) {
            found.push((
                received.webhook_id().to_string(),
                received.json()["tenant_id"].clone(),
            ));
        }
    }
    found
}

async fn routed(admin: &mut Admin, tenant: &str) -> Vec<String> {
    let mut names: Vec<String> = admin
        .test_route(TestRouteRequest {
            name: "lead.created".into(),
            tenant_id: tenant.into(),
            payload: Vec::new(),
        })
        .await
        .expect("TestRoute")
        .into_inner()
        .matched
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    names
}

/// The event ids delivered to `endpoint`, sorted.
async fn delivered_to(admin: &mut Admin, endpoint: &str) -> Vec<String> {
    let mut ids: Vec<String> = admin
        .list_deliveries(ListDeliveriesRequest {
            filter: Some(DeliveryFilter {
                endpoint_id: endpoint.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_endpoint_of_a_tenant_gets_only_its_tenants_events_whatever_the_subscription_says() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(two_endpoints(&sink)).await;
    let mut admin = daemon.admin_client();

    assert_eq!(
        matched(&daemon, API_KEY, tenant_event("ev-globex", Some("globex"))).await,
        1
    );
    assert_eq!(
        matched(&daemon, API_KEY, tenant_event("ev-none", None)).await,
        1
    );
    assert_eq!(
        matched(&daemon, API_KEY, tenant_event("ev-acme", Some("acme"))).await,
        2
    );

    // Deliveries are stored with their event, so these lists are final.
    assert_eq!(delivered_to(&mut admin, "acme-crm").await, ["ev-acme"]);
    assert_eq!(
        delivered_to(&mut admin, "shared").await,
        ["ev-acme", "ev-globex", "ev-none"]
    );
    let to_acme = received_at(&mut sink, 4, "/acme").await;
    assert_eq!(to_acme, [("ev-acme".to_string(), json!("acme"))]);

    // TestRoute answers from the same table.
    assert_eq!(routed(&mut admin, "globex").await, ["leads-to-shared"]);
    assert_eq!(routed(&mut admin, "").await, ["leads-to-shared"]);
    assert_eq!(
        routed(&mut admin, "acme").await,
        ["leads-to-acme", "leads-to-shared"]
    );
}

fn subscription(name: &str, tenant: &str, target: &str) -> Subscription {
    Subscription {
        name: name.into(),
        patterns: vec!["lead.*".into()],
        tenant_id: tenant.into(),
        target: target.into(),
        enabled: true,
        ..Default::default()
    }
}

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_subscription_contradicting_its_endpoints_tenant_is_refused_and_so_is_the_reverse() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(two_endpoints(&sink)).await;
    let mut admin = daemon.admin_client();

    let status = admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(subscription(
                "globex-to-acme",
                "globex",
                "endpoint:acme-crm",
            )),
        })
        .await
        .expect_err("globex's subscription to acme's endpoint");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(&status), ["tenant_id"], "{status:?}");
    assert!(status.message().contains("acme"), "{status:?}");

    // Naming the endpoint's own tenant is fine; so is any tenant on `shared`.
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(subscription("acme-to-acme", "acme", "endpoint:acme-crm")),
        })
        .await
        .expect("acme's subscription to acme's endpoint");
    let globex_shared = admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(subscription(
                "globex-to-shared",
                "globex",
                "endpoint:shared",
            )),
        })
        .await
        .expect("globex's subscription to the shared endpoint")
        .into_inner();

    let mut moved = globex_shared.clone();
    moved.target = "endpoint:acme-crm".into();
    let status = admin
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(moved),
        })
        .await
        .expect_err("moving globex's subscription to acme's endpoint");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(&status), ["tenant_id"], "{status:?}");

    // `shared` cannot become acme's while globex's subscription targets it.
    let mut shared = admin
        .get_endpoint(GetEndpointRequest {
            id: "shared".into(),
        })
        .await
        .expect("GetEndpoint")
        .into_inner();
    shared.tenant_id = "acme".into();
    let status = admin
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(shared.clone()),
        })
        .await
        .expect_err("giving `shared` to acme");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("subscription `globex-to-shared`"),
        "{status:?}"
    );
    let stored = admin
        .get_endpoint(GetEndpointRequest {
            id: "shared".into(),
        })
        .await
        .expect("GetEndpoint")
        .into_inner();
    assert_eq!(stored.tenant_id, "", "a refused update changed nothing");

    let names: Vec<String> = admin
        .list_subscriptions(ListSubscriptionsRequest {})
        .await
        .expect("ListSubscriptions")
        .into_inner()
        .subscriptions
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(!names.contains(&"globex-to-acme".to_string()), "{names:?}");
}

#[tokio::test]
async fn a_config_file_with_such_a_subscription_does_not_start() {
    let config = TestConfig::new()
        .endpoint(EndpointSpec::new("acme-crm", "http://127.0.0.1:9/").tenant("acme"))
        .subscription_entry(json!({
            "name": "globex-to-acme",
            "patterns": ["lead.*"],
            "tenant_id": "globex",
            "target": "endpoint:acme-crm",
        }));
    let (status, stderr) = refused_start(config).await;
    assert!(!status.success());
    assert!(
        stderr.contains("subscriptions[0].tenant_id") && stderr.contains("acme"),
        "{stderr}"
    );
}

async fn stored_tenant(admin: &mut Admin, event_id: &str) -> String {
    let deliveries = admin
        .list_deliveries(ListDeliveriesRequest {
            filter: Some(DeliveryFilter::default()),
            ..Default::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    deliveries
        .iter()
        .find(|d| d.event_id == event_id)
        .unwrap_or_else(|| panic!("no delivery for {event_id}"))
        .tenant_id
        .clone()
}

fn cloudevent(id: &str, tenant: Option<&str>) -> Value {
    let mut event = json!({
        "specversion": "1.0", "id": id, "source": "/acme/app", "type": "lead.created",
        "data": {"email": "ada@example.com"}
    });
    if let Some(tenant) = tenant {
        event["tenantid"] = json!(tenant);
    }
    event
}

async fn post_cloudevents(daemon: &Daemon, content_type: &str, body: &Value) -> reqwest::Response {
    daemon
        .http
        .post(daemon.url("/v1/events"))
        .bearer_auth(ACME_KEY)
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .await
        .expect("POST CloudEvents")
}

fn binary_cloudevent(daemon: &Daemon, id: &str, tenant: Option<&str>) -> reqwest::RequestBuilder {
    let request = daemon
        .http
        .post(daemon.url("/v1/events"))
        .bearer_auth(ACME_KEY)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/acme/app")
        .header("ce-type", "lead.created")
        .header("content-type", "application/json")
        .body(r#"{"email":"ada@example.com"}"#);
    match tenant {
        Some(tenant) => request.header("ce-tenantid", tenant),
        None => request,
    }
}

fn grpc_tenant_event(id: &str, tenant: &str) -> Event {
    Event {
        id: id.into(),
        tenant_id: tenant.into(),
        ..grpc_event("lead.created")
    }
}

#[tokio::test]
async fn a_key_bound_to_a_tenant_publishes_for_it_and_is_refused_another_at_every_door() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(two_endpoints(&sink)).await;
    let mut admin = daemon.admin_client();

    // HTTP JSON: no tenant means the key's; another is 403.
    assert_eq!(
        matched(&daemon, ACME_KEY, tenant_event("json-1", None)).await,
        2
    );
    assert_eq!(stored_tenant(&mut admin, "json-1").await, "acme");
    assert_eq!(
        matched(&daemon, ACME_KEY, tenant_event("json-2", Some("acme"))).await,
        2
    );
    let response = publish_as(&daemon, ACME_KEY, &tenant_event("json-3", Some("globex"))).await;
    let error = expect_error(response, 403, "forbidden").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("acme")),
        "{error}"
    );

    // The same id and body from two tenants is not a duplicate of the other's.
    let response = publish_as(&daemon, GLOBEX_KEY, &tenant_event("json-1", None)).await;
    expect_error(response, 409, "conflict").await;

    // CloudEvents, all three modes.
    let structured = "application/cloudevents+json";
    let response = post_cloudevents(&daemon, structured, &cloudevent("ce-1", None)).await;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(stored_tenant(&mut admin, "ce-1").await, "acme");
    let response = post_cloudevents(&daemon, structured, &cloudevent("ce-2", Some("globex"))).await;
    expect_error(response, 403, "forbidden").await;
    let batch = json!([cloudevent("ce-3", None), cloudevent("ce-4", Some("globex"))]);
    let response = post_cloudevents(&daemon, "application/cloudevents-batch+json", &batch).await;
    expect_error(response, 403, "forbidden").await;
    let response = binary_cloudevent(&daemon, "ce-5", Some("globex"))
        .send()
        .await
        .expect("POST binary");
    expect_error(response, 403, "forbidden").await;
    let response = binary_cloudevent(&daemon, "ce-6", None)
        .send()
        .await
        .expect("POST binary");
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(stored_tenant(&mut admin, "ce-6").await, "acme");

    // gRPC Publish and PublishBatch.
    let mut events = daemon.events_client_with_key(Some(ACME_KEY));
    let ok = events
        .publish(PublishRequest {
            event: Some(grpc_tenant_event("grpc-1", "")),
        })
        .await
        .expect("Publish without a tenant")
        .into_inner();
    assert_eq!(ok.matched, 2);
    assert_eq!(stored_tenant(&mut admin, "grpc-1").await, "acme");
    let status = events
        .publish(PublishRequest {
            event: Some(grpc_tenant_event("grpc-2", "globex")),
        })
        .await
        .expect_err("Publish for globex");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let status = events
        .publish_batch(PublishBatchRequest {
            events: vec![
                grpc_tenant_event("grpc-3", "acme"),
                grpc_tenant_event("grpc-4", "globex"),
            ],
        })
        .await
        .expect_err("PublishBatch with a globex event");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Nothing of a refused request was stored.
    assert_eq!(
        delivered_to(&mut admin, "shared").await,
        ["ce-1", "ce-6", "grpc-1", "json-1", "json-2"]
    );

    // A key bound to no tenant publishes for any, as before.
    assert_eq!(
        matched(&daemon, API_KEY, tenant_event("any-1", Some("globex"))).await,
        1
    );
}

/// Flows of acme, of globex and of nobody; acme's emits `lead.welcomed`
/// for the tenant its inputs name (none: the flow's own).
fn three_flows(sink: &TestReceiver) -> TestConfig {
    let flow = |id: &str, tenant: Option<&str>| {
        json!({
            "id": id,
            "tenant_id": tenant,
            "inputs": {
                "email": {"type": "email", "required": true},
                "tenant": {"type": "string", "default": ""}
            },
            "steps": [{"id": "hello", "emit": {
                "name": "lead.welcomed",
                "payload": {"email": "{{ inputs.email }}"},
                "tenant_id": "{{ inputs.tenant }}"
            }}]
        })
    };
    two_endpoints(sink)
        .flow(flow("acme-welcome", Some("acme")))
        .flow(flow("globex-welcome", Some("globex")))
        .flow(flow("ops", None))
        .flow_subscription(
            "signups-to-acme-welcome",
            &["signup.created"],
            "acme-welcome",
            json!({"email": "{{ event.payload.email }}"}),
        )
}

async fn start_as(daemon: &Daemon, key: &str, flow: &str, inputs: Value) -> (u16, Value) {
    let response = daemon
        .http
        .post(daemon.url(&format!("/v1/flows/{flow}/runs")))
        .bearer_auth(key)
        .json(&json!({ "inputs": inputs }))
        .send()
        .await
        .expect("POST /v1/flows/{flow}/runs");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

#[tokio::test]
async fn a_key_bound_to_a_tenant_starts_only_its_tenants_flows_and_their_events_stay_its_own() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(three_flows(&sink)).await;
    let mut admin = daemon.admin_client();
    let ada = json!({"email": "ada@example.com"});

    let (status, answer) = start_as(&daemon, ACME_KEY, "acme-welcome", ada.clone()).await;
    assert_eq!(status, 201, "{answer}");
    let acme_run = answer["id"].as_str().expect("a run id").to_string();
    for flow in ["globex-welcome", "ops", "nope"] {
        let (status, answer) = start_as(&daemon, ACME_KEY, flow, ada.clone()).await;
        assert_eq!(status, 404, "{flow}: {answer}");
        assert_eq!(
            answer["error"]["message"],
            format!("flow `{flow}` does not exist"),
            "another tenant's flow looks like no flow"
        );
    }
    let status = daemon
        .events_client_with_key(Some(ACME_KEY))
        .start_run(StartRunRequest {
            flow_id: "globex-welcome".into(),
            inputs: ada.to_string().into_bytes(),
        })
        .await
        .expect_err("StartRun of globex's flow");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let (status, answer) = start_as(&daemon, API_KEY, "ops", ada.clone()).await;
    assert_eq!(
        status, 201,
        "a key without a tenant starts any flow: {answer}"
    );

    // acme's run emitted its event for acme (to acme's endpoint and the
    // shared one); the operator's flow emitted one without a tenant (to the
    // shared endpoint only).
    poll_until(&mut admin, &acme_run, RunState::Succeeded).await;
    let to_acme = received_at(&mut sink, 3, "/acme").await;
    assert_eq!(to_acme.len(), 1, "{to_acme:?}");
    assert_eq!(to_acme[0].1, "acme");

    // Its inputs cannot make it publish for globex.
    let (status, answer) = start_as(
        &daemon,
        ACME_KEY,
        "acme-welcome",
        json!({"email": "ada@example.com", "tenant": "globex"}),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let run = answer["id"].as_str().expect("a run id");
    let detail = poll_until(&mut admin, run, RunState::Failed).await;
    let log = log_text(&detail);
    assert!(
        log.contains("names tenant `globex`, but this flow belongs to tenant `acme`"),
        "{log}"
    );

    // Events start acme's flow only when they are acme's.
    let signup = |tenant: Option<&str>| {
        let mut event = json!({"name": "signup.created", "payload": {"email": "bo@example.com"}});
        if let Some(tenant) = tenant {
            event["tenant_id"] = json!(tenant);
        }
        event
    };
    let runs_before = run_count(&mut admin).await;
    assert_eq!(matched(&daemon, API_KEY, signup(Some("globex"))).await, 0);
    assert_eq!(matched(&daemon, API_KEY, signup(None)).await, 0);
    assert_eq!(run_count(&mut admin).await, runs_before);
    assert_eq!(matched(&daemon, API_KEY, signup(Some("acme"))).await, 1);
    assert_eq!(run_count(&mut admin).await, runs_before + 1);

    // A subscription naming acme keeps the flow from moving to globex.
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                inputs: [("email".to_string(), "{{ event.payload.email }}".to_string())].into(),
                ..subscription("acme-pinned", "acme", "flow:acme-welcome")
            }),
        })
        .await
        .expect("acme's subscription to acme's flow");
    let flow = admin
        .get_flow(hookyard::v1::GetFlowRequest {
            id: "acme-welcome".into(),
        })
        .await
        .expect("GetFlow")
        .into_inner();
    let status = admin
        .update_flow(UpdateFlowRequest {
            definition_yaml: flow
                .definition_yaml
                .replace("tenant_id: acme", "tenant_id: globex"),
            version: flow.version,
        })
        .await
        .expect_err("moving acme's flow to globex");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("acme-pinned"), "{status:?}");
}

async fn run_count(admin: &mut Admin) -> usize {
    admin
        .list_runs(ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs
        .len()
}
