//! The group-commit writer: the only task that writes events and delivery
//! results. It takes whatever is waiting in its queue (up to a batch limit),
//! commits all of it in one transaction, and only then answers the publishers
//! and tells the dispatcher what became due or settled. One fsync is shared by
//! every publisher in the batch, which is what makes durable intake fast.
//!
//! The queue is bounded: when it is full, intake answers 503 / UNAVAILABLE
//! instead of letting memory grow.

use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use super::{sqlite, Error};
use crate::model::{Attempt, DeliveryStatus, DueDelivery, NewEvent, Published};

/// How many times the writer lets other tasks run while gathering a batch.
const GATHER_YIELDS: u32 = 4;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most events in one transaction.
    pub max_batch: usize,
    /// Publish requests that may wait for the writer.
    pub queue: usize,
}

/// Why one event of a publish was refused by storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The id is taken by an event with a different body.
    Conflict { seq: u64 },
}

pub type PublishOutcome = Vec<Result<Published, Rejection>>;

/// The result of one delivery attempt (or of giving up without one), to be
/// recorded.
#[derive(Debug, Clone)]
pub struct Settled {
    pub delivery: DueDelivery,
    pub attempt: Option<Attempt>,
    pub status: DeliveryStatus,
    pub next_attempt_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The endpoint answered 410 Gone: disable it.
    pub endpoint_gone: bool,
}

/// A publish waiting for the writer: its events and where to send the answer.
pub struct PublishOp {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<PublishOutcome, Error>>,
}

/// What the writer reports after each commit (or failed commit).
#[derive(Debug)]
pub enum Committed {
    /// New deliveries, now durable and due.
    Deliveries(Vec<DueDelivery>),
    /// Attempt results, now durable.
    Settled(Vec<Settled>),
    /// Attempt results that could not be stored; the deliveries stay as they
    /// were in storage and must be picked up again from there.
    SettleFailed(Vec<Settled>),
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the storage queue is full")]
    Overloaded,
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

pub(super) enum Backend {
    Sqlite(SqliteConnection),
}

/// The handle intake and the dispatcher use to reach the writer.
#[derive(Clone)]
pub struct Writer {
    publish_tx: mpsc::Sender<PublishOp>,
    settle_tx: mpsc::Sender<Box<Settled>>,
}

impl Writer {
    /// Commits `events` (with their routed deliveries) and returns one outcome
    /// per event, in order, once they are durable.
    pub async fn publish(&self, events: Vec<NewEvent>) -> Result<PublishOutcome, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.publish_tx
            .try_send(PublishOp { events, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => {
                    SubmitError::Unavailable("the writer has stopped".into())
                }
            })?;
        answer
            .await
            .map_err(|_| SubmitError::Unavailable("the writer has stopped".into()))?
            .map_err(|e| SubmitError::Unavailable(e.to_string()))
    }

    /// Queues an attempt result; waits while the writer is behind, which slows
    /// delivery rather than growing memory. Gives the result back if the
    /// writer has stopped.
    pub async fn settle(&self, settled: Settled) -> Result<(), Box<Settled>> {
        self.settle_tx
            .send(Box::new(settled))
            .await
            .map_err(|e| e.0)
    }
}

pub(super) fn spawn(
    backend: Backend,
    config: WriterConfig,
    committed: mpsc::Sender<Committed>,
) -> Writer {
    let (publish_tx, publish_rx) = mpsc::channel(config.queue);
    let (settle_tx, settle_rx) = mpsc::channel(config.queue);
    tokio::spawn(run(backend, config, publish_rx, settle_rx, committed));
    Writer {
        publish_tx,
        settle_tx,
    }
}

async fn run(
    mut backend: Backend,
    config: WriterConfig,
    mut publish_rx: mpsc::Receiver<PublishOp>,
    mut settle_rx: mpsc::Receiver<Box<Settled>>,
    committed: mpsc::Sender<Committed>,
) {
    loop {
        let mut batch = Batch::default();
        tokio::select! {
            Some(op) = publish_rx.recv() => batch.push_publish(op),
            Some(settled) = settle_rx.recv() => batch.push_settle(settled),
            else => break,
        };
        // Take what is already waiting: this is the group in group commit.
        // Publishers answered by the last commit are sending their next
        // events right now; yielding a few times lets those already running
        // join this batch instead of waiting a whole fsync for the next one.
        let mut yields = 0;
        while batch.events < config.max_batch {
            if let Ok(op) = publish_rx.try_recv() {
                batch.push_publish(op);
            } else if let Ok(settled) = settle_rx.try_recv() {
                batch.push_settle(settled);
            } else if yields < GATHER_YIELDS {
                yields += 1;
                tokio::task::yield_now().await;
            } else {
                break;
            }
        }
        commit(&mut backend, batch, &committed).await;
    }
    tracing::info!("Writer stopped.");
}

#[derive(Default)]
struct Batch {
    publishes: Vec<PublishOp>,
    settles: Vec<Settled>,
    events: usize,
}

impl Batch {
    fn push_publish(&mut self, op: PublishOp) {
        self.events += op.events.len().max(1);
        self.publishes.push(op);
    }

    fn push_settle(&mut self, settled: Box<Settled>) {
        self.events += 1;
        self.settles.push(*settled);
    }
}

async fn commit(backend: &mut Backend, batch: Batch, committed: &mpsc::Sender<Committed>) {
    let Batch {
        publishes, settles, ..
    } = batch;
    let events: Vec<&[NewEvent]> = publishes.iter().map(|p| p.events.as_slice()).collect();
    let result = match backend {
        Backend::Sqlite(conn) => sqlite::commit_batch(conn, &events, &settles).await,
    };
    drop(events);
    match result {
        Ok((outcomes, deliveries)) => {
            for (publish, outcome) in publishes.into_iter().zip(outcomes) {
                // A publisher that went away still had its event committed.
                let _ = publish.reply.send(Ok(outcome));
            }
            if !deliveries.is_empty() {
                let _ = committed.send(Committed::Deliveries(deliveries)).await;
            }
            if !settles.is_empty() {
                let _ = committed.send(Committed::Settled(settles)).await;
            }
        }
        Err(error) => {
            tracing::error!(%error, "Commit failed; nothing in this batch was acknowledged.");
            for publish in publishes {
                let _ = publish
                    .reply
                    .send(Err(Error::Unavailable(error.to_string())));
            }
            if !settles.is_empty() {
                let _ = committed.send(Committed::SettleFailed(settles)).await;
            }
        }
    }
}
