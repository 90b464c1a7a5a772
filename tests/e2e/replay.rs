//! Replay and bulk retry through the Admin API: jobs that make fresh
//! deliveries of stored events (by pattern or by subscription, to one
//! endpoint or all), make dead deliveries due again, keep to their rate,
//! report progress on WatchJob and stop when cancelled.

use std::time::{Duration, Instant};

use hookyard::v1::{
    CreateEndpointRequest, CreateSubscriptionRequest, DeliveryFilter, DeliveryStatus, Endpoint,
    GetJobRequest, Job, JobState, ListDeliveriesRequest, ReplayEventsRequest,
    RetryDeadLettersRequest, Subscription,
};
use serde_json::json;

use crate::{
    api::publish_http,
    harness::{Admin, Daemon, TestConfig, SECRET},
    sink::{Behaviour, TestReceiver},
};

async fn endpoint(
    admin: &mut Admin,
    id: &str,
    url: &str,
    schedule: Vec<u64>,
    patterns: &[&str],
) -> String {
    admin
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                id: id.into(),
                url: url.into(),
                secret: SECRET.into(),
                retry_schedule_ms: schedule,
                ..Endpoint::default()
            }),
        })
        .await
        .expect("CreateEndpoint");
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: format!("to-{id}"),
                patterns: patterns.iter().map(|p| p.to_string()).collect(),
                target: format!("endpoint:{id}"),
                enabled: true,
                ..Subscription::default()
            }),
        })
        .await
        .expect("CreateSubscription")
        .into_inner()
        .id
}

fn since(start: std::time::SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(start - Duration::from_secs(1)))
}

/// Follows the job on WatchJob until it ends; every state seen.
async fn watch_to_end(admin: &mut Admin, id: &str) -> Vec<Job> {
    let mut stream = admin
        .watch_job(GetJobRequest { id: id.into() })
        .await
        .expect("WatchJob")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(job) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the job ends within 30 s")
        .expect("the watch stream")
    {
        seen.push(job);
    }
    seen
}

async fn deliveries_of(admin: &mut Admin, endpoint: &str) -> Vec<hookyard::v1::Delivery> {
    admin
        .list_deliveries(ListDeliveriesRequest {
            filter: Some(DeliveryFilter {
                endpoint_id: endpoint.into(),
                ..DeliveryFilter::default()
            }),
            page_size: 500,
            ..ListDeliveriesRequest::default()
        })
        .await
        .expect("ListDeliveries")
        .into_inner()
        .deliveries
}

#[tokio::test]
async fn replay_makes_fresh_deliveries_by_pattern_or_subscription_throttled_and_cancellable() {
    let start = std::time::SystemTime::now();
    let mut all = TestReceiver::start(Behaviour::Always(200)).await;
    let mut paid = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    endpoint(&mut admin, "all", &all.url(), vec![0], &["order.*"]).await;
    let paid_sub = endpoint(&mut admin, "paid", &paid.url(), vec![0], &["order.paid"]).await;

    let mut ids = Vec::new();
    for n in 0..6 {
        let name = if n % 2 == 0 {
            "order.paid"
        } else {
            "order.placed"
        };
        ids.push(
            publish_http(&daemon, &json!({"name": name, "payload": {"n": n}}))
                .await
                .id,
        );
    }
    publish_http(&daemon, &json!({"name": "user.created", "payload": {}})).await;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    all.until_ids(&ids, Duration::from_secs(10)).await;
    for _ in 0..3 {
        paid.next().await;
    }

    for (request, field) in [
        (
            ReplayEventsRequest {
                pattern: "order.*".into(),
                ..ReplayEventsRequest::default()
            },
            "from",
        ),
        (
            ReplayEventsRequest {
                pattern: "order.*".into(),
                subscription_id: paid_sub.clone(),
                from: since(start),
                ..ReplayEventsRequest::default()
            },
            "pattern",
        ),
        (
            ReplayEventsRequest {
                pattern: "order..".into(),
                from: since(start),
                ..ReplayEventsRequest::default()
            },
            "pattern",
        ),
    ] {
        let refused = admin
            .replay_events(request)
            .await
            .expect_err("a bad replay is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains(field), "{}", refused.message());
    }

    // By pattern, to every subscription that takes the events now.
    let job = admin
        .replay_events(ReplayEventsRequest {
            pattern: "order.*".into(),
            from: since(start),
            per_second: 1000,
            ..ReplayEventsRequest::default()
        })
        .await
        .expect("ReplayEvents")
        .into_inner();
    let seen = watch_to_end(&mut admin, &job.id).await;
    let end = seen.last().expect("the job's last state");
    assert_eq!(end.state, JobState::Succeeded as i32, "{seen:?}");
    assert_eq!(
        (end.scanned, end.matched, end.deliveries),
        (7, 6, 9),
        "{end:?}"
    );
    all.until_ids(&ids, Duration::from_secs(10)).await;
    for _ in 0..3 {
        paid.next().await;
    }

    // By subscription, to one endpoint, at 2 deliveries per second.
    let began = Instant::now();
    let job = admin
        .replay_events(ReplayEventsRequest {
            subscription_id: paid_sub.clone(),
            from: since(start),
            endpoint_id: "paid".into(),
            per_second: 2,
            ..ReplayEventsRequest::default()
        })
        .await
        .expect("ReplayEvents by subscription")
        .into_inner();
    let end = watch_to_end(&mut admin, &job.id)
        .await
        .pop()
        .expect("an end");
    assert_eq!(end.deliveries, 3, "{end:?}");
    for _ in 0..3 {
        let received = paid.next().await;
        assert_eq!(received.json()["event_name"], "order.paid");
    }
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "3 deliveries at 2/s take at least a second: {:?}",
        began.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(all.drain().is_empty(), "nothing else went to `all`");
    assert_eq!(deliveries_of(&mut admin, "paid").await.len(), 9);

    // Cancelled after its first page, at 1 per second.
    let job = admin
        .replay_events(ReplayEventsRequest {
            pattern: "order.*".into(),
            from: since(start),
            endpoint_id: "all".into(),
            per_second: 1,
            ..ReplayEventsRequest::default()
        })
        .await
        .expect("a slow replay")
        .into_inner();
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .cancel_job(GetJobRequest { id: job.id.clone() })
        .await
        .expect("CancelJob");
    let end = watch_to_end(&mut admin, &job.id)
        .await
        .pop()
        .expect("an end");
    assert_eq!(end.state, JobState::Cancelled as i32, "{end:?}");
    let listed = admin
        .list_jobs(hookyard::v1::ListJobsRequest {})
        .await
        .expect("ListJobs")
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), 3, "{listed:?}");
}

#[tokio::test]
async fn dead_deliveries_are_retried_in_bulk() {
    let mut sink = TestReceiver::start(Behaviour::FailTimes(8, 500)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    // Two attempts each (the first and one retry): eight failures kill all four.
    endpoint(&mut admin, "flaky", &sink.url(), vec![0], &["order.*"]).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            publish_http(&daemon, &json!({"name": "order.paid", "payload": {"n": n}}))
                .await
                .id,
        );
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sink.until_ids(&ids, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries_of(&mut admin, "flaky")
        .await
        .iter()
        .any(|d| d.status != DeliveryStatus::Dead as i32)
    {
        assert!(Instant::now() < deadline, "the four deliveries die");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let refused = admin
        .retry_dead_letters(RetryDeadLettersRequest {
            endpoint_id: "nope".into(),
            ..RetryDeadLettersRequest::default()
        })
        .await
        .expect_err("an unknown endpoint");
    assert_eq!(refused.code(), tonic::Code::NotFound);

    let job = admin
        .retry_dead_letters(RetryDeadLettersRequest {
            endpoint_id: "flaky".into(),
            ..RetryDeadLettersRequest::default()
        })
        .await
        .expect("RetryDeadLetters")
        .into_inner();
    let end = watch_to_end(&mut admin, &job.id)
        .await
        .pop()
        .expect("an end");
    assert_eq!(
        (end.state, end.deliveries),
        (JobState::Succeeded as i32, 4),
        "{end:?}"
    );
    sink.until_ids(&ids, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while deliveries_of(&mut admin, "flaky")
        .await
        .iter()
        .any(|d| d.status != DeliveryStatus::Succeeded as i32)
    {
        assert!(Instant::now() < deadline, "the retried deliveries succeed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_recovery_job_includes_failed_deliveries_waiting_for_a_later_retry() {
    let mut sink = TestReceiver::start(Behaviour::FailTimes(2, 503)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    // The retry after the first failure is an hour away.
    endpoint(
        &mut admin,
        "slow",
        &sink.url(),
        vec![3_600_000],
        &["order.*"],
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..2 {
        ids.push(
            publish_http(&daemon, &json!({"name": "order.paid", "payload": {"n": n}}))
                .await
                .id,
        );
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sink.until_ids(&ids, Duration::from_secs(10)).await;

    // Dead letters only: these are failed, not dead, so nothing moves.
    let job = admin
        .retry_dead_letters(RetryDeadLettersRequest {
            endpoint_id: "slow".into(),
            ..RetryDeadLettersRequest::default()
        })
        .await
        .expect("RetryDeadLetters")
        .into_inner();
    let end = watch_to_end(&mut admin, &job.id)
        .await
        .pop()
        .expect("an end");
    assert_eq!(end.deliveries, 0, "{end:?}");

    let job = admin
        .retry_dead_letters(RetryDeadLettersRequest {
            endpoint_id: "slow".into(),
            include_failed: true,
            ..RetryDeadLettersRequest::default()
        })
        .await
        .expect("RetryDeadLetters with failed ones")
        .into_inner();
    let end = watch_to_end(&mut admin, &job.id)
        .await
        .pop()
        .expect("an end");
    assert_eq!(end.deliveries, 2, "{end:?}");
    sink.until_ids(&ids, Duration::from_secs(10)).await;
}
