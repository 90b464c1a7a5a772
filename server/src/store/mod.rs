//! Storage: the one place that knows SQL. It owns the schema (migrations are
//! embedded), the catalog of endpoints and subscriptions, the delivery history,
//! and the group-commit writer through which every event and every attempt
//! result reaches disk.
//!
//! `Store` hides the backend behind one enum so PostgreSQL can slot in as a
//! second variant next to SQLite with the same methods and the same tests; the
//! rest of the daemon never sees a connection.

mod checkpoint;
mod committer;
mod fail_stop;
mod fault;
pub mod flows;
mod sources;
mod sqlite;
mod stats;
mod wal;
pub mod writer;

use std::path::Path;

pub use writer::{
    Committed, FlowOp, PublishOutcome, Rejection, RunsCommitted, Settled, SubmitError, Writer,
    WriterConfig,
};

use crate::model::{
    Attempt, Delivery, DeliveryFilter, DueCursor, DueDelivery, Endpoint, EndpointState,
    StoredEvent, Subscription,
};

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
    pub checkpointer: tokio::task::JoinHandle<Result<()>>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Default)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    /// Where the next page starts (exclusive), when there is one.
    pub next_before: Option<u64>,
}

#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
}

/// Forwards a call to whichever backend is configured.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.backend {
            Backend::Sqlite(b) => b.$method($($arg),*).await,
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
                checkpointer,
            },
        ))
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
        dispatch!(self.upsert_endpoint(endpoint))
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
        dispatch!(self.upsert_subscription(sub))
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

    /// Every endpoint with deliveries still to attempt, and when its earliest
    /// falls due.
    pub async fn due_endpoints(&self) -> Result<Vec<(String, i64)>> {
        dispatch!(self.due_endpoints())
    }

    /// The highest delivery id stored so far (0 when none).
    pub async fn max_delivery_id(&self) -> Result<u64> {
        dispatch!(self.max_delivery_id())
    }
}
