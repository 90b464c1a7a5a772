//! Flows: durable multi-step automations the daemon runs itself. A flow is a
//! subscription target (`flow:<id>`), and can also be started over HTTP
//! (`POST /v1/flows/{id}/runs`), by its webhook (`POST /hooks/{id}/{key}`) or
//! by the Admin API.
//!
//! # Layout
//! - `definition`: the YAML shape and its parsing; `compiled`: a definition
//!   checked and compiled (templates, durations, references).
//! - `template`: the template language (minijinja), secrets and redaction.
//! - `inputs`: checking a run's inputs against the declared ones.
//! - `catalog`: the flows in force, and `cancel_on` as a pattern index.
//! - `start`: turning a trigger (event, API, webhook) into a run to create.
//! - `engine` and `step`: waking due runs and executing their steps.
//!
//! Every change to a run is committed by the store's writer before the next
//! side effect; waiting runs are rows with an indexed wake-up time, not
//! timers, so the engine holds in memory only the runs it is executing.

pub mod catalog;
pub mod compiled;
pub mod definition;
pub mod engine;
pub mod inputs;
pub mod start;
pub mod step;
pub mod template;

use std::sync::Arc;

use tokio::sync::Notify;

pub use catalog::FlowCatalog;

use crate::{
    admin::feed::{Changes, Feed},
    model::run::{Run, RunState},
    store::FeedBus,
};

/// Webhook keys are stored as SHA-256 digests and compared in constant time.
pub fn webhook_key_hash(key: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).to_vec()
}

/// Run changes broadcast to `WatchRuns`; like the delivery feed, a slow
/// watcher loses the oldest changes and never slows the runs down. On
/// PostgreSQL it carries every node's run changes (`admin::feed`); a run
/// from another node comes without its step records and trigger data,
/// which `WatchRuns` does not show.
#[derive(Clone)]
pub struct RunFeed {
    feed: Feed<RunChange>,
}

#[derive(Debug)]
pub struct RunChange {
    pub run: Run,
    pub time_ms: i64,
}

impl RunFeed {
    fn new() -> RunFeed {
        RunFeed {
            feed: Feed::new(4096),
        }
    }

    /// Joins the feed to the other nodes (PostgreSQL); once.
    pub fn attach(&self, bus: FeedBus) {
        self.feed.attach(bus);
    }

    pub fn subscribe(&self) -> Changes<RunChange> {
        self.feed.subscribe()
    }

    pub(crate) fn feed(&self) -> &Feed<RunChange> {
        &self.feed
    }
}

/// How the writer tells the flow engine (and watchers) that runs changed.
#[derive(Clone)]
pub struct FlowSignals {
    pub wake: Arc<Notify>,
    pub feed: RunFeed,
}

impl Default for FlowSignals {
    fn default() -> Self {
        FlowSignals::new()
    }
}

impl FlowSignals {
    pub fn new() -> FlowSignals {
        FlowSignals {
            wake: Arc::new(Notify::new()),
            feed: RunFeed::new(),
        }
    }
}

impl crate::store::RunsCommitted for FlowSignals {
    fn runs_committed(&self, runs: Vec<Run>) {
        self.wake.notify_one();
        for run in &runs {
            // Each run is committed in these states once: when it starts and
            // when it ends.
            if matches!(
                run.state,
                RunState::Created | RunState::Succeeded | RunState::Failed | RunState::Cancelled
            ) {
                crate::metrics::run_state(&run.flow_id, run.state.as_str());
            }
        }
        let feed = &self.feed.feed;
        let bus = feed.bus();
        if bus.is_none() && !feed.watched_here() {
            return;
        }
        let time_ms = crate::model::now_ms();
        for run in runs {
            if let Some(bus) = bus {
                bus.send_run(&run, time_ms);
            }
            feed.broadcast(RunChange { run, time_ms });
        }
    }
}
