//! Sample records for the screen tests, with fixed times and ids.

use hookyard::v1::{
    Attempt, Delivery, DeliveryDetail, DeliveryStatus, DeliveryUpdate, Endpoint, EndpointState,
    Event, Subscription,
};
use prost_types::Timestamp;

/// 2026-11-30 12:34:56 UTC.
pub const T0: i64 = 1_796_128_496;

pub fn ts(offset: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: T0 + offset,
        nanos: 0,
    })
}

pub fn delivery(id: u64, name: &str, status: DeliveryStatus) -> Delivery {
    let (code, ms) = match status {
        DeliveryStatus::Succeeded => (200, 12 + id as u32),
        DeliveryStatus::Failed | DeliveryStatus::Dead => (500, 40 + id as u32),
        _ => (0, 0),
    };
    let attempts = match status {
        DeliveryStatus::Pending | DeliveryStatus::InFlight => 0,
        DeliveryStatus::Dead => 8,
        _ => 1,
    };
    Delivery {
        id,
        event_id: format!("0193a5f0-0000-7000-8000-{id:012x}"),
        event_name: name.to_string(),
        tenant_id: if id & 1 == 0 {
            "acme".to_string()
        } else {
            String::new()
        },
        subscription_id: "sub-1".to_string(),
        subscription_name: "leads-to-crm".to_string(),
        target: "endpoint:crm".to_string(),
        status: status.into(),
        attempts,
        last_status_code: code,
        last_error: if code == 500 {
            "HTTP 500".to_string()
        } else {
            String::new()
        },
        last_duration_ms: ms,
        created_at: ts(id as i64),
        updated_at: ts(id as i64),
        event_seq: id,
        also_subscription_ids: vec![],
        ordering_key: String::new(),
        parked: false,
        next_attempt_at: None,
    }
}

pub fn update(delivery: Delivery) -> crate::net::Update {
    crate::net::Update::Delivery(DeliveryUpdate {
        time: delivery.updated_at,
        delivery: Some(delivery),
        missed: 0,
    })
}

pub fn subscription(id: &str, name: &str, patterns: &[&str], target: &str) -> Subscription {
    Subscription {
        id: id.to_string(),
        name: name.to_string(),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        exclude: Vec::new(),
        tenant_id: String::new(),
        target: target.to_string(),
        enabled: true,
        description: String::new(),
        version: 3,
        created_at: ts(0),
        updated_at: ts(0),
        inputs: Default::default(),
        filter: String::new(),
        ordering_key: String::new(),
    }
}

pub fn endpoint(id: &str, url: &str, state: EndpointState) -> Endpoint {
    Endpoint {
        id: id.to_string(),
        url: url.to_string(),
        secret_hint: "whsec_…Lasw".to_string(),
        state: state.into(),
        version: 2,
        ..Endpoint::default()
    }
}

pub fn detail(id: u64) -> DeliveryDetail {
    let mut d = delivery(id, "lead.created", DeliveryStatus::Failed);
    d.attempts = 2;
    DeliveryDetail {
        event: Some(Event {
            id: d.event_id.clone(),
            name: d.event_name.clone(),
            source: "crm-service".to_string(),
            tenant_id: "acme".to_string(),
            time: ts(0),
            payload: br#"{"email":"ada@example.com","score":87}"#.to_vec(),
            attributes: [("region".to_string(), "eu".to_string())].into(),
            seq: id,
        }),
        attempts: vec![
            Attempt {
                number: 1,
                started_at: ts(1),
                duration_ms: 31,
                status_code: 503,
                error: "HTTP 503".to_string(),
                response_body: "upstream busy".to_string(),
                request_headers: [
                    ("webhook-id".to_string(), d.event_id.clone()),
                    ("webhook-signature".to_string(), "v1,abc=".to_string()),
                    ("x-env".to_string(), "test".to_string()),
                ]
                .into(),
            },
            Attempt {
                number: 2,
                started_at: ts(6),
                duration_ms: 10_000,
                status_code: 0,
                error: "timed out after 10s".to_string(),
                response_body: String::new(),
                request_headers: Default::default(),
            },
        ],
        delivery: Some(d),
    }
}

pub fn run(id: &str, flow: &str, state: hookyard::v1::RunState, offset: i64) -> hookyard::v1::Run {
    use hookyard::v1::RunState;
    let (step, wake_at, error) = match state {
        RunState::Waiting => ("email2", ts(offset + 86_400), ""),
        RunState::Running | RunState::Created => ("email1", None, ""),
        RunState::Failed => ("", None, "step `email1`: HTTP 500 after 3 tries"),
        _ => ("", None, ""),
    };
    hookyard::v1::Run {
        id: id.to_string(),
        flow_id: flow.to_string(),
        flow_version: 2,
        state: state.into(),
        correlation_key: format!("{id}@example.com"),
        current_step: step.to_string(),
        wake_at,
        trigger: "event:0193a5f0-0000-7000-8000-000000000001".to_string(),
        inputs: format!(r#"{{"email":"{id}@example.com","first_name":"Ada"}}"#).into_bytes(),
        error: error.to_string(),
        created_at: ts(offset),
        updated_at: ts(offset + 5),
    }
}

pub fn run_detail(run: hookyard::v1::Run) -> hookyard::v1::RunDetail {
    use hookyard::v1::{RunLogLine, RunStep};
    let step = |id: &str, state: &str, attempts, code, at: Option<i64>, error: &str| RunStep {
        id: id.to_string(),
        state: state.to_string(),
        attempts,
        status_code: code,
        output: Vec::new(),
        error: error.to_string(),
        finished_at: at.and_then(ts),
    };
    let log = |at, step: &str, message: &str| RunLogLine {
        time: ts(at),
        step_id: step.to_string(),
        message: message.to_string(),
    };
    hookyard::v1::RunDetail {
        steps: vec![
            step("email1", "succeeded", 2, 200, Some(301), ""),
            step("wait_1d", "waiting", 0, 0, None, ""),
            step("email2", "pending", 0, 0, None, ""),
            step("notify", "skipped", 0, 0, Some(302), ""),
        ],
        log: vec![
            log(0, "", "started by event lead.noshow"),
            log(
                300,
                "email1",
                "POST https://mail.example.com/send: HTTP 503, retrying",
            ),
            log(
                301,
                "email1",
                "POST https://mail.example.com/send: HTTP 200",
            ),
            log(302, "wait_1d", "waiting until the next day"),
        ],
        run: Some(run),
    }
}

pub fn flow(id: &str, steps: &[&str], webhook: bool) -> hookyard::v1::Flow {
    let step_yaml: String = steps
        .iter()
        .map(|s| format!("  - id: {s}\n    log: \"{s} for {{{{ inputs.email }}}}\"\n"))
        .collect();
    hookyard::v1::Flow {
        id: id.to_string(),
        version: 3,
        definition_yaml: format!(
            "id: {id}\ndescription: Follow up with {id} leads\ninputs:\n  email: {{type: email, required: true}}\nsteps:\n{step_yaml}"
        ),
        description: format!("Follow up with {id} leads"),
        step_ids: steps.iter().map(|s| s.to_string()).collect(),
        has_webhook_key: webhook,
        created_at: ts(0),
        updated_at: ts(0),
    }
}
