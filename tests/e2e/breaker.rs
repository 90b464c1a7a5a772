//! An endpoint that cannot be reached is paused, not hammered: while it is
//! down, deliveries that fall due cost no request and keep their retries; once
//! it answers a probe, the waiting backlog goes out at once.

use std::time::{Duration, Instant};

use hookyard::v1::{Event, ListDeliveriesRequest, PublishBatchRequest};
use hookyard_bench::sink::{Sink, SinkConfig};

use crate::harness::{Admin, Daemon, EndpointSpec, TestConfig};

const EVENTS: usize = 200;
/// Retries every 500 ms: without the breaker, 200 deliveries down for 3 s
/// would make about 1 400 attempts.
const RETRY: &str = "500ms";
const DOWN_FOR: Duration = Duration::from_secs(3);
/// What the trip may cost: the failures that trip it, the requests already in
/// flight (max_in_flight 16) and a probe per pause (0.5 + 1 + 2 s).
const MAX_ATTEMPTS_WHILE_DOWN: u32 = 40;
/// The next probe comes at most 4 s after the last one at this point.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_paused_and_drains_once_it_answers() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a port");
    let endpoint =
        EndpointSpec::new("crm", &format!("http://{addr}/hook")).retry_schedule(&[RETRY; 20]);
    let daemon = Daemon::start(TestConfig::new().route_leads(endpoint)).await;
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("paused-{i}")).collect();
    let batch = ids
        .iter()
        .map(|id| Event {
            id: id.clone(),
            name: "lead.created".into(),
            payload: br#"{"email":"a@example.com"}"#.to_vec(),
            ..Event::default()
        })
        .collect();
    daemon
        .events_client()
        .publish_batch(PublishBatchRequest { events: batch })
        .await
        .expect("PublishBatch");
    tokio::time::sleep(DOWN_FOR).await;

    let mut admin = daemon.admin_client();
    let attempts = attempts_made(&mut admin).await;
    assert!(
        (5..=MAX_ATTEMPTS_WHILE_DOWN).contains(&attempts),
        "{attempts} attempts in {DOWN_FOR:?} to an endpoint that is down"
    );

    let sink = Sink::start_on(addr, SinkConfig::default())
        .await
        .expect("the sink takes the endpoint's port");
    let up = Instant::now();
    while !sink.missing(&ids).is_empty() {
        assert!(
            up.elapsed() < DRAIN_TIMEOUT,
            "{} of {EVENTS} still undelivered {DRAIN_TIMEOUT:?} after the endpoint came up",
            sink.missing(&ids).len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = attempts_made(&mut admin).await;
    // Every delivery that waited made one more attempt, its successful one.
    assert!(
        after <= attempts + EVENTS as u32 + 1,
        "{after} attempts in all, {attempts} before the endpoint came up"
    );
}

async fn attempts_made(admin: &mut Admin) -> u32 {
    let deliveries = admin
        .list_deliveries(ListDeliveriesRequest {
            page_size: 500,
            ..ListDeliveriesRequest::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries;
    assert_eq!(deliveries.len(), EVENTS);
    deliveries.iter().map(|d| d.attempts).sum()
}
