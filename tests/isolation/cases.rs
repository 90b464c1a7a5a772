//! One endpoint's trouble never delays another's. Beside a dead endpoint
//! with a deep backlog, or one that answers only after its timeout, a
//! healthy endpoint's deliveries arrive as fast as on an idle daemon; beside
//! a hot endpoint with a hundred thousand due, a cold one's arrive within a
//! scheduling round.

use std::time::{Duration, Instant};

use hookyard::v1::{Event, PublishBatchRequest, PublishRequest};
use hookyard_bench::sink::{Sink, SinkConfig};

use crate::harness::{Daemon, EndpointSpec, Events, TestConfig};

/// Healthy events published one at a time, spaced out, for the latency.
const PROBES: usize = 100;
const PROBE_SPACING: Duration = Duration::from_millis(10);
const P99_LIMIT: Duration = Duration::from_millis(50);

/// One measurement at a time: a test publishing a backlog would load the
/// machine under another's latency probe.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoints_backlog_does_not_delay_a_healthy_one() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dead = unused_port_url();
    run_beside(EndpointSpec::new("troubled", &dead), 25_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_answers_after_its_timeout_does_not_delay_a_healthy_one() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let slow = Sink::start(SinkConfig {
        delay: Duration::from_secs(30),
        ..SinkConfig::default()
    })
    .await
    .expect("slow sink");
    let endpoint = EndpointSpec::new("troubled", &slow.url("/hook")).timeout("1s");
    run_beside(endpoint, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_endpoint_is_served_within_a_round_of_a_hot_ones_backlog() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const HOT: usize = 100_000;
    // Answers slowly enough that the hot backlog lasts the whole test.
    let hot = Sink::start(SinkConfig {
        delay: Duration::from_millis(20),
        ..SinkConfig::default()
    })
    .await
    .expect("hot sink");
    let cold = Sink::start(SinkConfig::default()).await.expect("cold sink");
    let daemon = Daemon::start(
        TestConfig::new()
            .endpoint(EndpointSpec::new("hot", &hot.url("/hook")))
            .endpoint(EndpointSpec::new("cold", &cold.url("/hook")))
            .subscription("to-hot", &["hot.*"], &[], "endpoint:hot")
            .subscription("to-cold", &["cold.*"], &[], "endpoint:cold"),
    )
    .await;
    let mut events = daemon.events_client();
    publish_backlog(&mut events, "hot.backlog", HOT).await;
    assert!(
        hot.delivered() < HOT as u64 / 2,
        "the hot backlog is still due"
    );

    let started = Instant::now();
    let ids: Vec<String> = (0..10).map(|i| format!("cold-{i}")).collect();
    let batch = ids
        .iter()
        .map(|id| event(id, "cold.ping"))
        .collect::<Vec<_>>();
    events
        .publish_batch(PublishBatchRequest { events: batch })
        .await
        .expect("PublishBatch");
    assert!(
        cold.wait_delivered(10, Duration::from_secs(5)).await,
        "cold received {} of 10",
        cold.delivered()
    );
    let waited = started.elapsed();
    eprintln!(
        "cold endpoint served in {waited:?} with {} of {HOT} hot deliveries made",
        hot.delivered()
    );
    assert!(waited < Duration::from_secs(1), "cold waited {waited:?}");
    assert!(
        hot.delivered() < HOT as u64 / 2,
        "the hot backlog was still due"
    );
}

/// Gives `troubled` a backlog of `backlog` deliveries, then measures how
/// long a healthy endpoint's deliveries take from publish to arrival.
async fn run_beside(troubled: EndpointSpec, backlog: usize) {
    let healthy = Sink::start(SinkConfig::default()).await.expect("sink");
    let daemon = Daemon::start(
        TestConfig::new()
            .endpoint(troubled.retry_schedule(&["1s"; 10]))
            .endpoint(EndpointSpec::new("healthy", &healthy.url("/hook")))
            .subscription("to-troubled", &["trouble.*"], &[], "endpoint:troubled")
            .subscription("to-healthy", &["healthy.*"], &[], "endpoint:healthy"),
    )
    .await;
    let mut events = daemon.events_client();
    publish_backlog(&mut events, "trouble.backlog", backlog).await;
    // Let the dispatcher churn through the troubled endpoint for a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut sent = Vec::with_capacity(PROBES);
    for i in 0..PROBES {
        let id = format!("healthy-{i}");
        let at = Instant::now();
        events
            .publish(PublishRequest {
                event: Some(event(&id, "healthy.ping")),
            })
            .await
            .expect("Publish");
        sent.push((id, at));
        tokio::time::sleep(PROBE_SPACING).await;
    }
    assert!(
        healthy
            .wait_delivered(PROBES as u64, Duration::from_secs(10))
            .await,
        "healthy received {} of {PROBES}",
        healthy.delivered()
    );
    let arrivals = healthy.first_delivered();
    let mut latencies: Vec<Duration> = sent
        .iter()
        .map(|(id, at)| {
            arrivals
                .get(id)
                .map_or(Duration::MAX, |arrived| *arrived - *at)
        })
        .collect();
    latencies.sort();
    let (p50, p99) = (latencies[PROBES / 2], latencies[PROBES * 99 / 100 - 1]);
    eprintln!("healthy endpoint beside {backlog} troubled deliveries: p50 {p50:?}, p99 {p99:?}");
    assert!(p99 < P99_LIMIT, "p99 {p99:?} (p50 {p50:?})");
}

async fn publish_backlog(events: &mut Events, name: &str, n: usize) {
    let ids: Vec<String> = (0..n).map(|i| format!("{name}-{i}")).collect();
    for chunk in ids.chunks(1_000) {
        let batch = chunk.iter().map(|id| event(id, name)).collect::<Vec<_>>();
        let results = events
            .publish_batch(PublishBatchRequest { events: batch })
            .await
            .expect("PublishBatch")
            .into_inner()
            .results;
        assert_eq!(results.len(), chunk.len());
    }
}

fn event(id: &str, name: &str) -> Event {
    Event {
        id: id.to_string(),
        name: name.to_string(),
        payload: br#"{"email":"ada@example.com"}"#.to_vec(),
        ..Event::default()
    }
}

/// A loopback URL where nothing listens: connections are refused.
fn unused_port_url() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a port");
    format!("http://{addr}/hook")
}

/// The name the debug build's fault hook makes every attempt panic on.
const PANICKING_EVENT: &str = "isolation.panics_in_the_sender";

#[tokio::test]
async fn an_attempt_that_panics_is_recorded_and_frees_its_slot() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let sink = Sink::start(SinkConfig::default()).await.expect("sink");
    let daemon = Daemon::start(
        TestConfig::new()
            .endpoint(EndpointSpec::new("crm", &sink.url("/hook")).retry_schedule(&["1h"]))
            .subscription("all", &["isolation.**"], &[], "endpoint:crm")
            .env("HOOKYARD_FAULT_PANIC_EVENT", PANICKING_EVENT),
    )
    .await;
    let mut events = daemon.events_client();
    let mut admin = daemon.admin_client();
    let mut watch = crate::api::Watch::all(&mut admin).await;
    // More than the endpoint's eight slots: leaked slots would jam it.
    let panicking: Vec<Event> = (0..20)
        .map(|i| event(&format!("panic-{i}"), PANICKING_EVENT))
        .collect();
    events
        .publish_batch(PublishBatchRequest { events: panicking })
        .await
        .expect("PublishBatch");
    let fine: Vec<Event> = (0..5)
        .map(|i| event(&format!("fine-{i}"), "isolation.fine"))
        .collect();
    events
        .publish_batch(PublishBatchRequest { events: fine })
        .await
        .expect("PublishBatch");
    assert!(
        sink.wait_delivered(5, Duration::from_secs(10)).await,
        "delivered {} of 5 after 20 panicking attempts",
        sink.delivered()
    );
    let failed = watch
        .until("panic-19", &[hookyard::v1::DeliveryStatus::Failed])
        .await;
    let detail = crate::api::get_delivery(&mut admin, failed.id).await;
    let error = detail
        .attempts
        .first()
        .map(|a| a.error.clone())
        .unwrap_or_default();
    assert!(error.contains("internal error while sending"), "{error}");
}
