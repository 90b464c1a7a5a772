//! Several daemons on one PostgreSQL: an Admin change made through one
//! reaches the others within a second; the endpoints are shared out by
//! leases, so each delivery is sent by one daemon and every event reaches
//! every endpoint once; a daemon killed with -9 has its endpoints and its
//! flow runs taken over when its leases expire.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use hookyard::v1::{CreateSubscriptionRequest, PublishRequest, RunState, Subscription};
use hookyard_bench::sink::{Sink, SinkConfig};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::Ordering;
use tokio::task::JoinSet;

use crate::{
    api::{grpc_event, http_event, publish_http},
    faults_kill::Load,
    harness::{Daemon, EndpointSpec, TestConfig, API_KEY, WAIT},
    runs::{poll_until, started},
    sink::{Behaviour, Received, TestReceiver},
};

/// Short leases, so a killed daemon's work moves within seconds.
const LEASE: &str = "2s";
const ENDPOINTS: usize = 6;

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

/// `ENDPOINTS` endpoints, each with a sink of its own and a subscription to
/// `lead.*`; the leases short.
fn fan_out(sinks: &[TestReceiver]) -> TestConfig {
    let mut config = TestConfig::new().set("storage.lease_timeout", json!(LEASE));
    for (i, sink) in sinks.iter().enumerate() {
        let id = format!("ep{i}");
        config = config
            .endpoint(EndpointSpec::new(&id, &sink.url()))
            .subscription(
                &format!("to-{id}"),
                &["lead.*"],
                &[],
                &format!("endpoint:{id}"),
            );
    }
    config
}

/// Starts `n` daemons on the first one's database.
async fn cluster(config: &TestConfig, n: usize) -> Vec<Daemon> {
    let first = Daemon::start(config.clone()).await;
    let url = first
        .postgres_url()
        .expect("this test runs on PostgreSQL")
        .to_string();
    let mut daemons = vec![first];
    for _ in 1..n {
        daemons.push(
            Daemon::start(
                config
                    .clone()
                    .set("storage.postgres_url", json!(url.clone())),
            )
            .await,
        );
    }
    daemons
}

/// Which nodes hold live endpoint leases, read from the database.
async fn lease_holders(url: &str) -> HashMap<String, String> {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("connect to PostgreSQL");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT endpoint_id, node_id FROM endpoint_leases \
         WHERE expires_ms > (extract(epoch from clock_timestamp()) * 1000)::int8",
    )
    .fetch_all(&pool)
    .await
    .expect("read the leases");
    pool.close().await;
    rows.into_iter().collect()
}

/// Waits until the live leases cover every endpoint and are spread over
/// at least `nodes` daemons.
async fn leases_spread(url: &str, nodes: usize) -> HashMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let holders = lease_holders(url).await;
        let distinct: HashSet<&String> = holders.values().collect();
        if holders.len() == ENDPOINTS && distinct.len() >= nodes {
            return holders;
        }
        assert!(
            Instant::now() < deadline,
            "the endpoint leases never spread over {nodes} daemons: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids_of(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.webhook_id().to_string())
        .collect()
}

#[tokio::test]
async fn three_daemons_share_the_endpoints_and_every_event_reaches_every_endpoint_once() {
    let mut sinks = Vec::new();
    for _ in 0..ENDPOINTS {
        sinks.push(TestReceiver::start(Behaviour::Always(200)).await);
    }
    let daemons = cluster(&fan_out(&sinks), 3).await;
    let url = daemons[0].postgres_url().expect("PostgreSQL").to_string();
    let holders = leases_spread(&url, 3).await;

    let mut published = Vec::new();
    for i in 0..150 {
        let accepted = publish_http(&daemons[i % 3], &http_event("lead.created")).await;
        assert_eq!(accepted.matched, ENDPOINTS as u64);
        published.push(accepted.id);
    }
    let expected: Vec<&str> = published.iter().map(String::as_str).collect();
    for (i, sink) in sinks.iter_mut().enumerate() {
        let mut received = ids_of(&sink.until_ids(&expected, WAIT).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        received.extend(ids_of(&sink.drain()));
        let unique: HashSet<&String> = received.iter().collect();
        assert_eq!(
            received.len(),
            unique.len(),
            "endpoint ep{i} (leased by {:?}) received a delivery twice",
            holders.get(&format!("ep{i}"))
        );
    }
}

#[tokio::test]
async fn a_daemon_killed_with_9_has_its_endpoints_taken_over_and_no_acknowledged_event_is_lost() {
    let mut sinks = Vec::new();
    for _ in 0..ENDPOINTS {
        sinks.push(TestReceiver::start(Behaviour::Always(200)).await);
    }
    let mut daemons = cluster(&fan_out(&sinks), 3).await;
    let url = daemons[0].postgres_url().expect("PostgreSQL").to_string();
    leases_spread(&url, 3).await;

    let mut published = Vec::new();
    for i in 0..60 {
        published.push(
            publish_http(&daemons[i % 3], &http_event("lead.created"))
                .await
                .id,
        );
    }
    // The third daemon dies with whatever it was sending.
    daemons[2].kill9().await;
    let killed = Instant::now();
    for i in 0..60 {
        published.push(
            publish_http(&daemons[i % 2], &http_event("lead.created"))
                .await
                .id,
        );
    }
    let expected: Vec<&str> = published.iter().map(String::as_str).collect();
    for sink in &mut sinks {
        sink.until_ids(&expected, WAIT).await;
    }
    let holders = leases_spread(&url, 2).await;
    assert!(
        killed.elapsed() < WAIT,
        "every event arrived, {:?} after the kill",
        killed.elapsed()
    );
    let survivors: HashSet<&String> = holders.values().collect();
    assert_eq!(
        survivors.len(),
        2,
        "the two live daemons hold every endpoint: {holders:?}"
    );
}

#[tokio::test]
async fn a_flow_run_waiting_on_a_daemon_killed_with_9_finishes_on_another() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({
        "id": "later",
        "inputs": {"n": {"type": "integer", "required": true}},
        "steps": [
            {"id": "first", "http": {"url": sink.url(), "body": {"step": "first", "n": "{{ inputs.n }}"}}},
            {"id": "second", "delay": "3s", "http": {"url": sink.url(), "body": {"step": "second", "n": "{{ inputs.n }}"}}}
        ]
    });
    let config = TestConfig::new()
        .set("storage.lease_timeout", json!(LEASE))
        .flow(flow);
    let mut daemons = cluster(&config, 2).await;
    let id = started(&daemons[0], "later", json!({"n": 7})).await;
    assert_eq!(sink.next().await.json()["step"], "first");
    let mut admin = daemons[1].admin_client();
    // Killed once the first step's result is stored (a kill before that
    // sends it again, with the same Idempotency-Key: another test).
    poll_until(&mut admin, &id, RunState::Waiting).await;
    daemons[0].kill9().await;

    let second = sink.next().await;
    assert_eq!(second.json(), json!({"step": "second", "n": 7}));
    poll_until(&mut admin, &id, RunState::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sink.drain().is_empty(), "each step ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_daemons_under_http_and_grpc_load_lose_nothing_when_each_is_killed_in_turn() {
    const ACKS_PER_ROUND: usize = 150;
    // Failures keep retries pending across the kills as well.
    let mut sinks = Vec::new();
    let mut config = TestConfig::new().set("storage.lease_timeout", json!(LEASE));
    for i in 0..2 {
        let sink = Sink::start(SinkConfig {
            fail_share: 0.05,
            ..SinkConfig::default()
        })
        .await
        .expect("start a sink");
        let id = format!("ep{i}");
        config = config
            .endpoint(
                EndpointSpec::new(&id, &sink.url("/hook"))
                    .retry_schedule(&["0s", "100ms", "100ms", "100ms", "100ms", "100ms"]),
            )
            .subscription(
                &format!("to-{id}"),
                &["lead.*"],
                &[],
                &format!("endpoint:{id}"),
            );
        sinks.push(sink);
    }
    let mut daemons = cluster(&config, 3).await;

    let load = Load::default();
    let mut tasks = JoinSet::new();
    for daemon in &daemons {
        let (client, url, http_load) =
            (daemon.http.clone(), daemon.url("/v1/events"), load.clone());
        tasks.spawn(async move {
            while !http_load.stop.load(Ordering::Relaxed) {
                let id = http_load.next_id();
                let acked = client
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"id": id, "name": "lead.kill", "payload": {"n": id}}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::ACCEPTED);
                http_load.record(id, acked, &http_load.http_acks).await;
            }
        });
        let (mut events, grpc_load) = (daemon.events_client(), load.clone());
        tasks.spawn(async move {
            while !grpc_load.stop.load(Ordering::Relaxed) {
                let id = grpc_load.next_id();
                let mut event = grpc_event("lead.kill");
                event.id = id.clone();
                let acked = events
                    .publish(PublishRequest { event: Some(event) })
                    .await
                    .is_ok();
                grpc_load.record(id, acked, &grpc_load.grpc_acks).await;
            }
        });
    }

    let lease = Duration::from_secs(2);
    for (round, daemon) in daemons.iter_mut().enumerate() {
        load.wait_for((2 * round + 1) * ACKS_PER_ROUND).await;
        daemon.kill9().await;
        let killed = Instant::now();
        // The other two keep acknowledging, and take the dead one's
        // endpoints over once its leases expire.
        load.wait_for((2 * round + 2) * ACKS_PER_ROUND).await;
        tokio::time::sleep((lease + Duration::from_secs(1)).saturating_sub(killed.elapsed())).await;
        daemon.restart().await;
    }
    load.wait_for(7 * ACKS_PER_ROUND).await;
    load.stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a publisher task");
    }

    let acked = load.acked.lock().expect("the ack set").clone();
    let (http, grpc) = (
        load.http_acks.load(Ordering::Relaxed),
        load.grpc_acks.load(Ordering::Relaxed),
    );
    assert!(
        http >= 100 && grpc >= 100,
        "both protocols must be acknowledged: {http} over HTTP, {grpc} over gRPC"
    );
    let deadline = Instant::now() + WAIT;
    for (i, sink) in sinks.iter().enumerate() {
        loop {
            let missing = sink.missing(&acked);
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} acknowledged events never reached endpoint ep{i}, e.g. {:?}",
                missing.len(),
                acked.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn cancel_on_published_on_one_daemon_cancels_a_run_waiting_on_another() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({
        "id": "nurture",
        "inputs": {"email": {"type": "email", "required": true}},
        "correlate_by": "{{ inputs.email }}",
        "cancel_on": [{"event": "lead.call_booked", "key": "{{ event.payload.email }}"}],
        "steps": [{"id": "mail", "delay": "3s", "http": {"url": sink.url()}}]
    });
    let config = TestConfig::new()
        .set("storage.lease_timeout", json!(LEASE))
        .flow(flow);
    let daemons = cluster(&config, 2).await;
    let ada = started(&daemons[0], "nurture", json!({"email": "ada@example.com"})).await;
    let bob = started(&daemons[0], "nurture", json!({"email": "bob@example.com"})).await;
    let mut admin = daemons[1].admin_client();
    poll_until(&mut admin, &ada, RunState::Waiting).await;

    let booked = publish_http(
        &daemons[1],
        &json!({"name": "lead.call_booked", "payload": {"email": "ada@example.com"}}),
    )
    .await;
    let mut first = daemons[0].admin_client();
    let cancelled = poll_until(&mut first, &ada, RunState::Cancelled).await;
    let error = cancelled.run.map(|r| r.error).unwrap_or_default();
    assert!(error.contains(&booked.id), "{error}");
    poll_until(&mut admin, &bob, RunState::Succeeded).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.drain().len(), 1, "only bob's run mailed");
}

#[tokio::test]
async fn a_long_transaction_holding_an_endpoint_row_does_not_stop_delivery() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let url = daemon.postgres_url().expect("PostgreSQL").to_string();
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    // Another client: an old snapshot, and a lock on the endpoint's row and
    // on the catalog version (its trigger), held while events flow.
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut other)
        .await
        .expect("BEGIN");
    sqlx::query("UPDATE endpoints SET updated_ms = updated_ms WHERE id = 'crm'")
        .execute(&mut other)
        .await
        .expect("lock the endpoint's row");

    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(publish_http(&daemon, &http_event("lead.created")).await.id);
    }
    let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    sink.until_ids(&expected, WAIT).await;
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("ROLLBACK");
}

#[tokio::test]
async fn deliveries_of_an_endpoint_deleted_while_no_daemon_held_it_are_dead_lettered() {
    use hookyard::v1::{DeliveryFilter, DeliveryStatus, ListDeliveriesRequest};
    let refusing = TestReceiver::start(Behaviour::Always(503)).await;
    let kept = TestConfig::new().set("storage.lease_timeout", json!(LEASE));
    let with_endpoint = kept
        .clone()
        // The second attempt falls due while the daemon is down.
        .endpoint(EndpointSpec::new("gone", &refusing.url()).retry_schedule(&["0s", "3s", "1h"]))
        .subscription("to-gone", &["lead.*"], &[], "endpoint:gone");
    let mut daemon = Daemon::start(with_endpoint).await;
    for _ in 0..3 {
        publish_http(&daemon, &http_event("lead.created")).await;
    }
    let mut admin = daemon.admin_client();
    let listed = |status: DeliveryStatus| ListDeliveriesRequest {
        filter: Some(DeliveryFilter {
            status: status as i32,
            ..DeliveryFilter::default()
        }),
        page_size: 100,
        page_token: String::new(),
    };
    let deadline = Instant::now() + WAIT;
    while admin
        .list_deliveries(listed(DeliveryStatus::Failed))
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries
        .len()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "the three deliveries never failed once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stopped cleanly (its leases given up), the endpoint deleted behind
    // its back, then started without it: nobody holds `gone` any more.
    daemon.stop().await;
    let url = daemon.postgres_url().expect("PostgreSQL").to_string();
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    sqlx::query("DELETE FROM subscriptions WHERE target = 'endpoint:gone'")
        .execute(&pool)
        .await
        .expect("delete the subscription");
    sqlx::query("DELETE FROM endpoints WHERE id = 'gone'")
        .execute(&pool)
        .await
        .expect("delete the endpoint");
    pool.close().await;
    daemon.restart_with(kept).await;

    let mut admin = daemon.admin_client();
    let deadline = Instant::now() + WAIT;
    loop {
        let dead = admin
            .list_deliveries(listed(DeliveryStatus::Dead))
            .await
            .expect("ListDeliveries")
            .into_inner()
            .deliveries;
        if dead.len() == 3 {
            assert!(
                dead.iter()
                    .all(|d| d.last_error.contains("no longer exists")),
                "{dead:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted endpoint's deliveries were not dead-lettered: {dead:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
