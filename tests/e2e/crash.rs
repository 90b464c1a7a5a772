//! No ack before commit: every event acknowledged before a `kill -9` is
//! delivered after the restart, at least once.

use std::{
    collections::HashSet,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use hookyard::v1::PublishRequest;
use reqwest::StatusCode;
use serde_json::json;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    api::grpc_event,
    harness::{Daemon, EndpointSpec, TestConfig, API_KEY},
    sink::{Behaviour, TestReceiver},
};

const HTTP_PUBLISHERS: usize = 4;
const GRPC_PUBLISHERS: usize = 2;
/// Acks to reach before each kill, then before stopping the publishers.
const KILL_AFTER: [usize; 2] = [400, 1200];
const FINAL_ACKS: usize = 2000;
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// While the daemon is down every request fails at once; don't spin on it.
const ERROR_BACKOFF: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9() {
    // Some failures keep retries pending across the kills too.
    let mut sink = TestReceiver::start(Behaviour::FailShare(0.05, 500)).await;
    let endpoint = EndpointSpec::new("crm", &sink.url())
        .retry_schedule(&["0s", "100ms", "100ms", "100ms", "100ms", "100ms"]);
    let mut daemon = Daemon::start(TestConfig::new().route_leads(endpoint)).await;

    let publishers = Publishers::default();
    let mut tasks = JoinSet::new();
    for _ in 0..HTTP_PUBLISHERS {
        let (client, url) = (daemon.http.clone(), daemon.url("/v1/events"));
        tasks.spawn(publishers.clone().run(move |id| {
            let request = client
                .post(&url)
                .bearer_auth(API_KEY)
                .json(&json!({"id": id, "name": "lead.crash", "payload": {"id": id}}));
            async move {
                request
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == StatusCode::ACCEPTED)
            }
        }));
    }
    for _ in 0..GRPC_PUBLISHERS {
        let events = daemon.events_client();
        tasks.spawn(publishers.clone().run(move |id| {
            let mut events = events.clone();
            let mut event = grpc_event("lead.crash");
            event.id = id;
            async move {
                let request = PublishRequest { event: Some(event) };
                events.publish(request).await.is_ok()
            }
        }));
    }

    for target in KILL_AFTER {
        publishers.wait_for_acks(target).await;
        daemon.kill9().await;
        daemon.restart().await;
    }
    publishers.wait_for_acks(FINAL_ACKS).await;
    publishers.stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a publisher task");
    }

    let acked = publishers.acked();
    assert!(acked.len() >= FINAL_ACKS, "only {} acks", acked.len());
    let acked: Vec<&str> = acked.iter().map(String::as_str).collect();
    sink.until_ids(&acked, DELIVERY_TIMEOUT).await;
}

/// State shared by the publisher tasks: the next id, the acknowledged ids.
#[derive(Clone)]
struct Publishers {
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
    count: Arc<watch::Sender<usize>>,
}

impl Default for Publishers {
    fn default() -> Publishers {
        Publishers {
            next: Arc::default(),
            stop: Arc::default(),
            acked: Arc::default(),
            count: Arc::new(watch::channel(0).0),
        }
    }
}

impl Publishers {
    /// Publishes `crash-<n>` ids with `publish` (true = acknowledged) until
    /// told to stop. A failed request is not retried: it was never acked.
    async fn run<F, Fut>(self, publish: F)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = bool>,
    {
        while !self.stop.load(Ordering::Relaxed) {
            let id = format!("crash-{}", self.next.fetch_add(1, Ordering::Relaxed));
            if publish(id.clone()).await {
                self.acked.lock().expect("the ack set").insert(id);
                self.count.send_modify(|n| *n += 1);
            } else {
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }

    async fn wait_for_acks(&self, target: usize) {
        let mut count = self.count.subscribe();
        let reached = tokio::time::timeout(PHASE_TIMEOUT, count.wait_for(|n| *n >= target))
            .await
            .is_ok();
        assert!(
            reached,
            "only {} acks within {PHASE_TIMEOUT:?}, expected {target}",
            *self.count.borrow()
        );
    }

    fn acked(&self) -> HashSet<String> {
        self.acked.lock().expect("the ack set").clone()
    }
}
