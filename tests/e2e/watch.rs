//! `WatchDeliveries` streams every state change, and only what its filter
//! asks for.

use hookyard::v1::{DeliveryFilter, DeliveryStatus};

use crate::{
    api::{http_event, publish_http, Watch},
    harness::{Daemon, EndpointSpec, TestConfig},
    sink::{Behaviour, TestReceiver},
};

#[tokio::test]
async fn every_state_change_is_streamed_in_order() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut watch = Watch::all(&mut daemon.admin_client()).await;

    let event = publish_http(&daemon, &http_event("lead.created")).await;
    let (delivery, statuses) = watch
        .statuses_until(
            &event.id,
            &[DeliveryStatus::Succeeded, DeliveryStatus::Dead],
        )
        .await;
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Pending,
            DeliveryStatus::InFlight,
            DeliveryStatus::Succeeded
        ]
    );
    assert_eq!(delivery.event_name, "lead.created");
    assert_eq!(delivery.subscription_name, "leads-to-crm");
    assert_eq!(delivery.target, "endpoint:crm");
    assert_eq!(delivery.attempts, 1);
    assert_eq!(delivery.last_status_code, 200);
}

#[tokio::test]
async fn a_name_filter_only_streams_matching_deliveries() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::new()
        .endpoint(EndpointSpec::new("crm", &sink.url()))
        .subscription("all-to-crm", &["lead.*", "order.*"], &[], "endpoint:crm");
    let daemon = Daemon::start(config).await;
    let filter = DeliveryFilter {
        event_name: "order.*".to_string(),
        ..DeliveryFilter::default()
    };
    let mut watch = Watch::open(&mut daemon.admin_client(), filter).await;

    // The lead's updates, had the filter let them through, would come first.
    let lead = publish_http(&daemon, &http_event("lead.created")).await;
    assert_eq!(lead.matched, 1);
    let order = publish_http(&daemon, &http_event("order.created")).await;
    assert_eq!(order.matched, 1);

    loop {
        let delivery = watch.next().await;
        assert_eq!(
            delivery.event_id, order.id,
            "the filter `order.*` let through {delivery:?}"
        );
        if delivery.status() == DeliveryStatus::Succeeded {
            break;
        }
    }
}

#[tokio::test]
async fn an_open_watch_does_not_hold_up_shutdown() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let mut daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let _deliveries = Watch::all(&mut admin).await;
    let _runs = crate::runs::RunWatch::open(&mut admin).await;
    let asked = std::time::Instant::now();
    daemon.stop().await;
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(3),
        "stopping took {:?} with watchers open",
        asked.elapsed()
    );
}
