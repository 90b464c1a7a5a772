//! `Admin.GetStats`: what each subscription matched and how each endpoint
//! fared over the last hour, as the TUI's tables show it.

use hookyard::v1::{DeliveryStatus, GetStatsRequest};

use crate::{
    api::{http_event, publish_http, Watch},
    harness::{Daemon, EndpointSpec, TestConfig},
    sink::{Behaviour, TestReceiver},
};

#[tokio::test]
async fn stats_count_matches_outcomes_backlog_and_the_last_error() {
    let mut ok = TestReceiver::start(Behaviour::Always(200)).await;
    let down = TestReceiver::start(Behaviour::Always(500)).await;
    let config = TestConfig::crm(&ok.url())
        .endpoint(EndpointSpec::new("down", &down.url()).retry_schedule(&["1h", "1h"]))
        .subscription("orders-to-down", &["order.*"], &[], "endpoint:down");
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = Watch::all(&mut admin).await;

    publish_http(&daemon, &http_event("lead.created")).await;
    publish_http(&daemon, &http_event("lead.updated")).await;
    let order = publish_http(&daemon, &http_event("order.placed")).await;
    ok.next().await;
    ok.next().await;
    watch
        .statuses_until(&order.id, &[DeliveryStatus::Failed, DeliveryStatus::Dead])
        .await;
    // The second lead's success may still be on its way to storage.
    let stats = loop {
        let stats = admin
            .get_stats(GetStatsRequest {})
            .await
            .expect("GetStats")
            .into_inner();
        let crm_done = stats
            .endpoints
            .iter()
            .any(|e| e.endpoint_id == "crm" && e.succeeded == 2);
        if crm_done {
            break stats;
        }
        watch.next().await;
    };

    let subs = admin
        .list_subscriptions(hookyard::v1::ListSubscriptionsRequest {})
        .await
        .expect("ListSubscriptions")
        .into_inner()
        .subscriptions;
    let id_of = |name: &str| {
        subs.iter()
            .find(|s| s.name == name)
            .map(|s| s.id.clone())
            .expect("a subscription from the config")
    };
    let matched = |id: String| {
        stats
            .subscriptions
            .iter()
            .find(|s| s.subscription_id == id)
            .map_or(0, |s| s.matched)
    };
    assert_eq!(matched(id_of("leads-to-crm")), 2);
    assert_eq!(matched(id_of("orders-to-down")), 1);

    let endpoint = |id: &str| {
        stats
            .endpoints
            .iter()
            .find(|e| e.endpoint_id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no stats for {id}: {stats:?}"))
    };
    let crm = endpoint("crm");
    assert_eq!((crm.succeeded, crm.failed, crm.backlog), (2, 0, 0));
    assert!(crm.last_error.is_empty());
    let down = endpoint("down");
    assert_eq!((down.succeeded, down.failed, down.backlog), (0, 1, 1));
    assert!(down.last_error.contains("500"), "{down:?}");
    assert!(down.last_error_at.is_some());
    assert!(stats.since.is_some());
}
