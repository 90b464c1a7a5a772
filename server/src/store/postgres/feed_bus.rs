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
//! session, with no expiry to wait for. A node listens (one connection) only
//! while it has a watcher itself. So a watcher sees the other nodes'
//! changes from about a second after it opens.
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
//! NOTIFY failed. The first message from a node sets where its numbers
//! start; they are forgotten when the node stops listening.
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

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sqlx::{
    postgres::{PgListener, PgPoolOptions},
    PgPool,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::model::{
    run::{Run, RunState},
    Delivery, DeliveryStatus,
};

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
/// PostgreSQL refuses a payload of 8000 bytes or more.
const PAYLOAD_LIMIT: usize = 7900;
/// A delivery's last error is cut to this many bytes on the bus.
const ERROR_LIMIT: usize = 512;
/// How long closing the LISTEN connection may take at shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

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
            publish(self.shared.clone(), self.queue, notifier, shutdown.clone()),
            receive(self.shared, feeds, self.reads, shutdown),
        );
    }
}

// ---- publishing ----

enum Outgoing {
    Delivery(WireDelivery),
    Run(WireRun),
}

async fn publish(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Outgoing>,
    pool: PgPool,
    shutdown: CancellationToken,
) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut encoder = Encoder::new(&shared.node_id);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = check.tick() => {
                let own = shared.listener_pid.load(Ordering::Relaxed);
                match other_node_watches(&pool, own).await {
                    Ok(wanted) => shared.wanted.store(wanted, Ordering::Relaxed),
                    // Left as it was: while the database is unreachable
                    // the sends fail and the receivers count the gap.
                    Err(error) => tracing::debug!(%error, "Cannot tell whether another node watches the feeds."),
                }
            }
            received = queue.recv_many(&mut batch, BATCH) => {
                if received == 0 {
                    return;
                }
                let dropped = (
                    shared.dropped_deliveries.swap(0, Ordering::Relaxed),
                    shared.dropped_runs.swap(0, Ordering::Relaxed),
                );
                if dropped != (0, 0) {
                    tracing::debug!(deliveries = dropped.0, runs = dropped.1, "The feed bus queue was full; other nodes' watchers are told they missed changes.");
                }
                let payloads = encoder.encode(batch.drain(..), dropped);
                if let Err(error) = notify(&pool, &payloads).await {
                    tracing::debug!(%error, notifications = payloads.len(), "Could not send feed changes to the other nodes; their watchers are told they missed them.");
                }
            }
        }
    }
}

/// Whether a connection other than `own` (this node's LISTEN connection)
/// holds the feed lock in this database.
async fn other_node_watches(pool: &PgPool, own: i32) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND classid = $1::oid AND objid = $2::oid \
         AND objsubid = 2 AND pid <> $3 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
    )
    .bind(i64::from(FEED_LOCK.0))
    .bind(i64::from(FEED_LOCK.1))
    .bind(own)
    .fetch_one(pool)
    .await
}

/// One statement, one transaction: the notifications arrive in order.
async fn notify(pool: &PgPool, payloads: &[String]) -> sqlx::Result<()> {
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload")
        .bind(CHANNEL)
        .bind(payloads)
        .execute(pool)
        .await?;
    Ok(())
}

/// Packs changes into payloads under `PAYLOAD_LIMIT`, numbering them.
struct Encoder {
    /// The node id as a JSON string.
    node: String,
    next_delivery: u64,
    next_run: u64,
}

/// One message being filled.
struct Pending {
    first_delivery: u64,
    first_run: u64,
    deliveries: Vec<String>,
    runs: Vec<String>,
    bytes: usize,
}

impl Encoder {
    fn new(node_id: &str) -> Encoder {
        Encoder {
            node: serde_json::to_string(node_id).unwrap_or_else(|_| "\"\"".to_string()),
            next_delivery: 0,
            next_run: 0,
        }
    }

    /// The payloads for `changes`, after `dropped` (deliveries, runs) that
    /// never made it into the queue.
    fn encode(
        &mut self,
        changes: impl IntoIterator<Item = Outgoing>,
        dropped: (u64, u64),
    ) -> Vec<String> {
        self.next_delivery += dropped.0;
        self.next_run += dropped.1;
        let mut payloads = Vec::new();
        let mut pending = self.start();
        for change in changes {
            let (entry, is_run) = match change {
                Outgoing::Delivery(mut delivery) => match fitting_delivery(&mut delivery) {
                    Some(entry) => (entry, false),
                    None => {
                        // Too big even cut: numbered, not sent; the
                        // receivers count it missed.
                        self.flush(&mut pending, &mut payloads);
                        self.next_delivery += 1;
                        pending = self.start();
                        continue;
                    }
                },
                Outgoing::Run(run) => (fitting_run(&run), true),
            };
            if pending.bytes + entry.len() + 1 > PAYLOAD_LIMIT {
                self.flush(&mut pending, &mut payloads);
                pending = self.start();
            }
            pending.bytes += entry.len() + 1;
            if is_run {
                pending.runs.push(entry);
                self.next_run += 1;
            } else {
                pending.deliveries.push(entry);
                self.next_delivery += 1;
            }
        }
        self.flush(&mut pending, &mut payloads);
        payloads
    }

    fn start(&self) -> Pending {
        Pending {
            first_delivery: self.next_delivery,
            first_run: self.next_run,
            deliveries: Vec::new(),
            runs: Vec::new(),
            // The envelope (106 bytes with the numbers at their widest).
            bytes: self.node.len() + 120,
        }
    }

    fn flush(&self, pending: &mut Pending, payloads: &mut Vec<String>) {
        if pending.deliveries.is_empty() && pending.runs.is_empty() {
            return;
        }
        payloads.push(format!(
            "{{\"node\":{},\"first_delivery\":{},\"first_run\":{},\"deliveries\":[{}],\"runs\":[{}]}}",
            self.node,
            pending.first_delivery,
            pending.first_run,
            pending.deliveries.join(","),
            pending.runs.join(","),
        ));
        pending.deliveries.clear();
        pending.runs.clear();
    }
}

/// The largest an entry may be: a message holds at least one.
const ENTRY_LIMIT: usize = PAYLOAD_LIMIT - 400;

fn fitting_delivery(delivery: &mut WireDelivery) -> Option<String> {
    if let Some(error) = &mut delivery.error {
        cut(error, ERROR_LIMIT);
    }
    serde_json::to_string(delivery)
        .ok()
        .filter(|entry| entry.len() <= ENTRY_LIMIT)
}

/// The run, or its id for the receiver to read when it is too big.
fn fitting_run(run: &WireRun) -> String {
    // `RunEntry::Whole` is untagged: the run's own JSON.
    serde_json::to_string(run)
        .ok()
        .filter(|entry| entry.len() <= ENTRY_LIMIT)
        .unwrap_or_else(|| {
            let stored = RunEntry::Stored {
                stored: run.id.clone(),
                time: run.time,
            };
            serde_json::to_string(&stored).unwrap_or_default()
        })
}

/// Cuts `s` to at most `limit` bytes, on a character boundary.
fn cut(s: &mut String, limit: usize) {
    if s.len() <= limit {
        return;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

// ---- receiving ----

async fn receive(
    shared: Arc<Shared>,
    feeds: Arc<dyn LocalFeeds>,
    reads: PgPool,
    shutdown: CancellationToken,
) {
    let (watched_tx, watched_rx) = watch::channel(false);
    tokio::join!(
        follow_watchers(&shared, feeds.as_ref(), watched_tx, &shutdown),
        listen(&shared, feeds.clone(), reads, watched_rx, &shutdown),
    );
}

/// Whether this node has a watcher, checked once a second and when one
/// opens; ends at shutdown.
async fn follow_watchers(
    shared: &Shared,
    feeds: &dyn LocalFeeds,
    watched: watch::Sender<bool>,
    shutdown: &CancellationToken,
) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = check.tick() => {}
            _ = shared.watch_started.notified() => {}
        }
        let now = feeds.watched();
        watched.send_if_modified(|was| std::mem::replace(was, now) != now);
    }
}

/// Listens while this node has a watcher. The wait for a notification is
/// only ever cancelled to stop listening, never to look at something else.
async fn listen(
    shared: &Shared,
    feeds: Arc<dyn LocalFeeds>,
    reads: PgPool,
    mut watched: watch::Receiver<bool>,
    shutdown: &CancellationToken,
) {
    let mut receiver = Receiver {
        own_node: shared.node_id.clone(),
        feeds,
        reads: reads.clone(),
        expected: HashMap::new(),
    };
    loop {
        // Where each node's numbers were is kept across a reconnection (so
        // what it sent meanwhile shows as a gap), not across a stop.
        receiver.expected.clear();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // An error: the follower is gone, at shutdown.
            gone = async { watched.wait_for(|w| *w).await.is_err() } => if gone {
                return;
            },
        }
        let stopped = loop {
            let mut session = match Session::open(&reads).await {
                Ok(session) => session,
                Err(error) => {
                    tracing::debug!(%error, "Cannot listen for the other nodes' feed changes yet.");
                    tokio::select! {
                        _ = shutdown.cancelled() => break true,
                        _ = tokio::time::sleep(CHECK_EVERY) => {}
                    }
                    if !*watched.borrow() {
                        break false;
                    }
                    continue;
                }
            };
            shared.listener_pid.store(session.pid, Ordering::Relaxed);
            let ended = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break Some(true),
                    gone = async { watched.wait_for(|w| !*w).await.is_err() } => break Some(gone),
                    received = session.listener.try_recv() => match received {
                        Ok(Some(notification)) => receiver.handle(notification.payload()).await,
                        // Reconnected at once, without the lock: take it
                        // again. What was sent meanwhile shows as a gap.
                        Ok(None) => match session.lock().await {
                            Ok(pid) => shared.listener_pid.store(pid, Ordering::Relaxed),
                            Err(error) => {
                                tracing::debug!(%error, "Lost the feed connection; listening again.");
                                break None;
                            }
                        },
                        Err(error) => {
                            tracing::debug!(%error, "Lost the feed connection; listening again.");
                            break None;
                        }
                    },
                }
            };
            shared.listener_pid.store(0, Ordering::Relaxed);
            session.close().await;
            match ended {
                Some(stopped) => break stopped,
                None => continue,
            }
        };
        if stopped {
            return;
        }
    }
}

/// A LISTEN connection holding the feed lock. Its pool is its own, so that
/// closing it ends the session, and the lock with it.
struct Session {
    pool: PgPool,
    listener: PgListener,
    pid: i32,
}

impl Session {
    async fn open(reads: &PgPool) -> sqlx::Result<Session> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with((*reads.connect_options()).clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        let mut session = Session {
            pool,
            listener,
            pid: 0,
        };
        session.pid = session.lock().await?;
        Ok(session)
    }

    /// Takes the feed lock on the listening connection; its backend pid.
    /// Only an exclusive holder could refuse a shared lock, and none takes
    /// one; a refusal would only keep the other nodes from sending.
    async fn lock(&mut self) -> sqlx::Result<i32> {
        let (taken, pid): (bool, i32) =
            sqlx::query_as("SELECT pg_try_advisory_lock_shared($1, $2), pg_backend_pid()")
                .bind(FEED_LOCK.0)
                .bind(FEED_LOCK.1)
                .fetch_one(&mut self.listener)
                .await?;
        if !taken {
            tracing::warn!("Another session holds the feed lock exclusively; the other nodes will not send their changes here.");
        }
        Ok(pid)
    }

    async fn close(self) {
        let Session { pool, listener, .. } = self;
        drop(listener);
        // Waits for the connection to come back from the listener, then
        // closes it: the session ends and the lock is released.
        let _ = tokio::time::timeout(CLOSE_WAIT, pool.close()).await;
    }
}

struct Receiver {
    own_node: Arc<str>,
    feeds: Arc<dyn LocalFeeds>,
    reads: PgPool,
    /// Per node: the numbers of its next delivery change and run change.
    expected: HashMap<String, (u64, u64)>,
}

impl Receiver {
    async fn handle(&mut self, payload: &str) {
        let message: Message = match serde_json::from_str(payload) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%error, "Ignored a feed notification this build cannot read.");
                return;
            }
        };
        if *message.node == *self.own_node {
            return;
        }
        let end = (
            (message.first_delivery).saturating_add(message.deliveries.len() as u64),
            (message.first_run).saturating_add(message.runs.len() as u64),
        );
        let expected = self
            .expected
            .entry(message.node)
            .or_insert((message.first_delivery, message.first_run));
        let mut missed_deliveries = message.first_delivery.saturating_sub(expected.0);
        let mut missed_runs = message.first_run.saturating_sub(expected.1);
        *expected = (expected.0.max(end.0), expected.1.max(end.1));

        let mut deliveries = Vec::with_capacity(message.deliveries.len());
        for wire in message.deliveries {
            let time_ms = wire.time;
            match wire.into_delivery() {
                Some(delivery) => deliveries.push(RemoteChange::Delivery { delivery, time_ms }),
                None => missed_deliveries += 1,
            }
        }
        let mut runs = Vec::with_capacity(message.runs.len());
        for entry in message.runs {
            match self.run(entry).await {
                Some(change) => runs.push(change),
                None => missed_runs += 1,
            }
        }
        if missed_deliveries + missed_runs > 0 {
            self.feeds.remote(RemoteChange::Missed {
                deliveries: missed_deliveries,
                runs: missed_runs,
            });
        }
        for change in deliveries.into_iter().chain(runs) {
            self.feeds.remote(change);
        }
    }

    async fn run(&self, entry: RunEntry) -> Option<RemoteChange> {
        match entry {
            RunEntry::Whole(wire) => {
                let time_ms = wire.time;
                wire.into_run()
                    .map(|run| RemoteChange::Run { run, time_ms })
            }
            RunEntry::Stored { stored, time } => match read_run(&self.reads, &stored).await {
                Ok(Some(run)) => Some(RemoteChange::Run { run, time_ms: time }),
                Ok(None) => None,
                Err(error) => {
                    tracing::debug!(%error, run_id = %stored, "Could not read a run another node changed.");
                    None
                }
            },
        }
    }
}

async fn read_run(pool: &PgPool, id: &str) -> crate::store::Result<Option<Run>> {
    let row = sqlx::query("SELECT * FROM flow_runs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(|row| crate::store::rows::run_from_row(&row))
        .transpose()
}

// ---- the wire format ----

#[derive(Deserialize)]
struct Message {
    node: String,
    first_delivery: u64,
    first_run: u64,
    #[serde(default)]
    deliveries: Vec<WireDelivery>,
    #[serde(default)]
    runs: Vec<RunEntry>,
}

/// A delivery change; keys kept short, as a message holds many.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireDelivery {
    id: u64,
    seq: u64,
    event: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    sub: String,
    sub_name: String,
    endpoint: String,
    status: String,
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_ms: Option<i64>,
    created_ms: i64,
    updated_ms: i64,
    /// When the change happened, on the node that made it.
    time: i64,
}

impl WireDelivery {
    fn new(d: &Delivery, time: i64) -> WireDelivery {
        WireDelivery {
            id: d.id,
            seq: d.event_seq,
            event: d.event_id.clone(),
            name: d.event_name.clone(),
            tenant: d.tenant_id.clone(),
            sub: d.subscription_id.clone(),
            sub_name: d.subscription_name.clone(),
            endpoint: d.endpoint_id.clone(),
            status: d.status.as_str().to_string(),
            attempts: d.attempts,
            code: d.last_status_code,
            error: d.last_error.clone(),
            duration_ms: d.last_duration_ms,
            next_ms: d.next_attempt_ms,
            created_ms: d.created_ms,
            updated_ms: d.updated_ms,
            time,
        }
    }

    /// `None` for a status this build does not know.
    fn into_delivery(self) -> Option<Delivery> {
        Some(Delivery {
            id: self.id,
            event_seq: self.seq,
            event_id: self.event,
            event_name: self.name,
            tenant_id: self.tenant,
            subscription_id: self.sub,
            subscription_name: self.sub_name,
            endpoint_id: self.endpoint,
            status: DeliveryStatus::parse(&self.status)?,
            attempts: self.attempts,
            last_status_code: self.code,
            last_error: self.error,
            last_duration_ms: self.duration_ms,
            next_attempt_ms: self.next_ms,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum RunEntry {
    Whole(WireRun),
    /// Too big to travel: read it from the database.
    Stored {
        stored: String,
        time: i64,
    },
}

/// A run as `WatchRuns` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireRun {
    id: String,
    flow: String,
    flow_version: u64,
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    inputs: String,
    trigger: String,
    step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wake_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    time: i64,
}

impl WireRun {
    fn new(run: &Run, time: i64) -> WireRun {
        WireRun {
            id: run.id.clone(),
            flow: run.flow_id.clone(),
            flow_version: run.flow_version,
            state: run.state.as_str().to_string(),
            key: run.key.clone(),
            inputs: run.inputs.clone(),
            trigger: run.trigger.clone(),
            step: run.step_index,
            wake_ms: run.wake_ms,
            error: run.error.clone(),
            created_ms: run.created_ms,
            updated_ms: run.updated_ms,
            time,
        }
    }

    /// The run without what does not travel (step records, trigger data,
    /// attempt counters); `None` for a state this build does not know.
    fn into_run(self) -> Option<Run> {
        Some(Run {
            id: self.id,
            flow_id: self.flow,
            flow_version: self.flow_version,
            state: RunState::parse(&self.state)?,
            key: self.key,
            inputs: self.inputs,
            trigger: self.trigger,
            trigger_data: "{}".to_string(),
            step_index: self.step,
            step_waited: false,
            attempt: 0,
            attempt_group: 0,
            wake_ms: self.wake_ms,
            steps: "{}".to_string(),
            error: self.error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: u64, error: Option<String>) -> Delivery {
        Delivery {
            id,
            event_seq: id,
            event_id: format!("evt_{id}"),
            event_name: "lead.created".to_string(),
            tenant_id: None,
            subscription_id: "sub".to_string(),
            subscription_name: "leads".to_string(),
            endpoint_id: "crm".to_string(),
            status: DeliveryStatus::InFlight,
            attempts: 1,
            last_status_code: Some(500),
            last_error: error,
            last_duration_ms: Some(12),
            next_attempt_ms: None,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    fn run(id: &str, inputs: String) -> Run {
        Run {
            id: id.to_string(),
            flow_id: "welcome".to_string(),
            flow_version: 3,
            state: RunState::Waiting,
            key: Some("k".to_string()),
            inputs,
            trigger: "api".to_string(),
            trigger_data: "{}".to_string(),
            step_index: 2,
            step_waited: false,
            attempt: 0,
            attempt_group: 0,
            wake_ms: Some(99),
            steps: "{}".to_string(),
            error: None,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    fn messages(payloads: &[String]) -> Vec<Message> {
        payloads
            .iter()
            .map(|p| {
                assert!(p.len() < PAYLOAD_LIMIT, "a payload of {} bytes", p.len());
                serde_json::from_str(p).expect("a payload parses")
            })
            .collect()
    }

    #[test]
    fn many_changes_are_split_under_the_payload_limit_and_numbered_in_order() {
        let mut encoder = Encoder::new("node-a");
        let changes =
            (0..500).map(|i| Outgoing::Delivery(WireDelivery::new(&delivery(i, None), 7)));
        let payloads = encoder.encode(changes, (0, 0));
        assert!(
            payloads.len() > 1,
            "500 deliveries do not fit in one notification"
        );
        let mut next = 0;
        for message in messages(&payloads) {
            assert_eq!(message.node, "node-a");
            assert_eq!(message.first_delivery, next);
            for d in message.deliveries {
                assert_eq!(d.id, next);
                let back = d.into_delivery().expect("a known status");
                assert_eq!(back.status, DeliveryStatus::InFlight);
                assert_eq!(back.last_status_code, Some(500));
                next += 1;
            }
        }
        assert_eq!(next, 500);
    }

    #[test]
    fn dropped_changes_leave_a_gap_in_the_numbers() {
        let mut encoder = Encoder::new("node-a");
        let one = |i| vec![Outgoing::Delivery(WireDelivery::new(&delivery(i, None), 7))];
        let first = messages(&encoder.encode(one(0), (0, 0)));
        assert_eq!(first[0].first_delivery, 0);
        let second = messages(&encoder.encode(one(1), (5, 2)));
        assert_eq!(second[0].first_delivery, 6, "five dropped after the first");
        assert_eq!(second[0].first_run, 2);
    }

    #[test]
    fn a_long_error_is_cut_and_a_big_run_travels_as_its_id() {
        let mut encoder = Encoder::new("node-a");
        let long = "é".repeat(10_000);
        let payloads = encoder.encode(
            vec![
                Outgoing::Delivery(WireDelivery::new(&delivery(1, Some(long)), 7)),
                Outgoing::Run(WireRun::new(&run("run_big", "x".repeat(20_000)), 8)),
                Outgoing::Run(WireRun::new(&run("run_small", "{}".to_string()), 9)),
            ],
            (0, 0),
        );
        let all = messages(&payloads);
        let deliveries: Vec<_> = all.iter().flat_map(|m| &m.deliveries).collect();
        assert!(deliveries[0]
            .error
            .as_ref()
            .is_some_and(|e| e.len() <= ERROR_LIMIT));
        let runs: Vec<_> = all.iter().flat_map(|m| &m.runs).collect();
        assert!(matches!(runs[0], RunEntry::Stored { stored, time: 8 } if stored == "run_big"));
        let RunEntry::Whole(small) = runs[1] else {
            panic!("a small run travels whole");
        };
        let back = small.clone().into_run().expect("a known state");
        assert_eq!(back.id, "run_small");
        assert_eq!(back.state, RunState::Waiting);
        assert_eq!(back.step_index, 2);
        assert_eq!(back.key.as_deref(), Some("k"));
    }

    #[test]
    fn cut_keeps_characters_whole() {
        let mut s = "aé".to_string();
        cut(&mut s, 2);
        assert_eq!(s, "a");
    }
}
