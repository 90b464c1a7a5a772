//! The five sequences shipped in `examples/flows/`, each run end to end
//! against a local mail/CRM sink with time compressed: a week becomes about
//! two seconds. The waits are checked too: each email arrives no sooner than
//! its (compressed) delay after the one before.

use std::time::{Duration, SystemTime};

use hookyard::v1::{RotateFlowWebhookKeyRequest, RunState};
use serde_json::{json, Value};

use crate::{
    api::publish_http,
    harness::{Daemon, EndpointSpec, TestConfig},
    runs::{run_detail, started, RunWatch},
    sink::{Behaviour, Received, TestReceiver},
};

/// A week in about 1.8 seconds.
const SCALE: f64 = 3e-6;
const HOUR: f64 = 3600.0;
const DAY: f64 = 24.0 * HOUR;

fn config(name: &str, sink: &TestReceiver) -> TestConfig {
    TestConfig::new()
        .example_flow(name)
        .time_scale(SCALE)
        .secret("MAIL_URL", &format!("{}/mail", sink.url()))
        .secret("MAIL_KEY", "mail-key-0123456789")
        .secret("CRM_URL", &format!("{}/crm", sink.url()))
        .secret("CRM_KEY", "crm-key-0123456789")
}

/// The mails' templates, in arrival order, checking each one's recipient.
fn templates(mails: &[Received], to: &str) -> Vec<String> {
    mails
        .iter()
        .map(|m| {
            assert_eq!(m.path, "/hook/mail");
            assert_eq!(m.header("authorization"), "Bearer mail-key-0123456789");
            let body = m.json();
            assert_eq!(body["to"], to, "{body}");
            body["template"].as_str().expect("a template").to_string()
        })
        .collect()
}

/// Each gap between arrivals is at least the compressed delay (less 10 %
/// for scheduling jitter).
fn assert_spaced(mails: &[Received], delays_secs: &[f64]) {
    for (pair, delay) in mails.windows(2).zip(delays_secs) {
        let gap = pair[1].at - pair[0].at;
        let floor = Duration::from_secs_f64(delay * SCALE * 0.9);
        assert!(
            gap >= floor,
            "a mail came {gap:?} after the one before, sooner than {floor:?}"
        );
    }
}

async fn next_n(sink: &mut TestReceiver, n: usize) -> Vec<Received> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(sink.next().await);
    }
    out
}

fn rfc3339_now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[tokio::test]
async fn signup_tracking_creates_the_crm_contact_and_sends_no_email() {
    let mut sink = TestReceiver::start(Behaviour::Always(201)).await;
    let config = config("signup-tracking", &sink).flow_subscription(
        "signups",
        &["lead.signup"],
        "signup-tracking",
        json!({"email": "{{ event.payload.email }}", "first_name": "{{ event.payload.first_name }}",
               "business_name": "{{ event.payload.business_name }}"}),
    );
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    publish_http(
        &daemon,
        &json!({"name": "lead.signup", "payload": {"email": "customer@example.com",
                "first_name": "Sarah", "business_name": "Sarah's Salon"}}),
    )
    .await;
    let contact = sink.next().await;
    assert_eq!(contact.path, "/hook/crm/contacts");
    assert_eq!(contact.header("authorization"), "Bearer crm-key-0123456789");
    assert_eq!(
        contact.json(),
        json!({"email": "customer@example.com", "name": "Sarah", "business": "Sarah's Salon", "stage": "signed_up"})
    );
    let runs = daemon
        .admin_client()
        .list_runs(hookyard::v1::ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    let run = watch.until(&runs[0].id, RunState::Succeeded).await;
    let detail = run_detail(&mut admin, &run.id).await;
    let tracked: Value =
        serde_json::from_slice(&detail.steps[1].output).expect("the emit's output");
    assert!(tracked["event_id"].is_string(), "{tracked}");
    assert!(sink.drain().is_empty(), "no email is sent");
}

#[tokio::test]
async fn assessment_followups_send_emails_two_to_five_after_email_one() {
    let mut sink = TestReceiver::start(Behaviour::Always(202)).await;
    let daemon = Daemon::start(config("assessment-followups", &sink)).await;
    let mut admin = daemon.admin_client();
    let hook = admin
        .rotate_flow_webhook_key(RotateFlowWebhookKeyRequest {
            id: "assessment-followups".into(),
        })
        .await
        .expect("RotateFlowWebhookKey")
        .into_inner();
    let mut watch = RunWatch::open(&mut admin).await;
    // The website's payload, as it posts it after sending email #1.
    let response = daemon
        .http
        .post(daemon.url(&hook.url_path))
        .json(&json!({
            "email": "customer@example.com", "first_name": "Sarah", "business_name": "Sarah's Salon",
            "red_systems": 2, "orange_systems": 1, "yellow_systems": 2, "green_systems": 3,
            "weakest_system_1": "GPS", "weakest_system_2": "Money", "revenue_leak_total": 14700,
            "email_1_sent_at": rfc3339_now(), "email_1_status": "sent"
        }))
        .send()
        .await
        .expect("POST the assessment");
    assert_eq!(response.status().as_u16(), 201);
    let answer: Value = response.json().await.expect("a JSON answer");
    let id = answer["id"].as_str().expect("a run id");

    let mails = next_n(&mut sink, 4).await;
    assert_eq!(
        templates(&mails, "customer@example.com"),
        [
            "assessment-2",
            "assessment-3",
            "assessment-4",
            "assessment-5"
        ]
    );
    assert_eq!(
        mails[0].json()["vars"],
        json!({"name": "Sarah", "weakest": "GPS", "leak": 14700})
    );
    assert_spaced(&mails, &[2.0 * DAY, 2.0 * DAY, 2.0 * DAY]);
    watch.until(id, RunState::Succeeded).await;
}

#[tokio::test]
async fn noshow_recovery_stops_the_moment_the_lead_books_a_call() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    // Slower than the others, so the call is booked well before email #2.
    let config = config("noshow-recovery", &sink).time_scale(1e-4).flow_subscription(
        "noshows",
        &["lead.no_show"],
        "noshow-recovery",
        json!({"email": "{{ event.payload.email }}", "first_name": "{{ event.payload.first_name }}"}),
    );
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    publish_http(
        &daemon,
        &json!({"name": "lead.no_show", "payload": {"email": "customer@example.com", "first_name": "Sarah",
                "calendly_event_id": "evt_123abc", "scheduled_time": "2025-12-10T14:00:00Z"}}),
    )
    .await;
    let first = sink.next().await;
    assert_eq!(templates(&[first], "customer@example.com"), ["noshow-1"]);
    let runs = admin
        .list_runs(hookyard::v1::ListRunsRequest::default())
        .await
        .expect("ListRuns")
        .into_inner()
        .runs;
    let id = runs[0].id.clone();
    watch.until(&id, RunState::Waiting).await;

    publish_http(
        &daemon,
        &json!({"name": "lead.call_booked", "payload": {"email": "customer@example.com"}}),
    )
    .await;
    let run = watch.until(&id, RunState::Cancelled).await;
    assert!(run.error.contains("lead.call_booked"), "{}", run.error);
    let detail = run_detail(&mut admin, &id).await;
    assert!(
        matches!(detail.steps[1].state.as_str(), "pending" | "cancelled"),
        "email #2 was never sent: {:?}",
        detail.steps[1]
    );
    assert!(sink.drain().is_empty());
}

#[tokio::test]
async fn noshow_recovery_sends_three_emails_then_reports() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(config("noshow-recovery", &sink)).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let id = started(
        &daemon,
        "noshow-recovery",
        json!({"email": "customer@example.com", "first_name": "Sarah", "calendly_event_id": "evt_123abc"}),
    )
    .await;
    let mails = next_n(&mut sink, 3).await;
    assert_eq!(
        templates(&mails, "customer@example.com"),
        ["noshow-1", "noshow-2", "noshow-3"]
    );
    assert_spaced(&mails, &[DAY - 300.0, DAY]);
    watch.until(&id, RunState::Succeeded).await;
    let detail = run_detail(&mut admin, &id).await;
    assert_eq!(
        detail.steps[3].state, "succeeded",
        "lead.noshow_followed_up was emitted"
    );
}

#[tokio::test]
async fn postcall_maybe_nurtures_at_one_hour_three_days_and_seven_days() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(config("postcall-maybe", &sink)).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let id = started(
        &daemon,
        "postcall-maybe",
        json!({"email": "customer@example.com", "first_name": "Sarah", "business_name": "Sarah's Salon",
               "call_date": "2025-12-08T15:00:00Z", "interest_level": "high"}),
    )
    .await;
    let mails = next_n(&mut sink, 3).await;
    assert_eq!(
        templates(&mails, "customer@example.com"),
        ["maybe-1", "maybe-2", "maybe-3"]
    );
    assert_eq!(mails[0].json()["vars"]["interest"], "high");
    assert_spaced(&mails, &[3.0 * DAY - HOUR, 4.0 * DAY]);
    watch.until(&id, RunState::Succeeded).await;
}

#[tokio::test]
async fn onboarding_welcomes_paid_customers_and_skips_the_others() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = config("onboarding", &sink)
        .endpoint(EndpointSpec::new("crm", &sink.url()))
        .subscription("customers-to-crm", &["customer.*"], &[], "endpoint:crm");
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = RunWatch::open(&mut admin).await;
    let payload = |email: &str, status: &str| {
        json!({"email": email, "first_name": "Sarah", "payment_status": status,
               "payment_date": "2025-12-09T16:30:00Z", "package_type": "growth"})
    };
    let pending = started(
        &daemon,
        "onboarding",
        payload("pending@example.com", "pending"),
    )
    .await;
    watch.until(&pending, RunState::Succeeded).await;
    let detail = run_detail(&mut admin, &pending).await;
    assert!(
        detail.steps.iter().all(|s| s.state == "skipped"),
        "{:?}",
        detail.steps
    );

    let paid = started(
        &daemon,
        "onboarding",
        payload("customer@example.com", "paid"),
    )
    .await;
    let mails = next_n(&mut sink, 3).await;
    assert_eq!(
        templates(&mails, "customer@example.com"),
        ["onboarding-1", "onboarding-2", "onboarding-3"]
    );
    assert_spaced(&mails, &[23.0 * HOUR, 2.0 * DAY]);
    let onboarded = sink.next().await.json();
    assert_eq!(onboarded["event_name"], "customer.onboarded");
    assert_eq!(
        onboarded["payload"],
        json!({"email": "customer@example.com", "package": "growth"})
    );
    watch.until(&paid, RunState::Succeeded).await;
}
