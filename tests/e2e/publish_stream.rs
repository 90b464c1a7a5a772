//! `Events.PublishStream` through the real daemon: one result per event, in
//! the order sent, each after its commit; a bad event does not end the
//! stream; what was answered survives `kill -9`.

use std::time::Duration;

use hookyard::v1::{publish_result, Event, PublishRequest};
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    api::{grpc_event, listed_event_ids},
    harness::{Daemon, TestConfig},
    sink::{Behaviour, TestReceiver},
};

fn numbered(n: usize) -> Event {
    Event {
        id: format!("stream-{n:05}"),
        ..grpc_event("lead.created")
    }
}

#[tokio::test]
async fn results_come_in_order_after_commit_and_survive_kill_9() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let mut daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut events = daemon.events_client();

    const COUNT: usize = 2_000;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let sender = tokio::spawn(async move {
        for n in 0..COUNT {
            let event = match n {
                // A bad one, and a repeat of an earlier one.
                500 => Event {
                    name: "Not A Name".into(),
                    ..numbered(n)
                },
                700 => numbered(10),
                _ => numbered(n),
            };
            if tx
                .send(PublishRequest { event: Some(event) })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut results = events
        .publish_stream(ReceiverStream::new(rx))
        .await
        .expect("PublishStream")
        .into_inner();
    let mut answered = Vec::with_capacity(COUNT);
    while let Some(result) = tokio::time::timeout(Duration::from_secs(30), results.message())
        .await
        .expect("results keep coming")
        .expect("the result stream")
    {
        answered.push(result.result.expect("a result"));
    }
    sender.await.expect("the sender");
    assert_eq!(answered.len(), COUNT, "one result per event");
    for (n, result) in answered.iter().enumerate() {
        match (n, result) {
            (500, publish_result::Result::Error(e)) => {
                assert_eq!(e.code, tonic::Code::InvalidArgument as i32, "{e:?}");
                assert!(
                    e.field_violations.iter().any(|v| v.field.contains("name")),
                    "{e:?}"
                );
            }
            (700, publish_result::Result::Ok(ok)) => {
                assert!(ok.duplicate, "a repeat is a duplicate: {ok:?}");
                assert_eq!(ok.id, "stream-00010");
            }
            (n, publish_result::Result::Ok(ok)) => {
                assert_eq!(ok.id, format!("stream-{n:05}"), "in the order sent");
                assert!(!ok.duplicate && ok.matched == 1, "{ok:?}");
            }
            (n, other) => panic!("event {n}: {other:?}"),
        }
    }

    // Answered means committed: a kill -9 now loses none of them.
    daemon.kill9().await;
    daemon.restart_with(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let stored = listed_event_ids(&mut admin).await;
    let missing: Vec<usize> = (0..COUNT)
        .filter(|&n| n != 500 && n != 700)
        .filter(|&n| !stored.contains(&format!("stream-{n:05}")))
        .collect();
    assert!(missing.is_empty(), "answered but lost: {missing:?}");
}

#[tokio::test]
async fn a_stream_without_a_valid_key_is_refused() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut events = daemon.events_client_with_key(Some("hy_wrong_key_0123456789abcdef"));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(PublishRequest {
        event: Some(numbered(1)),
    })
    .await
    .expect("queue an event");
    let refused = events
        .publish_stream(ReceiverStream::new(rx))
        .await
        .expect_err("a wrong key is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

/// The Python example (grpcio, stubs generated from the proto files) streams
/// events and gets one committed result per event.
#[tokio::test]
async fn the_python_grpcio_example_streams_events() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let python = crate::harness::python();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/publish_stream.py"
    );
    let output = tokio::process::Command::new(python)
        .args([
            example,
            "--addr",
            daemon.http_base().trim_start_matches("http://"),
            "--key",
            crate::harness::API_KEY,
            "--count",
            "50",
            "--id-prefix",
            "py-",
        ])
        .output()
        .await
        .expect("run the Python example");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<String> = stdout
        .lines()
        .map(|line| {
            let result: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(result["matched"], 1, "{line}");
            result["id"].as_str().expect("an id").to_string()
        })
        .collect();
    let expected: Vec<String> = (0..50).map(|n| format!("py-{n}")).collect();
    assert_eq!(ids, expected, "one result per event, in order");
    let mut admin = daemon.admin_client();
    let stored = listed_event_ids(&mut admin).await;
    assert!(expected.iter().all(|id| stored.contains(id)));
}
