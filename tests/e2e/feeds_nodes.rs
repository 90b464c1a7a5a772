//! Two daemons on one PostgreSQL: `WatchDeliveries` and `WatchRuns` opened
//! on one show what the other does (the feed bus, NOTIFY). The other node
//! starts sending within about a second of the watch opening, so each test
//! first publishes probes on the second daemon until one shows on the
//! first, then checks a change it makes afterwards from start to end. And
//! nothing goes onto the bus while nobody watches.

use std::time::Duration;

use hookyard::v1::{
    DeliveryStatus, DeliveryUpdate, RunState, RunUpdate, WatchDeliveriesRequest, WatchRunsRequest,
};
use serde_json::json;
use sqlx::postgres::PgListener;
use tonic::Streaming;

use crate::{
    api::{http_event, publish_http},
    harness::{Daemon, TestConfig, WAIT},
    runs::started,
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

/// Publishes probes on `second` until one's delivery shows on `watch`.
async fn probe_deliveries(second: &Daemon, watch: &mut Streaming<DeliveryUpdate>) {
    let probed = tokio::time::Instant::now();
    loop {
        assert!(
            probed.elapsed() < WAIT,
            "no delivery made on the second daemon showed on the first within {WAIT:?}"
        );
        let probe = publish_http(second, &http_event("lead.probe")).await;
        assert_eq!(probe.matched, 1);
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        while let Some(update) = next_within(watch, deadline - tokio::time::Instant::now()).await {
            if update.delivery.is_some_and(|d| d.event_id == probe.id) {
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_delivery_made_on_another_daemon_shows_in_a_watch_from_pending_to_succeeded() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let first = Daemon::start(TestConfig::crm(&sink.url())).await;
    let second = second_daemon(&first, TestConfig::crm(&sink.url())).await;
    let mut watch = first
        .admin_client()
        .watch_deliveries(WatchDeliveriesRequest::default())
        .await
        .expect("WatchDeliveries on the first daemon")
        .into_inner();

    probe_deliveries(&second, &mut watch).await;

    let event = publish_http(&second, &http_event("lead.created")).await;
    assert_eq!(event.matched, 1);
    let mut statuses = Vec::new();
    let delivery = loop {
        let update: DeliveryUpdate = next_within(&mut watch, WAIT)
            .await
            .expect("the delivery's changes show on the first daemon");
        let Some(delivery) = update.delivery else {
            continue;
        };
        if delivery.event_id != event.id {
            continue;
        }
        assert_eq!(update.missed, 0, "the watcher missed changes");
        statuses.push(delivery.status());
        if delivery.status() == DeliveryStatus::Succeeded {
            break delivery;
        }
        assert_ne!(delivery.status(), DeliveryStatus::Dead);
    };
    // Either daemon's dispatcher may send it: each change in order, maybe twice.
    let mut expected = [
        DeliveryStatus::Pending,
        DeliveryStatus::InFlight,
        DeliveryStatus::Succeeded,
    ]
    .into_iter()
    .peekable();
    for status in &statuses {
        if expected.peek() == Some(status) {
            expected.next();
        }
    }
    assert_eq!(
        expected.next(),
        None,
        "the first daemon saw {statuses:?} for a delivery the second made"
    );
    assert_eq!(delivery.event_name, "lead.created");
    assert_eq!(delivery.subscription_name, "leads-to-crm");
    assert_eq!(delivery.target, "endpoint:crm");
    assert_eq!(delivery.last_status_code, 200);
}

#[tokio::test]
async fn a_run_started_on_another_daemon_shows_in_a_watch_until_it_succeeds() {
    let config = TestConfig::new().flow(json!({
        "id": "hello",
        "steps": [{"id": "note", "log": "hello from a node"}]
    }));
    let first = Daemon::start(config.clone()).await;
    let second = second_daemon(&first, config).await;
    let mut watch = first
        .admin_client()
        .watch_runs(WatchRunsRequest::default())
        .await
        .expect("WatchRuns on the first daemon")
        .into_inner();

    let probed = tokio::time::Instant::now();
    'probing: loop {
        assert!(
            probed.elapsed() < WAIT,
            "no run started on the second daemon showed on the first within {WAIT:?}"
        );
        let probe = started(&second, "hello", json!({})).await;
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        while let Some(update) =
            next_within(&mut watch, deadline - tokio::time::Instant::now()).await
        {
            if update.run.is_some_and(|r| r.id == probe) {
                break 'probing;
            }
        }
    }

    let id = started(&second, "hello", json!({})).await;
    let mut states = Vec::new();
    let run = loop {
        let update: RunUpdate = next_within(&mut watch, WAIT)
            .await
            .expect("the run's changes show on the first daemon");
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
            break run;
        }
    };
    assert_eq!(
        states.first(),
        Some(&RunState::Created),
        "the first daemon saw {states:?}; the run was created on the second"
    );
    assert_eq!(
        run.state(),
        RunState::Succeeded,
        "{states:?}: {}",
        run.error
    );
    assert_eq!(run.flow_id, "hello");
    assert_eq!(run.trigger, "api");
}

/// Publishes an event on `daemon`, waits for the sink to get it, then for
/// the changes it made to have been sent if they were going to be; whether
/// any notification came on `listener` meanwhile.
async fn sent_a_notification(
    daemon: &Daemon,
    sink: &mut TestReceiver,
    listener: &mut PgListener,
) -> bool {
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_millis(1), listener.try_recv()).await
    {}
    let event = publish_http(daemon, &http_event("lead.created")).await;
    sink.until_ids(&[event.id.as_str()], WAIT).await;
    matches!(
        tokio::time::timeout(PROBE_WAIT, listener.try_recv()).await,
        Ok(Ok(Some(_)))
    )
}

#[tokio::test]
async fn changes_go_onto_the_bus_only_while_another_daemon_watches() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let first = Daemon::start(TestConfig::crm(&sink.url())).await;
    let second = second_daemon(&first, TestConfig::crm(&sink.url())).await;
    let url = first.postgres_url().expect("this test runs on PostgreSQL");
    let mut listener = PgListener::connect(url).await.expect("connect to listen");
    listener.listen(CHANNEL).await.expect("LISTEN");

    assert!(
        !sent_a_notification(&second, &mut sink, &mut listener).await,
        "a delivery was announced on the bus while nobody watched"
    );

    let mut watch = first
        .admin_client()
        .watch_deliveries(WatchDeliveriesRequest::default())
        .await
        .expect("WatchDeliveries on the first daemon")
        .into_inner();
    probe_deliveries(&second, &mut watch).await;
    assert!(
        sent_a_notification(&second, &mut sink, &mut listener).await,
        "nothing went onto the bus while the first daemon watched"
    );

    // The watcher leaves: within a couple of seconds the first daemon lets
    // go of its lock and the second stops sending.
    drop(watch);
    let left = tokio::time::Instant::now();
    while sent_a_notification(&second, &mut sink, &mut listener).await {
        assert!(
            left.elapsed() < WAIT,
            "the second daemon still sends {WAIT:?} after the last watcher left"
        );
    }
}
