//! The endpoint is down for the whole intake (nothing listens on its port),
//! then comes up: the backlog drains completely, and the daemon's memory stays
//! bounded meanwhile. The dispatcher may hold only `memory_queue` deliveries;
//! the rest wait in storage. So the second half of the backlog, 47 MiB of
//! payloads, must add little to the daemon's peak RSS over the first half, and
//! draining everything must stay under a fixed ceiling.

use std::time::{Duration, Instant};

use hookyard::v1::{Event, PublishBatchRequest};
use hookyard_bench::sink::{Sink, SinkConfig};

use crate::harness::{Daemon, EndpointSpec, Events, TestConfig};

/// Per half of the backlog.
const EVENTS: usize = 1_500;
const BATCH: usize = 50;
/// 1 500 × 32 KiB = 47 MiB of payloads per half.
const PAYLOAD_BYTES: usize = 32 * 1024;
const MEMORY_QUEUE: usize = 200;
/// What the second half may add to the peak RSS: a third of its payloads.
const SECOND_HALF_LIMIT_MIB: u64 = 16;
/// Peak RSS of the (debug) daemon over the whole test.
const PEAK_LIMIT_MIB: u64 = 160;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_when_the_endpoint_comes_up_and_memory_stays_bounded() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a port");
    let endpoint =
        EndpointSpec::new("crm", &format!("http://{addr}/hook")).retry_schedule(&["2s"; 20]);
    let daemon = Daemon::start(
        TestConfig::new()
            .route_leads(endpoint)
            .memory_queue(MEMORY_QUEUE),
    )
    .await;
    let mut events = daemon.events_client();
    let ids: Vec<String> = (0..2 * EVENTS).map(|i| format!("backlog-{i}")).collect();

    let mut peaks = Vec::new();
    for half in ids.chunks(EVENTS) {
        publish(&mut events, half).await;
        // Let the dispatcher churn through failing attempts for a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        peaks.push(daemon.memory_kib().1 / 1024);
    }
    let added = peaks[1].saturating_sub(peaks[0]);
    assert!(
        added < SECOND_HALF_LIMIT_MIB,
        "the second half of the backlog raised the peak RSS from {} to {} MiB",
        peaks[0],
        peaks[1]
    );

    let sink = Sink::start_on(addr, SinkConfig::default())
        .await
        .expect("the sink takes the endpoint's port");
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let missing = sink.missing(&ids).len();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events still undelivered after {DRAIN_TIMEOUT:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = daemon.memory_kib().1 / 1024;
    eprintln!(
        "peak RSS after each half {} and {} MiB, after the drain {peak} MiB",
        peaks[0], peaks[1]
    );
    assert!(peak < PEAK_LIMIT_MIB, "peak RSS {peak} MiB while draining");
}

async fn publish(events: &mut Events, ids: &[String]) {
    let pad = "x".repeat(PAYLOAD_BYTES);
    for chunk in ids.chunks(BATCH) {
        let batch = chunk
            .iter()
            .map(|id| Event {
                id: id.clone(),
                name: "lead.backlog".into(),
                payload: format!(r#"{{"pad":"{pad}"}}"#).into_bytes(),
                ..Event::default()
            })
            .collect();
        let results = events
            .publish_batch(PublishBatchRequest { events: batch })
            .await
            .expect("PublishBatch")
            .into_inner()
            .results;
        assert_eq!(results.len(), chunk.len());
    }
}
