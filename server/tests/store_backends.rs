//! The storage suite, once per backend: every test below runs on SQLite (a
//! temp file) and on PostgreSQL (a database of its own on the server
//! `./scripts/test` starts, `HOOKYARD_TEST_POSTGRES_URL`), through the same
//! public `Store` and `Writer` the daemon uses. Without that variable the
//! PostgreSQL half fails, rather than pass having checked nothing, unless
//! `HOOKYARD_SKIP_POSTGRES=1`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use hookyard_server::{
    model::{
        now_ms,
        run::{Concurrency, NewRun, OnConflict, Run, RunState, StartOutcome},
        Attempt, DeliveryFilter, DeliveryStatus, DueDelivery, Endpoint, EndpointAuth,
        EndpointOptions, EndpointState, EventType, NewEvent, PayloadFormat, RateLimit, Route,
        Subscription,
    },
    store::{
        Committed, Error, FlowOp, Rejection, RunsCommitted, Settled, Store, SubmitError, Writer,
        WriterConfig,
    },
};
use sqlx::Connection;
use tokio::sync::mpsc;

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    publishes_answer_repeats_and_hand_over_their_deliveries,
    attempt_results_are_recorded_and_listed,
    due_deliveries_are_claimed_a_page_per_endpoint,
    catalog_changes_check_versions_and_references,
    event_types_check_versions_and_one_per_pattern,
    runs_follow_their_concurrency_policy_and_cancel,
);

struct NoRuns;

impl RunsCommitted for NoRuns {
    fn runs_committed(&self, _: Vec<Run>) {}
}

struct Opened {
    store: Store,
    writer: Writer,
    committed: mpsc::Receiver<Committed>,
    _dir: tempfile::TempDir,
}

/// `None` when PostgreSQL is skipped on purpose.
async fn open(backend: Backend) -> Option<Opened> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (tx, committed) = mpsc::channel(64);
    let config = WriterConfig {
        max_batch: 256,
        queue: 256,
    };
    let (store, writer, _tasks) = match backend {
        Backend::Sqlite => {
            Store::open_sqlite(&dir.path().join("store.db"), config, tx, Arc::new(NoRuns)).await
        }
        Backend::Postgres => {
            let url = fresh_postgres_database().await?;
            Store::open_postgres(&url, config, tx, Arc::new(NoRuns)).await
        }
    }
    .expect("open the store");
    Some(Opened {
        store,
        writer,
        committed,
        _dir: dir,
    })
}

async fn fresh_postgres_database() -> Option<String> {
    let Ok(base) = std::env::var("HOOKYARD_TEST_POSTGRES_URL") else {
        if std::env::var("HOOKYARD_SKIP_POSTGRES").as_deref() == Ok("1") {
            return None;
        }
        panic!("HOOKYARD_TEST_POSTGRES_URL is not set: run the tests with ./scripts/test");
    };
    let name = format!(
        "store_{}_{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to HOOKYARD_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a database");
    let mut url = reqwest::Url::parse(&base).expect("a URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

fn event(id: &str, body: &str, endpoints: &[&str]) -> NewEvent {
    let hash: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(body.as_bytes()).into()
    };
    NewEvent {
        id: id.to_string(),
        name: "lead.created".to_string(),
        source: "test".to_string(),
        tenant_id: None,
        time_ms: now_ms(),
        payload: body.to_string(),
        attributes: BTreeMap::new(),
        body_hash: hash,
        routes: endpoints
            .iter()
            .map(|e| Route {
                subscription_id: Arc::from(format!("sub-{e}")),
                endpoint_id: Arc::from(*e),
                also: Vec::new(),
                ordering_key: None,
            })
            .collect(),
        flow_starts: Vec::new(),
        cancels: Vec::new(),
    }
}

async fn next_deliveries(committed: &mut mpsc::Receiver<Committed>) -> Vec<DueDelivery> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), committed.recv()).await {
            Ok(Some(Committed::Deliveries(due))) => return due,
            Ok(Some(_)) => continue,
            other => panic!("no deliveries were handed over: {other:?}"),
        }
    }
}

async fn publishes_answer_repeats_and_hand_over_their_deliveries(backend: Backend) {
    let Some(mut s) = open(backend).await else {
        return;
    };
    let a = event("a", r#"{"n":1}"#, &["e1"]);
    let mut a_other = event("a", r#"{"n":2}"#, &["e1"]);
    a_other.routes.clear();
    let outcomes = s
        .writer
        .publish(vec![
            a.clone(),
            event("b", r#"{"n":1}"#, &[]),
            a.clone(),
            a_other,
        ])
        .await
        .expect("publish");
    let stored = outcomes[0].expect("a is stored");
    assert!(!stored.duplicate && stored.matched == 1, "{outcomes:?}");
    assert_eq!(outcomes[1].map(|p| p.matched), Ok(0), "{outcomes:?}");
    let repeat = outcomes[2].expect("the repeat is answered");
    assert!(repeat.duplicate && repeat.seq == stored.seq && repeat.matched == 0);
    assert_eq!(
        outcomes[3],
        Err(Rejection::Conflict { seq: stored.seq }),
        "same id, other body"
    );

    let due = next_deliveries(&mut s.committed).await;
    assert_eq!(due.len(), 1, "one delivery, for a only: {due:?}");
    assert_eq!(
        (due[0].event.id.as_str(), &*due[0].endpoint_id),
        ("a", "e1")
    );
    assert_eq!(due[0].event.payload, r#"{"n":1}"#);

    let again = s.writer.publish(vec![a]).await.expect("publish again");
    assert!(again[0].expect("answered").duplicate);
}

async fn attempt_results_are_recorded_and_listed(backend: Backend) {
    let Some(mut s) = open(backend).await else {
        return;
    };
    s.writer
        .publish(vec![event("a", "{}", &["e1"])])
        .await
        .expect("publish");
    let mut delivery = next_deliveries(&mut s.committed).await.remove(0);
    delivery.attempts = 1;
    let retry_at = now_ms() + 60_000;
    s.writer
        .settle(Settled {
            delivery: delivery.clone(),
            attempt: Some(Attempt {
                number: 1,
                started_ms: now_ms(),
                duration_ms: 12,
                status_code: Some(500),
                error: Some("endpoint answered HTTP 500".to_string()),
                // Text from outside may hold a NUL, which PostgreSQL cannot store.
                response_body: "oops\0".to_string(),
                request_headers: BTreeMap::from([("webhook-id".to_string(), "a".to_string())]),
            }),
            status: DeliveryStatus::Failed,
            next_attempt_ms: Some(retry_at),
            last_error: Some("endpoint answered HTTP 500".to_string()),
            endpoint_gone: false,
            lease: None,
        })
        .await
        .expect("settle");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.committed.recv()).await {
            Ok(Some(Committed::Settled(_))) => break,
            Ok(Some(_)) => continue,
            other => panic!("the result was not recorded: {other:?}"),
        }
    }
    let (stored, event, attempts) = s.store.get_delivery(delivery.id).await.expect("get");
    assert_eq!(stored.status, DeliveryStatus::Failed);
    assert_eq!(
        (
            stored.attempts,
            stored.last_status_code,
            stored.next_attempt_ms
        ),
        (1, Some(500), Some(retry_at))
    );
    assert_eq!(event.id, "a");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].response_body.trim_end_matches('\0'), "oops");
    assert_eq!(attempts[0].request_headers["webhook-id"], "a");

    let failed = DeliveryFilter {
        status: Some(DeliveryStatus::Failed),
        ..DeliveryFilter::default()
    };
    let page = s
        .store
        .list_deliveries(&failed, 10, None)
        .await
        .expect("list");
    assert_eq!(page.deliveries.len(), 1);
    assert!(s
        .store
        .next_due("e1", now_ms())
        .await
        .expect("next")
        .is_some());
}

async fn due_deliveries_are_claimed_a_page_per_endpoint(backend: Backend) {
    let Some(mut s) = open(backend).await else {
        return;
    };
    let events: Vec<NewEvent> = (0..5)
        .map(|i| event(&format!("e1-{i}"), "{}", &["e1"]))
        .chain((0..2).map(|i| event(&format!("e2-{i}"), "{}", &["e2"])))
        .collect();
    s.writer.publish(events).await.expect("publish");
    let due = next_deliveries(&mut s.committed).await;
    let max_id = due.iter().map(|d| d.id).max().expect("deliveries");
    assert_eq!(s.store.max_delivery_id().await.expect("max"), max_id);

    let mut waiting = s.store.due_endpoints().await.expect("due endpoints");
    waiting.sort();
    let names: Vec<&str> = waiting.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["e1", "e2"]);

    let now = now_ms() + 1;
    let first = s
        .store
        .claim_due("e1", now, max_id, None, 3)
        .await
        .expect("claim");
    assert_eq!(first.len(), 3);
    let cursor = hookyard_server::model::DueCursor {
        due_ms: first[2].due_ms,
        id: first[2].id,
    };
    let rest = s
        .store
        .claim_due("e1", now, max_id, Some(cursor), 3)
        .await
        .expect("claim the rest");
    assert_eq!(rest.len(), 2);
    let ids: Vec<u64> = first.iter().chain(&rest).map(|d| d.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in due order: {ids:?}");
    assert!(rest.iter().all(|d| d.event.id.starts_with("e1-")));
    assert_eq!(s.store.next_due("e1", now).await.expect("next"), None);
}

async fn catalog_changes_check_versions_and_references(backend: Backend) {
    let Some(s) = open(backend).await else {
        return;
    };
    let endpoint = Endpoint {
        id: "crm".to_string(),
        url: "https://crm.example.com/hook".to_string(),
        tenant_id: None,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
        headers: BTreeMap::new(),
        timeout: Some(Duration::from_secs(5)),
        retry_schedule: Some(vec![Duration::ZERO, Duration::from_secs(5)]),
        max_in_flight: Some(4),
        state: EndpointState::Enabled,
        description: String::new(),
        options: EndpointOptions {
            format: PayloadFormat::Cloudevents,
            transform: Some("{{ event.payload | tojson }}".to_string()),
            rate_limit: Some(RateLimit {
                per_second: 5,
                burst: 2,
            }),
            disable_after_ms: Some(Duration::ZERO),
            auth: Some(EndpointAuth::Basic {
                username: "u".to_string(),
                password: "p".to_string(),
            }),
            ordering_key: Some("{{ event.payload.customer }}".to_string()),
            tls: None,
        },
        previous_secret: Some(("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx".to_string(), 42)),
        disabled_reason: None,
        failing_since_ms: Some(7),
        version: 0,
        created_ms: 0,
        updated_ms: 0,
    };
    let created = s.store.create_endpoint(&endpoint).await.expect("create");
    assert_eq!((created.version, created.max_in_flight), (1, Some(4)));
    assert_eq!(created.options, endpoint.options);
    assert_eq!(created.previous_secret, endpoint.previous_secret);
    assert_eq!(created.failing_since_ms, Some(7));
    assert!(matches!(
        s.store.create_endpoint(&endpoint).await,
        Err(Error::AlreadyExists(_))
    ));
    let mut stale = created.clone();
    stale.version = 7;
    assert!(matches!(
        s.store.update_endpoint(&stale).await,
        Err(Error::StaleVersion { current: 1, .. })
    ));

    let subscription = Subscription {
        id: "sub-1".to_string(),
        name: "leads".to_string(),
        patterns: vec!["lead.*".to_string()],
        exclude: Vec::new(),
        tenant_id: None,
        target: "endpoint:crm".to_string(),
        enabled: true,
        description: String::new(),
        inputs: BTreeMap::new(),
        filter: None,
        ordering_key: Some("{{ event.payload.region }}".to_string()),
        version: 0,
        created_ms: 0,
        updated_ms: 0,
    };
    let stored = s
        .store
        .create_subscription(&subscription)
        .await
        .expect("create subscription");
    assert_eq!(stored.ordering_key, subscription.ordering_key);
    assert!(matches!(
        s.store.delete_endpoint("crm").await,
        Err(Error::FailedPrecondition(_))
    ));
    let mut renamed = subscription.clone();
    renamed.id = "another-id".to_string();
    renamed.patterns = vec!["lead.**".to_string()];
    let upserted = s.store.upsert_subscription(&renamed).await.expect("upsert");
    assert_eq!(
        (upserted.id.as_str(), upserted.version),
        ("sub-1", 2),
        "upsert by name"
    );
    s.store.delete_subscription("sub-1").await.expect("delete");
    s.store
        .delete_endpoint("crm")
        .await
        .expect("delete endpoint");
    assert!(s.store.list_endpoints().await.expect("list").is_empty());
}

async fn event_types_check_versions_and_one_per_pattern(backend: Backend) {
    let Some(s) = open(backend).await else {
        return;
    };
    let order = EventType {
        id: "order".to_string(),
        pattern: "order.*".to_string(),
        description: "orders carry an amount".to_string(),
        schema: r#"{"type":"object","required":["amount"]}"#.to_string(),
        version: 0,
        created_ms: 0,
        updated_ms: 0,
    };
    let created = s.store.create_event_type(&order).await.expect("create");
    assert_eq!(
        (created.version, created.schema.as_str()),
        (1, order.schema.as_str())
    );
    assert!(created.created_ms > 0);
    assert!(matches!(
        s.store.create_event_type(&order).await,
        Err(Error::AlreadyExists(_))
    ));
    let mut same_pattern = order.clone();
    same_pattern.id = "order-2".to_string();
    assert!(matches!(
        s.store.create_event_type(&same_pattern).await,
        Err(Error::AlreadyExists(_))
    ));

    let mut changed = created.clone();
    changed.schema = r#"{"type":"object"}"#.to_string();
    let updated = s.store.update_event_type(&changed).await.expect("update");
    assert_eq!(updated.version, 2);
    assert!(matches!(
        s.store.update_event_type(&changed).await,
        Err(Error::StaleVersion {
            current: 2,
            given: 1,
            ..
        })
    ));
    let mut declared = order.clone();
    declared.description = "from the config file".to_string();
    let upserted = s.store.upsert_event_type(&declared).await.expect("upsert");
    assert_eq!(
        (upserted.version, upserted.description.as_str()),
        (3, "from the config file")
    );
    let listed = s.store.list_event_types().await.expect("list");
    assert_eq!(listed, [upserted]);

    s.store.delete_event_type("order").await.expect("delete");
    assert!(matches!(
        s.store.delete_event_type("order").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.store.get_event_type("order").await,
        Err(Error::NotFound { .. })
    ));
    assert!(s.store.list_event_types().await.expect("list").is_empty());
}

async fn runs_follow_their_concurrency_policy_and_cancel(backend: Backend) {
    let Some(s) = open(backend).await else {
        return;
    };
    let new_run = |id: &str| NewRun {
        id: id.to_string(),
        flow_id: "welcome".to_string(),
        flow_version: 1,
        key: Some("ada@example.com".to_string()),
        inputs: "{}".to_string(),
        trigger: "api".to_string(),
        trigger_data: "{}".to_string(),
        concurrency: Some(Concurrency {
            per_key: 1,
            on_conflict: OnConflict::Skip,
        }),
        failed: None,
    };
    let start = |run: NewRun| {
        let writer = s.writer.clone();
        async move {
            writer
                .flow(|reply| FlowOp::Start(run, reply))
                .await
                .expect("start")
        }
    };
    let StartOutcome::Started(first) = start(new_run("r1")).await else {
        panic!("the first run starts");
    };
    assert_eq!(first.state, RunState::Created);
    match start(new_run("r2")).await {
        StartOutcome::Skipped { active } => assert_eq!(active, "r1"),
        other => panic!("a second run with the key is skipped: {other:?}"),
    }
    let cancelled = s
        .writer
        .flow(|reply| FlowOp::Cancel {
            run_id: "r1".to_string(),
            reason: "by a test".to_string(),
            reply,
        })
        .await
        .expect("cancel");
    assert_eq!(cancelled.state, RunState::Cancelled);
    let again = s
        .writer
        .flow(|reply| FlowOp::Cancel {
            run_id: "r1".to_string(),
            reason: "twice".to_string(),
            reply,
        })
        .await;
    assert!(
        matches!(
            again,
            Err(SubmitError::Refused(Error::FailedPrecondition(_)))
        ),
        "{again:?}"
    );
    let (run, log) = s.store.get_run("r1").await.expect("get run");
    assert_eq!(run.state, RunState::Cancelled);
    assert!(
        log.iter().any(|line| line.message == "by a test"),
        "{log:?}"
    );
    assert!(matches!(
        start(new_run("r3")).await,
        StartOutcome::Started(_)
    ));
}

/// Several daemons on PostgreSQL: endpoint leases are taken once, taken
/// over only when expired with a higher token, and a result stored under an
/// old token changes nothing; run claims keep other nodes out.
#[tokio::test]
async fn postgres_leases_fence_late_results_and_claims_keep_other_nodes_out() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let config = WriterConfig {
        max_batch: 256,
        queue: 256,
    };
    let (tx, mut committed) = mpsc::channel(64);
    let (store, writer, _tasks) = Store::open_postgres(&url, config, tx, Arc::new(NoRuns))
        .await
        .expect("open the store");
    let (other_tx, _other_committed) = mpsc::channel(64);
    let (other, _other_writer, _other_tasks) =
        Store::open_postgres(&url, config, other_tx, Arc::new(NoRuns))
            .await
            .expect("open a second node's store");
    assert!(store.is_shared() && store.node_id() != other.node_id());
    let lease = Duration::from_secs(30);
    let endpoints = ["e1".to_string(), "e2".to_string()];

    let first = store
        .acquire_endpoint_leases(&endpoints, 1, lease)
        .await
        .expect("acquire");
    assert_eq!(first.len(), 1, "at most the limit: {first:?}");
    let second = other
        .acquire_endpoint_leases(&endpoints, 5, lease)
        .await
        .expect("acquire");
    assert_eq!(second.len(), 1, "only the free one: {second:?}");
    assert_ne!(first[0].endpoint_id, second[0].endpoint_id);
    assert_eq!(
        store.renew_endpoint_leases(lease).await.expect("renew"),
        first
    );

    // The other node's lease on e1 or e2 expires and this node takes it over.
    let theirs = &second[0].endpoint_id;
    other
        .release_endpoint_lease(theirs, second[0].token)
        .await
        .expect("release");
    let taken = store
        .acquire_endpoint_leases(std::slice::from_ref(theirs), 1, lease)
        .await
        .expect("take over");
    assert_eq!(taken.len(), 1);
    assert!(
        taken[0].token > second[0].token,
        "a takeover raises the token: {taken:?} after {second:?}"
    );
    assert!(other
        .renew_endpoint_leases(lease)
        .await
        .expect("renew")
        .is_empty());

    writer
        .publish(vec![event("a", "{}", &[theirs.as_str()])])
        .await
        .expect("publish");
    let delivery = next_deliveries(&mut committed).await.remove(0);
    let due = store
        .due_of(&[theirs.clone(), "nothing".to_string()])
        .await
        .expect("due of");
    assert_eq!(due.len(), 1, "{due:?}");
    let result = |lease: i64| Settled {
        delivery: DueDelivery {
            attempts: 1,
            ..delivery.clone()
        },
        attempt: Some(Attempt {
            number: 1,
            started_ms: now_ms(),
            duration_ms: 3,
            status_code: Some(200),
            error: None,
            response_body: String::new(),
            request_headers: BTreeMap::new(),
        }),
        status: DeliveryStatus::Succeeded,
        next_attempt_ms: None,
        last_error: None,
        endpoint_gone: false,
        lease: Some(lease),
    };
    for token in [second[0].token, taken[0].token] {
        writer.settle(result(token)).await.expect("settle");
        loop {
            match tokio::time::timeout(Duration::from_secs(10), committed.recv()).await {
                Ok(Some(Committed::Settled(_))) => break,
                Ok(Some(_)) => continue,
                other => panic!("the result was not handled: {other:?}"),
            }
        }
        let (stored, _, attempts) = store.get_delivery(delivery.id).await.expect("get");
        if token == second[0].token {
            assert_eq!(
                stored.status,
                DeliveryStatus::Pending,
                "a late result is fenced out"
            );
            assert!(attempts.is_empty());
        } else {
            assert_eq!(stored.status, DeliveryStatus::Succeeded);
            assert_eq!(attempts.len(), 1);
        }
    }

    assert!(store.claim_run("run-1", lease).await.expect("claim"));
    assert!(store.claim_run("run-1", lease).await.expect("claim again"));
    assert!(!other
        .claim_run("run-1", lease)
        .await
        .expect("claim elsewhere"));
    store.release_run("run-1").await.expect("release");
    assert!(other
        .claim_run("run-1", lease)
        .await
        .expect("claim after release"));
    assert_eq!(store.heartbeat(lease).await.expect("heartbeat"), 1);
    assert_eq!(other.heartbeat(lease).await.expect("heartbeat"), 2);
    store.leave_cluster().await.expect("leave");
    assert_eq!(other.heartbeat(lease).await.expect("heartbeat"), 1);
}
