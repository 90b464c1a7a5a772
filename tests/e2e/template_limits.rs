//! What templates may reach and how much work they may do: `secret(name)`
//! reads the secrets file and `HOOKYARD_SECRET_<name>` only, never the rest
//! of the daemon's environment; a template that runs out of fuel fails its
//! step (or a source's webhook) in milliseconds, naming the template, while
//! everything else goes on.

use std::time::{Duration, Instant};

use hookyard::v1::{CreateFlowRequest, RunState};
use serde_json::json;
use tonic_types::StatusExt;

use crate::{
    api::expect_error,
    harness::{Daemon, TestConfig},
    runs::{log_text, poll_until, started},
    sink::{Behaviour, TestReceiver},
    webhooks::{post_json, source},
};

#[tokio::test]
async fn secret_reads_the_secrets_file_and_prefixed_variables_but_not_the_environment() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::new()
        .secret("FILED_KEY", "from-the-file-0123")
        .env("HOOKYARD_SECRET_MAIL_KEY", "from-the-env-0123")
        .env("PLAIN_SECRET", "not-for-templates")
        .flow(json!({
            "id": "mail",
            "steps": [{"id": "call", "http": {
                "url": format!("{}/mail", sink.url()),
                "headers": {
                    "X-Mail-Key": "{{ secret('MAIL_KEY') }}",
                    "X-Filed-Key": "{{ secret('FILED_KEY') }}"
                }
            }}]
        }))
        .flow(json!({
            "id": "snoop",
            "inputs": {"name": {"type": "string", "required": true}},
            "steps": [{"id": "peek", "log": "{{ secret(inputs.name) }}"}]
        }));
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();

    let run = started(&daemon, "mail", json!({})).await;
    let call = sink.next().await;
    assert_eq!(call.header("x-mail-key"), "from-the-env-0123");
    assert_eq!(call.header("x-filed-key"), "from-the-file-0123");
    poll_until(&mut admin, &run, RunState::Succeeded).await;

    for name in ["PATH", "HOME", "PLAIN_SECRET", "HOOKYARD_SECRET_MAIL_KEY"] {
        let run = started(&daemon, "snoop", json!({ "name": name })).await;
        let detail = poll_until(&mut admin, &run, RunState::Failed).await;
        let log = log_text(&detail);
        assert!(
            log.contains(&format!("secret `{name}` is not set"))
                && log.contains(&format!("HOOKYARD_SECRET_{name}")),
            "{name}: {log}"
        );
        assert!(!log.contains("not-for-templates"), "{log}");
    }
    let run = started(&daemon, "snoop", json!({"name": "MAIL_KEY"})).await;
    let detail = poll_until(&mut admin, &run, RunState::Succeeded).await;
    assert!(
        !log_text(&detail).contains("from-the-env-0123"),
        "secrets are redacted in logs"
    );
}

#[tokio::test]
async fn a_step_that_loops_forever_fails_quickly_naming_its_template_while_other_runs_go_on() {
    let config = TestConfig::new()
        .flow(json!({
            "id": "spin",
            "inputs": {"n": {"type": "integer", "required": true}},
            "steps": [{"id": "loop", "log":
                "{% for i in range(inputs.n) %}{% for j in range(inputs.n) %}{% endfor %}{% endfor %}done"}]
        }))
        .flow(json!({"id": "quick", "steps": [{"id": "hello", "log": "hello"}]}));
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();

    let began = Instant::now();
    let endless = started(&daemon, "spin", json!({"n": 100_000})).await;
    let others: Vec<String> =
        futures::future::join_all((0..5).map(|_| started(&daemon, "quick", json!({})))).await;
    let small = started(&daemon, "spin", json!({"n": 3})).await;

    let detail = poll_until(&mut admin, &endless, RunState::Failed).await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let log = log_text(&detail);
    assert!(
        log.contains("template `steps[0].log` ran out of fuel"),
        "{log}"
    );
    for run in others.iter().chain([&small]) {
        poll_until(&mut admin, run, RunState::Succeeded).await;
    }

    // One that could never finish, whatever the data, is refused up front.
    let status = admin
        .create_flow(CreateFlowRequest {
            definition_yaml: "id: forever\nsteps:\n  - id: a\n    when: \"range(100000) | map('string') | join | length > 0\"\n    log: never\n".into(),
        })
        .await
        .expect_err("a condition that cannot finish");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["steps[0].when"], "{status:?}");
}

#[tokio::test]
async fn a_sources_name_template_that_runs_out_of_fuel_answers_422_and_the_source_goes_on() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let template = "{% for i in payload.items %}{% for j in range(100000) %}{% endfor %}{% endfor %}lead.{{ payload.kind }}";
    let config = TestConfig::crm(&sink.url()).source(source(
        "looping",
        "unused.name",
        json!({"event_name": {"template": template}}),
    ));
    let daemon = Daemon::start(config).await;

    let began = Instant::now();
    let refused = post_json(
        &daemon,
        "looping",
        &json!({"kind": "created", "items": [1, 2, 3]}),
    )
    .await;
    let error = expect_error(refused, 422, "validation_failed").await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("ran out of fuel")),
        "{error}"
    );

    let accepted = post_json(&daemon, "looping", &json!({"kind": "created", "items": []})).await;
    assert_eq!(accepted.status().as_u16(), 202);
    assert_eq!(sink.next().await.json()["event_name"], "lead.created");
}
