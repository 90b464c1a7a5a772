//! The Admin API: routes created at runtime deliver; optimistic concurrency,
//! pattern errors, TestRoute, and listing deliveries with filters and pages.

use std::collections::HashSet;

use hookyard::v1::{
    CreateEndpointRequest, CreateSubscriptionRequest, DeliveryFilter, DeliveryStatus, Endpoint,
    EndpointState, ListDeliveriesRequest, RetryDeliveryRequest, Subscription, TestRouteRequest,
    UpdateSubscriptionRequest,
};
use tonic::Code;

use crate::{
    api::{http_event, publish_http, Watch},
    harness::{Admin, Daemon, EndpointSpec, TestConfig, SECRET},
    sink::{assert_signed, Behaviour, TestReceiver},
};

#[tokio::test]
async fn a_route_created_over_admin_delivers() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let subscription = create_route(&mut admin, &sink.url()).await;
    assert!(!subscription.id.is_empty());
    assert!(subscription.enabled);

    let event = publish_http(&daemon, &http_event("lead.created")).await;
    assert_eq!(event.matched, 1);
    let received = sink.next().await;
    assert_eq!(received.webhook_id(), event.id);
    assert_eq!(received.header("x-env"), "test");
    assert_signed(&received, SECRET);
}

#[tokio::test]
async fn an_update_with_a_stale_version_fails_the_precondition() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let read = create_route(&mut admin, &sink.url()).await;

    let updated = update_description(&mut admin, &read, "first edit")
        .await
        .expect("an update with the current version");
    assert_ne!(updated.version, read.version, "an update bumps the version");
    assert_eq!(updated.description, "first edit");

    let status = update_description(&mut admin, &read, "lost edit")
        .await
        .expect_err("an update with the version read before the first edit");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

#[tokio::test]
async fn an_invalid_pattern_names_the_field_and_the_position() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    create_endpoint(&mut admin, &sink.url()).await;

    let mut subscription = ops_subscription();
    subscription.patterns = vec!["lead.*x".to_string()];
    let status = admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(subscription),
        })
        .await
        .expect_err("`lead.*x` is not a pattern");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let message = status.message();
    assert!(message.contains("patterns[0]"), "{message}");
    // `*` at byte 5 must be a whole segment; `x` at byte 6 cannot follow it.
    let position = message
        .split("position ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<usize>().ok());
    assert!(
        matches!(position, Some(5 | 6)),
        "the message should give the position of the bad character: {message}"
    );
}

#[tokio::test]
async fn test_route_names_the_matching_subscriptions() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config =
        TestConfig::crm(&sink.url()).subscription("everything", &["**"], &[], "endpoint:crm");
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();

    for (name, expected) in [
        ("lead.created", &["everything", "leads-to-crm"][..]),
        ("lead.test", &["everything"][..]),
        ("order.created", &["everything"][..]),
    ] {
        let matched = admin
            .test_route(TestRouteRequest {
                name: name.to_string(),
                ..TestRouteRequest::default()
            })
            .await
            .expect("TestRoute")
            .into_inner()
            .matched;
        let mut names: Vec<&str> = matched.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, expected, "TestRoute {name}");
    }
}

#[tokio::test]
async fn deliveries_are_listed_by_status_and_endpoint_in_pages() {
    let crm = TestReceiver::start(Behaviour::Always(200)).await;
    let mut down = TestReceiver::start(Behaviour::Always(500)).await;
    let config = TestConfig::crm(&crm.url())
        .endpoint(EndpointSpec::new("down", &down.url()).retry_schedule(&["0s"]))
        .subscription("orders-to-down", &["order.*"], &[], "endpoint:down");
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = Watch::all(&mut admin).await;

    let mut ids = Vec::new();
    for name in ["lead.created", "lead.updated", "order.created"] {
        ids.push(publish_http(&daemon, &http_event(name)).await.id);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let finals = watch
        .until_all(&ids, &[DeliveryStatus::Succeeded, DeliveryStatus::Dead])
        .await;
    let statuses: Vec<DeliveryStatus> = finals.iter().map(|d| d.status()).collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Succeeded,
            DeliveryStatus::Succeeded,
            DeliveryStatus::Dead
        ]
    );

    let succeeded = list_all_pages(&mut admin, status_filter(DeliveryStatus::Succeeded)).await;
    assert_eq!(succeeded, HashSet::from([finals[0].id, finals[1].id]));
    let dead = list_all_pages(&mut admin, status_filter(DeliveryStatus::Dead)).await;
    assert_eq!(dead, HashSet::from([finals[2].id]));
    let to_down = DeliveryFilter {
        endpoint_id: "down".to_string(),
        ..DeliveryFilter::default()
    };
    assert_eq!(
        list_all_pages(&mut admin, to_down).await,
        HashSet::from([finals[2].id])
    );

    // A dead delivery can be retried by hand.
    down.drain();
    admin
        .retry_delivery(RetryDeliveryRequest { id: finals[2].id })
        .await
        .expect("RetryDelivery");
    assert_eq!(down.next().await.webhook_id(), ids[2]);
}

/// Creates endpoint `ops` at `url` and subscription `ops-leads` (`lead.*`).
async fn create_route(admin: &mut Admin, url: &str) -> Subscription {
    create_endpoint(admin, url).await;
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(ops_subscription()),
        })
        .await
        .expect("CreateSubscription")
        .into_inner()
}

async fn create_endpoint(admin: &mut Admin, url: &str) -> Endpoint {
    let endpoint = admin
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                id: "ops".to_string(),
                url: url.to_string(),
                secret: SECRET.to_string(),
                headers: [("X-Env".to_string(), "test".to_string())].into(),
                retry_schedule_ms: vec![0, 200],
                ..Endpoint::default()
            }),
        })
        .await
        .expect("CreateEndpoint")
        .into_inner();
    assert_eq!(endpoint.state(), EndpointState::Enabled);
    assert_ne!(
        endpoint.secret, SECRET,
        "the secret is never returned in full"
    );
    endpoint
}

fn ops_subscription() -> Subscription {
    Subscription {
        name: "ops-leads".to_string(),
        patterns: vec!["lead.*".to_string()],
        target: "endpoint:ops".to_string(),
        enabled: true,
        ..Subscription::default()
    }
}

async fn update_description(
    admin: &mut Admin,
    read: &Subscription,
    description: &str,
) -> Result<Subscription, tonic::Status> {
    let subscription = Subscription {
        description: description.to_string(),
        ..read.clone()
    };
    admin
        .update_subscription(UpdateSubscriptionRequest {
            subscription: Some(subscription),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn status_filter(status: DeliveryStatus) -> DeliveryFilter {
    DeliveryFilter {
        status: status as i32,
        ..DeliveryFilter::default()
    }
}

/// Follows `next_page_token` one delivery at a time; every delivery listed
/// must match the filter's status.
async fn list_all_pages(admin: &mut Admin, filter: DeliveryFilter) -> HashSet<u64> {
    let mut ids = HashSet::new();
    let mut page_token = String::new();
    for page in 0.. {
        assert!(page < 10, "paging does not end: {ids:?}");
        let response = admin
            .list_deliveries(ListDeliveriesRequest {
                filter: Some(filter.clone()),
                page_size: 1,
                page_token,
            })
            .await
            .expect("ListDeliveries")
            .into_inner();
        assert!(response.deliveries.len() <= 1, "page_size 1: {response:?}");
        for delivery in &response.deliveries {
            if filter.status != 0 {
                assert_eq!(delivery.status, filter.status, "{delivery:?}");
            }
            assert!(ids.insert(delivery.id), "listed twice: {delivery:?}");
        }
        if response.next_page_token.is_empty() {
            break;
        }
        page_token = response.next_page_token;
    }
    ids
}
