//! The feed bus: what every node sharing the database does, for the live
//! feeds (`Admin.WatchDeliveries`, `Admin.WatchRuns`) of every other node.
//! Each node publishes its own delivery and run changes over PostgreSQL
//! NOTIFY (channel `hookyard_feed`) and injects the other nodes' changes
//! into its local feeds; a watcher on any node sees the whole cluster.
//!
//! # Nobody watching costs nothing per change
//! A node with a local watcher holds a shared advisory lock (`FEED_LOCK`) on
//! its LISTEN connection. A node publishes only while some *other* node's
//! connection holds that lock, which its publisher reads from `pg_locks`
//! once a second: one cheap read a second per node, and no NOTIFY at all,
//! while nobody anywhere watches. A lock and not a table of watchers: no
//! writes to keep it fresh, and a node that dies releases it with its
//! session, with no expiry to wait for. A node listens only while it has a
//! watcher itself, on a connection of its own that it closes when the last
//! one leaves; the publisher has one connection, apart from the store's
//! reads. A watcher sees the other nodes' changes from about a second after
//! it opens (the others' next look at `pg_locks`).
//!
//! # Never slowing delivery or the writer
//! The dispatcher and the writer hand a change over with `try_send` into a
//! bounded queue (`QUEUE`); a full queue drops the change and counts it.
//! One task drains the queue in batches and sends them in one statement,
//! each notification carrying as many changes as fit in PostgreSQL's payload
//! limit (8000 bytes; `PAYLOAD_LIMIT`), so a busy node sends a few
//! notifications a batch rather than one a change.
//!
//! # Missed changes
//! Each node numbers its delivery changes and its run changes (two
//! counters), and each message says the number of its first change of each
//! kind. A receiver that finds a number ahead of the next it expected from
//! that node tells its watchers how many they missed, as a broadcast's lag
//! does: changes dropped from a full queue (counted into the numbers),
//! notifications lost while a LISTEN connection was down, a batch whose
//! NOTIFY failed, a message this build cannot read. The first message from
//! a node sets where its numbers start, as does one whose numbers went back
//! (that node restarted); they are forgotten when this node stops
//! listening.
//!
//! # What travels
//! A compact JSON of its own (`WireDelivery`, `WireRun`; the model types
//! are not serialised anywhere else): a delivery whole, with its last error
//! cut to `ERROR_LIMIT`; a run as `WatchRuns` shows it, without its step
//! records and trigger data (`GetRun` reads those). A run too big for one
//! notification (large inputs) travels as its id, and the receiver reads it
//! from the database. Notifications from the receiving node itself are
//! ignored; remote changes go to the local feeds only, never back onto the
//! bus.
//!
//! # Not done
//! A node sends all its changes while any other node watches anything: one
//! lock for both feeds, and no watcher's filter (an endpoint, a flow)
//! narrows what travels. A lock key per feed, or per filter, would, at the
//! price of more locks to look up.
//!
//! # Layout
//! - `publish`: the queue's batches onto the channel, while wanted;
//! - `receive`: listening while watched, the lock, gaps, the local feeds;
//! - `wire`: the JSON and its packing into numbered payloads.

mod publish;
mod receive;
mod wire;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use sqlx::{postgres::PgPoolOptions, PgPool};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use self::wire::{Outgoing, WireDelivery, WireRun};
use crate::model::{run::Run, Delivery};

const CHANNEL: &str = "hookyard_feed";
/// The advisory lock (two-key form) a node with a local watcher holds in
/// shared mode: "Hook" as an int4, then 1 for the feed's watchers.
const FEED_LOCK: (i32, i32) = (0x486f_6f6b, 1);
/// How often a publisher checks whether another node watches, and a
/// listening node whether it still has a watcher.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Changes waiting to be sent before new ones are dropped.
const QUEUE: usize = 8192;
/// Changes sent per statement at most.
const BATCH: usize = 1024;

/// A change another node made, for this node's feeds.
#[derive(Debug)]
pub enum RemoteChange {
    Delivery {
        delivery: Delivery,
        time_ms: i64,
    },
    Run {
        run: Run,
        time_ms: i64,
    },
    /// Changes that will never arrive: the watchers are told.
    Missed {
        deliveries: u64,
        runs: u64,
    },
}

/// This node's live feeds, as the bus sees them (implemented above `store`).
pub trait LocalFeeds: Send + Sync + 'static {
    /// Whether anyone on this node watches deliveries or runs.
    fn watched(&self) -> bool;
    fn remote(&self, change: RemoteChange);
}

/// The sending side, for the feeds: cheap to clone, never blocks.
#[derive(Clone)]
pub struct FeedBus {
    shared: Arc<Shared>,
}

struct Shared {
    node_id: Arc<str>,
    /// Some other node has a watcher: local changes are worth sending.
    wanted: AtomicBool,
    queue: mpsc::Sender<Outgoing>,
    dropped_deliveries: AtomicU64,
    dropped_runs: AtomicU64,
    /// A watcher opened here: listen now rather than at the next check.
    watch_started: Notify,
    /// The backend pid of this node's LISTEN connection (0: none), whose
    /// lock is not another node's watcher.
    listener_pid: AtomicI32,
}

impl FeedBus {
    /// Whether another node watches, so a change is worth building.
    pub fn wanted(&self) -> bool {
        self.shared.wanted.load(Ordering::Relaxed)
    }

    pub fn send_delivery(&self, delivery: &Delivery, time_ms: i64) {
        if !self.wanted() {
            return;
        }
        let wire = WireDelivery::new(delivery, time_ms);
        if self
            .shared
            .queue
            .try_send(Outgoing::Delivery(wire))
            .is_err()
        {
            self.shared
                .dropped_deliveries
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn send_run(&self, run: &Run, time_ms: i64) {
        if !self.wanted() {
            return;
        }
        let wire = WireRun::new(run, time_ms);
        if self.shared.queue.try_send(Outgoing::Run(wire)).is_err() {
            self.shared.dropped_runs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A watcher opened on this node.
    pub fn watch_started(&self) {
        self.shared.watch_started.notify_one();
    }
}

/// The bus's work, for the daemon to run (and supervise) once its feeds
/// exist.
pub struct FeedBusTask {
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Outgoing>,
    /// The store's read pool: a run too big for a notification is read here.
    reads: PgPool,
}

impl super::PgStore {
    /// This node's bus; one per daemon.
    pub fn feed_bus(&self) -> (FeedBus, FeedBusTask) {
        new(self.node_id.clone(), self.pool.clone())
    }
}

fn new(node_id: Arc<str>, reads: PgPool) -> (FeedBus, FeedBusTask) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let shared = Arc::new(Shared {
        node_id,
        wanted: AtomicBool::new(false),
        queue: tx,
        dropped_deliveries: AtomicU64::new(0),
        dropped_runs: AtomicU64::new(0),
        watch_started: Notify::new(),
        listener_pid: AtomicI32::new(0),
    });
    (
        FeedBus {
            shared: shared.clone(),
        },
        FeedBusTask {
            shared,
            queue: rx,
            reads,
        },
    )
}

impl FeedBusTask {
    /// Publishes this node's changes and receives the others' until
    /// `shutdown`.
    pub async fn run(self, feeds: Arc<dyn LocalFeeds>, shutdown: CancellationToken) {
        // One connection of its own for the publisher: a burst of
        // notifications never waits for, or holds up, the store's reads.
        let notifier = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with((*self.reads.connect_options()).clone());
        tokio::join!(
            publish::publish(self.shared.clone(), self.queue, notifier, shutdown.clone()),
            receive::receive(self.shared, feeds, self.reads, shutdown),
        );
    }
}
