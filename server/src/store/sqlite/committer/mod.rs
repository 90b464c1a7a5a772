//! The committer: a thread that owns SQLite's write connection and turns the
//! writer's batches into transactions.
//!
//! Everything one batch writes runs here, on one thread, with statements
//! prepared once and bound in place: events, their deliveries, attempt
//! results and flow-run changes. Through sqlx every statement was a round
//! trip to SQLite's worker thread (two thread wake-ups), and under load the
//! round trips cost more than the statements: a 20-event commit spent 120 µs
//! on `BEGIN` alone, and batching rows into multi-row statements to save
//! trips meant building their arguments while SQLite waited. Here a batch is
//! one trip: the writer hands it over and gets it back committed.
//!
//! The connection commits with `synchronous=NORMAL`; the writer's syncer makes
//! each commit durable (`WalFile::sync`) before anything is answered. Once
//! the log has failed (a sync, or an error here that leaves the file's state
//! unknown, see `fail_stop`), the committer writes nothing more.

mod runs;

use std::{
    borrow::Cow,
    collections::BTreeMap,
    path::Path,
    sync::{mpsc, Arc},
    time::Duration,
};

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::{
    checkpoint::{Checkpoints, WAL_SIZE_LIMIT, WRITER_AUTOCHECKPOINT},
    wal::WalFile,
};
use crate::model::{now_ms, DueDelivery, EventEnvelope, NewEvent, Published, PARKED_MS};
use crate::store::{
    writer::{Done, FlowAnswer, FlowOp, Rejection, Settled},
    Error, Result,
};

/// Prepared statements kept: every statement the committer runs, with room.
const STATEMENT_CACHE: usize = 64;

/// The handle the writer holds: hands batches to the committer's thread.
/// The thread stops, closing the connection, when this is dropped.
pub(in crate::store) struct Committer {
    jobs: mpsc::Sender<Job>,
    wal: Arc<WalFile>,
    /// Until the daemon takes it to supervise.
    checkpointer: Option<tokio::task::JoinHandle<Result<()>>>,
}

/// Work for the thread, with its own way of sending the answer back.
type Job = Box<dyn FnOnce(&mut Db) + Send>;

impl Committer {
    /// Opens the write connection (the schema must exist) and starts the
    /// thread. `checkpointer` is the task behind `checkpoints`.
    pub(super) fn start(
        path: &Path,
        wal: Arc<WalFile>,
        checkpoints: Checkpoints,
        checkpointer: tokio::task::JoinHandle<Result<()>>,
    ) -> Result<Committer> {
        let db = Db {
            conn: open(path)?,
            checkpoints,
            wal: wal.clone(),
            panic_on_commit: super::fault::panics("committer"),
            settle_fails_left: super::fault::settle_fails(),
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hookyard-commit".into())
            .spawn(move || serve(db, queue))
            .map_err(|e| Error::Unavailable(format!("could not start the commit thread: {e}")))?;
        Ok(Committer {
            jobs,
            wal,
            checkpointer: Some(checkpointer),
        })
    }

    /// The checkpointer's task, for the daemon to supervise (once).
    pub(in crate::store) fn take_checkpointer(
        &mut self,
    ) -> Result<tokio::task::JoinHandle<Result<()>>> {
        self.checkpointer
            .take()
            .ok_or_else(|| Error::Unavailable("the checkpointer was already taken".into()))
    }

    /// Hands `work` to the committer's thread; its result arrives on the
    /// receiver. `None` when the thread is gone.
    pub(in crate::store) fn submit<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Db) -> T + Send + 'static,
    ) -> Option<oneshot::Receiver<T>> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let _ = answer.send(work(db));
        });
        self.jobs.send(job).ok()?;
        Some(answered)
    }

    /// What makes this connection's commits durable.
    pub(in crate::store) fn wal(&self) -> Arc<WalFile> {
        self.wal.clone()
    }
}

fn serve(mut db: Db, queue: mpsc::Receiver<Job>) {
    while let Ok(job) = queue.recv() {
        job(&mut db);
    }
}

fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update_and_check(
        None,
        "wal_autocheckpoint",
        WRITER_AUTOCHECKPOINT,
        |_| Ok(()),
    )?;
    conn.pragma_update_and_check(
        None,
        "journal_size_limit",
        WAL_SIZE_LIMIT as i64,
        |_| Ok(()),
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// The write connection, on the committer's thread.
pub(in crate::store) struct Db {
    conn: Connection,
    /// Told of each commit, so the log is copied back off this path.
    checkpoints: Checkpoints,
    wal: Arc<WalFile>,
    /// A fault injected by the tests (debug builds only).
    panic_on_commit: bool,
    /// Injected (debug builds): commits with attempt results still to refuse.
    settle_fails_left: u64,
}

impl Db {
    /// Commits one group: every event with its deliveries and flow runs,
    /// every attempt result and every flow op, in a single transaction.
    /// Refuses once the log has failed; an error that leaves the file's
    /// state unknown marks it failed.
    pub(in crate::store) fn commit(
        &mut self,
        publishes: &[&[NewEvent]],
        settles: &[Settled],
        flow_ops: &[FlowOp],
    ) -> Result<Done> {
        if self.panic_on_commit {
            panic!("injected fault: the committer panics");
        }
        if !settles.is_empty() && self.settle_fails_left > 0 {
            self.settle_fails_left -= 1;
            return Err(Error::Unavailable(
                "injected fault: database or disk is full".into(),
            ));
        }
        if self.wal.has_failed() {
            return Err(Error::Fatal(
                "the log failed earlier; nothing more is written until the daemon restarts".into(),
            ));
        }
        let committed = self.write(publishes, settles, flow_ops);
        if let Err(Error::Fatal(_)) = &committed {
            self.wal.fail();
        }
        committed
    }

    fn write(
        &mut self,
        publishes: &[&[NewEvent]],
        settles: &[Settled],
        flow_ops: &[FlowOp],
    ) -> Result<Done> {
        if self.checkpoints.take_restart() {
            // The log is long: copy its tail here, so the next commit starts
            // it over. A failure only means it stays long a while, unless it
            // leaves the files' state unknown.
            match passive_checkpoint(&self.conn).map_err(Error::from) {
                Err(error @ Error::Fatal(_)) => return Err(error),
                Err(error) => tracing::warn!(%error, "WAL checkpoint failed."),
                Ok(()) => {}
            }
        }
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut done = Done {
            outcomes: Vec::with_capacity(publishes.len()),
            due: Vec::new(),
            flow_answers: Vec::with_capacity(flow_ops.len()),
            runs: Vec::new(),
        };
        for events in publishes {
            let outcome = insert_events(&tx, events, now, &mut done)?;
            done.outcomes.push(outcome);
        }
        record_settled(&tx, settles, now)?;
        for op in flow_ops {
            let answer = apply_flow_op(&tx, op, now, &mut done.runs);
            done.flow_answers.push(match answer {
                Err(e @ (Error::Unavailable(_) | Error::Fatal(_))) => return Err(e),
                Err(refused) => FlowAnswer::Refused(refused),
                Ok(answer) => answer,
            });
        }
        tx.commit()?;
        self.checkpoints.committed();
        Ok(done)
    }
}

/// Copies what it can of the log into the database file.
fn passive_checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

const INSERT_EVENT: &str = "INSERT INTO events (id, name, source, tenant_id, time_ms, payload, \
    attributes, body_hash, matched, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
    ON CONFLICT (id) DO NOTHING";

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (event_seq, subscription_id, endpoint_id, \
    status, attempts, next_attempt_ms, created_ms, updated_ms, also_subscriptions, ordering_key) \
    VALUES (?1, ?2, ?3, 'pending', 0, ?6, ?4, ?4, ?5, ?7)";

/// Whether a delivery with this endpoint and ordering key is unfinished: a
/// new one with the key then waits behind it (parked).
const KEY_BUSY: &str = "SELECT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_ordering \
    WHERE endpoint_id = ?1 AND ordering_key = ?2 AND status IN ('pending', 'failed'))";

/// After a delivery with an ordering key finished: the earliest unfinished
/// delivery with its endpoint and key, if parked, is due now.
const PROMOTE_NEXT: &str = "UPDATE deliveries SET next_attempt_ms = ?2 \
    WHERE next_attempt_ms = 9223372036854775807 AND id = (SELECT p.id \
    FROM deliveries x, deliveries p INDEXED BY deliveries_ordering \
    WHERE x.id = ?1 AND p.endpoint_id = x.endpoint_id AND p.ordering_key = x.ordering_key \
    AND p.status IN ('pending', 'failed') ORDER BY p.id LIMIT 1)";

/// Inserts one publish's events, each with its deliveries (due now, added to
/// `done.due`) and its flow-run starts and cancels, in the order published.
/// An id already taken, earlier or by an event before it in this batch, is
/// answered as a duplicate or a conflict and routes nothing.
fn insert_events(
    tx: &Transaction,
    events: &[NewEvent],
    now: i64,
    done: &mut Done,
) -> Result<Vec<Result<Published, Rejection>>> {
    let mut insert_event = tx.prepare_cached(INSERT_EVENT)?;
    let mut insert_delivery = tx.prepare_cached(INSERT_DELIVERY)?;
    let mut outcome = Vec::with_capacity(events.len());
    for event in events {
        let inserted = insert_event.execute(params![
            event.id,
            event.name,
            event.source,
            event.tenant_id,
            event.time_ms,
            event.payload,
            attributes_json(&event.attributes),
            &event.body_hash[..],
            matched(event),
            now,
        ])?;
        if inserted == 0 {
            outcome.push(existing_event_outcome(tx, event)?);
            continue;
        }
        let seq = tx.last_insert_rowid();
        if !event.routes.is_empty() {
            let envelope = Arc::new(EventEnvelope {
                seq: seq as u64,
                id: event.id.clone(),
                name: event.name.clone(),
                source: event.source.clone(),
                tenant_id: event.tenant_id.clone(),
                time_ms: event.time_ms,
                payload: event.payload.clone(),
            });
            for route in &event.routes {
                let parked = match &route.ordering_key {
                    Some(key) => tx
                        .prepare_cached(KEY_BUSY)?
                        .query_row(params![&*route.endpoint_id, &**key], |row| row.get(0))?,
                    None => false,
                };
                insert_delivery.execute(params![
                    seq,
                    &*route.subscription_id,
                    &*route.endpoint_id,
                    now,
                    super::super::rows::also_json(route),
                    if parked { PARKED_MS } else { now },
                    route.ordering_key.as_deref(),
                ])?;
                // A parked one is handed over too, so the dispatcher knows
                // its id is taken, but it is not sent: storage makes it due
                // when the one before it with its key finishes.
                done.due.push(DueDelivery {
                    id: tx.last_insert_rowid() as u64,
                    subscription_id: route.subscription_id.clone(),
                    endpoint_id: route.endpoint_id.clone(),
                    attempts: 0,
                    due_ms: if parked { PARKED_MS } else { now },
                    event: envelope.clone(),
                    ordered: route.ordering_key.is_some(),
                });
            }
        }
        for start in &event.flow_starts {
            runs::start_run(tx, start, now, &mut done.runs)?;
        }
        for cancel in &event.cancels {
            runs::cancel_by_key(tx, cancel, now, &mut done.runs)?;
        }
        outcome.push(Ok(Published {
            seq: seq as u64,
            duplicate: false,
            matched: matched(event),
        }));
    }
    Ok(outcome)
}

/// Most events carry no attributes: those cost no allocation here, on the
/// one thread every event goes through.
fn attributes_json(attributes: &BTreeMap<String, String>) -> Cow<'static, str> {
    if attributes.is_empty() {
        Cow::Borrowed("{}")
    } else {
        Cow::Owned(crate::store::rows::to_json(attributes))
    }
}

/// Subscriptions and flows the event was routed to.
fn matched(e: &NewEvent) -> u32 {
    e.matched()
}

/// The id is taken: the same body is a duplicate (answered, not routed
/// again), a different body is a conflict.
fn existing_event_outcome(tx: &Transaction, e: &NewEvent) -> Result<Result<Published, Rejection>> {
    let (seq, hash): (i64, Vec<u8>) = tx
        .prepare_cached("SELECT seq, body_hash FROM events WHERE id = ?1")?
        .query_row([&e.id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(if hash == e.body_hash {
        Ok(Published {
            seq: seq as u64,
            duplicate: true,
            matched: 0,
        })
    } else {
        Err(Rejection::Conflict { seq: seq as u64 })
    })
}

const INSERT_ATTEMPT: &str = "INSERT OR REPLACE INTO attempts (delivery_id, number, started_ms, \
    duration_ms, status_code, error, response_body, request_headers) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// A status code or duration left out (no attempt was made) keeps the last.
const UPDATE_SETTLED_DELIVERY: &str = "UPDATE deliveries SET status = ?2, attempts = ?3, \
    next_attempt_ms = ?4, last_status_code = COALESCE(?5, last_status_code), \
    last_error = ?6, last_duration_ms = COALESCE(?7, last_duration_ms), updated_ms = ?8 \
    WHERE id = ?1";

const DISABLE_GONE_ENDPOINT: &str = "UPDATE endpoints SET state = 'gone', disabled_reason = 'it answered 410 Gone', version = version + 1, \
    updated_ms = ?1 WHERE id = ?2 AND state = 'enabled'";

/// Records attempt results: the attempt, and the delivery's new state.
fn record_settled(tx: &Transaction, settles: &[Settled], now: i64) -> Result<()> {
    if settles.is_empty() {
        return Ok(());
    }
    let mut insert_attempt = tx.prepare_cached(INSERT_ATTEMPT)?;
    let mut update_delivery = tx.prepare_cached(UPDATE_SETTLED_DELIVERY)?;
    for s in settles {
        let id = s.delivery.id as i64;
        if let Some(a) = &s.attempt {
            insert_attempt.execute(params![
                id,
                a.number,
                a.started_ms,
                a.duration_ms,
                a.status_code,
                a.error,
                a.response_body,
                crate::store::rows::to_json(&a.request_headers),
            ])?;
        }
        update_delivery.execute(params![
            id,
            s.status.as_str(),
            s.delivery.attempts,
            s.next_attempt_ms,
            s.attempt.as_ref().and_then(|a| a.status_code),
            s.last_error,
            s.attempt.as_ref().map(|a| a.duration_ms),
            now,
        ])?;
        if s.endpoint_gone {
            tx.prepare_cached(DISABLE_GONE_ENDPOINT)?
                .execute(params![now, &*s.delivery.endpoint_id])?;
        }
        if s.delivery.ordered && s.status.is_final() {
            tx.prepare_cached(PROMOTE_NEXT)?.execute(params![id, now])?;
        }
    }
    Ok(())
}

fn apply_flow_op(
    tx: &Transaction,
    op: &FlowOp,
    now: i64,
    changed: &mut Vec<crate::model::run::Run>,
) -> Result<FlowAnswer> {
    Ok(match op {
        FlowOp::Start(new, _) => FlowAnswer::Started(runs::start_run(tx, new, now, changed)?),
        FlowOp::Advance(advance, _) => {
            FlowAnswer::Advanced(runs::advance(tx, advance, now, changed)?)
        }
        FlowOp::Cancel { run_id, reason, .. } => {
            FlowAnswer::Cancelled(runs::cancel_run(tx, run_id, reason, now, changed)?)
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{model::Route, store::sqlite::SqliteStore};

    async fn commit(committer: &Committer, publishes: Vec<Vec<NewEvent>>) -> Done {
        let committed = committer.submit(move |db| {
            let events: Vec<&[NewEvent]> = publishes.iter().map(Vec::as_slice).collect();
            db.commit(&events, &[], &[])
        });
        committed
            .expect("the commit thread runs")
            .await
            .expect("an answer")
            .expect("commit")
    }

    fn event(id: &str, routes: usize) -> NewEvent {
        NewEvent {
            id: id.to_string(),
            name: "lead.created".to_string(),
            source: "test".to_string(),
            tenant_id: None,
            time_ms: 1,
            payload: "{}".to_string(),
            attributes: Default::default(),
            body_hash: [7; 32],
            routes: (0..routes)
                .map(|i| Route {
                    subscription_id: Arc::from(format!("sub-{i}")),
                    endpoint_id: Arc::from("crm"),
                    also: Vec::new(),
                    ordering_key: None,
                })
                .collect(),
            flow_starts: Vec::new(),
            cancels: Vec::new(),
        }
    }

    fn seqs(done: &Done) -> Vec<Vec<(u64, bool)>> {
        done.outcomes
            .iter()
            .map(|o| {
                o.iter()
                    .map(|r| r.as_ref().map(|p| (p.seq, p.duplicate)).expect("accepted"))
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn rows_are_numbered_after_outside_inserts_and_a_repeated_id_is_a_duplicate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, committer) = SqliteStore::open(&dir.path().join("ids.db"))
            .await
            .expect("open");
        let (a, b, a_again) = (event("a", 2), event("b", 2), event("a", 2));
        let done = commit(&committer, vec![vec![a, b], vec![a_again]]).await;
        // The second event with an id is a duplicate of the first.
        assert_eq!(seqs(&done), [vec![(1, false), (2, false)], vec![(1, true)]]);
        let ids: Vec<u64> = done.due.iter().map(|d| d.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);

        // Rows numbered by someone else are stepped over, not collided with.
        sqlx::query(
            "INSERT INTO events (seq, id, name, source, time_ms, payload, attributes, \
             body_hash, matched, received_ms) VALUES (3, 'outside', 'x', 's', 1, '{}', '{}', x'00', 0, 1)",
        )
        .execute(store.pool())
        .await
        .expect("outside event");
        sqlx::query(
            "INSERT INTO deliveries (id, event_seq, subscription_id, endpoint_id, status, \
             created_ms, updated_ms) VALUES (5, 3, 's', 'e', 'dead', 1, 1)",
        )
        .execute(store.pool())
        .await
        .expect("outside delivery");
        let done = commit(&committer, vec![vec![event("c", 1)]]).await;
        assert_eq!(seqs(&done), [vec![(4, false)]]);
        assert_eq!(done.due.iter().map(|d| d.id).collect::<Vec<_>>(), [6]);
        let done = commit(&committer, vec![vec![event("d", 1)]]).await;
        assert_eq!(seqs(&done), [vec![(5, false)]]);
        assert_eq!(done.due.iter().map(|d| d.id).collect::<Vec<_>>(), [7]);
    }

    #[tokio::test]
    async fn committed_pages_are_copied_into_the_database_file_off_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checkpoint.db");
        let (_store, committer) = SqliteStore::open(&path).await.expect("open");
        let size = || std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let before = size();
        let events: Vec<NewEvent> = (0..500)
            .map(|i| NewEvent {
                payload: format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000)),
                ..event(&format!("e{i}"), 0)
            })
            .collect();
        commit(&committer, vec![events]).await;
        // Far below the writer's own threshold: only the checkpointer copies.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() < before + 400_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file is still {} bytes (was {before})",
                size()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // The checkpointer gets a worker of its own, as in the daemon: on a
    // shared one, a loaded machine starves it and the log grows past the mark.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_starts_over_while_commits_keep_coming() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("restart.db");
        let (_store, committer) = SqliteStore::open(&path).await.expect("open");
        // About 24 000 pages of events, committed back to back (all queued
        // before the first commit, so there is no pause between two): the
        // log never gets to start over by itself.
        let batches: Vec<Vec<NewEvent>> = (0..96)
            .map(|batch| {
                (0..1000)
                    .map(|i| NewEvent {
                        payload: format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000)),
                        ..event(&format!("e{batch}-{i}"), 0)
                    })
                    .collect()
            })
            .collect();
        // The log file's length is the longest the log has been since it was
        // last cut back to `WAL_SIZE_LIMIT`; watch it throughout.
        let wal_path = dir.path().join("restart.db-wal");
        let longest = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let watcher = tokio::spawn({
            let longest = longest.clone();
            async move {
                loop {
                    let len = std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
                    longest.fetch_max(len, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        let committed: Vec<_> = batches
            .into_iter()
            .map(|events| {
                committer
                    .submit(move |db| db.commit(&[&events], &[], &[]).map(|_| ()))
                    .expect("the commit thread runs")
            })
            .collect();
        for answer in committed {
            answer.await.expect("an answer").expect("commit");
        }
        watcher.abort();
        // Past the restart mark while the checkpointer catches up (two more
        // passes, on a debug build; more on a loaded machine), but without
        // the restart the log grows to SQLite's own threshold
        // (`WRITER_AUTOCHECKPOINT`, 20 000 pages) and beyond.
        let pages = longest.load(std::sync::atomic::Ordering::Relaxed) / 4096;
        let bound = u64::from(super::super::checkpoint::WRITER_AUTOCHECKPOINT) * 9 / 10;
        assert!(pages < bound, "the log grew to {pages} pages");
    }
}
