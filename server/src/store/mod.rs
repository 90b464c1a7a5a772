//! Storage: the one place that knows SQL. It owns the schema (migrations are
//! embedded), the catalog of endpoints, subscriptions, sources and flows, the
//! delivery history and runs, and the group-commit writer through which every
//! event, attempt result and run change reaches disk.
//!
//! `Store` hides the backend behind one enum: every storage call goes through
//! it (`dispatch!`), so PostgreSQL slots in as a second variant next to
//! SQLite with the same methods and the same tests; the rest of the daemon
//! never sees a connection. `store` depends only on `model`; what the writer
//! committed leaves through the `Committed` channel and `RunsCommitted`.
//!
//! # Layout
//! - `writer`: the group-commit writer, backend-neutral.
//! - `sqlite`: the SQLite backend: reads (`mod.rs`, `flows`, `sources`,
//!   `stats`), one row mapping per table (`rows`), the committer (its write
//!   connection), the log and its checkpointer, and which failures are
//!   fail-stop.

mod postgres;
pub mod retention;
mod rows;
mod sqlite;
pub mod writer;

use std::{collections::BTreeMap, path::Path, time::Duration};

pub use postgres::feed_bus::{FeedBus, FeedBusTask, LocalFeeds, RemoteChange};
pub use writer::{
    Committed, FlowOp, PublishOutcome, Rejection, RunsCommitted, Settled, SubmitError, Writer,
    WriterConfig,
};

use crate::model::{
    flow::{RunFilter, StoredFlow},
    run::{LogLine, Run},
    source::{Source, SourceStatus},
    Attempt, Delivery, DeliveryFilter, DueCursor, DueDelivery, Endpoint, EndpointState, EventType,
    StoredEvent, Subscription,
};

/// Which deliveries a bulk retry makes due again: the dead ones (and the
/// failed ones, with `include_failed`) created in `[from_ms, to_ms)`, of one
/// endpoint when given.
#[derive(Debug, Clone, Copy)]
pub struct RetryScope<'a> {
    pub endpoint_id: Option<&'a str>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub include_failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be reached or could not commit; nothing was stored.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    #[error("{0}")]
    AlreadyExists(String),
    /// Optimistic concurrency: someone else changed the row since it was read.
    #[error("{what} `{id}` was changed by someone else: version {current} is current, the update named {given}")]
    StaleVersion {
        what: &'static str,
        id: String,
        current: u64,
        given: u64,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    /// Storage failed in a way that leaves what is on disk unknown (a failed
    /// sync, an I/O error, corruption): fail-stop, see `fail_stop`.
    #[error("storage failed: {0}")]
    Fatal(String),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // PostgreSQL refuses U+0000 in any text parameter (22021); nothing
        // stored holds one (it is stripped on the way in), so a lookup or
        // filter with it matches nothing. It is the caller's input, not an
        // outage.
        if e.as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "22021")
        {
            return Error::FailedPrecondition(
                "text containing U+0000 (NUL) matches nothing stored".to_string(),
            );
        }
        Error::Unavailable(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Unavailable(format!("migration failed: {e}"))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Storage's long-lived tasks, for the daemon to supervise. Each ends with
/// [`Error::Fatal`] when storage fails (see `fail_stop`); the writer also
/// when its commit thread or its syncer stops.
pub struct Tasks {
    pub writer: tokio::task::JoinHandle<Result<()>>,
    /// SQLite's: copies the log into the database file.
    pub checkpointer: Option<tokio::task::JoinHandle<Result<()>>>,
    /// PostgreSQL's: a newer catalog version, whichever daemon sharing the
    /// database changed endpoints, subscriptions, sources or flows; the
    /// daemon reloads its caches on each.
    pub catalog_changes: Option<tokio::sync::mpsc::Receiver<u64>>,
}

/// Where the data lives: `storage.postgres_url` when set, else SQLite in
/// `data_dir`.
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl std::fmt::Display for Target {
    /// Where, for messages; a PostgreSQL URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(path) => write!(f, "{}", path.display()),
            Target::Postgres(url) => match url.parse::<reqwest::Url>() {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    write!(f, "{parsed}")
                }
                Err(_) => f.write_str("storage.postgres_url"),
            },
        }
    }
}

/// A node's lease on an endpoint: it alone sends the endpoint's deliveries,
/// and each result it stores carries `token`, which stops counting once
/// another node has taken the lease over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub endpoint_id: String,
    pub token: i64,
}

/// Which endpoints got new deliveries committed, by any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveriesHint {
    Endpoints(Vec<String>),
    /// Notifications may have been lost: any endpoint may have some.
    Any,
}

/// A page of deliveries, newest first.
#[derive(Debug, Default)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Where the next page starts (exclusive), when there is one.
    pub next_before: Option<u64>,
}

/// Numbers for the admin screens since a point in time.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EndpointCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub backlog: u64,
    /// The latest error in the window and when it was recorded (ms).
    pub last_error: Option<(String, i64)>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryStats {
    pub matched: BTreeMap<String, u64>,
    pub endpoints: BTreeMap<String, EndpointCounts>,
}

#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// Forwards a call to whichever backend is configured.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*).await,
            Backend::Postgres(b) => b.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`, runs the
    /// migrations and starts the writer. The writer's output goes to `committed`.
    pub async fn open_sqlite(
        path: &Path,
        writer_config: writer::WriterConfig,
        committed: tokio::sync::mpsc::Sender<Committed>,
        runs: std::sync::Arc<dyn RunsCommitted>,
    ) -> Result<(Store, Writer, Tasks)> {
        let (store, mut conn) = sqlite::SqliteStore::open(path).await?;
        let checkpointer = conn.take_checkpointer()?;
        let (writer, writer_task) = writer::spawn(
            writer::Backend::Sqlite(conn),
            writer_config,
            committed,
            runs,
        );
        Ok((
            Store {
                backend: Backend::Sqlite(store),
            },
            writer,
            Tasks {
                writer: writer_task,
                checkpointer: Some(checkpointer),
                catalog_changes: None,
            },
        ))
    }

    /// Opens the configured backend: see `open_sqlite` and `open_postgres`.
    pub async fn open(
        target: &Target,
        writer_config: writer::WriterConfig,
        committed: tokio::sync::mpsc::Sender<Committed>,
        runs: std::sync::Arc<dyn RunsCommitted>,
    ) -> Result<(Store, Writer, Tasks)> {
        match target {
            Target::Sqlite(path) => Store::open_sqlite(path, writer_config, committed, runs).await,
            Target::Postgres(url) => {
                Store::open_postgres(url, writer_config, committed, runs).await
            }
        }
    }

    /// Connects to PostgreSQL at `url`, brings its schema up to date and
    /// starts the writer. The writer's output goes to `committed`.
    pub async fn open_postgres(
        url: &str,
        writer_config: writer::WriterConfig,
        committed: tokio::sync::mpsc::Sender<Committed>,
        runs: std::sync::Arc<dyn RunsCommitted>,
    ) -> Result<(Store, Writer, Tasks)> {
        let (store, committer) = postgres::PgStore::open(url).await?;
        let catalog_changes = Some(store.watch_catalog());
        let (writer, writer_task) = writer::spawn(
            writer::Backend::Postgres(committer),
            writer_config,
            committed,
            runs,
        );
        Ok((
            Store {
                backend: Backend::Postgres(store),
            },
            writer,
            Tasks {
                writer: writer_task,
                checkpointer: None,
                catalog_changes,
            },
        ))
    }

    /// Applies the schema migrations the database lacks (`hookyard migrate`)
    /// and returns their versions; refuses a schema newer than this build.
    pub async fn migrate(target: &Target) -> Result<Vec<i64>> {
        match target {
            Target::Sqlite(path) => sqlite::migrate(path).await,
            Target::Postgres(url) => postgres::migrate_url(url).await,
        }
    }

    /// This daemon's id among those sharing the database; `None` on SQLite,
    /// where one daemon owns the file.
    pub fn node_id(&self) -> Option<&str> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.node_id()),
        }
    }

    /// Names this daemon among those sharing the database after the public
    /// address it listens on (see `PgStore::named`); nothing on SQLite.
    pub fn named(self, listen: std::net::SocketAddr) -> Store {
        match self.backend {
            Backend::Postgres(pg) => Store {
                backend: Backend::Postgres(pg.named(listen)),
            },
            sqlite => Store { backend: sqlite },
        }
    }

    /// Copies the SQLite database at `target` into the file `to` while the
    /// daemon may be running (a consistent snapshot); returns the copy's
    /// size. PostgreSQL is backed up with its own tools.
    pub async fn backup(target: &Target, to: &Path) -> Result<u64> {
        match target {
            Target::Sqlite(db) => {
                let (db, to) = (db.clone(), to.to_path_buf());
                tokio::task::spawn_blocking(move || sqlite::backup::backup(&db, &to))
                    .await
                    .map_err(|e| Error::Unavailable(format!("the backup stopped: {e}")))?
            }
            Target::Postgres(_) => Err(Error::FailedPrecondition(
                "storage is PostgreSQL: back it up with pg_dump or your database service's \
                 backups (hookyard backup copies the SQLite database)"
                    .to_string(),
            )),
        }
    }

    pub async fn event_seq_range(&self) -> Result<Option<(i64, i64)>> {
        dispatch!(self.event_seq_range())
    }

    pub async fn delivery_id_range(&self) -> Result<Option<(i64, i64)>> {
        dispatch!(self.delivery_id_range())
    }

    pub async fn prune_event_window(
        &self,
        after: i64,
        upto: i64,
        cutoff_ms: i64,
        dead_cutoff_ms: i64,
    ) -> Result<retention::Window> {
        dispatch!(self.prune_event_window(after, upto, cutoff_ms, dead_cutoff_ms))
    }

    pub async fn prune_attempt_window(
        &self,
        after: i64,
        upto: i64,
        cutoff_ms: i64,
    ) -> Result<retention::Window> {
        dispatch!(self.prune_attempt_window(after, upto, cutoff_ms))
    }

    pub async fn prune_runs(&self, cutoff_ms: i64, limit: usize) -> Result<u64> {
        dispatch!(self.prune_runs(cutoff_ms, limit))
    }

    /// Whether several daemons may share this storage (PostgreSQL), so
    /// endpoints and runs are leased before they are worked on.
    pub fn is_shared(&self) -> bool {
        self.node_id().is_some()
    }

    /// Marks this node alive and renews its run leases; the number of live
    /// nodes (1 on SQLite).
    pub async fn heartbeat(&self, lease: Duration) -> Result<u64> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(1),
            Backend::Postgres(pg) => pg.heartbeat(lease).await,
        }
    }

    pub async fn renew_endpoint_leases(&self, lease: Duration) -> Result<Vec<Lease>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.renew_endpoint_leases(lease).await,
        }
    }

    pub async fn acquire_endpoint_leases(
        &self,
        candidates: &[String],
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Lease>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.acquire_endpoint_leases(candidates, limit, lease).await,
        }
    }

    pub async fn release_endpoint_lease(&self, endpoint_id: &str, token: i64) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pg) => pg.release_endpoint_lease(endpoint_id, token).await,
        }
    }

    /// A clean stop: this node's leases are given up at once.
    pub async fn leave_cluster(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pg) => pg.leave_cluster().await,
        }
    }

    /// When each endpoint's earliest delivery still to be made falls due.
    pub async fn due_of(&self, endpoint_ids: &[String]) -> Result<Vec<(String, i64)>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.due_of(endpoint_ids).await,
        }
    }

    /// Endpoints with deliveries to make that no longer exist (PostgreSQL:
    /// deleted while no node held them); none on SQLite, whose one
    /// dispatcher dead-letters them itself.
    pub async fn orphaned_endpoints(&self) -> Result<Vec<String>> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(Vec::new()),
            Backend::Postgres(pg) => pg.orphaned_endpoints().await,
        }
    }

    /// Takes a run for this node to step; `false` when another node steps
    /// it. Always `true` on SQLite (one daemon).
    pub async fn claim_run(&self, run_id: &str, lease: Duration) -> Result<bool> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(true),
            Backend::Postgres(pg) => pg.claim_run(run_id, lease).await,
        }
    }

    pub async fn release_run(&self, run_id: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pg) => pg.release_run(run_id).await,
        }
    }

    /// Endpoints that got deliveries from any node; `None` on SQLite, where
    /// the writer's channel says it all.
    pub fn watch_deliveries(&self) -> Option<tokio::sync::mpsc::Receiver<DeliveriesHint>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.watch_deliveries()),
        }
    }

    /// A message whenever runs changed on any node sharing the database;
    /// `None` on SQLite, where the writer wakes the engine itself.
    pub fn watch_runs(&self) -> Option<tokio::sync::mpsc::Receiver<()>> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.watch_runs()),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        dispatch!(self.ping())
    }

    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>> {
        dispatch!(self.list_endpoints())
    }

    pub async fn get_endpoint(&self, id: &str) -> Result<Endpoint> {
        dispatch!(self.get_endpoint(id))
    }

    pub async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint> {
        dispatch!(self.create_endpoint(endpoint))
    }

    /// Replaces the endpoint if `endpoint.version` is the stored version.
    pub async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint> {
        dispatch!(self.update_endpoint(endpoint))
    }

    /// Creates or replaces an endpoint declared in the config file.
    pub async fn upsert_endpoint(&self, endpoint: &Endpoint) -> Result<Endpoint> {
        match self.get_endpoint(&endpoint.id).await {
            Ok(current) => {
                let mut next = endpoint.clone();
                next.version = current.version;
                next.previous_secret = current.previous_secret;
                next.failing_since_ms = current.failing_since_ms;
                // What the daemon disabled stays disabled across restarts
                // until an admin enables it.
                if matches!(current.state, EndpointState::Gone | EndpointState::Failing)
                    && next.state == EndpointState::Enabled
                {
                    next.state = current.state;
                    next.disabled_reason = current.disabled_reason;
                }
                self.update_endpoint(&next).await
            }
            Err(Error::NotFound { .. }) => self.create_endpoint(endpoint).await,
            Err(other) => Err(other),
        }
    }

    pub async fn delete_endpoint(&self, id: &str) -> Result<()> {
        dispatch!(self.delete_endpoint(id))
    }

    pub async fn set_endpoint_state(&self, id: &str, state: EndpointState) -> Result<()> {
        dispatch!(self.set_endpoint_state(id, state))
    }

    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        dispatch!(self.list_subscriptions())
    }

    pub async fn get_subscription(&self, id: &str) -> Result<Subscription> {
        dispatch!(self.get_subscription(id))
    }

    pub async fn create_subscription(&self, sub: &Subscription) -> Result<Subscription> {
        dispatch!(self.create_subscription(sub))
    }

    pub async fn update_subscription(&self, sub: &Subscription) -> Result<Subscription> {
        dispatch!(self.update_subscription(sub))
    }

    /// Creates or replaces (by name) a subscription declared in the config file.
    pub async fn upsert_subscription(&self, sub: &Subscription) -> Result<Subscription> {
        match dispatch!(self.find_subscription_by_name(&sub.name))? {
            Some(current) => {
                let mut next = sub.clone();
                next.id = current.id;
                next.version = current.version;
                self.update_subscription(&next).await
            }
            None => self.create_subscription(sub).await,
        }
    }

    pub async fn delete_subscription(&self, id: &str) -> Result<()> {
        dispatch!(self.delete_subscription(id))
    }

    pub async fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        page_size: usize,
        before: Option<u64>,
    ) -> Result<DeliveryPage> {
        dispatch!(self.list_deliveries(filter, page_size, before))
    }

    pub async fn get_delivery(&self, id: u64) -> Result<(Delivery, StoredEvent, Vec<Attempt>)> {
        dispatch!(self.get_delivery(id))
    }

    /// A new delivery of a delivery's event to its endpoint, due now,
    /// whatever became of the original; returned ready to send.
    pub async fn resend_delivery(&self, id: u64) -> Result<(Delivery, DueDelivery)> {
        dispatch!(self.resend_delivery(id))
    }

    /// Makes every failed or dead delivery of an endpoint created at or after
    /// `since_ms` due now; how many.
    pub async fn recover_endpoint(&self, endpoint_id: &str, since_ms: i64) -> Result<u64> {
        dispatch!(self.recover_endpoint(endpoint_id, since_ms))
    }

    /// Records when the endpoint's attempts started failing (`None`: they
    /// succeed again). Not an admin change: the version stays.
    pub async fn set_endpoint_failing_since(&self, id: &str, since_ms: Option<i64>) -> Result<()> {
        dispatch!(self.set_endpoint_failing_since(id, since_ms))
    }

    /// Disables an enabled endpoint on the daemon's own decision, saying
    /// why; false when it was not enabled (an admin got there first).
    pub async fn disable_failing_endpoint(
        &self,
        id: &str,
        reason: &str,
        since_ms: i64,
    ) -> Result<bool> {
        dispatch!(self.disable_failing_endpoint(id, reason, since_ms))
    }

    /// Makes a failed or dead delivery due now and returns it ready to send.
    pub async fn schedule_retry(&self, id: u64) -> Result<(Delivery, DueDelivery)> {
        dispatch!(self.schedule_retry(id))
    }

    /// One endpoint's deliveries due at `now_ms` (pending, or failed with a
    /// retry due), in due order after `after` (from the start when `None`),
    /// up to `limit`, with ids no higher than `max_id`: the dispatcher's unit
    /// of work. Paging by cursor keeps each read small and never rereads what
    /// an earlier page returned.
    pub async fn claim_due(
        &self,
        endpoint_id: &str,
        now_ms: i64,
        max_id: u64,
        after: Option<DueCursor>,
        limit: usize,
    ) -> Result<Vec<DueDelivery>> {
        dispatch!(self.claim_due(endpoint_id, now_ms, max_id, after, limit))
    }

    /// When the endpoint's earliest delivery due after `after_ms` falls due.
    pub async fn next_due(&self, endpoint_id: &str, after_ms: i64) -> Result<Option<i64>> {
        dispatch!(self.next_due(endpoint_id, after_ms))
    }

    /// Makes due every parked delivery that no longer waits behind anything:
    /// the earliest unfinished one of its endpoint and ordering key. Run on
    /// start, so nothing stays parked for good whatever happened before.
    pub async fn unpark_orphans(&self) -> Result<u64> {
        dispatch!(self.unpark_orphans())
    }

    /// Where a scan for the events received since `from_ms` starts: the
    /// seq of the last event received before then (0: from the first).
    /// Events are received in about publish order, so a binary search over
    /// `seq` finds it with a few lookups and no index on the time.
    pub async fn events_received_since(&self, from_ms: i64) -> Result<u64> {
        let Some((first, first_ms)) = dispatch!(self.event_received_at(0))? else {
            return Ok(0);
        };
        if first_ms >= from_ms {
            return Ok(0);
        }
        let Some((_, max)) = self.event_seq_range().await? else {
            return Ok(0);
        };
        // The event at `lo` was received before `from_ms`; none at or after
        // `hi` is known to be.
        let (mut lo, mut hi) = (first, (max.max(0) as u64).saturating_add(1));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match dispatch!(self.event_received_at(mid))? {
                Some((seq, ms)) if seq < hi && ms < from_ms => lo = seq,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Up to `limit` events after `after_seq`, in publish order, with when
    /// each was received.
    pub async fn events_after(
        &self,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<(StoredEvent, i64)>> {
        dispatch!(self.events_after(after_seq, limit))
    }

    /// New deliveries, due now, of stored events (replay); their ids and
    /// endpoints.
    pub async fn insert_replayed(
        &self,
        routes: &[(u64, crate::model::Route)],
        now: i64,
    ) -> Result<Vec<(u64, std::sync::Arc<str>)>> {
        dispatch!(self.insert_replayed(routes, now))
    }

    /// Makes a page of dead deliveries due now (bulk retry).
    pub async fn retry_dead_page(
        &self,
        scope: &RetryScope<'_>,
        after_id: u64,
        limit: usize,
        now: i64,
    ) -> Result<Vec<(u64, std::sync::Arc<str>)>> {
        dispatch!(self.retry_dead_page(scope, after_id, limit, now))
    }

    /// Every endpoint with deliveries still to attempt, and when its earliest
    /// falls due.
    pub async fn due_endpoints(&self) -> Result<Vec<(String, i64)>> {
        dispatch!(self.due_endpoints())
    }

    /// The highest delivery id stored so far (0 when none).
    pub async fn max_delivery_id(&self) -> Result<u64> {
        dispatch!(self.max_delivery_id())
    }

    pub async fn list_flows(&self) -> Result<Vec<StoredFlow>> {
        dispatch!(self.list_flows())
    }

    pub async fn get_flow(&self, id: &str) -> Result<StoredFlow> {
        dispatch!(self.get_flow(id))
    }

    /// The YAML of one version of a flow (runs keep the version they started with).
    pub async fn flow_version(&self, id: &str, version: u64) -> Result<String> {
        dispatch!(self.flow_version(id, version))
    }

    /// Stores a new flow (version 1) or, with `expected` set, a new version
    /// of an existing one if `expected` is its current version. With
    /// `expected` unset and the flow present, replaces it when the YAML
    /// differs (the config file's upsert).
    pub async fn save_flow(
        &self,
        id: &str,
        yaml: &str,
        expected: Option<u64>,
        create_only: bool,
    ) -> Result<StoredFlow> {
        dispatch!(self.save_flow(id, yaml, expected, create_only))
    }

    /// Deletes a flow; its versions stay, so runs in progress finish.
    pub async fn delete_flow(&self, id: &str) -> Result<()> {
        dispatch!(self.delete_flow(id))
    }

    pub async fn set_flow_webhook_key(&self, id: &str, hash: Option<&[u8]>) -> Result<()> {
        dispatch!(self.set_flow_webhook_key(id, hash))
    }

    /// An event by id with each of its deliveries and their attempts.
    pub async fn get_event(
        &self,
        id: &str,
    ) -> Result<(StoredEvent, Vec<(Delivery, Vec<Attempt>)>)> {
        let (event, delivery_ids) =
            dispatch!(self.find_event(id))?.ok_or_else(|| Error::NotFound {
                what: "event",
                id: id.to_string(),
            })?;
        let mut deliveries = Vec::with_capacity(delivery_ids.len());
        for delivery_id in delivery_ids {
            let (delivery, _, attempts) = self.get_delivery(delivery_id).await?;
            deliveries.push((delivery, attempts));
        }
        Ok((event, deliveries))
    }

    pub async fn get_run(&self, id: &str) -> Result<(Run, Vec<LogLine>)> {
        dispatch!(self.get_run(id))
    }

    /// Runs newest first, after `before` (a `created_ms`/id cursor).
    pub async fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
        before: Option<(i64, String)>,
    ) -> Result<Vec<Run>> {
        dispatch!(self.list_runs(filter, limit, before))
    }

    /// Active runs due by `now_ms`, earliest first.
    pub async fn due_runs(&self, now_ms: i64, limit: usize) -> Result<Vec<Run>> {
        dispatch!(self.due_runs(now_ms, limit))
    }

    /// The earliest wake-up after `now_ms`.
    pub async fn next_run_wake_after(&self, now_ms: i64) -> Result<Option<i64>> {
        dispatch!(self.next_run_wake_after(now_ms))
    }

    pub async fn list_sources(&self, include_deleted: bool) -> Result<Vec<Source>> {
        dispatch!(self.list_sources(include_deleted))
    }

    /// The source, deleted or not.
    pub async fn get_source(&self, id: &str) -> Result<Source> {
        dispatch!(self.get_source(id))
    }

    pub async fn create_source(&self, s: &Source) -> Result<Source> {
        dispatch!(self.create_source(s))
    }

    /// Replaces everything but the token, if `s.version` is the stored one
    /// and the source is not deleted.
    pub async fn update_source(&self, s: &Source) -> Result<Source> {
        dispatch!(self.update_source(s))
    }

    /// Creates or replaces (by id) a source declared in the config file,
    /// with the token the file gives; a changed token takes effect at once.
    pub async fn upsert_source(&self, s: &Source) -> Result<Source> {
        dispatch!(self.upsert_source(s))
    }

    /// Soft delete: the token stops working at once.
    pub async fn delete_source(&self, id: &str) -> Result<()> {
        dispatch!(self.delete_source(id))
    }

    /// Installs a new token; the current one keeps working until `grace_ends_ms`.
    pub async fn rotate_source_token(
        &self,
        id: &str,
        new_hash: &[u8; 32],
        grace_ends_ms: i64,
    ) -> Result<Source> {
        dispatch!(self.rotate_source_token(id, new_hash, grace_ends_ms))
    }

    pub async fn set_source_status(&self, id: &str, status: SourceStatus) -> Result<Source> {
        dispatch!(self.set_source_status(id, status))
    }

    pub async fn list_event_types(&self) -> Result<Vec<EventType>> {
        dispatch!(self.list_event_types())
    }

    pub async fn get_event_type(&self, id: &str) -> Result<EventType> {
        dispatch!(self.get_event_type(id))
    }

    pub async fn create_event_type(&self, t: &EventType) -> Result<EventType> {
        dispatch!(self.create_event_type(t))
    }

    /// Replaces the event type if `t.version` is the stored version.
    pub async fn update_event_type(&self, t: &EventType) -> Result<EventType> {
        dispatch!(self.update_event_type(t))
    }

    /// Creates or replaces (by id) an event type declared in the config file.
    pub async fn upsert_event_type(&self, t: &EventType) -> Result<EventType> {
        match self.get_event_type(&t.id).await {
            Ok(current) => {
                let mut next = t.clone();
                next.version = current.version;
                self.update_event_type(&next).await
            }
            Err(Error::NotFound { .. }) => self.create_event_type(t).await,
            Err(other) => Err(other),
        }
    }

    pub async fn delete_event_type(&self, id: &str) -> Result<()> {
        dispatch!(self.delete_event_type(id))
    }

    /// Counts for the deliveries made at or after `since_ms`, plus each
    /// endpoint's current backlog.
    pub async fn delivery_stats(&self, since_ms: i64) -> Result<DeliveryStats> {
        dispatch!(self.delivery_stats(since_ms))
    }

    /// On PostgreSQL, the bus that carries this node's delivery and run
    /// changes to the other nodes' watchers and theirs to this node's
    /// (`postgres::feed_bus`); `None` on SQLite. One per daemon.
    pub fn feed_bus(&self) -> Option<(FeedBus, FeedBusTask)> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(pg) => Some(pg.feed_bus()),
        }
    }
}

/// A version applied to the database that this build does not have means a
/// newer build migrated it.
fn refuse_newer_schema(applied: &[i64], known: &sqlx::migrate::Migrator) -> Result<()> {
    let newest_known = known.iter().map(|m| m.version).max().unwrap_or(0);
    match applied
        .iter()
        .find(|v| !known.iter().any(|m| m.version == **v))
    {
        Some(unknown) => Err(Error::Unavailable(format!(
            "the database's schema is newer than this build of Hookyard knows (it has migration \
             {unknown}; the newest this build has is {newest_known}): run a newer Hookyard, or \
             restore a backup taken before the upgrade"
        ))),
        None => Ok(()),
    }
}
