//! Fail-stop: after a failed sync of the log, or when a long-lived component
//! dies, the daemon acknowledges nothing it cannot vouch for, turns
//! readiness off (`/readyz` and gRPC health on both listeners), and exits
//! non-zero within a bounded drain, so a service manager restarts it. The
//! restart delivers everything that was acknowledged.
//!
//! The faults come from the debug build's hooks (`HOOKYARD_FAULT_*`, see
//! `server/src/store/fault.rs`); the tests run the debug binary.

use std::time::{Duration, Instant};

use hookyard::v1::PublishRequest;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::transport::Endpoint;
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

use crate::{
    api::grpc_event,
    harness::{Daemon, Events, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

/// Syncs of the log that succeed before one reports EIO: a few publishes
/// and their deliveries.
const SYNCS_BEFORE_FAULT: &str = "12";
const MAX_PUBLISHES: usize = 200;
/// Publishes tried after the first refusal; none may be acknowledged.
const AFTER_FAULT: usize = 6;
/// The daemon keeps its listeners open 3 s after a failure, then drains
/// for at most 5 s.
const EXIT_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Acked,
    /// 503 with Retry-After, or UNAVAILABLE.
    Refused,
}

/// Publishes `id`, over HTTP for even `n` and gRPC for odd; anything but an
/// acknowledgement or a refusal to retry fails the test.
async fn publish(daemon: &Daemon, events: &mut Events, id: &str, n: usize) -> Answer {
    if n.is_multiple_of(2) {
        let response = daemon
            .post_events()
            .json(&json!({"id": id, "name": "lead.sync", "payload": {"n": n}}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("publishing {id}: {e}"));
        match response.status() {
            StatusCode::ACCEPTED => Answer::Acked,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().contains_key("retry-after"), "{id}");
                Answer::Refused
            }
            other => panic!("{id}: expected 202 or 503, got {other}"),
        }
    } else {
        let mut event = grpc_event("lead.sync");
        event.id = id.to_string();
        match events.publish(PublishRequest { event: Some(event) }).await {
            Ok(_) => Answer::Acked,
            Err(status) if status.code() == tonic::Code::Unavailable => Answer::Refused,
            Err(status) => panic!("{id}: expected OK or UNAVAILABLE, got {status:?}"),
        }
    }
}

/// `/readyz` answers 503 naming `component` (waiting for it a little), and
/// gRPC health says NOT_SERVING on both listeners, for the server as a
/// whole and for its service.
async fn assert_not_serving(daemon: &Daemon, component: &str) {
    let deadline = Instant::now() + WAIT;
    let body: Value = loop {
        let response = daemon
            .http
            .get(daemon.url("/readyz"))
            .send()
            .await
            .expect("GET /readyz");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break response.json().await.expect("a JSON body");
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(Instant::now() < deadline, "/readyz still answers 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(component), "{body}");

    let listeners = [
        (daemon.http_base(), "hookyard.v1.Events"),
        (
            format!("http://{}", daemon.admin_addr()),
            "hookyard.v1.Admin",
        ),
    ];
    for (base, service) in listeners {
        let channel = Endpoint::from_shared(base)
            .expect("a URI")
            .timeout(WAIT)
            .connect_lazy();
        let mut health = HealthClient::new(channel);
        for name in ["", service] {
            let status = health
                .check(HealthCheckRequest {
                    service: name.to_string(),
                })
                .await
                .unwrap_or_else(|e| panic!("health check of {name:?}: {e}"))
                .into_inner()
                .status;
            assert_eq!(
                status,
                ServingStatus::NotServing as i32,
                "gRPC health of {name:?} on {service}'s listener"
            );
        }
    }
}

/// The daemon exits by itself with status 1, soon, and logs at ERROR which
/// component stopped.
async fn assert_exits_for_a_restart(daemon: &mut Daemon, component: &str) {
    let status = daemon
        .exited(EXIT_WITHIN)
        .await
        .unwrap_or_else(|| panic!("still running {EXIT_WITHIN:?} after the fault"));
    assert_eq!(status.code(), Some(1), "{status}");
    let log = daemon.log();
    assert!(
        log.lines().any(|line| line.contains("ERROR")
            && line.contains("A component stopped")
            && line.contains(component)),
        "no ERROR line names the {component}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_sync_nothing_more_is_acknowledged_and_the_restart_delivers_what_was() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::crm(&sink.url());
    let faulty = config
        .clone()
        .env("HOOKYARD_FAULT_SYNC_FAIL_AFTER", SYNCS_BEFORE_FAULT);
    let mut daemon = Daemon::start(faulty).await;
    let mut events = daemon.events_client();

    // (id, n): a retry goes through the same door with the same body.
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for n in 0..MAX_PUBLISHES {
        let id = format!("sync-{n}");
        match publish(&daemon, &mut events, &id, n).await {
            Answer::Acked => acked.push(id),
            Answer::Refused => {
                refused.push((id, n));
                break;
            }
        }
    }
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the fault"
    );
    assert!(
        !refused.is_empty(),
        "{MAX_PUBLISHES} publishes went through; the fault never fired"
    );
    // Later syncs would succeed (Linux reports a failed writeback once), but
    // nothing written after the failure is acknowledged, over either door.
    for n in 0..AFTER_FAULT {
        let id = format!("after-{n}");
        let answer = publish(&daemon, &mut events, &id, n).await;
        assert_eq!(answer, Answer::Refused, "{id} after the failed sync");
        refused.push((id, n));
    }

    assert_not_serving(&daemon, "writer").await;
    assert_exits_for_a_restart(&mut daemon, "writer").await;
    assert!(daemon.log().contains("could not flush the log to disk"));

    // Restarted without the fault: everything acknowledged is delivered.
    // What was refused may or may not have been stored (its commit was
    // written, its sync failed): the publisher's retry settles it, as a new
    // event or as a duplicate, and it is delivered too.
    daemon.restart_with(config).await;
    let mut events = daemon.events_client();
    for (id, n) in &refused {
        let answer = publish(&daemon, &mut events, id, *n).await;
        assert_eq!(answer, Answer::Acked, "the retry of {id} after the restart");
    }
    let retried = refused.iter().map(|(id, _)| id);
    let all: Vec<&str> = acked.iter().chain(retried).map(String::as_str).collect();
    sink.until_ids(&all, WAIT).await;
}

/// Starts the daemon with `component` set to panic when it first has work,
/// publishes one event to give it some, and checks the daemon stops for a
/// restart, reporting `reported_as`; the restart delivers the event if it
/// was acknowledged.
async fn a_dying_component_stops_the_daemon(component: &str, reported_as: &str) {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::crm(&sink.url());
    let mut daemon = Daemon::start(config.clone().env("HOOKYARD_FAULT_PANIC", component)).await;
    let mut events = daemon.events_client();
    let answer = publish(&daemon, &mut events, "trigger", 0).await;

    assert_not_serving(&daemon, reported_as).await;
    assert_exits_for_a_restart(&mut daemon, reported_as).await;
    assert!(
        daemon
            .log()
            .contains(&format!("injected fault: the {component} panics")),
        "the panic is in the log"
    );

    daemon.restart_with(config).await;
    if answer == Answer::Refused {
        let retried = publish(&daemon, &mut daemon.events_client(), "trigger", 0).await;
        assert_eq!(retried, Answer::Acked);
    }
    sink.until_ids(&["trigger"], WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpointer_that_panics_turns_readiness_off_and_exits_non_zero() {
    a_dying_component_stops_the_daemon("checkpointer", "checkpointer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_thread_that_panics_stops_the_writer_and_the_daemon() {
    a_dying_component_stops_the_daemon("committer", "writer").await;
}

/// The very first sync fails, after the batch was written (and, here, did
/// reach the disk): the publisher hears 503, yet the event is in the log.
/// The restart delivers it without any retry (the dispatcher loads what is
/// due from storage when it starts), and a retry is answered as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stored_but_refused_is_delivered_after_the_restart_and_its_retry_is_a_duplicate() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::crm(&sink.url());
    let mut daemon = Daemon::start(config.clone().env("HOOKYARD_FAULT_SYNC_FAIL_AFTER", "0")).await;
    let mut events = daemon.events_client();
    let answer = publish(&daemon, &mut events, "stored", 0).await;
    assert_eq!(answer, Answer::Refused);
    assert_exits_for_a_restart(&mut daemon, "writer").await;

    daemon.restart_with(config).await;
    sink.until_ids(&["stored"], WAIT).await;
    let retry = daemon
        .post_events()
        .json(&json!({"id": "stored", "name": "lead.sync", "payload": {"n": 0}}))
        .send()
        .await
        .expect("the retry");
    assert_eq!(retry.status(), StatusCode::ACCEPTED);
    let body: Value = retry.json().await.expect("a JSON body");
    assert_eq!(body["duplicate"], true, "{body}");
}
