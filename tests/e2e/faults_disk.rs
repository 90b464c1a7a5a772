//! Disk full: the daemon answers 503 (HTTP) and UNAVAILABLE (gRPC) instead of
//! acknowledging what it cannot store, and recovers by itself once there is
//! room again. A full disk is not fail-stop (SQLite refuses the write before
//! anything is written, so the state is known): the daemon stays up, unlike
//! after a failed sync (`fail_stop.rs`).
//!
//! The data dir is a small tmpfs mounted for the test, and a filler file takes
//! its free space: SQLite's writes then really fail with SQLITE_FULL, as on a
//! full disk. (Tests run as root, for whom `chmod` makes nothing read-only, so
//! a read-only file would not make SQLite fail; a tmpfs cannot be remounted
//! read-only while the database is open for writing either.) Where `mount`
//! is not allowed, the test says so and passes without checking anything.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use hookyard::v1::{Event, PublishRequest};
use hookyard_bench::sink::{Sink, SinkConfig};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{Daemon, EndpointSpec, TestConfig};

const TMPFS_SIZE: &str = "16m";
/// Big events fill the WAL quickly once the disk is full.
const BIG_PAYLOAD: usize = 100_000;
const MAX_TRIES: usize = 200;
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes until the file system refuses.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&chunk[..512]).is_ok() {}
    let _ = file.sync_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_events_and_recovers() {
    let root = tempfile::tempdir().expect("a temp dir");
    let Some(tmpfs) = Tmpfs::mount(root.path()) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root and mount rights)");
        return;
    };
    let data = tmpfs.0.join("data");
    let sink = Sink::start(SinkConfig::default())
        .await
        .expect("start the sink");
    let endpoint = EndpointSpec::new("crm", &sink.url("/hook"));
    let daemon = Daemon::start(TestConfig::new().route_leads(endpoint).data_dir(&data)).await;
    let big = "x".repeat(BIG_PAYLOAD);
    let publish = |id: String| {
        daemon
            .post_events()
            .json(&json!({"id": id, "name": "lead.disk", "payload": {"pad": big}}))
            .send()
    };

    let mut acked = Vec::new();
    for i in 0..5 {
        let id = format!("before-{i}");
        let response = publish(id.clone()).await.expect("publish");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        acked.push(id);
    }

    // Fill the disk; publish until storage refuses. A commit that still fits
    // (into WAL pages already allocated) is stored and may be acknowledged.
    let filler = tmpfs.0.join("filler");
    fill(&filler);
    let mut refused = Vec::new();
    for i in 0..MAX_TRIES {
        let id = format!("full-{i}");
        let response = publish(id.clone()).await.expect("an answer, not a hang");
        match response.status() {
            StatusCode::ACCEPTED => acked.push(id),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(response.headers().contains_key("retry-after"));
                refused.push(id);
                if refused.len() >= 3 {
                    break;
                }
            }
            other => panic!("expected 202 or 503 on a full disk, got {other}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "the disk is full, yet {MAX_TRIES} events of {BIG_PAYLOAD} B were acknowledged"
    );
    let mut events = daemon.events_client();
    let grpc = events
        .publish(PublishRequest {
            event: Some(Event {
                id: "full-grpc".into(),
                name: "lead.disk".into(),
                payload: format!(r#"{{"pad":"{big}"}}"#).into_bytes(),
                ..Event::default()
            }),
        })
        .await;
    match grpc {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        Ok(_) => acked.push("full-grpc".into()),
    }

    // Full, but no component stopped: the daemon neither exits nor restarts.
    assert_still_serving(&daemon).await;

    // Room again: the same daemon accepts again without a restart, and the
    // publishers' retries of what was refused go through.
    std::fs::remove_file(&filler).expect("remove the filler");
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    for id in refused {
        loop {
            let status = publish(id.clone()).await.expect("publish").status();
            if status == StatusCode::ACCEPTED {
                acked.push(id);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still {status} after the disk has room"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Everything acknowledged, before, during and after, was really stored.
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    loop {
        let missing = sink.missing(&acked);
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged but never delivered: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_still_serving(&daemon).await;
    drop(daemon);
}

/// Still ready (a stopped component turns readiness off), and nothing was
/// reported as a component stopping.
async fn assert_still_serving(daemon: &Daemon) {
    let ready = daemon
        .http
        .get(daemon.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(
        !daemon.log().contains("A component stopped"),
        "a full disk stopped a component:\n{}",
        daemon.log()
    );
}
