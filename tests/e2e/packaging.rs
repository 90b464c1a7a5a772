//! What packaging promises: the systemd unit is valid and the daemon tells
//! systemd when it is ready (`Type=notify`); the container image builds
//! where the machine can build one.

use std::{path::Path, process::Command, time::Duration};

use crate::{
    harness::{built_binary, Daemon, TestConfig},
    sink::{Behaviour, TestReceiver},
};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

#[tokio::test]
async fn the_daemon_tells_systemd_it_is_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket_path = dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind a notification socket");
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let mut daemon = Daemon::start(
        TestConfig::crm(&sink.url())
            .env("NOTIFY_SOCKET", socket_path.to_str().expect("a UTF-8 path")),
    )
    .await;
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
        .await
        .expect("a notification within 10 s")
        .expect("receive");
    let ready = String::from_utf8_lossy(&buffer[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    // Ready means serving: the public listener answers.
    let health = daemon
        .http
        .get(daemon.url("/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(health.status(), 200);

    daemon.stop().await;
    let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buffer))
        .await
        .expect("a notification on stop")
        .expect("receive");
    assert_eq!(String::from_utf8_lossy(&buffer[..n]), "STOPPING=1");
}

#[test]
fn the_systemd_unit_verifies() {
    let available = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("systemd-analyze is not installed here; the unit is not verified");
        return;
    }
    // The unit names /usr/local/bin/hookyard; point it at the built binary.
    let unit = std::fs::read_to_string(Path::new(REPO).join("deploy/hookyard.service"))
        .expect("read deploy/hookyard.service");
    let binary = built_binary("hookyard");
    let unit = unit.replace(
        "/usr/local/bin/hookyard",
        binary.to_str().expect("a UTF-8 path"),
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("hookyard.service");
    std::fs::write(&path, unit).expect("write the unit");
    let verified = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    // Outside a booted systemd (a container), verify also reports that it
    // cannot reach the manager; only the unit's own lines count.
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("hookyard.service"))
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {said}");
}

#[test]
fn the_container_image_builds_where_docker_runs() {
    let docker = Command::new("docker").arg("info").output();
    if !docker.is_ok_and(|o| o.status.success()) {
        eprintln!("no Docker daemon here; the image is not built");
        return;
    }
    let built = Command::new("docker")
        .args(["build", "--quiet", "-t", "hookyard:test", REPO])
        .output()
        .expect("run docker build");
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let version = Command::new("docker")
        .args(["run", "--rm", "hookyard:test", "--version"])
        .output()
        .expect("run the image");
    assert!(
        String::from_utf8_lossy(&version.stdout).contains("hookyard"),
        "{}",
        String::from_utf8_lossy(&version.stderr)
    );
}
