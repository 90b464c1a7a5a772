//! The receiving side: while this node has a watcher, a LISTEN connection
//! holding the feed lock, and the other nodes' changes handed to the local
//! feeds with the gaps counted.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use sqlx::{
    postgres::{PgListener, PgPoolOptions},
    PgPool,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    wire::{Message, RunEntry},
    LocalFeeds, RemoteChange, Shared, CHANNEL, CHECK_EVERY, FEED_LOCK,
};
use crate::model::run::Run;

/// How long closing the LISTEN connection may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub(super) async fn receive(
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
        if message.first_delivery < expected.0 || message.first_run < expected.1 {
            // Numbers going back: the node restarted under the same id
            // (one connection sends a node's messages, in order).
            *expected = (message.first_delivery, message.first_run);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::feed_bus::wire::{
        tests::delivery, Encoder, Outgoing, WireDelivery,
    };

    /// Records what the receiver hands to the feeds.
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<RemoteChange>>);

    impl LocalFeeds for Recorded {
        fn watched(&self) -> bool {
            true
        }

        fn remote(&self, change: RemoteChange) {
            self.0.lock().expect("not poisoned").push(change);
        }
    }

    fn receiver(feeds: Arc<Recorded>) -> Receiver {
        Receiver {
            own_node: "node-a".into(),
            feeds,
            // Never connects: no run here travels as an id.
            reads: PgPoolOptions::new()
                .connect_lazy("postgres://127.0.0.1:1/none")
                .expect("a lazy pool"),
            expected: HashMap::new(),
        }
    }

    /// What each message gave the feeds: (missed deliveries, deliveries).
    fn summary(feeds: &Recorded) -> (u64, usize) {
        let changes = std::mem::take(&mut *feeds.0.lock().expect("not poisoned"));
        let missed = changes
            .iter()
            .map(|c| match c {
                RemoteChange::Missed { deliveries, .. } => *deliveries,
                _ => 0,
            })
            .sum();
        let deliveries = changes
            .iter()
            .filter(|c| matches!(c, RemoteChange::Delivery { .. }))
            .count();
        (missed, deliveries)
    }

    #[tokio::test]
    async fn a_receiver_counts_gaps_per_node_and_ignores_its_own_and_unreadable_messages() {
        let feeds = Arc::new(Recorded::default());
        let mut receiver = receiver(feeds.clone());
        let mut b = Encoder::new("node-b");
        let two = || (0..2).map(|i| Outgoing::Delivery(WireDelivery::new(&delivery(i, None), 7)));

        // The first message from a node sets where its numbers start.
        for payload in b.encode(two(), (40, 0)) {
            receiver.handle(&payload).await;
        }
        assert_eq!(summary(&feeds), (0, 2));

        // Three dropped on node b: told before the next two.
        for payload in b.encode(two(), (3, 0)) {
            receiver.handle(&payload).await;
        }
        assert_eq!(summary(&feeds), (3, 2));

        // A message lost on the way shows as a gap at the next one.
        let _lost = b.encode(two(), (0, 0));
        for payload in b.encode(two(), (0, 0)) {
            receiver.handle(&payload).await;
        }
        assert_eq!(summary(&feeds), (2, 2));

        // Node b restarted under the same id: its numbers start again.
        let mut b_again = Encoder::new("node-b");
        for payload in b_again.encode(two(), (0, 0)) {
            receiver.handle(&payload).await;
        }
        assert_eq!(summary(&feeds), (0, 2));

        // This node's own, and what cannot be read, are ignored.
        let mut own = Encoder::new("node-a");
        for payload in own.encode(two(), (0, 0)) {
            receiver.handle(&payload).await;
        }
        receiver.handle("not json").await;
        receiver
            .handle(r#"{"node":"node-c","first_delivery":18446744073709551615,"first_run":0,"deliveries":[{"id":1}]}"#)
            .await;
        assert_eq!(summary(&feeds), (0, 0));
    }
}
