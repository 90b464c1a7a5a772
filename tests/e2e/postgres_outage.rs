//! PostgreSQL going away under a running daemon: while it is down every
//! publish is refused with 503 / UNAVAILABLE (nothing acknowledged that was
//! not committed), and once it is back the daemon recovers by itself and
//! delivers everything it acknowledged, without a restart. These tests stop
//! and start a PostgreSQL of their own (`scripts/postgres`), not the one the
//! other tests share.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    api::{grpc_event, http_event, publish_http},
    harness::{Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

/// A PostgreSQL cluster of this test's own; stopped and removed on drop.
struct Cluster {
    dir: String,
    url: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres")
}

fn run(args: &[&str]) -> String {
    let output = Command::new(script())
        .args(args)
        .output()
        .expect("run scripts/postgres");
    assert!(
        output.status.success(),
        "scripts/postgres {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Cluster {
    fn start() -> Cluster {
        let out = run(&["start"]);
        let value = |name: &str| {
            out.lines()
                .find_map(|line| line.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("scripts/postgres start printed no {name}: {out}"))
                .trim_matches('\'')
                .to_string()
        };
        Cluster {
            dir: value("HOOKYARD_TEST_POSTGRES_DIR"),
            url: value("HOOKYARD_TEST_POSTGRES_URL"),
        }
    }

    /// A crash of the server (`pg_ctl -m immediate`), not a polite shutdown.
    fn down(&self) {
        run(&["down", &self.dir, "immediate"]);
    }

    fn up(&self) {
        run(&["up", &self.dir]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["stop", &self.dir]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_publishes_are_refused_and_afterwards_all_acknowledged_arrive() {
    let cluster = tokio::task::block_in_place(Cluster::start);
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let mut daemon =
        Daemon::start(TestConfig::crm(&sink.url()).set("storage.postgres_url", json!(cluster.url)))
            .await;
    let mut acknowledged = vec![publish_http(&daemon, &http_event("lead.created")).await.id];
    sink.until_ids(&[acknowledged[0].as_str()], WAIT).await;

    tokio::task::block_in_place(|| cluster.down());
    for _ in 0..3 {
        let response = daemon
            .post_events()
            .json(&http_event("lead.created"))
            .send()
            .await
            .expect("an answer while PostgreSQL is down");
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "a publish while PostgreSQL is down: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let mut events = daemon.events_client();
    let refused = events
        .publish(hookyard::v1::PublishRequest {
            event: Some(grpc_event("lead.created")),
        })
        .await
        .expect_err("a gRPC publish while PostgreSQL is down");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    tokio::task::block_in_place(|| cluster.up());
    // The daemon reconnects by itself: publishes succeed again, on the
    // same process.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_event("lead.created");
        let response = daemon
            .post_events()
            .json(&body)
            .send()
            .await
            .expect("an answer after PostgreSQL is back");
        if response.status() == StatusCode::ACCEPTED {
            let answer: serde_json::Value = response.json().await.expect("JSON");
            acknowledged.push(crate::api::accepted(&answer).id);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} 30 s after PostgreSQL came back",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..20 {
        acknowledged.push(publish_http(&daemon, &http_event("lead.created")).await.id);
    }
    let ids: Vec<&str> = acknowledged.iter().map(String::as_str).collect();
    sink.until_ids(&ids[1..], Duration::from_secs(30)).await;
    assert!(
        daemon.exited(Duration::from_millis(1)).await.is_none(),
        "the daemon stopped instead of recovering"
    );
    drop(cluster);
}
