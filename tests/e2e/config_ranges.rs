//! A config file whose times, durations or sizes are out of range stops the
//! real binary before it serves, with the key named: a zero timeout or a
//! retry a century away would otherwise stall or overflow at run time.

use std::process::Stdio;

use crate::harness::built_binary;

/// Runs `hookyard serve` on `yaml`; returns its exit success and stderr.
async fn serve(yaml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("hookyard.yaml");
    let data = dir.path().join("data");
    let config = format!(
        "listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\ndata_dir: {}\n{yaml}\n",
        data.display()
    );
    std::fs::write(&path, config).expect("write the config");
    let mut command = tokio::process::Command::new(built_binary("hookyard"));
    command
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HOOKYARD_") {
            command.env_remove(key);
        }
    }
    let output = tokio::time::timeout(crate::harness::WAIT, command.output())
        .await
        .expect("a bad config stops the daemon promptly")
        .expect("run hookyard");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn out_of_range_settings_stop_the_daemon_naming_the_key() {
    let endpoint = "endpoints: [{id: crm, url: 'http://127.0.0.1:9/hook', ";
    for (yaml, key) in [
        ("delivery: {timeout: 0s}", "delivery.timeout"),
        (
            "delivery: {max_in_flight: 1000000}",
            "delivery.max_in_flight",
        ),
        (
            "delivery: {retry_schedule: [0s, 100y]}",
            "delivery.retry_schedule[1]",
        ),
        ("flow_runner: {time_scale: .inf}", "flow_runner.time_scale"),
        ("http: {header_timeout: 0s}", "http.header_timeout"),
        (
            &format!("{endpoint}timeout: 10m}}]"),
            "endpoints[0] (crm): timeout: must be between",
        ),
        (
            &format!("{endpoint}retry_schedule: [1s, 31d]}}]"),
            "endpoints[0] (crm): retry_schedule[1]:",
        ),
        (
            &format!("{endpoint}max_in_flight: 0}}]"),
            "endpoints[0] (crm): max_in_flight:",
        ),
        (
            "flows: [{id: f, steps: [{id: a, delay: 400d}]}]",
            "steps[0].delay",
        ),
    ] {
        let (ok, stderr) = serve(yaml).await;
        assert!(!ok, "{yaml}: the daemon started");
        assert!(stderr.contains(key), "{yaml}: {key} not named in {stderr}");
    }
}
