//! A sink that fails 20 % of requests with 500 and closes the connection
//! unanswered on another 10 %: every event still arrives, every attempt is
//! recorded (one recorded attempt per request the sink saw, with its status
//! or its error), and no retry comes sooner than its place in the schedule.

use std::time::{Duration, Instant};

use hookyard::v1::{DeliveryStatus, GetDeliveryRequest, ListDeliveriesRequest};
use hookyard_bench::sink::{Answer, Sink, SinkConfig};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Daemon, EndpointSpec, TestConfig};

const EVENTS: usize = 200;
/// The delay before each retry; 30 % failures leave a delivery failing eight
/// times in a row with odds of about 1 in 15 000.
const SCHEDULE_MS: [u64; 8] = [50, 120, 80, 100, 100, 100, 100, 100];
/// The daemon schedules in whole milliseconds.
const CLOCK_SLACK: Duration = Duration::from_millis(2);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_sink_gets_everything_on_schedule() {
    let sink = Sink::start(SinkConfig {
        fail_share: 0.2,
        fail_status: 500,
        close_share: 0.1,
        delay: Duration::ZERO,
    })
    .await
    .expect("start the sink");
    let schedule: Vec<String> = SCHEDULE_MS.iter().map(|ms| format!("{ms}ms")).collect();
    let schedule: Vec<&str> = schedule.iter().map(String::as_str).collect();
    let endpoint = EndpointSpec::new("crm", &sink.url("/hook")).retry_schedule(&schedule);
    let daemon = Daemon::start(TestConfig::new().route_leads(endpoint)).await;

    let ids: Vec<String> = (0..EVENTS).map(|i| format!("flaky-{i}")).collect();
    for id in &ids {
        let response = daemon
            .post_events()
            .json(&json!({"id": id, "name": "lead.flaky", "payload": {"id": id}}))
            .send()
            .await
            .expect("publish");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }

    // Everything arrives, and the daemon records every delivery as succeeded.
    let mut admin = daemon.admin_client();
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let deliveries = loop {
        let page = admin
            .list_deliveries(ListDeliveriesRequest {
                page_size: 500,
                ..Default::default()
            })
            .await
            .expect("ListDeliveries")
            .into_inner()
            .deliveries;
        let succeeded = page
            .iter()
            .filter(|d| d.status == DeliveryStatus::Succeeded as i32)
            .count();
        if sink.missing(&ids).is_empty() && succeeded == EVENTS {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "after {DELIVERY_TIMEOUT:?}: {} events never arrived, {succeeded} of {EVENTS} deliveries succeeded",
            sink.missing(&ids).len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (mut failed, mut closed) = (0, 0);
    for delivery in &deliveries {
        let arrivals = sink.arrivals(&delivery.event_id);
        assert_eq!(
            arrivals.len(),
            delivery.attempts as usize,
            "event {}: the sink saw {} requests, the daemon recorded {} attempts",
            delivery.event_id,
            arrivals.len(),
            delivery.attempts
        );
        let (last, earlier) = arrivals.split_last().expect("at least one arrival");
        assert_eq!(last.answer, Answer::Ok);
        assert!(earlier.iter().all(|a| a.answer != Answer::Ok));
        for (k, pair) in arrivals.windows(2).enumerate() {
            let gap = pair[1].at - pair[0].at;
            let due = Duration::from_millis(SCHEDULE_MS[k]);
            assert!(
                gap + CLOCK_SLACK >= due,
                "event {}: retry {} came {gap:?} after the attempt before it; the schedule says {due:?}",
                delivery.event_id,
                k + 1
            );
        }
        if arrivals.len() == 1 {
            continue;
        }
        // The attempt records say what happened to each request.
        let detail = admin
            .get_delivery(GetDeliveryRequest { id: delivery.id })
            .await
            .expect("GetDelivery")
            .into_inner();
        assert_eq!(detail.attempts.len(), arrivals.len());
        for (attempt, arrival) in detail.attempts.iter().zip(&arrivals) {
            match arrival.answer {
                Answer::Ok => assert_eq!(attempt.status_code, 200),
                Answer::Failed(status) => {
                    failed += 1;
                    assert_eq!(attempt.status_code, u32::from(status));
                }
                Answer::Closed => {
                    closed += 1;
                    assert_eq!(attempt.status_code, 0, "{attempt:?}");
                    assert!(!attempt.error.is_empty(), "{attempt:?}");
                }
            }
        }
    }
    assert!(
        failed > 10 && closed > 5,
        "the sink misbehaved too little to test anything: {failed} failures, {closed} closed connections"
    );
}
