//! Failed attempts are retried on the endpoint's schedule, never faster; an
//! exhausted schedule ends dead; 410 Gone disables the endpoint.

use std::time::Duration;

use hookyard::v1::{Delivery, DeliveryDetail, DeliveryStatus, EndpointState, GetEndpointRequest};

use crate::{
    api::{get_delivery, http_event, publish_http, Watch},
    harness::{Admin, Daemon, EndpointSpec, TestConfig},
    sink::{Behaviour, Received, TestReceiver},
};

const FINAL: &[DeliveryStatus] = &[DeliveryStatus::Succeeded, DeliveryStatus::Dead];

#[tokio::test]
async fn failed_attempts_are_retried_on_schedule_until_success() {
    let mut run = deliver_one(Behaviour::FailTimes(2, 500), &["0s", "200ms", "200ms"]).await;
    assert_eq!(run.statuses.last(), Some(&DeliveryStatus::Succeeded));

    let requests = run.sink.drain();
    assert_eq!(requests.len(), 3, "two failures and a success");
    assert!(requests.iter().all(|r| r.webhook_id() == run.event_id));
    assert_no_faster_than(&requests, &[Duration::ZERO, Duration::from_millis(200)]);

    let detail = run.detail().await;
    assert_eq!(
        detail.delivery.as_ref().map(Delivery::status),
        Some(DeliveryStatus::Succeeded)
    );
    assert_eq!(status_codes(&detail), [500, 500, 200]);
    assert_eq!(
        detail.event.as_ref().map(|e| e.id.as_str()),
        Some(run.event_id.as_str())
    );
}

#[tokio::test]
async fn always_failing_endpoint_ends_dead_after_its_schedule() {
    let mut run = deliver_one(Behaviour::Always(500), &["0s", "100ms"]).await;
    assert_eq!(run.statuses.last(), Some(&DeliveryStatus::Dead));
    assert!(
        run.statuses.contains(&DeliveryStatus::Failed),
        "a retried attempt passes through FAILED: {:?}",
        run.statuses
    );
    let requests = run.sink.drain();
    assert_eq!(requests.len(), 3, "one attempt and two retries");
    assert_no_faster_than(&requests, &[Duration::ZERO, Duration::from_millis(100)]);

    let detail = run.detail().await;
    assert_eq!(status_codes(&detail), [500, 500, 500]);
    assert_eq!(detail.delivery.as_ref().map(|d| d.attempts), Some(3));
}

#[tokio::test]
async fn gone_endpoint_is_disabled_and_its_delivery_dead() {
    let mut run = deliver_one(Behaviour::Always(410), &["0s", "200ms", "200ms"]).await;
    assert_eq!(run.statuses.last(), Some(&DeliveryStatus::Dead));
    assert_eq!(run.sink.drain().len(), 1, "410 is not retried");
    assert_eq!(status_codes(&run.detail().await), [410]);

    let endpoint = run
        .admin
        .get_endpoint(GetEndpointRequest {
            id: "crm".to_string(),
        })
        .await
        .expect("GetEndpoint")
        .into_inner();
    assert_eq!(endpoint.state(), EndpointState::Gone);
}

/// One `lead.created` event delivered to a sink answering by `behaviour`,
/// followed until its delivery is SUCCEEDED or DEAD.
struct Run {
    _daemon: Daemon,
    sink: TestReceiver,
    admin: Admin,
    event_id: String,
    delivery: Delivery,
    statuses: Vec<DeliveryStatus>,
}

impl Run {
    async fn detail(&mut self) -> DeliveryDetail {
        get_delivery(&mut self.admin, self.delivery.id).await
    }
}

async fn deliver_one(behaviour: Behaviour, schedule: &[&str]) -> Run {
    let sink = TestReceiver::start(behaviour).await;
    let endpoint = EndpointSpec::new("crm", &sink.url()).retry_schedule(schedule);
    let daemon = Daemon::start(TestConfig::new().route_leads(endpoint)).await;
    let mut admin = daemon.admin_client();
    let mut watch = Watch::all(&mut admin).await;
    let event_id = publish_http(&daemon, &http_event("lead.created")).await.id;
    let (delivery, statuses) = watch.statuses_until(&event_id, FINAL).await;
    Run {
        _daemon: daemon,
        sink,
        admin,
        event_id,
        delivery,
        statuses,
    }
}

/// The attempts' status codes, by attempt number.
fn status_codes(detail: &DeliveryDetail) -> Vec<u32> {
    let mut attempts = detail.attempts.clone();
    attempts.sort_by_key(|a| a.number);
    attempts.iter().map(|a| a.status_code).collect()
}

/// Each retry reached the sink at least its scheduled delay after the attempt
/// before it.
fn assert_no_faster_than(requests: &[Received], delays: &[Duration]) {
    for (i, (pair, delay)) in requests.windows(2).zip(delays).enumerate() {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= *delay,
            "attempt {} came {gap:?} after attempt {}; the schedule says {delay:?}",
            i + 2,
            i + 1
        );
    }
}
