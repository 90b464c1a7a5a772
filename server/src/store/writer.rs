//! The group-commit writer: the only task that writes events and delivery
//! results. It hands batches to the committer (SQLite's write connection, on
//! a thread of its own) one at a time; while one is being committed, what
//! arrives gathers into the next, which starts as soon as the first is
//! written. Written batches go to the syncer, which makes them durable (one
//! fsync of the log for every commit written since the last) and only then
//! answers the publishers and tells the dispatcher and the flow engine what
//! became due or settled. So one fsync is shared by every publisher in
//! several batches, and the next batch is being written while the disk
//! flushes the last.
//!
//! The queue is bounded: when it is full, intake answers 503 / UNAVAILABLE
//! instead of letting memory grow.
//!
//! Storage failures are fail-stop (see `fail_stop`): after a failed sync, or
//! a commit error that leaves the file's state unknown, the syncer answers
//! every batch still waiting with 503 / UNAVAILABLE and acknowledges nothing
//! more, and the writer's task ends with [`Error::Fatal`] for the supervisor
//! to see; so does the death of the commit thread or of the syncer. A full
//! disk only fails the batch: the writer carries on.

use std::sync::Arc;

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{sqlite::committer::Committer, Error};
use crate::model::{
    run::{Advance, NewRun, Run, StartOutcome},
    Attempt, DeliveryStatus, DueDelivery, NewEvent, Published,
};

/// Committed batches that may wait for the syncer; past it the writer waits.
const SYNC_QUEUE: usize = 16;

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Most events in one transaction.
    pub max_batch: usize,
    /// Publish requests that may wait for the writer.
    pub queue: usize,
}

/// Hears of the runs each durable commit changed: the flow engine wakes for
/// them and `WatchRuns` shows them. Called on the writer's syncer task, so it
/// must not block or wait.
pub trait RunsCommitted: Send + Sync + 'static {
    fn runs_committed(&self, runs: Vec<Run>);
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
    /// The token of the endpoint lease the attempt was made under, when
    /// several daemons share the database: the result is stored only while
    /// that lease is still the endpoint's (a node that stalled past its
    /// lease changes nothing). `None`: one daemon, nothing to fence.
    pub lease: Option<i64>,
}

/// A publish waiting for the writer: its events and where to send the answer.
pub struct PublishOp {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<PublishOutcome, Error>>,
}

/// A change to flow runs, from the engine, the Admin API or a run start.
pub enum FlowOp {
    Start(NewRun, oneshot::Sender<Result<StartOutcome, Error>>),
    /// Answers `None` when the run was no longer where the engine left it
    /// (cancelled meanwhile).
    Advance(Box<Advance>, oneshot::Sender<Result<Option<Run>, Error>>),
    Cancel {
        run_id: String,
        reason: String,
        reply: oneshot::Sender<Result<Run, Error>>,
    },
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
    /// Storage refused the change itself (not found, already finished, …).
    #[error("{0}")]
    Refused(Error),
}

pub(super) enum Backend {
    Sqlite(Committer),
    Postgres(super::postgres::Committer),
}

/// The handle intake and the dispatcher use to reach the writer.
#[derive(Clone)]
pub struct Writer {
    publish_tx: mpsc::Sender<PublishOp>,
    settle_tx: mpsc::Sender<Box<Settled>>,
    flow_tx: mpsc::Sender<FlowOp>,
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

    /// As [`Writer::publish`], but waits up to `patience` for room in the
    /// queue rather than refusing at once (a streaming publisher's flow
    /// control).
    pub async fn publish_patiently(
        &self,
        events: Vec<NewEvent>,
        patience: std::time::Duration,
    ) -> Result<PublishOutcome, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.publish_tx
            .send_timeout(PublishOp { events, reply }, patience)
            .await
            .map_err(|e| match e {
                mpsc::error::SendTimeoutError::Timeout(_) => SubmitError::Overloaded,
                mpsc::error::SendTimeoutError::Closed(_) => {
                    SubmitError::Unavailable("the writer has stopped".into())
                }
            })?;
        answer
            .await
            .map_err(|_| SubmitError::Unavailable("the writer has stopped".into()))?
            .map_err(|e| SubmitError::Unavailable(e.to_string()))
    }

    /// Commits a change to flow runs; waits while the writer is behind.
    pub async fn flow<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> FlowOp,
    ) -> Result<T, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.flow_tx
            .send(op(reply))
            .await
            .map_err(|_| SubmitError::Unavailable("the writer has stopped".into()))?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(Error::Unavailable(e) | Error::Fatal(e))) => Err(SubmitError::Unavailable(e)),
            Ok(Err(other)) => Err(SubmitError::Refused(other)),
            Err(_) => Err(SubmitError::Unavailable("the writer has stopped".into())),
        }
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

/// Starts the writer; its task ends when every `Writer` is dropped, or with
/// an error when storage fails.
pub(super) fn spawn(
    backend: Backend,
    config: WriterConfig,
    committed: mpsc::Sender<Committed>,
    runs: Arc<dyn RunsCommitted>,
) -> (Writer, JoinHandle<Result<(), Error>>) {
    let (publish_tx, publish_rx) = mpsc::channel(config.queue);
    let (settle_tx, settle_rx) = mpsc::channel(config.queue);
    let (flow_tx, flow_rx) = mpsc::channel(config.queue);
    let outputs = Outputs { committed, runs };
    let task = tokio::spawn(run(
        backend,
        config,
        Inputs {
            publish_rx,
            settle_rx,
            flow_rx,
        },
        outputs,
    ));
    let writer = Writer {
        publish_tx,
        settle_tx,
        flow_tx,
    };
    (writer, task)
}

struct Inputs {
    publish_rx: mpsc::Receiver<PublishOp>,
    settle_rx: mpsc::Receiver<Box<Settled>>,
    flow_rx: mpsc::Receiver<FlowOp>,
}

/// Where the writer reports what it committed.
struct Outputs {
    committed: mpsc::Sender<Committed>,
    runs: Arc<dyn RunsCommitted>,
}

/// Runs the writer and its syncer until the inputs close or storage fails.
async fn run(
    backend: Backend,
    config: WriterConfig,
    inputs: Inputs,
    outputs: Outputs,
) -> Result<(), Error> {
    let (synced_tx, synced_rx) = mpsc::channel(SYNC_QUEUE);
    let syncer = tokio::spawn(sync(backend.wal(), synced_rx, outputs));
    let written = write(&backend, config, inputs, synced_tx).await;
    // Whatever was written is made durable and answered before stopping.
    let synced = syncer
        .await
        .unwrap_or_else(|e| Err(Error::Fatal(format!("the syncer stopped: {e}"))));
    tracing::info!("Writer stopped.");
    written.and(synced)
}

/// Commits back to back: a batch starts as soon as the previous one is
/// written, with everything that arrived meanwhile (this is the group in
/// group commit), and an idle writer commits what arrives at once. Written
/// batches go to the syncer in order. Stops when the inputs close, or at
/// once when the syncer stops (it failed) or the commit thread is gone.
async fn write(
    backend: &Backend,
    config: WriterConfig,
    mut inputs: Inputs,
    synced_tx: mpsc::Sender<Written>,
) -> Result<(), Error> {
    let commit_thread_gone = || Error::Fatal("the commit thread stopped".into());
    let mut next = Batch::default();
    let mut writing: Option<oneshot::Receiver<Written>> = None;
    let mut open = true;
    loop {
        inputs.take_waiting(&mut next, config.max_batch);
        if writing.is_none() && !next.is_empty() {
            crate::metrics::writer_queue(inputs.queued());
            writing = start_write(backend, std::mem::take(&mut next));
            if writing.is_none() {
                return Err(commit_thread_gone());
            }
        }
        let Some(in_flight) = writing.as_mut() else {
            if !open {
                return Ok(());
            }
            tokio::select! {
                op = inputs.recv() => match op {
                    Some(op) => next.push(op),
                    None => open = false,
                },
                _ = synced_tx.closed() => return Ok(()),
            }
            continue;
        };
        tokio::select! {
            written = in_flight => {
                writing = None;
                let Ok(written) = written else {
                    return Err(commit_thread_gone());
                };
                if synced_tx.send(written).await.is_err() {
                    return Ok(());
                }
            }
            op = inputs.recv(), if open && next.events < config.max_batch => match op {
                Some(op) => next.push(op),
                None => open = false,
            },
            _ = synced_tx.closed() => return Ok(()),
        }
    }
}

/// Something for the writer to commit.
enum Op {
    Publish(PublishOp),
    Settle(Box<Settled>),
    Flow(FlowOp),
}

impl Inputs {
    /// The next op from any input; `None` once every input is closed.
    async fn recv(&mut self) -> Option<Op> {
        tokio::select! {
            Some(op) = self.publish_rx.recv() => Some(Op::Publish(op)),
            Some(settled) = self.settle_rx.recv() => Some(Op::Settle(settled)),
            Some(op) = self.flow_rx.recv() => Some(Op::Flow(op)),
            else => None,
        }
    }

    /// Requests waiting in the queues.
    fn queued(&self) -> usize {
        self.publish_rx.len() + self.settle_rx.len() + self.flow_rx.len()
    }

    /// Moves what is already waiting into `batch`, up to `max` events.
    fn take_waiting(&mut self, batch: &mut Batch, max: usize) {
        while batch.events < max {
            if let Ok(op) = self.publish_rx.try_recv() {
                batch.push(Op::Publish(op));
            } else if let Ok(settled) = self.settle_rx.try_recv() {
                batch.push(Op::Settle(settled));
            } else if let Ok(op) = self.flow_rx.try_recv() {
                batch.push(Op::Flow(op));
            } else {
                break;
            }
        }
    }
}

impl Backend {
    fn wal(&self) -> Wal {
        match self {
            Backend::Sqlite(committer) => Wal::Sqlite(committer.wal()),
            Backend::Postgres(_) => Wal::Durable,
        }
    }
}

/// What makes written batches durable.
enum Wal {
    Sqlite(std::sync::Arc<super::sqlite::wal::WalFile>),
    /// The commit itself was durable (PostgreSQL with `synchronous_commit`).
    Durable,
}

impl Wal {
    /// A failure is fatal: the log's state on disk is unknown.
    async fn sync(&self) -> Result<(), String> {
        match self {
            Wal::Sqlite(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || file.sync())
                    .await
                    .map_err(|e| format!("the log sync stopped: {e}"))?
                    .map_err(|e| format!("could not flush the log to disk: {e}"))
            }
            Wal::Durable => Ok(()),
        }
    }
}

/// A batch after its transaction: committed (not yet durable), or not.
struct Written {
    batch: Batch,
    result: Result<Done, Error>,
    /// When the batch started committing, for the commit latency metric.
    started: std::time::Instant,
}

/// Takes written batches in order; syncs once for all that are waiting, then
/// answers them. A batch that did not commit needs no sync but keeps its
/// place, so answers and reports stay in commit order. A failed sync, or a
/// batch whose commit left the file's state unknown, fails every batch
/// waiting (even one committed before it: it is not known to be durable)
/// and ends the syncer, so nothing written after it is acknowledged.
async fn sync(
    wal: Wal,
    mut written: mpsc::Receiver<Written>,
    outputs: Outputs,
) -> Result<(), Error> {
    let mut waiting = Vec::new();
    while written.recv_many(&mut waiting, SYNC_QUEUE).await > 0 {
        let failed = match fatal_commit(&waiting) {
            Some(fatal) => Err(fatal),
            None if waiting.iter().any(|w| w.result.is_ok()) => wal.sync().await,
            None => Ok(()),
        };
        if let Err(detail) = failed {
            for Written { batch, .. } in waiting.drain(..) {
                answer(batch, Err(Error::Fatal(detail.clone())), &outputs).await;
            }
            return Err(Error::Fatal(detail));
        }
        for Written {
            batch,
            result,
            started,
        } in waiting.drain(..)
        {
            if result.is_ok() {
                crate::metrics::commit(batch.events, started.elapsed());
            }
            answer(batch, result, &outputs).await;
        }
    }
    Ok(())
}

/// The first commit among `waiting` that failed leaving the file's state unknown.
fn fatal_commit(waiting: &[Written]) -> Option<String> {
    waiting.iter().find_map(|w| match &w.result {
        Err(Error::Fatal(detail)) => Some(detail.clone()),
        _ => None,
    })
}

#[derive(Default)]
struct Batch {
    publishes: Vec<PublishOp>,
    settles: Vec<Settled>,
    flows: Vec<FlowOp>,
    events: usize,
}

impl Batch {
    fn push(&mut self, op: Op) {
        self.events += match &op {
            Op::Publish(publish) => publish.events.len().max(1),
            Op::Settle(_) | Op::Flow(_) => 1,
        };
        match op {
            Op::Publish(publish) => self.publishes.push(publish),
            Op::Settle(settled) => self.settles.push(*settled),
            Op::Flow(op) => self.flows.push(op),
        }
    }

    fn is_empty(&self) -> bool {
        self.publishes.is_empty() && self.settles.is_empty() && self.flows.is_empty()
    }
}

/// Starts committing a batch; `None` when the backend can no longer commit
/// at all (the batch's callers are then told the writer stopped).
fn start_write(backend: &Backend, batch: Batch) -> Option<oneshot::Receiver<Written>> {
    let started = std::time::Instant::now();
    match backend {
        Backend::Sqlite(committer) => committer.submit(move |db| {
            let events: Vec<&[NewEvent]> = batch
                .publishes
                .iter()
                .map(|p| p.events.as_slice())
                .collect();
            let result = db.commit(&events, &batch.settles, &batch.flows);
            drop(events);
            Written {
                batch,
                result,
                started,
            }
        }),
        Backend::Postgres(committer) => {
            let committer = committer.clone();
            let (written_tx, written) = oneshot::channel();
            tokio::spawn(async move {
                let events: Vec<&[NewEvent]> = batch
                    .publishes
                    .iter()
                    .map(|p| p.events.as_slice())
                    .collect();
                let result = committer
                    .commit(&events, &batch.settles, &batch.flows)
                    .await;
                drop(events);
                let _ = written_tx.send(Written {
                    batch,
                    result,
                    started,
                });
            });
            Some(written)
        }
    }
}

/// Answers a batch once it is durable (or failed) and reports what it changed.
async fn answer(batch: Batch, result: Result<Done, Error>, outputs: &Outputs) {
    let Batch {
        publishes,
        settles,
        flows,
        ..
    } = batch;
    match result {
        Ok(done) => {
            for (publish, outcome) in publishes.into_iter().zip(done.outcomes) {
                // A publisher that went away still had its event committed.
                let _ = publish.reply.send(Ok(outcome));
            }
            for (op, answer) in flows.into_iter().zip(done.flow_answers) {
                answer.send_to(op);
            }
            if !done.runs.is_empty() {
                outputs.runs.runs_committed(done.runs);
            }
            if !done.due.is_empty() {
                let _ = outputs
                    .committed
                    .send(Committed::Deliveries(done.due))
                    .await;
            }
            if !settles.is_empty() {
                let _ = outputs.committed.send(Committed::Settled(settles)).await;
            }
        }
        Err(error) => {
            tracing::error!(%error, "Commit failed; nothing in this batch was acknowledged.");
            for publish in publishes {
                let _ = publish
                    .reply
                    .send(Err(Error::Unavailable(error.to_string())));
            }
            for op in flows {
                FlowAnswer::Failed(error.to_string()).send_to(op);
            }
            if !settles.is_empty() {
                let _ = outputs
                    .committed
                    .send(Committed::SettleFailed(settles))
                    .await;
            }
        }
    }
}

/// What one batch committed.
pub(super) struct Done {
    pub outcomes: Vec<PublishOutcome>,
    pub due: Vec<DueDelivery>,
    /// One per flow op, in order.
    pub flow_answers: Vec<FlowAnswer>,
    /// Every run whose state changed.
    pub runs: Vec<Run>,
}

/// The answer to one flow op, matched to its reply channel after the commit.
pub(super) enum FlowAnswer {
    Started(StartOutcome),
    Advanced(Option<Run>),
    Cancelled(Run),
    /// Refused by storage; the rest of the batch committed.
    Refused(Error),
    /// The batch did not commit.
    Failed(String),
}

impl FlowAnswer {
    fn send_to(self, op: FlowOp) {
        // A caller that went away has nothing to be told.
        match (op, self) {
            (FlowOp::Start(_, reply), FlowAnswer::Started(o)) => {
                let _ = reply.send(Ok(o));
            }
            (FlowOp::Advance(_, reply), FlowAnswer::Advanced(o)) => {
                let _ = reply.send(Ok(o));
            }
            (FlowOp::Cancel { reply, .. }, FlowAnswer::Cancelled(o)) => {
                let _ = reply.send(Ok(o));
            }
            (op, FlowAnswer::Refused(e)) => op.fail(e),
            (op, FlowAnswer::Failed(e)) => op.fail(Error::Unavailable(e)),
            (op, _) => op.fail(Error::Unavailable("mismatched flow answer".into())),
        }
    }
}

impl FlowOp {
    fn fail(self, e: Error) {
        match self {
            FlowOp::Start(_, reply) => {
                let _ = reply.send(Err(e));
            }
            FlowOp::Advance(_, reply) => {
                let _ = reply.send(Err(e));
            }
            FlowOp::Cancel { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{model::Route, store::sqlite::SqliteStore};

    struct NoRuns;

    impl RunsCommitted for NoRuns {
        fn runs_committed(&self, _: Vec<Run>) {}
    }

    fn event(id: &str) -> NewEvent {
        NewEvent {
            id: id.to_string(),
            name: "lead.created".to_string(),
            source: "test".to_string(),
            tenant_id: None,
            time_ms: 1,
            payload: "{}".to_string(),
            attributes: Default::default(),
            body_hash: [7; 32],
            routes: vec![Route {
                subscription_id: Arc::from("sub"),
                endpoint_id: Arc::from("crm"),
                also: Vec::new(),
                ordering_key: None,
            }],
            flow_starts: Vec::new(),
            cancels: Vec::new(),
        }
    }

    struct Started {
        writer: Writer,
        task: JoinHandle<Result<(), Error>>,
        committed: mpsc::Receiver<Committed>,
        wal: std::sync::Arc<crate::store::sqlite::wal::WalFile>,
        _dir: tempfile::TempDir,
    }

    async fn start() -> Started {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, committer) = SqliteStore::open(&dir.path().join("writer.db"))
            .await
            .expect("open");
        let wal = committer.wal();
        let (committed_tx, committed) = mpsc::channel(16);
        let config = WriterConfig {
            max_batch: 64,
            queue: 64,
        };
        let (writer, task) = spawn(
            Backend::Sqlite(committer),
            config,
            committed_tx,
            Arc::new(NoRuns),
        );
        Started {
            writer,
            task,
            committed,
            wal,
            _dir: dir,
        }
    }

    #[tokio::test]
    async fn after_a_failed_sync_nothing_is_acknowledged_and_the_writer_fails() {
        let mut s = start().await;
        s.writer
            .publish(vec![event("before")])
            .await
            .expect("acknowledged before the fault");
        let Some(Committed::Deliveries(due)) = s.committed.recv().await else {
            panic!("the first publish's delivery is reported");
        };

        // The next sync fails: the attempt result it covers is reported as
        // not stored, and the publish beside it is refused.
        s.wal.fail_sync_after(0);
        let settled = Settled {
            delivery: due[0].clone(),
            attempt: None,
            status: DeliveryStatus::Succeeded,
            next_attempt_ms: None,
            last_error: None,
            endpoint_gone: false,
            lease: None,
        };
        s.writer.settle(settled).await.expect("queued");
        let refused = s.writer.publish(vec![event("during")]).await;
        assert!(
            matches!(refused, Err(SubmitError::Unavailable(_))),
            "{refused:?}"
        );
        let mut settle_failed = false;
        while let Some(report) = s.committed.recv().await {
            match report {
                Committed::SettleFailed(results) => settle_failed |= results.len() == 1,
                other => panic!("nothing is reported as durable after the fault: {other:?}"),
            }
        }
        assert!(
            settle_failed,
            "the attempt result was reported as not stored"
        );

        // The writer has stopped with the failure, and refuses what comes next.
        let ended = s.task.await.expect("the writer's task");
        assert!(matches!(ended, Err(Error::Fatal(_))), "{ended:?}");
        let after = s.writer.publish(vec![event("after")]).await;
        assert!(
            matches!(after, Err(SubmitError::Unavailable(_))),
            "{after:?}"
        );
    }

    #[tokio::test]
    async fn the_writer_ends_cleanly_when_its_handles_are_dropped() {
        let s = start().await;
        s.writer
            .publish(vec![event("one")])
            .await
            .expect("acknowledged");
        drop(s.writer);
        let ended = s.task.await.expect("the writer's task");
        assert!(ended.is_ok(), "{ended:?}");
    }
}
