//! Retention: under a steady publish-and-deliver load with short retention,
//! the janitor deletes finished events (with their deliveries and attempts)
//! once old enough, keeps an event whose delivery is still to be made, and
//! on SQLite the database file stops growing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    api::{http_event, listed_event_ids},
    harness::{Daemon, EndpointSpec, TestConfig, API_KEY},
    sink::{Behaviour, TestReceiver},
};

fn database_bytes(daemon: &Daemon) -> u64 {
    std::fs::metadata(daemon.data_path().join("hookyard.db")).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_events_go_after_their_retention_and_the_database_stops_growing() {
    let _sink = TestReceiver::start(Behaviour::Always(200)).await;
    let dead_end = TestReceiver::start(Behaviour::Always(503)).await;
    let config = TestConfig::crm(&_sink.url())
        .endpoint(EndpointSpec::new("slow", &dead_end.url()).retry_schedule(&["1h"]))
        .subscription("held", &["held.*"], &[], "endpoint:slow")
        .set(
            "retention",
            json!({"events": "1s", "dead": "1s", "attempts": "1s", "runs": "1s", "interval": "200ms"}),
        );
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();

    // An event whose delivery waits an hour for its retry is kept.
    let held = daemon
        .post_events()
        .json(&http_event("held.one"))
        .send()
        .await
        .expect("POST");
    assert_eq!(held.status(), 202);
    let held: serde_json::Value = held.json().await.expect("JSON");
    let held_id = held["id"].as_str().expect("an id").to_string();

    // A steady load: publish, deliver, expire, for a while.
    let start = Instant::now();
    let mut first = Vec::new();
    let mut sizes = Vec::new();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(8) {
        for _ in 0..20 {
            let answer = daemon
                .http
                .post(daemon.url("/v1/events"))
                .bearer_auth(API_KEY)
                .json(&json!({"name": "lead.created", "payload": {"n": n, "pad": "x".repeat(512)}}))
                .send()
                .await
                .expect("POST /v1/events");
            assert_eq!(answer.status(), 202);
            if first.len() < 20 {
                let body: serde_json::Value = answer.json().await.expect("JSON");
                first.push(body["id"].as_str().expect("an id").to_string());
            }
            n += 1;
        }
        if start.elapsed() > Duration::from_secs(3) {
            sizes.push(database_bytes(&daemon));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let still = listed_event_ids(&mut admin).await;
    for id in &first {
        assert!(!still.contains(id), "event {id} outlived its retention");
    }
    assert!(
        still.contains(&held_id),
        "an event with a delivery to make is kept"
    );
    assert!(n >= 200, "a steady load was published: {n}");

    if !crate::backend::POSTGRES {
        let (mid, last) = (sizes[sizes.len() / 3], *sizes.last().expect("sizes"));
        assert!(
            last <= mid + mid / 4,
            "the database kept growing under retention: {mid} bytes then {last} ({} events published)",
            n
        );
    }
}
