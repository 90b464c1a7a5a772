//! Flows against the real daemon: the triggers (events, the API, webhook
//! keys), every step kind, `when`, retries, durability across a crash,
//! `cancel_on`, the concurrency policies and refused definitions and inputs.

use std::time::Duration;

use hookyard::v1::{
    CreateFlowRequest, ListRunsRequest, RotateFlowWebhookKeyRequest, RunState, StartRunRequest,
};
use serde_json::{json, Value};
use tonic_types::StatusExt;

use crate::{
    api::{expect_error, pointers, publish_http},
    harness::{Daemon, EndpointSpec, TestConfig},
    runs::{log_text, run_detail, start_http, started, RunWatch},
    sink::{Behaviour, TestReceiver},
};

const MAIL_KEY: &str = "mail-key-s3cr3t-0123";

/// A flow that mails through `sink`, then emits an event, with a step that
/// its `when` skips and a log line.
fn welcome_flow(sink: &TestReceiver) -> Value {
    json!({
        "id": "welcome",
        "inputs": {
            "email": {"type": "email", "required": true},
            "first_name": {"type": "string", "required": true},
            "score": {"type": "integer", "default": 0}
        },
        "steps": [
            {"id": "mail", "http": {
                "url": format!("{}/mail", sink.url()),
                "headers": {"Authorization": "Bearer {{ secret('MAIL_KEY') }}"},
                "body": {"to": "{{ inputs.email }}", "vars": {"name": "{{ inputs.first_name }}", "score": "{{ inputs.score }}"}}
            }},
            {"id": "vip_only", "when": "inputs.score >= 90", "log": "a VIP"},
            {"id": "note", "log": "mailed {{ inputs.email }} with status {{ steps.mail.status }} using {{ secret('MAIL_KEY') }}"},
            {"id": "done", "emit": {"name": "lead.welcomed", "payload": {"email": "{{ inputs.email }}", "mail_status": "{{ steps.mail.status }}"}}}
        ]
    })
}

#[tokio::test]
async fn an_event_starts_a_flow_that_calls_skips_logs_and_emits() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::new()
        .secret("MAIL_KEY", MAIL_KEY)
        .flow(welcome_flow(&sink))
        .flow_subscription(
            "signups-to-welcome",
            &["lead.signup"],
            "welcome",
            json!({"email": "{{ event.payload.email }}", "first_name": "{{ event.payload.first_name }}", "score": "{{ event.payload.score }}"}),
        )
        .endpoint(EndpointSpec::new("crm", &sink.url()))
        .subscription("welcomed-to-crm", &["lead.welcomed"], &[], "endpoint:crm");
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;

    let event = publish_http(
        &daemon,
        &json!({"name": "lead.signup", "payload": {"email": "ada@example.com", "first_name": "Ada", "score": 42}}),
    )
    .await;
    assert_eq!(event.matched, 1, "the flow subscription counts as a match");

    let mail = sink.next().await;
    assert_eq!(mail.path, "/hook/mail");
    assert_eq!(mail.header("authorization"), format!("Bearer {MAIL_KEY}"));
    assert_eq!(
        mail.json(),
        json!({"to": "ada@example.com", "vars": {"name": "Ada", "score": 42}}),
        "a lone expression keeps its JSON type"
    );
    let idempotency_key = mail.header("idempotency-key").to_string();

    // The emitted event reaches the endpoint through the normal route.
    let welcomed = sink.next().await;
    assert_eq!(welcomed.path, "/hook");
    let body = welcomed.json();
    assert_eq!(body["event_name"], "lead.welcomed");
    assert_eq!(
        body["payload"],
        json!({"email": "ada@example.com", "mail_status": 200})
    );

    let runs = admin
        .list_runs(ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    assert_eq!(runs.len(), 1);
    let run = watch.until(&runs[0].id, RunState::Succeeded).await;
    assert_eq!(run.trigger, format!("event:{}", event.id));
    assert!(
        idempotency_key.starts_with(&format!("{}-mail-", run.id)),
        "{idempotency_key}"
    );

    let detail = run_detail(&mut admin, &run.id).await;
    let states: Vec<(&str, &str)> = detail
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        states,
        [
            ("mail", "succeeded"),
            ("vip_only", "skipped"),
            ("note", "succeeded"),
            ("done", "succeeded")
        ]
    );
    assert_eq!(detail.steps[0].status_code, 200);
    let log = log_text(&detail);
    assert!(
        log.contains("mailed ada@example.com with status 200 using ***"),
        "{log}"
    );
    assert!(
        !log.contains(MAIL_KEY),
        "the secret leaked into the log:\n{log}"
    );
}

#[tokio::test]
async fn bad_inputs_are_refused_before_a_run_exists() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new().flow(welcome_flow(&sink))).await;

    let (status, answer) = start_http(
        &daemon,
        "welcome",
        json!({"email": "not-an-email", "score": "many", "colour": "red"}),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["code"], "validation_failed");
    let mut fields = pointers(&answer["error"]);
    fields.sort();
    assert_eq!(
        fields,
        ["/colour", "/email", "/first_name", "/score"],
        "{answer}"
    );

    let (status, answer) = start_http(&daemon, "nope", json!({})).await;
    assert_eq!(status, 404, "{answer}");
    let response = daemon
        .http
        .post(daemon.url("/v1/flows/welcome/runs"))
        .json(&json!({"inputs": {}}))
        .send()
        .await
        .expect("POST without a key");
    expect_error(response, 401, "unauthorized").await;

    let status = daemon
        .events_client()
        .start_run(StartRunRequest {
            flow_id: "welcome".into(),
            inputs: br#"{"email": "ada@example.com"}"#.to_vec(),
        })
        .await
        .expect_err("first_name is missing");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations;
    assert_eq!(violations[0].field, "inputs.first_name", "{violations:?}");

    let runs = daemon
        .admin_client()
        .list_runs(ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    assert!(runs.is_empty(), "a refused start stored a run: {runs:?}");
}

#[tokio::test]
async fn a_definition_with_errors_is_refused_naming_the_field() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let status = admin
        .create_flow(CreateFlowRequest {
            definition_yaml: "id: f\ninputs: {email: {type: email}}\nsteps:\n  - {id: a, http: {url: '{{ inputs.mail }}'}}\n  - {id: b, log: '{{ steps.c.body }}'}\n  - {id: c, delay: soon}\n".into(),
        })
        .await
        .expect_err("a broken definition");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        ["steps[0].http.url", "steps[1].log", "steps[2].delay"],
        "{status:?}"
    );

    let status = admin
        .create_flow(CreateFlowRequest {
            definition_yaml: "id: f\nsteps:\n  - {id: a, htp: {}}\n".into(),
        })
        .await
        .expect_err("an unknown key");
    assert!(status.message().contains("line 3"), "{}", status.message());
    assert!(status.message().contains("htp"), "{}", status.message());
}

#[tokio::test]
async fn a_failing_http_step_is_retried_on_schedule_then_fails_the_run() {
    let mut sink = TestReceiver::start(Behaviour::Always(503)).await;
    let flow = json!({
        "id": "flaky",
        "steps": [{"id": "call", "http": {"url": sink.url(), "retry": ["300ms", "300ms"]}}]
    });
    let daemon = Daemon::start(TestConfig::new().flow(flow)).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let id = started(&daemon, "flaky", json!({})).await;

    let attempts: Vec<_> = [sink.next().await, sink.next().await, sink.next().await].into();
    let run = watch.until(&id, RunState::Failed).await;
    assert!(run.error.contains("step `call` failed"), "{}", run.error);
    for pair in attempts.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= Duration::from_millis(290),
            "retried after {gap:?}, sooner than the schedule"
        );
    }
    let keys: Vec<&str> = attempts
        .iter()
        .map(|a| a.header("idempotency-key"))
        .collect();
    assert_ne!(
        keys[0], keys[1],
        "a seen failure starts a new attempt group"
    );

    let detail = run_detail(&mut admin, &id).await;
    assert_eq!(detail.steps[0].state, "failed");
    assert_eq!(detail.steps[0].attempts, 3);
    assert_eq!(detail.steps[0].status_code, 503);
    assert!(sink.drain().is_empty(), "no attempt beyond the schedule");
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_delay_resumes_the_run_on_time() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({
        "id": "later",
        "inputs": {"n": {"type": "integer", "required": true}},
        "steps": [
            {"id": "first", "http": {"url": sink.url(), "body": {"step": "first", "n": "{{ inputs.n }}"}}},
            {"id": "second", "delay": "3s", "http": {"url": sink.url(), "body": {"step": "second", "n": "{{ inputs.n }}"}}}
        ]
    });
    let mut daemon = Daemon::start(TestConfig::new().flow(flow)).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let id = started(&daemon, "later", json!({"n": 7})).await;
    assert_eq!(sink.next().await.json()["step"], "first");
    let waiting = watch.until(&id, RunState::Waiting).await;
    let wake_ms = waiting.wake_at.expect("a wake-up time").seconds * 1000;

    daemon.kill9().await;
    daemon.restart().await;
    let mut admin = daemon.admin_client();

    let second = sink.next().await;
    assert_eq!(second.json(), json!({"step": "second", "n": 7}));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    assert!(now_ms >= wake_ms, "woke {} ms early", wake_ms - now_ms);
    // On a slow restart the run may wake before a stream could be opened.
    crate::runs::poll_until(&mut admin, &id, RunState::Succeeded).await;
    assert!(
        sink.drain().is_empty(),
        "the first step ran once, the second once"
    );
}

#[tokio::test]
async fn cancel_on_during_a_delay_cancels_the_waiting_run() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({
        "id": "nurture",
        "inputs": {"email": {"type": "email", "required": true}},
        "correlate_by": "{{ inputs.email }}",
        "cancel_on": [{"event": "lead.call_booked", "key": "{{ event.payload.email }}"}],
        "steps": [{"id": "mail", "delay": "3s", "http": {"url": sink.url()}}]
    });
    let daemon = Daemon::start(TestConfig::new().flow(flow)).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let ada = started(&daemon, "nurture", json!({"email": "ada@example.com"})).await;
    let bob = started(&daemon, "nurture", json!({"email": "bob@example.com"})).await;
    watch.until(&ada, RunState::Waiting).await;

    let booked = publish_http(
        &daemon,
        &json!({"name": "lead.call_booked", "payload": {"email": "ada@example.com"}}),
    )
    .await;
    let cancelled = watch.until(&ada, RunState::Cancelled).await;
    assert!(cancelled.error.contains(&booked.id), "{}", cancelled.error);

    // Bob's run, with another key, still mails; Ada's never does.
    watch.until(&bob, RunState::Succeeded).await;
    let mails = sink.drain();
    assert_eq!(mails.len(), 1, "only bob's run mailed");
}

#[tokio::test]
async fn concurrency_policies_skip_replace_and_queue() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = |id: &str, policy: &str| {
        json!({
            "id": id,
            "inputs": {"email": {"type": "email", "required": true}, "n": {"type": "integer"}},
            "correlate_by": "{{ inputs.email }}",
            "concurrency": {"per_key": 1, "on_conflict": policy},
            "steps": [{"id": "mail", "delay": "2s", "http": {"url": sink.url(), "body": {"flow": id, "n": "{{ inputs.n }}"}}}]
        })
    };
    let config = TestConfig::new()
        .flow(flow("skipper", "skip"))
        .flow(flow("replacer", "replace"))
        .flow(flow("queuer", "queue"));
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let ada = json!({"email": "ada@example.com", "n": 1});
    let ada2 = json!({"email": "ada@example.com", "n": 2});

    let first = started(&daemon, "skipper", ada.clone()).await;
    let (status, answer) = start_http(&daemon, "skipper", ada2.clone()).await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&first),
        "{answer}"
    );

    let replaced = started(&daemon, "replacer", ada.clone()).await;
    let replacement = started(&daemon, "replacer", ada2.clone()).await;
    let old = watch.until(&replaced, RunState::Cancelled).await;
    assert!(old.error.contains(&replacement), "{}", old.error);

    let running = started(&daemon, "queuer", ada.clone()).await;
    let queued = started(&daemon, "queuer", ada2.clone()).await;

    watch.until(&first, RunState::Succeeded).await;
    watch.until(&replacement, RunState::Succeeded).await;
    watch.until(&running, RunState::Succeeded).await;
    watch.until(&queued, RunState::Succeeded).await;
    let mut mails: Vec<Value> = sink.drain().iter().map(|r| r.json()).collect();
    mails.sort_by_key(|m| m.to_string());
    assert_eq!(
        mails,
        [
            json!({"flow": "queuer", "n": 1}),
            json!({"flow": "queuer", "n": 2}),
            json!({"flow": "replacer", "n": 2}),
            json!({"flow": "skipper", "n": 1}),
        ]
    );
    let queued_detail = run_detail(&mut admin, &queued).await;
    let running_detail = run_detail(&mut admin, &running).await;
    let finished = |d: &hookyard::v1::RunDetail| d.steps[0].finished_at.expect("finished").seconds;
    assert!(
        finished(&queued_detail) >= finished(&running_detail),
        "the queued run went second"
    );
}

#[tokio::test]
async fn a_webhook_key_starts_a_run_from_a_form_and_a_wrong_key_is_not_found() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({
        "id": "form",
        "inputs": {"email": {"type": "email", "required": true}, "age": {"type": "integer"}},
        "webhook": {},
        "steps": [{"id": "mail", "http": {"url": sink.url(), "body": {
            "email": "{{ inputs.email }}", "age": "{{ inputs.age }}", "agent": "{{ trigger.headers['user-agent'] }}"
        }}}]
    });
    let daemon = Daemon::start(TestConfig::new().flow(flow)).await;
    let mut admin = daemon.admin_client();
    let rotated = admin
        .rotate_flow_webhook_key(RotateFlowWebhookKeyRequest { id: "form".into() })
        .await
        .expect("RotateFlowWebhookKey")
        .into_inner();
    assert!(rotated.key.len() >= 32, "a key of at least 128 bits");

    let response = daemon
        .http
        .post(daemon.url(&rotated.url_path))
        .header("user-agent", "signup-form/1")
        .form(&[("email", "ada@example.com"), ("age", "42"), ("utm", "x")])
        .send()
        .await
        .expect("POST the form");
    assert_eq!(response.status().as_u16(), 201);
    let mail = sink.next().await.json();
    assert_eq!(
        mail,
        json!({"email": "ada@example.com", "age": 42, "agent": "signup-form/1"})
    );

    let wrong = daemon
        .http
        .post(daemon.url("/hooks/form/not-the-key"))
        .form(&[("email", "ada@example.com")])
        .send()
        .await
        .expect("POST with a wrong key");
    expect_error(wrong, 404, "not_found").await;
    let unknown = daemon
        .http
        .post(daemon.url(&rotated.url_path.replace("/form/", "/other/")))
        .form(&[("email", "ada@example.com")])
        .send()
        .await
        .expect("POST to an unknown flow");
    expect_error(unknown, 404, "not_found").await;
}

#[tokio::test]
async fn one_event_fans_out_to_several_flows() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = |id: &str| {
        json!({
            "id": id,
            "inputs": {"email": {"type": "email", "required": true}},
            "steps": [{"id": "mail", "http": {"url": sink.url(), "body": {"flow": id, "email": "{{ inputs.email }}"}}}]
        })
    };
    let inputs = json!({"email": "{{ event.payload.email }}"});
    let config = TestConfig::new()
        .flow(flow("crm-sync"))
        .flow(flow("welcome-mail"))
        .flow_subscription("a", &["lead.*"], "crm-sync", inputs.clone())
        .flow_subscription("b", &["lead.created"], "welcome-mail", inputs);
    let daemon = Daemon::start(config).await;
    let event = publish_http(
        &daemon,
        &json!({"name": "lead.created", "payload": {"email": "ada@example.com"}}),
    )
    .await;
    assert_eq!(event.matched, 2);
    let mut flows = vec![
        sink.next().await.json()["flow"].clone(),
        sink.next().await.json()["flow"].clone(),
    ];
    flows.sort_by_key(|f| f.to_string());
    assert_eq!(flows, [json!("crm-sync"), json!("welcome-mail")]);
}

/// A sink whose first request never gets an answer: the daemon is killed
/// while the step is in flight.
async fn hanging_sink() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<axum::http::HeaderMap>,
) {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let addr = listener.local_addr().expect("the sink's address");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let first = Arc::new(AtomicBool::new(true));
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let tx = tx.clone();
        let first = first.clone();
        async move {
            let _ = tx.send(headers);
            if first.swap(false, Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            axum::http::StatusCode::OK
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/step"), rx)
}

#[tokio::test]
async fn a_step_in_flight_at_a_crash_is_sent_again_with_the_same_idempotency_key() {
    let (url, mut requests) = hanging_sink().await;
    let flow =
        json!({"id": "once", "steps": [{"id": "call", "http": {"url": url, "timeout": "60s"}}]});
    let mut daemon = Daemon::start(TestConfig::new().flow(flow)).await;
    let id = started(&daemon, "once", json!({})).await;
    let first = tokio::time::timeout(crate::harness::WAIT, requests.recv())
        .await
        .expect("the step was sent")
        .expect("a request");

    daemon.kill9().await;
    daemon.restart().await;
    let mut admin = daemon.admin_client();
    let again = tokio::time::timeout(crate::harness::WAIT, requests.recv())
        .await
        .expect("the step was sent again after the restart")
        .expect("a request");
    assert_eq!(
        again.get("idempotency-key"),
        first.get("idempotency-key"),
        "the receiver can tell it is the same attempt"
    );
    // The restarted daemon resumes the run at once: it may finish before a
    // WatchRuns stream could be opened, so ask for its state instead.
    crate::runs::poll_until(&mut admin, &id, RunState::Succeeded).await;
}

#[tokio::test]
async fn an_admin_cancels_a_waiting_run_and_cannot_cancel_it_twice() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let flow = json!({"id": "slow", "steps": [{"id": "mail", "delay": "1h", "http": {"url": sink.url()}}]});
    let daemon = Daemon::start(TestConfig::new().flow(flow)).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let id = admin
        .start_run(StartRunRequest {
            flow_id: "slow".into(),
            inputs: Vec::new(),
        })
        .await
        .expect("Admin.StartRun")
        .into_inner()
        .id;
    watch.until(&id, RunState::Waiting).await;
    let cancelled = admin
        .cancel_run(hookyard::v1::CancelRunRequest { id: id.clone() })
        .await
        .expect("CancelRun")
        .into_inner();
    assert_eq!(cancelled.state(), RunState::Cancelled);
    assert_eq!(cancelled.error, "cancelled by an admin");
    let again = admin
        .cancel_run(hookyard::v1::CancelRunRequest { id: id.clone() })
        .await
        .expect_err("already cancelled");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    let missing = admin
        .cancel_run(hookyard::v1::CancelRunRequest { id: "nope".into() })
        .await
        .expect_err("no such run");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let detail = run_detail(&mut admin, &id).await;
    assert!(log_text(&detail).contains("cancelled by an admin"));
    assert_eq!(detail.steps[0].state, "cancelled", "the step it waited for");
}

/// A `datetime` input outside the years 1970-9999 is refused before a run
/// exists; a time that `until:` renders outside them (or `plus` carries out
/// of them) fails the run with an error that says so, and nothing panics.
#[tokio::test]
async fn times_outside_the_years_1970_to_9999_fail_cleanly() {
    let flow = json!({
        "id": "far",
        "inputs": {"when": {"type": "datetime"}, "at": {"type": "string"}},
        "steps": [
            {"id": "wait", "until": "{{ inputs.at }}"},
            {"id": "later", "until": "{{ inputs.when | plus('3650d') }}"},
            {"id": "note", "log": "never"}
        ]
    });
    let daemon = Daemon::start(TestConfig::new().flow(flow)).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;

    let (status, error) =
        start_http(&daemon, "far", json!({"when": "10000-01-01T00:00:00Z"})).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(pointers(&error["error"]), ["/when"], "{error}");

    for (inputs, step, expected) in [
        (
            json!({"at": "9999-12-31T23:59:59-01:00"}),
            "wait",
            "must lie in the years 1970 to 9999",
        ),
        (
            json!({"at": "2020-01-01T00:00:00Z", "when": "9999-01-01T00:00:00Z"}),
            "later",
            "outside the years 1970 to 9999",
        ),
    ] {
        let id = started(&daemon, "far", inputs).await;
        let run = watch.until(&id, RunState::Failed).await;
        assert!(
            run.error.contains(&format!("step `{step}`")),
            "{}",
            run.error
        );
        let detail = run_detail(&mut admin, &id).await;
        let log = log_text(&detail);
        assert!(log.contains(expected), "{log}");
    }
    crate::hostile::assert_no_panic(&daemon);
}
