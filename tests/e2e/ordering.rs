//! Ordering keys through the Admin API and a real receiver: deliveries with
//! the same key arrive one at a time in publish order, a failing key holds
//! only itself while the others flow, and a key's queue survives `kill -9`.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use hookyard::v1::{
    CreateEndpointRequest, CreateSubscriptionRequest, DeliveryFilter, DeliveryStatus, Endpoint,
    ListDeliveriesRequest, Subscription,
};
use serde_json::{json, Value};

use crate::{
    api::publish_http,
    harness::{Admin, Daemon, TestConfig, SECRET},
    sink::{Behaviour, Received, TestReceiver},
};

/// What the receiver takes per request: long enough that two requests of
/// one key sent together would overlap.
const SLOW_MS: u64 = 40;

async fn ordered_endpoint(admin: &mut Admin, url: &str) {
    admin
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                id: "orders".into(),
                url: url.into(),
                secret: SECRET.into(),
                retry_schedule_ms: vec![0, 1000, 1000, 1000, 1000, 1000],
                max_in_flight: 16,
                ordering_key: "{{ event.payload.customer }}".into(),
                ..Endpoint::default()
            }),
        })
        .await
        .expect("CreateEndpoint");
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: "orders".into(),
                patterns: vec!["order.*".into()],
                target: "endpoint:orders".into(),
                enabled: true,
                ..Subscription::default()
            }),
        })
        .await
        .expect("CreateSubscription");
}

/// Publishes `count` events whose customers take turns (`c1`, `c2`, `c3`,
/// `bad`); every fifth has no customer. Their ids, in publish order.
async fn publish_interleaved(daemon: &Daemon, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let payload = if n % 5 == 4 {
            json!({"n": n})
        } else {
            let customer = ["c1", "c2", "c3", "bad"][n % 4];
            json!({"n": n, "customer": customer})
        };
        let accepted =
            publish_http(daemon, &json!({"name": "order.placed", "payload": payload})).await;
        ids.push(accepted.id);
    }
    ids
}

/// Each customer's requests in arrival order: (n, arrival).
fn by_customer(received: &[Received]) -> BTreeMap<String, Vec<(u64, Instant)>> {
    let mut keys: BTreeMap<String, Vec<(u64, Instant)>> = BTreeMap::new();
    for r in received {
        let payload: Value = r.json()["payload"].clone();
        let customer = payload["customer"].as_str().unwrap_or("-").to_string();
        let n = payload["n"].as_u64().expect("n");
        keys.entry(customer).or_default().push((n, r.at));
    }
    for arrivals in keys.values_mut() {
        arrivals.sort_by_key(|&(_, at)| at);
    }
    keys
}

/// Every key's requests went one at a time (no two within the receiver's
/// answer time) and in publish order (a retry repeats the last one, never
/// an earlier one).
fn assert_in_order_one_at_a_time(keys: &BTreeMap<String, Vec<(u64, Instant)>>) {
    for (customer, arrivals) in keys.iter().filter(|(c, _)| *c != "-") {
        for pair in arrivals.windows(2) {
            let ((n0, at0), (n1, at1)) = (pair[0], pair[1]);
            assert!(
                n1 >= n0,
                "{customer}: n={n1} arrived after n={n0}: {arrivals:?}"
            );
            assert!(
                at1.duration_since(at0) >= Duration::from_millis(SLOW_MS - 5),
                "{customer}: n={n0} and n={n1} overlapped ({:?} apart)",
                at1.duration_since(at0)
            );
        }
    }
}

#[tokio::test]
async fn one_key_at_a_time_in_publish_order_and_a_failing_key_holds_only_itself() {
    let mut sink = TestReceiver::start(Behaviour::SlowFailMarked {
        delay_ms: SLOW_MS,
        marker: r#""customer":"bad""#,
        times: 3,
        status: 503,
    })
    .await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();

    let refused = admin
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                id: "broken".into(),
                url: sink.url(),
                ordering_key: "{{ event.payload.customer ".into(),
                ..Endpoint::default()
            }),
        })
        .await
        .expect_err("a key template that does not compile is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("ordering_key"),
        "{}",
        refused.message()
    );

    ordered_endpoint(&mut admin, &sink.url()).await;
    let ids = publish_interleaved(&daemon, 40).await;

    // While `bad`'s first delivery fails, its next ones wait, parked.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let listed = admin
        .list_deliveries(ListDeliveriesRequest {
            filter: Some(DeliveryFilter {
                endpoint_id: "orders".into(),
                ..DeliveryFilter::default()
            }),
            page_size: 100,
            ..ListDeliveriesRequest::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    assert!(
        listed
            .iter()
            .any(|d| d.ordering_key == "bad" && d.parked && d.next_attempt_at.is_none()),
        "a later `bad` delivery is parked: {listed:?}"
    );

    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let received = sink.until_ids(&ids, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut received = received;
    received.extend(sink.drain());
    let keys = by_customer(&received);
    assert_in_order_one_at_a_time(&keys);

    let bad = &keys["bad"];
    let first_bad = bad[0].0;
    assert!(
        bad[..4].iter().all(|&(n, _)| n == first_bad),
        "bad's first delivery was tried four times (three failures) before the next: {bad:?}"
    );
    // While bad's head was failing, the other keys kept going (each key
    // sends one at a time, so two of a key in that window means it was not
    // held up by bad).
    let (bad_failing, bad_done) = (bad[0].1, bad[3].1);
    for customer in ["c1", "c2", "c3"] {
        let meanwhile = keys[customer]
            .iter()
            .filter(|&&(_, at)| at > bad_failing && at < bad_done)
            .count();
        assert!(
            meanwhile >= 2,
            "{customer} kept going while bad was failing: {:?}",
            keys[customer]
        );
        assert_eq!(keys[customer].len(), 8, "{customer}: {:?}", keys[customer]);
    }
    assert_eq!(bad.len(), 8 + 3, "bad: {bad:?}");
    assert_eq!(keys["-"].len(), 8, "unordered: {:?}", keys["-"]);

    let listed = admin
        .list_deliveries(ListDeliveriesRequest {
            filter: Some(DeliveryFilter {
                endpoint_id: "orders".into(),
                ..DeliveryFilter::default()
            }),
            page_size: 100,
            ..ListDeliveriesRequest::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    assert_eq!(listed.len(), 40);
    assert!(
        listed
            .iter()
            .all(|d| d.status == DeliveryStatus::Succeeded as i32 && !d.parked),
        "{listed:?}"
    );
}

#[tokio::test]
async fn a_subscription_key_overrides_the_endpoints_and_parked_deliveries_survive_kill_9() {
    let mut sink = TestReceiver::start(Behaviour::SlowFailMarked {
        delay_ms: SLOW_MS,
        marker: r#""region":"eu""#,
        times: 2,
        status: 500,
    })
    .await;
    let mut daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    ordered_endpoint(&mut admin, &sink.url()).await;
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: "regions".into(),
                patterns: vec!["region.*".into()],
                target: "endpoint:orders".into(),
                enabled: true,
                ordering_key: "{{ event.payload.region }}".into(),
                ..Subscription::default()
            }),
        })
        .await
        .expect("a subscription with its own key");

    let mut ids = Vec::new();
    for n in 0..6 {
        let region = if n % 2 == 0 { "eu" } else { "us" };
        let accepted = publish_http(
            &daemon,
            &json!({"name": "region.sale", "payload": {"n": n, "region": region, "customer": "same"}}),
        )
        .await;
        ids.push(accepted.id);
    }
    // `eu`'s head is failing and its others are parked: kill the daemon
    // before any of them is through.
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.kill9().await;
    daemon.restart_with(TestConfig::new()).await;

    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut received = sink.until_ids(&ids, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    received.extend(sink.drain());
    let mut regions: BTreeMap<String, Vec<(u64, Instant)>> = BTreeMap::new();
    for r in &received {
        let payload = r.json()["payload"].clone();
        regions
            .entry(payload["region"].as_str().unwrap_or("-").to_string())
            .or_default()
            .push((payload["n"].as_u64().expect("n"), r.at));
    }
    for arrivals in regions.values_mut() {
        arrivals.sort_by_key(|&(_, at)| at);
    }
    // Keyed by region, not by the endpoint's customer (`same` for all).
    assert_in_order_one_at_a_time(&regions);
    let eu: Vec<u64> = regions["eu"].iter().map(|&(n, _)| n).collect();
    let mut distinct = eu.clone();
    distinct.dedup();
    assert_eq!(distinct, vec![0, 2, 4], "eu in publish order: {eu:?}");
    // Under the endpoint's key (`same` for all) `us` would wait for `eu`.
    let us_first = regions["us"].first().expect("us").1;
    let eu_first_success = regions["eu"][2].1;
    assert!(
        regions["us"].len() == 3 && us_first < eu_first_success,
        "us flowed: {:?}",
        regions["us"]
    );
}

#[tokio::test]
async fn ordering_keys_come_from_the_config_file_too() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::new()
        .endpoint(crate::harness::EndpointSpec::new("crm", &sink.url()))
        .subscription_entry(json!({
            "name": "leads",
            "patterns": ["lead.*"],
            "target": "endpoint:crm",
            "ordering_key": "{{ event.payload.account }}",
        }));
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let accepted = publish_http(
        &daemon,
        &json!({"name": "lead.created", "payload": {"account": "acme"}}),
    )
    .await;
    sink.until_ids(&[accepted.id.as_str()], Duration::from_secs(10))
        .await;
    let listed = admin
        .list_deliveries(ListDeliveriesRequest::default())
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].ordering_key, "acme");
}

#[tokio::test]
async fn the_last_parked_delivery_goes_when_its_head_finishes_with_nothing_else_published() {
    let mut sink = TestReceiver::start(Behaviour::SlowFailMarked {
        delay_ms: 1,
        marker: r#""first":true"#,
        times: 1,
        status: 500,
    })
    .await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    ordered_endpoint(&mut admin, &sink.url()).await;
    let head = publish_http(
        &daemon,
        &json!({"name": "order.placed", "payload": {"customer": "k", "first": true}}),
    )
    .await;
    let last = publish_http(
        &daemon,
        &json!({"name": "order.placed", "payload": {"customer": "k"}}),
    )
    .await;
    let received = sink
        .until_ids(
            &[head.id.as_str(), last.id.as_str()],
            Duration::from_secs(10),
        )
        .await;
    let order: Vec<&str> = received.iter().map(|r| r.webhook_id()).collect();
    assert_eq!(
        order,
        vec![head.id.as_str(), head.id.as_str(), last.id.as_str()],
        "the head failed once, then went, then the parked one"
    );
}
