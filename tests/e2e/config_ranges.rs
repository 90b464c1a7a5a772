//! A config file whose times, durations or sizes are out of range stops the
//! real binary before it serves, with the key named: a zero timeout or a
//! retry a century away would otherwise stall or overflow at run time.

use std::process::Stdio;

use crate::harness::built_binary;

/// Runs `hookyard serve` on `yaml`; returns its exit success and stderr.
async fn serve(yaml: &str) -> (bool, String) {
    serve_with_env(yaml, &[]).await
}

/// [`serve`], with environment variables for the daemon.
async fn serve_with_env(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
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
    command.envs(env.iter().copied());
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

/// `HOOKYARD_*` variables override the file, top-level keys and nested ones
/// (`__`) alike, as the README says; the checks apply to them too.
#[tokio::test]
async fn environment_variables_override_the_file_and_are_checked() {
    use reqwest::StatusCode;

    let daemon = crate::harness::Daemon::start(
        crate::harness::TestConfig::new()
            .env("HOOKYARD_HTTP__BODY_LIMIT", "2048")
            .env("HOOKYARD_LOG_FORMAT", "json"),
    )
    .await;
    let big = serde_json::json!({"name": "lead.created", "payload": {"pad": "x".repeat(4096)}});
    let response = daemon
        .post_events()
        .json(&big)
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let log = daemon.log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "HOOKYARD_LOG_FORMAT=json, yet the log reads: {first}"
    );

    // API keys from the environment, as a service's secrets usually come.
    let keyed = crate::harness::Daemon::start(crate::harness::TestConfig::new().env(
        "HOOKYARD_API_KEYS",
        r#"[{name="from-env", key="hy_env_key_0123456789abcdef"}]"#,
    ))
    .await;
    let response = keyed
        .http
        .post(keyed.url("/v1/events"))
        .bearer_auth("hy_env_key_0123456789abcdef")
        .json(&serde_json::json!({"name": "lead.created", "payload": {}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let (ok, stderr) = serve_with_env("", &[("HOOKYARD_DELIVERY__MAX_IN_FLIGHT", "0")]).await;
    assert!(!ok, "max_in_flight 0 from the environment was accepted");
    assert!(stderr.contains("delivery.max_in_flight"), "{stderr}");
}

#[tokio::test]
async fn secrets_named_by_env_keys_are_read_from_the_environment() {
    use crate::sink::{assert_signed, Behaviour, TestReceiver};
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = crate::harness::Daemon::start(
        crate::harness::TestConfig::new()
            .set(
                "api_keys",
                serde_json::json!([{"name": "web", "key_env": "WEB_PUBLISH_KEY"}]),
            )
            .set(
                "endpoints",
                serde_json::json!([{"id": "crm", "url": sink.url(), "secret_env": "CRM_SIGNING_SECRET"}]),
            )
            .subscription("leads", &["lead.*"], &[], "endpoint:crm")
            .env("WEB_PUBLISH_KEY", "hy_web_key_0123456789abcdef")
            .env("CRM_SIGNING_SECRET", SECRET),
    )
    .await;
    let response = daemon
        .http
        .post(daemon.url("/v1/events"))
        .bearer_auth("hy_web_key_0123456789abcdef")
        .json(&serde_json::json!({"name": "lead.created", "payload": {}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    assert_signed(&sink.next().await, SECRET);

    for (yaml, env, named) in [
        (
            "api_keys: [{name: web, key_env: NOT_SET_ANYWHERE}]",
            vec![],
            "api_keys[0].key_env",
        ),
        (
            "api_keys: [{name: web, key: hy_web_key_0123456789abcdef, key_env: K}]",
            vec![("K", "hy_other_key_0123456789abcdef")],
            "api_keys[0]",
        ),
        (
            "endpoints: [{id: crm, url: 'http://127.0.0.1:9/', secret_env: NOT_SET_ANYWHERE}]",
            vec![],
            "endpoints[0].secret_env",
        ),
    ] {
        let (ok, stderr) = serve_with_env(yaml, &env).await;
        assert!(!ok, "{yaml} started");
        assert!(stderr.contains(named), "{yaml}: {stderr}");
    }
}
