//! Two daemons on one PostgreSQL: an Admin change made through one reaches
//! the other within a second (LISTEN/NOTIFY, with a periodic version check
//! behind it), so events published on the other are routed by it.

use std::time::{Duration, Instant};

use hookyard::v1::{CreateSubscriptionRequest, Subscription};
use serde_json::json;

use crate::{
    api::{http_event, publish_http},
    harness::{Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

#[tokio::test]
async fn a_subscription_made_on_one_daemon_routes_events_published_on_another_within_a_second() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let first = Daemon::start(TestConfig::crm(&sink.url())).await;
    let url = first
        .postgres_url()
        .expect("this test runs on PostgreSQL")
        .to_string();
    let second =
        Daemon::start(TestConfig::crm(&sink.url()).set("storage.postgres_url", json!(url))).await;
    assert_eq!(
        publish_http(&second, &http_event("order.created"))
            .await
            .matched,
        0,
        "nothing routes orders yet"
    );

    first
        .admin_client()
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: "orders".to_string(),
                patterns: vec!["order.*".to_string()],
                target: "endpoint:crm".to_string(),
                enabled: true,
                ..Subscription::default()
            }),
        })
        .await
        .expect("CreateSubscription on the first daemon");
    let changed = Instant::now();

    let routed = loop {
        let accepted = publish_http(&second, &http_event("order.created")).await;
        if accepted.matched == 1 {
            break accepted;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the second daemon still routes nothing a second after the change"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sink.until_ids(&[routed.id.as_str()], WAIT).await;
}
