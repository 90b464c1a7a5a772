//! When an attempt's result cannot be stored, the delivery stays due in
//! storage; the dispatcher pauses sending with a doubling backoff (1 s,
//! 2 s, 4 s, ...) instead of sending the same delivery to the tenant again
//! and again while storage is failing. Once storage takes the result, the
//! delivery is done and never sent again.
//!
//! The fault is the debug build's `HOOKYARD_FAULT_SETTLE_FAILS=N`: the first
//! N commits holding attempt results fail as on a full disk.

use std::time::Duration;

use hookyard_bench::sink::{Sink, SinkConfig};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Daemon, EndpointSpec, TestConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_cannot_be_stored_is_not_re_sent_every_second() {
    let sink = Sink::start(SinkConfig::default()).await.expect("sink");
    let daemon = Daemon::start(
        TestConfig::new()
            .route_leads(EndpointSpec::new("crm", &sink.url("/hook")))
            .env("HOOKYARD_FAULT_SETTLE_FAILS", "3"),
    )
    .await;
    let response = daemon
        .post_events()
        .json(&json!({"id": "settle-1", "name": "lead.created", "payload": {"n": 1}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    // Three results refused: attempts at about 0 s, 1 s and 3 s, the fourth
    // at about 7 s. Sending without a pause would have made dozens by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let early = sink.arrivals("settle-1").len();
    assert!(
        (2..=3).contains(&early),
        "{early} attempts in 5 s while results could not be stored"
    );

    // The fourth result is stored: the delivery is done, and stays done.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while sink.arrivals("settle-1").len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} attempts after the storage recovered",
            sink.arrivals("settle-1").len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sink.arrivals("settle-1").len(),
        4,
        "sent again after success"
    );
    assert!(
        daemon.log().contains("Attempt results could not be stored"),
        "the pause is logged"
    );
}
