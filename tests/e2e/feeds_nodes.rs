//! Two daemons on one PostgreSQL: `WatchDeliveries` and `WatchRuns` opened
//! on one show what the other does (the feed bus, NOTIFY). The other node
//! starts sending within about a second of the watch opening, so each test
//! first publishes probes on the second daemon until one shows on the
//! first, then checks a change it makes afterwards from start to end. And
//! nothing goes onto the bus while nobody watches.

use std::time::Duration;

use hookyard::v1::{
    Delivery, DeliveryStatus, DeliveryUpdate, RunState, RunUpdate, WatchDeliveriesRequest,
    WatchRunsRequest,
};
use serde_json::json;
use sqlx::postgres::PgListener;
use tonic::Streaming;

use crate::{
    api::{http_event, publish_http},
    harness::{Daemon, TestConfig, WAIT},
    runs::{poll_until, started},
    sink::{Behaviour, TestReceiver},
};

/// The bus's NOTIFY channel.
const CHANNEL: &str = "hookyard_feed";
/// How long one probe may take to show on the other daemon.
const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// A second daemon on the first one's database, with the same config.
async fn second_daemon(first: &Daemon, config: TestConfig) -> Daemon {
    let url = first
        .postgres_url()
        .expect("this test runs on PostgreSQL")
        .to_string();
    Daemon::start(config.set("storage.postgres_url", json!(url))).await
}

/// The next update within `limit`; `None` when none came.
async fn next_within<T: prost::Message + Default>(
    stream: &mut Streaming<T>,
    limit: Duration,
) -> Option<T> {
    match tokio::time::timeout(limit, stream.message()).await {
        Ok(Ok(Some(update))) => Some(update),
        Ok(Ok(None)) => panic!("the watch stream ended"),
        Ok(Err(status)) => panic!("the watch stream failed: {status:?}"),
        Err(_) => None,
    }
}

async fn watch_deliveries(daemon: &Daemon) -> Streaming<DeliveryUpdate> {
    daemon
        .admin_client()
        .watch_deliveries(WatchDeliveriesRequest::default())
        .await
        .expect("WatchDeliveries")
        .into_inner()
}

/// Whether `event_id`'s delivery shows succeeded on `watch` within
/// `PROBE_WAIT`: only the daemon that sent it knows it succeeded, so on any
/// other this comes through the bus.
async fn shows(watch: &mut Streaming<DeliveryUpdate>, event_id: &str) -> bool {
    let deadline = tokio::time::Instant::now() + PROBE_WAIT;
    while let Some(update) = next_within(watch, deadline - tokio::time::Instant::now()).await {
        if update
            .delivery
            .is_some_and(|d| d.event_id == event_id && d.status() == DeliveryStatus::Succeeded)
        {
            return true;
        }
    }
    false
}

/// Publishes probes on `daemon` until one's delivery shows succeeded on
/// every watch.
async fn probe_deliveries(daemon: &Daemon, watches: &mut [&mut Streaming<DeliveryUpdate>]) {
    let probed = tokio::time::Instant::now();
    loop {
        assert!(
            probed.elapsed() < WAIT,
            "no probe delivery showed on every watch within {WAIT:?}"
        );
        let probe = publish_http(daemon, &http_event("lead.probe")).await;
        assert_eq!(probe.matched, 1);
        let mut everywhere = true;
        for watch in watches.iter_mut() {
            everywhere &= shows(watch, &probe.id).await;
        }
        if everywhere {
            return;
        }
    }
}

/// The statuses `event_id`'s delivery shows on `watch`, until it has shown
/// pending, in flight and succeeded, or `WAIT` is over.
async fn statuses(
    watch: &mut Streaming<DeliveryUpdate>,
    event_id: &str,
) -> (Vec<DeliveryStatus>, Option<Delivery>) {
    let wanted = [
        DeliveryStatus::Pending,
        DeliveryStatus::InFlight,
        DeliveryStatus::Succeeded,
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut succeeded = None;
    while !wanted.iter().all(|s| seen.contains(s)) {
        let Some(update) = next_within(watch, deadline - tokio::time::Instant::now()).await else {
            break;
        };
        let Some(delivery) = update.delivery else {
            continue;
        };
        if delivery.event_id != event_id {
            continue;
        }
        assert_eq!(update.missed, 0, "the watcher missed changes");
        seen.push(delivery.status());
        if delivery.status() == DeliveryStatus::Succeeded {
            succeeded = Some(delivery);
        }
    }
    (seen, succeeded)
}

/// Whichever daemon sends the delivery (each sends its own today; with
/// endpoint leases, the lease holder), the other shows it only through the
/// bus, so a watch on each must show every change. The order is not checked
/// across daemons: one's pending and another's in flight race on the way.
#[tokio::test]
async fn a_delivery_shows_from_pending_to_succeeded_in_a_watch_on_either_daemon() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let first = Daemon::start(TestConfig::crm(&sink.url())).await;
    let second = second_daemon(&first, TestConfig::crm(&sink.url())).await;
    let mut on_first = watch_deliveries(&first).await;
    let mut on_second = watch_deliveries(&second).await;
    probe_deliveries(&second, &mut [&mut on_first, &mut on_second]).await;

    let event = publish_http(&second, &http_event("lead.created")).await;
    assert_eq!(event.matched, 1);
    for (name, watch) in [("first", &mut on_first), ("second", &mut on_second)] {
        let (seen, succeeded) = statuses(watch, &event.id).await;
        for status in [
            DeliveryStatus::Pending,
            DeliveryStatus::InFlight,
            DeliveryStatus::Succeeded,
        ] {
            assert!(
                seen.contains(&status),
                "the {name} daemon's watch showed {seen:?}, without {status:?}"
            );
        }
        let delivery = succeeded.expect("a succeeded delivery");
        assert_eq!(delivery.event_name, "lead.created");
        assert_eq!(delivery.subscription_name, "leads-to-crm");
        assert_eq!(delivery.target, "endpoint:crm");
        assert_eq!(delivery.last_status_code, 200);
    }
}

fn hello_flow() -> TestConfig {
    TestConfig::new().flow(json!({
        "id": "hello",
        "steps": [{"id": "note", "log": "hello from a node"}]
    }))
}

async fn watch_runs(daemon: &Daemon) -> Streaming<RunUpdate> {
    daemon
        .admin_client()
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("WatchRuns")
        .into_inner()
}

/// Starts runs on `daemon` until one shows CREATED on `watch`: only the
/// daemon a run was started on commits that state (another may step it),
/// so on any other it comes through the bus.
async fn probe_runs(daemon: &Daemon, watch: &mut Streaming<RunUpdate>) {
    let probed = tokio::time::Instant::now();
    loop {
        assert!(
            probed.elapsed() < WAIT,
            "no probe run showed on the watch within {WAIT:?}"
        );
        let probe = started(daemon, "hello", json!({})).await;
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        while let Some(update) = next_within(watch, deadline - tokio::time::Instant::now()).await {
            if update
                .run
                .is_some_and(|r| r.id == probe && r.state() == RunState::Created)
            {
                return;
            }
        }
    }
}

/// The run is created by the daemon it was started on, so its CREATED
/// reaches the other daemon's watch only through the bus.
#[tokio::test]
async fn a_run_started_on_another_daemon_shows_in_a_watch_until_it_succeeds() {
    let first = Daemon::start(hello_flow()).await;
    let second = second_daemon(&first, hello_flow()).await;
    let mut watch = watch_runs(&first).await;
    probe_runs(&second, &mut watch).await;

    let id = started(&second, "hello", json!({})).await;
    let mut states = Vec::new();
    let mut finished = None;
    // The first daemon's engine may step the run, and its own changes race
    // the second's CREATED on the way: wait for both, in any order.
    while finished.is_none() || !states.contains(&RunState::Created) {
        let update = next_within(&mut watch, WAIT).await.unwrap_or_else(|| {
            panic!("the first daemon saw {states:?} for a run the second created, then nothing")
        });
        let Some(run) = update.run else { continue };
        if run.id != id {
            continue;
        }
        assert_eq!(update.missed, 0, "the watcher missed changes");
        states.push(run.state());
        if matches!(
            run.state(),
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        ) {
            finished = Some(run);
        }
    }
    let run = finished.expect("a finished run");
    assert_eq!(
        run.state(),
        RunState::Succeeded,
        "{states:?}: {}",
        run.error
    );
    assert_eq!(run.flow_id, "hello");
    assert_eq!(run.trigger, "api");
}

/// Starts a run on `daemon` and waits for it to finish, then for its
/// changes to have been sent if they were going to be; whether any
/// notification came on `listener` meanwhile.
async fn sent_a_notification(daemon: &Daemon, listener: &mut PgListener) -> bool {
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_millis(1), listener.try_recv()).await
    {}
    let id = started(daemon, "hello", json!({})).await;
    poll_until(&mut daemon.admin_client(), &id, RunState::Succeeded).await;
    matches!(
        tokio::time::timeout(PROBE_WAIT, listener.try_recv()).await,
        Ok(Ok(Some(_)))
    )
}

#[tokio::test]
async fn changes_go_onto_the_bus_only_while_another_daemon_watches() {
    let first = Daemon::start(hello_flow()).await;
    let second = second_daemon(&first, hello_flow()).await;
    let url = first.postgres_url().expect("this test runs on PostgreSQL");
    let mut listener = PgListener::connect(url).await.expect("connect to listen");
    listener.listen(CHANNEL).await.expect("LISTEN");

    assert!(
        !sent_a_notification(&second, &mut listener).await,
        "a change went onto the bus while nobody watched"
    );

    let mut watch = watch_runs(&first).await;
    probe_runs(&second, &mut watch).await;
    assert!(
        sent_a_notification(&second, &mut listener).await,
        "nothing went onto the bus while the first daemon watched"
    );

    // The watcher leaves: within a couple of seconds the first daemon lets
    // go of its lock and the second stops sending.
    drop(watch);
    let left = tokio::time::Instant::now();
    while sent_a_notification(&second, &mut listener).await {
        assert!(
            left.elapsed() < WAIT,
            "the second daemon still sends {WAIT:?} after the last watcher left"
        );
    }
}
