//! `hookyard ctl` against a real daemon: create, list, update and delete
//! through the Admin API, refusals naming the field, deliveries and runs,
//! `tail` and `publish`, table and JSON output, shell completions.

use std::{process::Stdio, time::Duration};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    harness::{built_binary, Daemon, TestConfig, API_KEY, WAIT},
    runs::started,
    sink::{Behaviour, TestReceiver},
};

fn command(daemon: &Daemon, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(built_binary("hookyard"));
    command
        .arg("ctl")
        .args(args)
        .env("HOOKYARD_ADDR", daemon.admin_addr().to_string())
        .env("HOOKYARD_TOKEN", daemon.admin_token())
        .env("HOOKYARD_PUBLIC_ADDR", daemon.http_base())
        .env("HOOKYARD_API_KEY", API_KEY)
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn ctl(daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let output = tokio::time::timeout(WAIT, command(daemon, args).output())
        .await
        .expect("hookyard ctl finished")
        .expect("run hookyard ctl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn ctl_json(daemon: &Daemon, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (ok, stdout, stderr) = ctl(daemon, &all).await;
    assert!(ok, "hookyard ctl {args:?}: {stderr}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {stdout}"))
}

#[tokio::test]
async fn ctl_manages_resources_and_reads_deliveries_and_runs() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({"id": "welcome", "steps": [{"id": "mail", "http": {"url": sink.url()}}]});
    let daemon = Daemon::start(TestConfig::new().flow(flow)).await;

    let (ok, table, stderr) = ctl(
        &daemon,
        &[
            "endpoints",
            "create",
            "--id",
            "crm",
            "--url",
            &sink.url(),
            "--max-in-flight",
            "4",
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(table.starts_with("ID"), "a table: {table}");
    let endpoints = ctl_json(&daemon, &["endpoints", "list"]).await;
    assert_eq!(endpoints[0]["id"], "crm");
    assert_eq!(endpoints[0]["max_in_flight"], 4);

    let (ok, _, stderr) = ctl(
        &daemon,
        &[
            "subscriptions",
            "create",
            "--name",
            "bad",
            "--pattern",
            "lead..x",
            "--target",
            "endpoint:crm",
        ],
    )
    .await;
    assert!(!ok, "a bad pattern is refused");
    assert!(
        stderr.contains("patterns[0]"),
        "the refusal names the field: {stderr}"
    );
    let created = ctl_json(
        &daemon,
        &[
            "subscriptions",
            "create",
            "--name",
            "leads",
            "--pattern",
            "lead.*",
            "--target",
            "endpoint:crm",
        ],
    )
    .await;
    let subscription = created[0]["id"].as_str().expect("an id").to_string();

    // tail sees the delivery that publish makes.
    let mut tail = command(&daemon, &["--json", "tail"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tail");
    let mut lines = BufReader::new(tail.stdout.take().expect("stdout")).lines();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let published = ctl_json(
        &daemon,
        &[
            "publish",
            "lead.created",
            "--payload",
            r#"{"email":"ada@example.com"}"#,
        ],
    )
    .await;
    assert_eq!(published["matched"], 1);
    let event_id = published["id"].as_str().expect("an id").to_string();
    sink.next().await;
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("tail printed a line")
        .expect("read tail")
        .expect("a line");
    let change: Value = serde_json::from_str(&line).expect("one JSON object per line");
    assert_eq!(change["event_id"], event_id.as_str());
    tail.kill().await.expect("stop tail");

    let deliveries = ctl_json(&daemon, &["deliveries", "list", "--endpoint", "crm"]).await;
    assert_eq!(deliveries[0]["event_id"], event_id.as_str());
    let id = deliveries[0]["id"].to_string();
    let detail = ctl_json(&daemon, &["deliveries", "get", &id]).await;
    assert_eq!(detail["payload"]["email"], "ada@example.com");

    let updated = ctl_json(
        &daemon,
        &["subscriptions", "update", &subscription, "--disable"],
    )
    .await;
    assert_eq!(updated[0]["enabled"], false);
    let (ok, _, stderr) = ctl(&daemon, &["subscriptions", "delete", &subscription]).await;
    assert!(ok, "{stderr}");
    assert_eq!(
        ctl_json(&daemon, &["subscriptions", "list"]).await,
        json!([])
    );

    let run = started(&daemon, "welcome", json!({})).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let detail = ctl_json(&daemon, &["runs", "get", &run]).await;
        if detail["state"] == "succeeded" {
            assert_eq!(detail["steps"][0]["id"], "mail");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{detail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs = ctl_json(&daemon, &["runs", "list", "--flow", "welcome"]).await;
    assert_eq!(runs[0]["id"], run.as_str());
    let flows = ctl_json(&daemon, &["flows", "list"]).await;
    assert_eq!(flows[0]["id"], "welcome");

    let (ok, _, stderr) = ctl(&daemon, &["--token", "wrong-token", "endpoints", "list"]).await;
    assert!(!ok);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");

    let completions = tokio::process::Command::new(built_binary("hookyard"))
        .args(["completions", "bash"])
        .output()
        .await
        .expect("hookyard completions");
    assert!(String::from_utf8_lossy(&completions.stdout).contains("hookyard"));
}

#[tokio::test]
async fn ctl_sets_delivery_options_rotates_tests_and_filters() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let updated = ctl_json(
        &daemon,
        &[
            "endpoints",
            "update",
            "crm",
            "--format",
            "raw",
            "--rate-limit",
            "50",
            "--disable-after",
            "2d",
        ],
    )
    .await;
    assert_eq!(updated[0]["format"], "raw", "{updated}");
    let (ok, _, stderr) = ctl(&daemon, &["endpoints", "update", "crm", "--format", "xml"]).await;
    assert!(!ok && stderr.contains("standard_webhooks"), "{stderr}");

    let rotated = ctl_json(
        &daemon,
        &["endpoints", "rotate-secret", "crm", "--grace", "1h"],
    )
    .await;
    let secret = rotated["secret"].as_str().unwrap_or_default().to_string();
    assert!(secret.starts_with("whsec_"), "{rotated}");

    let tested = ctl_json(&daemon, &["endpoints", "test", "crm"]).await;
    assert_eq!(tested["succeeded"], true, "{tested}");
    let received = sink.next().await;
    crate::sink::assert_signed(&received, &secret);
    assert_eq!(received.json()["message"], "A test event from Hookyard.");

    let (ok, _, stderr) = ctl(
        &daemon,
        &[
            "subscriptions",
            "create",
            "--name",
            "big",
            "--pattern",
            "order.*",
            "--target",
            "endpoint:crm",
            "--filter",
            "event.payload.amount >",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("filter"), "{stderr}");
    let recovered = ctl_json(&daemon, &["endpoints", "recover", "crm", "--since", "1h"]).await;
    assert_eq!(recovered["ok"], true, "{recovered}");
}

#[tokio::test]
async fn ctl_sets_oauth2_and_tls_and_never_prints_the_client_secret() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let ca = dir.path().join("ca.pem");
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    std::fs::write(&ca, made.cert.pem()).expect("write the CA");
    let ca = ca.display().to_string();
    let updated = ctl_json(
        &daemon,
        &[
            "endpoints",
            "update",
            "crm",
            "--oauth2-token-url",
            "https://auth.example/token",
            "--oauth2-client-id",
            "hookyard",
            "--oauth2-client-secret",
            "c1ient-s3cret",
            "--oauth2-scope",
            "webhooks",
            "--endpoint-ca-file",
            &ca,
        ],
    )
    .await;
    assert_eq!(updated[0]["oauth2"]["client_id"], "hookyard", "{updated}");
    assert_eq!(updated[0]["tls"]["ca_file"], ca.as_str(), "{updated}");
    assert!(!updated.to_string().contains("s3cret"), "{updated}");
    // Another change leaves the secret as stored.
    let kept = ctl_json(
        &daemon,
        &["endpoints", "update", "crm", "--oauth2-scope", "other"],
    )
    .await;
    assert_eq!(kept[0]["oauth2"]["scope"], "other", "{kept}");
    let (ok, _, stderr) = ctl(
        &daemon,
        &["endpoints", "update", "crm", "--client-cert", &ca],
    )
    .await;
    assert!(!ok && stderr.contains("tls.client_key_file"), "{stderr}");
    let cleared = ctl_json(&daemon, &["endpoints", "update", "crm", "--no-auth"]).await;
    assert!(cleared[0]["oauth2"].is_null(), "{cleared}");
}

#[tokio::test]
async fn ctl_manages_event_types_with_a_schema_file() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let schema_file = dir.path().join("order.schema.json");
    std::fs::write(
        &schema_file,
        r#"{"type": "object", "required": ["amount"], "properties": {"amount": {"type": "number"}}}"#,
    )
    .expect("write the schema");
    let schema_path = schema_file.to_string_lossy().into_owned();

    let (ok, table, stderr) = ctl(
        &daemon,
        &[
            "event-types",
            "create",
            "--id",
            "order",
            "--pattern",
            "order.*",
            "--schema-file",
            &schema_path,
        ],
    )
    .await;
    assert!(ok, "{stderr}");
    assert!(table.contains("order.*"), "{table}");
    let listed = ctl_json(&daemon, &["event-types", "list"]).await;
    assert_eq!(listed[0]["id"], "order");
    assert_eq!(listed[0]["schema"]["required"], json!(["amount"]));

    let (ok, _, stderr) = ctl(
        &daemon,
        &[
            "event-types",
            "update",
            "order",
            "--schema",
            r#"{"type": "nope"}"#,
        ],
    )
    .await;
    assert!(!ok, "a schema that does not compile is refused");
    assert!(stderr.contains("schema"), "{stderr}");
    let updated = ctl_json(
        &daemon,
        &["event-types", "update", "order", "--description", "orders"],
    )
    .await;
    assert_eq!(updated[0]["version"], 2);
    assert_eq!(updated[0]["description"], "orders");

    let (ok, _, stderr) = ctl(&daemon, &["event-types", "delete", "order"]).await;
    assert!(ok, "{stderr}");
    assert_eq!(ctl_json(&daemon, &["event-types", "list"]).await, json!([]));
}
