//! Admin objects with extreme values (durations of zero or centuries, a
//! million requests in flight, odd patterns and targets) and Admin queries
//! with arbitrary arguments. Every refusal names its field; whatever is
//! accepted can be read back and does not stop delivery.

use hookyard::v1::{
    self as pb, CreateEndpointRequest, CreateSubscriptionRequest, DeliveryFilter,
    GetDeliveryRequest, GetEndpointRequest, GetRunRequest, ListDeliveriesRequest,
    ListEndpointsRequest, ListRunsRequest, ListSubscriptionsRequest, RetryDeliveryRequest,
    RotateSourceTokenRequest, StartRunRequest, TestRouteRequest, UpdateEndpointRequest,
};
use proptest::{collection::btree_map, collection::vec, option, prelude::*};
use serde_json::json;
use tonic::Status;

use crate::{
    harness::{Admin, Daemon, TestConfig, SECRET},
    hostile::{
        assert_still_delivering, json, judge_status, name, object, raw_body, run, text, time_text,
    },
    sink::{Behaviour, TestReceiver},
    webhooks::source,
};

/// What an answer must be: OK, or a refusal that keeps the properties.
fn judge<T>(what: &str, answer: Result<T, Status>) -> Result<Option<T>, TestCaseError> {
    match answer {
        Ok(value) => Ok(Some(value)),
        Err(status) => judge_status(what, &status).map(|()| None),
    }
}

fn url(sink: String) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(sink),
        // Refused at once: nothing listens there, or the SSRF guard says no.
        Just("http://127.0.0.1:1/hook".to_string()),
        Just("http://10.1.2.3/hook".to_string()),
        Just("https://[::1]:1/".to_string()),
        Just("ftp://127.0.0.1/x".to_string()),
        Just("http://".to_string()),
        text(),
    ]
}

fn endpoint(sink: String) -> impl Strategy<Value = pb::Endpoint> {
    let millis = prop_oneof![
        Just(0u32),
        Just(1),
        Just(300_000),
        Just(300_001),
        Just(u32::MAX),
        any::<u32>()
    ];
    let delay = prop_oneof![
        Just(0u64),
        Just(2_592_000_000),
        Just(2_592_000_001),
        Just(i64::MAX as u64),
        Just(u64::MAX),
        any::<u64>()
    ];
    let in_flight = prop_oneof![
        Just(0u32),
        Just(1),
        Just(1024),
        Just(1025),
        Just(1_000_000),
        Just(u32::MAX)
    ];
    (
        prop_oneof![3 => "[a-z0-9_-]{1,12}", 1 => text()],
        url(sink),
        prop_oneof![Just(String::new()), Just(SECRET.to_string()), text()],
        btree_map(prop_oneof!["[a-z-]{1,12}", text()], text(), 0..3),
        millis,
        vec(delay, 0..24),
        in_flight,
        (
            any::<i32>(),
            text(),
            prop_oneof![2 => Just(String::new()), 1 => text()],
        ),
    )
        .prop_map(
            |(
                id,
                url,
                secret,
                headers,
                timeout_ms,
                retry,
                max_in_flight,
                (state, description, tenant_id),
            )| {
                pb::Endpoint {
                    id,
                    url,
                    tenant_id,
                    secret,
                    headers: headers.into_iter().collect(),
                    timeout_ms,
                    retry_schedule_ms: retry,
                    max_in_flight,
                    state,
                    description,
                    ..Default::default()
                }
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_with_extreme_values_are_refused_by_field_or_work() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let admin = daemon.admin_client();
    let url = sink.url();
    run(
        || option::weighted(0.95, endpoint(url)),
        |endpoint| {
            let mut admin = admin.clone();
            async move {
                let created = judge(
                    "CreateEndpoint",
                    admin
                        .create_endpoint(CreateEndpointRequest { endpoint })
                        .await,
                )?;
                let Some(created) = created.map(|r| r.into_inner()) else {
                    return Ok(());
                };
                let id = created.id.clone();
                judge(
                    "GetEndpoint",
                    admin.get_endpoint(GetEndpointRequest { id }).await,
                )?;
                judge(
                    "UpdateEndpoint",
                    admin
                        .update_endpoint(UpdateEndpointRequest {
                            endpoint: Some(created),
                        })
                        .await,
                )?;
                judge(
                    "ListEndpoints",
                    admin.list_endpoints(ListEndpointsRequest {}).await,
                )?;
                Ok(())
            }
        },
    );
    assert_still_delivering(&daemon, &mut sink, "after-admin-endpoints").await;
}

fn pattern() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("*".to_string()),
        Just("**".to_string()),
        Just("***".to_string()),
        Just("lead".to_string()),
        Just("a-b_c".to_string()),
        Just(String::new()),
        Just("a*".to_string()),
        ".{1,3}",
    ];
    prop_oneof![
        4 => vec(segment, 1..5).prop_map(|s| s.join(".")),
        1 => text(),
    ]
}

fn subscription() -> impl Strategy<Value = pb::Subscription> {
    (
        prop_oneof![3 => "[a-z0-9_.-]{1,16}", 1 => text()],
        vec(pattern(), 0..4),
        vec(pattern(), 0..2),
        prop_oneof![3 => Just(String::new()), 1 => text()],
        prop_oneof![
            Just("endpoint:crm".to_string()),
            Just("endpoint:nope".to_string()),
            Just("flow:nope".to_string()),
            Just("consumer:group".to_string()),
            text(),
        ],
        any::<bool>(),
        btree_map(text(), text(), 0..2),
        text(),
    )
        .prop_map(
            |(name, patterns, exclude, tenant_id, target, enabled, inputs, description)| {
                pb::Subscription {
                    name,
                    patterns,
                    exclude,
                    tenant_id,
                    target,
                    enabled,
                    inputs: inputs.into_iter().collect(),
                    description,
                    ..Default::default()
                }
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_with_odd_patterns_are_refused_by_field_or_route() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let admin = daemon.admin_client();
    run(
        || (option::weighted(0.95, subscription()), name()),
        |(subscription, probe)| {
            let mut admin = admin.clone();
            async move {
                judge(
                    "CreateSubscription",
                    admin
                        .create_subscription(CreateSubscriptionRequest { subscription })
                        .await,
                )?;
                judge(
                    "ListSubscriptions",
                    admin.list_subscriptions(ListSubscriptionsRequest {}).await,
                )?;
                judge(
                    "TestRoute",
                    admin
                        .test_route(TestRouteRequest {
                            name: probe,
                            ..Default::default()
                        })
                        .await,
                )?;
                Ok(())
            }
        },
    );
    assert_still_delivering(&daemon, &mut sink, "after-admin-subscriptions").await;
}

/// One Admin query with arbitrary arguments.
#[derive(Debug, Clone)]
enum Query {
    ListDeliveries(ListDeliveriesRequest),
    GetDelivery(u64),
    RetryDelivery(u64),
    TestRoute(TestRouteRequest),
    RotateSourceToken(RotateSourceTokenRequest),
    StartRun(StartRunRequest),
    ListRuns(ListRunsRequest),
    GetRun(String),
    CreateFlow(String),
}

fn query() -> impl Strategy<Value = Query> {
    let id = prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::MAX),
        Just(i64::MAX as u64 + 1),
        any::<u64>()
    ];
    let page = prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()];
    let grace = option::of(
        (
            prop_oneof![
                any::<i64>(),
                Just(i64::MIN),
                Just(i64::MAX),
                Just(-1),
                Just(86_400 * 30)
            ],
            prop_oneof![
                any::<i32>(),
                Just(-1),
                Just(999_999_999),
                Just(1_000_000_000)
            ],
        )
            .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
    );
    let inputs = prop_oneof![
        3 => btree_map(
            prop_oneof![Just("when".to_string()), Just("email".to_string()), text()],
            prop_oneof![time_text().prop_map(serde_json::Value::String), json()],
            0..3,
        )
        .prop_map(|m| object(m).to_string().into_bytes()),
        1 => raw_body(),
    ];
    prop_oneof![
        (
            pattern(),
            any::<i32>(),
            text(),
            text(),
            page.clone(),
            text()
        )
            .prop_map(
                |(event_name, status, endpoint_id, subscription_id, page_size, page_token)| {
                    Query::ListDeliveries(ListDeliveriesRequest {
                        filter: Some(DeliveryFilter {
                            status,
                            endpoint_id,
                            subscription_id,
                            event_name,
                        }),
                        page_size,
                        page_token,
                    })
                }
            ),
        id.clone().prop_map(Query::GetDelivery),
        id.prop_map(Query::RetryDelivery),
        (
            name(),
            text(),
            prop_oneof![json().prop_map(|v| v.to_string().into_bytes()), raw_body()]
        )
            .prop_map(
                |(name, tenant_id, payload)| Query::TestRoute(TestRouteRequest {
                    name,
                    tenant_id,
                    payload,
                })
            ),
        (prop_oneof![Just("form".to_string()), text()], grace).prop_map(|(id, grace_period)| {
            Query::RotateSourceToken(RotateSourceTokenRequest { id, grace_period })
        }),
        (prop_oneof![Just("timer".to_string()), text()], inputs)
            .prop_map(|(flow_id, inputs)| Query::StartRun(StartRunRequest { flow_id, inputs })),
        (text(), any::<i32>(), text(), page, text()).prop_map(
            |(flow_id, state, correlation_key, page_size, page_token)| {
                Query::ListRuns(ListRunsRequest {
                    flow_id,
                    state,
                    correlation_key,
                    page_size,
                    page_token,
                })
            }
        ),
        text().prop_map(Query::GetRun),
        flow_yaml().prop_map(Query::CreateFlow),
    ]
}

/// Flow definitions whose durations are anything, and YAML that is not one.
fn flow_yaml() -> impl Strategy<Value = String> {
    let duration = || prop_oneof![3 => "[0-9]{1,22}(ns|ms|s|m|h|d|w|y)", 1 => text()];
    prop_oneof![
        3 => ("[a-z]{1,8}", duration(), duration(), vec(duration(), 0..3), time_text()).prop_map(
            |(id, delay, timeout, retry, until)| {
                let retry = serde_json::to_string(&retry).unwrap_or_default();
                format!(
                    "id: {id}\nsteps:\n  - {{id: a, delay: {}}}\n  - {{id: b, until: {}}}\n  \
                     - {{id: c, http: {{url: 'http://127.0.0.1:1/', timeout: {}, retry: {retry}}}}}\n",
                    json!(delay),
                    json!(until),
                    json!(timeout),
                )
            }
        ),
        1 => text(),
        1 => Just(String::new()),
    ]
}

async fn ask(admin: &mut Admin, query: Query) -> Result<(), TestCaseError> {
    match query {
        Query::ListDeliveries(r) => {
            judge("ListDeliveries", admin.list_deliveries(r).await)?;
        }
        Query::GetDelivery(id) => {
            judge(
                "GetDelivery",
                admin.get_delivery(GetDeliveryRequest { id }).await,
            )?;
        }
        Query::RetryDelivery(id) => {
            judge(
                "RetryDelivery",
                admin.retry_delivery(RetryDeliveryRequest { id }).await,
            )?;
        }
        Query::TestRoute(r) => {
            judge("TestRoute", admin.test_route(r).await)?;
        }
        Query::RotateSourceToken(r) => {
            judge("RotateSourceToken", admin.rotate_source_token(r).await)?;
        }
        Query::StartRun(r) => {
            judge("StartRun", admin.start_run(r).await)?;
        }
        Query::ListRuns(r) => {
            judge("ListRuns", admin.list_runs(r).await)?;
        }
        Query::GetRun(id) => {
            judge("GetRun", admin.get_run(GetRunRequest { id }).await)?;
        }
        Query::CreateFlow(definition_yaml) => {
            judge(
                "CreateFlow",
                admin
                    .create_flow(pb::CreateFlowRequest { definition_yaml })
                    .await,
            )?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_queries_with_arbitrary_arguments_never_break_the_daemon() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::crm(&sink.url())
        .source(source("form", "lead.form", json!({})))
        .flow(json!({
            "id": "timer",
            "inputs": {"when": {"type": "datetime"}, "email": {"type": "email"}},
            "steps": [
                {"id": "wait", "until": "{{ inputs.when }}"},
                {"id": "later", "until": "{{ inputs.when | plus('3650d') }}"},
                {"id": "note", "log": "{{ inputs.email }}"}
            ]
        }));
    let daemon = Daemon::start(config).await;
    let admin = daemon.admin_client();
    run(query, |query| {
        let mut admin = admin.clone();
        async move { ask(&mut admin, query).await }
    });
    assert_still_delivering(&daemon, &mut sink, "after-admin-queries").await;
}

/// U+0000 in an id or a filter (PostgreSQL refuses it in any text value) is
/// the caller's input, never an outage: nothing stored can match it.
#[tokio::test]
async fn a_nul_in_an_id_or_a_filter_matches_nothing_and_is_no_outage() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let answers = [
        admin
            .get_run(GetRunRequest { id: "\0".into() })
            .await
            .map(drop),
        admin
            .get_endpoint(GetEndpointRequest { id: "crm\0".into() })
            .await
            .map(drop),
        admin
            .list_runs(ListRunsRequest {
                flow_id: "\0".into(),
                ..ListRunsRequest::default()
            })
            .await
            .map(drop),
        admin
            .list_deliveries(ListDeliveriesRequest {
                filter: Some(DeliveryFilter {
                    endpoint_id: "a\0b".into(),
                    ..DeliveryFilter::default()
                }),
                page_size: 10,
                page_token: String::new(),
            })
            .await
            .map(drop),
    ];
    for answer in answers {
        if let Err(status) = answer {
            assert!(
                judge_status("a NUL", &status).is_ok(),
                "a caller's error, not an outage: {status:?}"
            );
        }
    }
    let read = daemon
        .http
        .get(daemon.url("/v1/runs/%00"))
        .bearer_auth(crate::harness::API_KEY)
        .send()
        .await
        .expect("GET /v1/runs/%00");
    assert_eq!(read.status(), 404);
    assert_still_delivering(&daemon, &mut sink, "after-nul").await;
}
