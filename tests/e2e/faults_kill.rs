//! `kill -9` in a loop under concurrent HTTP and gRPC load: every event the
//! daemon acknowledged before any of the kills reaches the sink afterwards,
//! at least once. The run must also acknowledge a meaningful number of
//! events over both protocols, so a daemon that refused everything fails.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hookyard::v1::PublishRequest;
use hookyard_bench::sink::{Sink, SinkConfig};
use reqwest::StatusCode;
use serde_json::json;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    api::grpc_event,
    harness::{Daemon, EndpointSpec, TestConfig, API_KEY},
};

const KILLS: usize = 5;
/// New acknowledgements to wait for before each kill (and after the last).
const ACKS_PER_ROUND: usize = 120;
const HTTP_PUBLISHERS: usize = 3;
const GRPC_PUBLISHERS: usize = 2;
const PHASE_TIMEOUT: Duration = Duration::from_secs(15);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_five_kill_9s_under_load() {
    // A few failures keep retries pending across the kills as well.
    let sink = Sink::start(SinkConfig {
        fail_share: 0.05,
        ..SinkConfig::default()
    })
    .await
    .expect("start the sink");
    let endpoint = EndpointSpec::new("crm", &sink.url("/hook"))
        .retry_schedule(&["0s", "100ms", "100ms", "100ms", "100ms", "100ms"]);
    let mut daemon = Daemon::start(TestConfig::new().route_leads(endpoint)).await;

    let load = Load::default();
    let mut tasks = JoinSet::new();
    for _ in 0..HTTP_PUBLISHERS {
        let (client, url, load) = (daemon.http.clone(), daemon.url("/v1/events"), load.clone());
        tasks.spawn(async move {
            while !load.stop.load(Ordering::Relaxed) {
                let id = load.next_id();
                let acked = client
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"id": id, "name": "lead.kill", "payload": {"n": id}}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::ACCEPTED);
                load.record(id, acked, &load.http_acks).await;
            }
        });
    }
    for _ in 0..GRPC_PUBLISHERS {
        let (mut events, load) = (daemon.events_client(), load.clone());
        tasks.spawn(async move {
            while !load.stop.load(Ordering::Relaxed) {
                let id = load.next_id();
                let mut event = grpc_event("lead.kill");
                event.id = id.clone();
                let acked = events
                    .publish(PublishRequest { event: Some(event) })
                    .await
                    .is_ok();
                load.record(id, acked, &load.grpc_acks).await;
            }
        });
    }

    for round in 1..=KILLS {
        load.wait_for(round * ACKS_PER_ROUND).await;
        daemon.kill9().await;
        daemon.restart().await;
    }
    load.wait_for((KILLS + 1) * ACKS_PER_ROUND).await;
    load.stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a publisher task");
    }

    let acked = load.acked.lock().expect("the ack set").clone();
    assert!(acked.len() >= (KILLS + 1) * ACKS_PER_ROUND);
    let (http, grpc) = (
        load.http_acks.load(Ordering::Relaxed),
        load.grpc_acks.load(Ordering::Relaxed),
    );
    assert!(
        http >= 50 && grpc >= 50,
        "both protocols must be acknowledged: {http} over HTTP, {grpc} over gRPC"
    );
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let missing = sink.missing(&acked);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never reached the sink, e.g. {:?}",
            missing.len(),
            acked.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Shared by the publisher tasks: ids, acknowledged ids, their count.
#[derive(Clone)]
pub struct Load {
    next: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<HashSet<String>>>,
    pub http_acks: Arc<AtomicU64>,
    pub grpc_acks: Arc<AtomicU64>,
    count: Arc<watch::Sender<usize>>,
}

impl Default for Load {
    fn default() -> Load {
        Load {
            next: Arc::default(),
            stop: Arc::default(),
            acked: Arc::default(),
            http_acks: Arc::default(),
            grpc_acks: Arc::default(),
            count: Arc::new(watch::channel(0).0),
        }
    }
}

impl Load {
    pub fn next_id(&self) -> String {
        format!("kill-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// A failed publish is not retried: it was never acknowledged.
    pub async fn record(&self, id: String, acked: bool, counter: &AtomicU64) {
        if acked {
            self.acked.lock().expect("the ack set").insert(id);
            counter.fetch_add(1, Ordering::Relaxed);
            self.count.send_modify(|n| *n += 1);
        } else {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }

    pub async fn wait_for(&self, target: usize) {
        let mut count = self.count.subscribe();
        let reached = tokio::time::timeout(PHASE_TIMEOUT, count.wait_for(|n| *n >= target))
            .await
            .is_ok();
        assert!(
            reached,
            "only {} acknowledgements within {PHASE_TIMEOUT:?}, expected {target}",
            *self.count.borrow()
        );
    }
}
