//! How `hookyard ctl` prints what the Admin API answered: aligned columns
//! for people, or JSON for scripts (the same fields, keys in snake_case,
//! times in RFC 3339).

use hookyard::v1::{
    Delivery, DeliveryDetail, DeliveryStatus, DeliveryUpdate, Endpoint, EndpointState, EventType,
    Flow, PublishResponse, Run, RunDetail, RunState, SendTestEventResponse, Source, SourceStatus,
    Subscription,
};
use serde_json::{json, Value};

pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Output {
        Output { json }
    }

    fn print(&self, headers: &[&str], rows: Vec<Vec<String>>, values: Vec<Value>) {
        if self.json {
            println!("{}", Value::Array(values));
        } else {
            print!("{}", table(headers, &rows));
        }
    }

    pub fn done(&self, what: &str, id: &str) {
        if self.json {
            println!("{}", json!({"ok": true, "id": id}));
        } else {
            println!("{what} {id}");
        }
    }

    /// A secret shown once (endpoint rotation).
    pub fn secret(&self, secret: &str) {
        if self.json {
            println!("{}", json!({ "secret": secret }));
        } else {
            println!("{secret}");
            eprintln!(
                "The secret is shown only now; the old one signs beside it for the grace period."
            );
        }
    }

    pub fn test_sent(&self, answer: &SendTestEventResponse) {
        let attempt = answer.attempt.clone().unwrap_or_default();
        if self.json {
            println!(
                "{}",
                json!({
                    "succeeded": answer.succeeded,
                    "status_code": attempt.status_code,
                    "error": attempt.error,
                    "duration_ms": attempt.duration_ms,
                    "response_body": attempt.response_body,
                })
            );
        } else {
            let status = match attempt.status_code {
                0 => "no answer".to_string(),
                code => format!("HTTP {code}"),
            };
            println!("{status} in {} ms {}", attempt.duration_ms, attempt.error);
            if !attempt.response_body.is_empty() {
                println!("{}", attempt.response_body);
            }
        }
    }

    pub fn endpoints(&self, endpoints: &[Endpoint]) {
        let rows = endpoints
            .iter()
            .map(|e| {
                vec![
                    e.id.clone(),
                    endpoint_state(e.state).to_string(),
                    e.url.clone(),
                    e.tenant_id.clone(),
                    e.secret_hint.clone(),
                ]
            })
            .collect();
        let values = endpoints
            .iter()
            .map(|e| {
                json!({
                    "id": e.id, "url": e.url, "state": endpoint_state(e.state),
                    "tenant_id": e.tenant_id, "secret_hint": e.secret_hint,
                    "headers": e.headers, "timeout_ms": e.timeout_ms,
                    "retry_schedule_ms": e.retry_schedule_ms, "max_in_flight": e.max_in_flight,
                    "description": e.description, "version": e.version,
                    "format": payload_format(e.format()), "transform": e.transform, "ordering_key": e.ordering_key,
                    "rate_limit": e.rate_limit.map(|r| json!({"per_second": r.per_second, "burst": r.burst})),
                    "disable_after_ms": e.disable_after_ms,
                    "basic_auth_username": e.basic_auth.as_ref().map(|b| b.username.clone()),
                    "oauth2": e.oauth2.as_ref().map(|o| json!({
                        "token_url": o.token_url, "client_id": o.client_id,
                        "scope": o.scope, "audience": o.audience,
                    })),
                    "tls": e.tls.as_ref().map(|t| json!({
                        "client_cert_file": t.client_cert_file,
                        "client_key_file": t.client_key_file, "ca_file": t.ca_file,
                    })),
                    "disabled_reason": e.disabled_reason,
                })
            })
            .collect();
        self.print(&["ID", "STATE", "URL", "TENANT", "SECRET"], rows, values);
    }

    pub fn subscriptions(&self, subscriptions: &[Subscription]) {
        let rows = subscriptions
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.name.clone(),
                    s.patterns.join(","),
                    s.target.clone(),
                    if s.enabled { "yes" } else { "no" }.to_string(),
                ]
            })
            .collect();
        let values = subscriptions
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "name": s.name, "patterns": s.patterns, "exclude": s.exclude,
                    "target": s.target, "tenant_id": s.tenant_id, "enabled": s.enabled,
                    "description": s.description, "version": s.version, "filter": s.filter, "ordering_key": s.ordering_key,
                })
            })
            .collect();
        self.print(
            &["ID", "NAME", "PATTERNS", "TARGET", "ENABLED"],
            rows,
            values,
        );
    }

    pub fn sources(&self, sources: &[Source]) {
        let rows = sources
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.name.clone(),
                    source_status(s.status).to_string(),
                    s.tenant_id.clone(),
                ]
            })
            .collect();
        let values = sources
            .iter()
            .map(|s| {
                json!({
                    "id": s.id, "name": s.name, "status": source_status(s.status),
                    "tenant_id": s.tenant_id, "description": s.description,
                    "allowed_cidrs": s.allowed_cidrs, "allowed_origins": s.allowed_origins,
                    "rejections": s.rejections, "version": s.version,
                })
            })
            .collect();
        self.print(&["ID", "NAME", "STATUS", "TENANT"], rows, values);
    }

    /// The table leaves the schema out unless `with_schema` (one type).
    pub fn event_types(&self, types: &[EventType], with_schema: bool) {
        let rows = types
            .iter()
            .map(|t| {
                let mut row = vec![
                    t.id.clone(),
                    t.pattern.clone(),
                    t.version.to_string(),
                    t.description.clone(),
                ];
                if with_schema {
                    row.push(t.schema.clone());
                }
                row
            })
            .collect();
        let values = types
            .iter()
            .map(|t| {
                json!({
                    "id": t.id, "pattern": t.pattern, "description": t.description,
                    "schema": serde_json::from_str::<Value>(&t.schema)
                        .unwrap_or_else(|_| Value::String(t.schema.clone())),
                    "version": t.version,
                })
            })
            .collect();
        let headers: &[&str] = if with_schema {
            &["ID", "PATTERN", "VERSION", "DESCRIPTION", "SCHEMA"]
        } else {
            &["ID", "PATTERN", "VERSION", "DESCRIPTION"]
        };
        self.print(headers, rows, values);
    }

    pub fn flows(&self, flows: &[Flow]) {
        let rows = flows
            .iter()
            .map(|f| {
                vec![
                    f.id.clone(),
                    f.version.to_string(),
                    f.step_ids.join(","),
                    f.description.clone(),
                ]
            })
            .collect();
        let values = flows.iter().map(flow_json).collect();
        self.print(&["ID", "VERSION", "STEPS", "DESCRIPTION"], rows, values);
    }

    /// One flow: its definition as written (JSON: with the definition).
    pub fn flow_definition(&self, flow: &Flow) {
        if self.json {
            let mut value = flow_json(flow);
            value["definition_yaml"] = json!(flow.definition_yaml);
            println!("{value}");
        } else {
            print!("{}", flow.definition_yaml);
            if !flow.definition_yaml.ends_with('\n') {
                println!();
            }
        }
    }

    pub fn deliveries(&self, deliveries: &[Delivery]) {
        let rows = deliveries.iter().map(delivery_row).collect();
        let values = deliveries.iter().map(delivery_json).collect();
        self.print(
            &[
                "ID", "STATUS", "EVENT", "NAME", "TARGET", "ATTEMPTS", "LAST",
            ],
            rows,
            values,
        );
    }

    pub fn jobs(&self, jobs: &[hookyard::v1::Job]) {
        let rows = jobs
            .iter()
            .map(|j| {
                vec![
                    j.id.clone(),
                    job_state(j.state).to_string(),
                    j.scanned.to_string(),
                    j.deliveries.to_string(),
                    j.description.clone(),
                ]
            })
            .collect();
        let values = jobs
            .iter()
            .map(|j| {
                json!({
                    "id": j.id, "kind": j.kind, "state": job_state(j.state),
                    "description": j.description, "scanned": j.scanned, "matched": j.matched,
                    "deliveries": j.deliveries, "started_at": time(j.started_at.as_ref()),
                    "finished_at": time(j.finished_at.as_ref()), "error": j.error,
                })
            })
            .collect();
        self.print(
            &["ID", "STATE", "SCANNED", "DELIVERIES", "WHAT"],
            rows,
            values,
        );
    }

    pub fn delivery_detail(&self, detail: &DeliveryDetail) {
        let delivery = detail.delivery.clone().unwrap_or_default();
        let attempts: Vec<Value> = detail
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "number": a.number, "started_at": time(a.started_at.as_ref()),
                    "duration_ms": a.duration_ms, "status_code": a.status_code,
                    "error": a.error, "response_body": a.response_body,
                })
            })
            .collect();
        if self.json {
            let mut value = delivery_json(&delivery);
            value["attempt_log"] = Value::Array(attempts);
            if let Some(event) = &detail.event {
                value["payload"] = serde_json::from_slice(&event.payload).unwrap_or(Value::Null);
            }
            println!("{value}");
            return;
        }
        self.deliveries(std::slice::from_ref(&delivery));
        let rows = detail
            .attempts
            .iter()
            .map(|a| {
                vec![
                    a.number.to_string(),
                    time(a.started_at.as_ref()),
                    format!("{} ms", a.duration_ms),
                    status_code(a.status_code),
                    a.error.clone(),
                ]
            })
            .collect::<Vec<_>>();
        if !rows.is_empty() {
            println!();
            print!(
                "{}",
                table(&["ATTEMPT", "STARTED", "TOOK", "STATUS", "ERROR"], &rows)
            );
        }
    }

    pub fn runs(&self, runs: &[Run]) {
        let rows = runs
            .iter()
            .map(|r| {
                vec![
                    r.id.clone(),
                    r.flow_id.clone(),
                    run_state(r.state).to_string(),
                    r.current_step.clone(),
                    time(r.wake_at.as_ref()),
                    r.error.clone(),
                ]
            })
            .collect();
        let values = runs.iter().map(run_json).collect();
        self.print(
            &["ID", "FLOW", "STATE", "STEP", "WAKES", "ERROR"],
            rows,
            values,
        );
    }

    pub fn run_detail(&self, detail: &RunDetail) {
        let run = detail.run.clone().unwrap_or_default();
        if self.json {
            let mut value = run_json(&run);
            value["steps"] = detail
                .steps
                .iter()
                .map(|s| {
                    json!({
                        "id": s.id, "state": s.state, "attempts": s.attempts,
                        "status_code": s.status_code,
                        "output": serde_json::from_slice::<Value>(&s.output).unwrap_or(Value::Null),
                    })
                })
                .collect();
            value["log"] = detail
                .log
                .iter()
                .map(|l| json!({"time": time(l.time.as_ref()), "step": l.step_id, "message": l.message}))
                .collect();
            println!("{value}");
            return;
        }
        self.runs(std::slice::from_ref(&run));
        let rows: Vec<Vec<String>> = detail
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.state.clone(),
                    s.attempts.to_string(),
                    status_code(s.status_code),
                ]
            })
            .collect();
        if !rows.is_empty() {
            println!();
            print!("{}", table(&["STEP", "STATE", "ATTEMPTS", "STATUS"], &rows));
        }
        for line in &detail.log {
            println!(
                "{} [{}] {}",
                time(line.time.as_ref()),
                line.step_id,
                line.message
            );
        }
    }

    /// One line per change, as `tail` sees them.
    pub fn update(&self, update: &DeliveryUpdate) {
        let delivery = update.delivery.clone().unwrap_or_default();
        if self.json {
            let mut value = delivery_json(&delivery);
            value["time"] = json!(time(update.time.as_ref()));
            value["missed"] = json!(update.missed);
            println!("{value}");
            return;
        }
        if update.missed > 0 {
            println!("… {} changes missed", update.missed);
        }
        println!(
            "{} {} {:<10} {} {} -> {} attempts={} {}",
            time(update.time.as_ref()),
            delivery.id,
            delivery_status(delivery.status),
            delivery.event_name,
            delivery.event_id,
            delivery.target,
            delivery.attempts,
            last(&delivery)
        );
    }

    pub fn published(&self, published: &PublishResponse) {
        if self.json {
            println!(
                "{}",
                json!({"id": published.id, "seq": published.seq, "duplicate": published.duplicate, "matched": published.matched})
            );
        } else {
            println!(
                "published {} (seq {}, matched {}{})",
                published.id,
                published.seq,
                published.matched,
                if published.duplicate {
                    ", duplicate"
                } else {
                    ""
                }
            );
        }
    }
}

fn flow_json(f: &Flow) -> Value {
    json!({
        "id": f.id, "version": f.version, "step_ids": f.step_ids,
        "description": f.description, "has_webhook_key": f.has_webhook_key,
    })
}

fn delivery_row(d: &Delivery) -> Vec<String> {
    vec![
        d.id.to_string(),
        delivery_status(d.status).to_string(),
        d.event_id.clone(),
        d.event_name.clone(),
        d.target.clone(),
        d.attempts.to_string(),
        last(d),
    ]
}

fn last(d: &Delivery) -> String {
    match (d.last_status_code, d.last_error.as_str()) {
        (0, "") => String::new(),
        (0, error) => error.to_string(),
        (code, "") => code.to_string(),
        (code, error) => format!("{code} {error}"),
    }
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "id": d.id, "status": delivery_status(d.status), "event_id": d.event_id,
        "event_name": d.event_name, "tenant_id": d.tenant_id,
        "subscription_id": d.subscription_id, "subscription_name": d.subscription_name,
        "target": d.target, "attempts": d.attempts, "last_status_code": d.last_status_code,
        "last_error": d.last_error, "last_duration_ms": d.last_duration_ms,
        "next_attempt_at": time(d.next_attempt_at.as_ref()),
    })
}

fn run_json(r: &Run) -> Value {
    json!({
        "id": r.id, "flow_id": r.flow_id, "flow_version": r.flow_version,
        "state": run_state(r.state), "correlation_key": r.correlation_key,
        "current_step": r.current_step, "wake_at": time(r.wake_at.as_ref()),
        "trigger": r.trigger,
        "inputs": serde_json::from_slice::<Value>(&r.inputs).unwrap_or(Value::Null),
        "error": r.error, "created_at": time(r.created_at.as_ref()),
        "updated_at": time(r.updated_at.as_ref()),
    })
}

fn status_code(code: u32) -> String {
    if code == 0 {
        String::new()
    } else {
        code.to_string()
    }
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| {
        let ms = t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000);
        crate::timestamp::format_rfc3339_millis(ms)
    })
    .unwrap_or_default()
}

fn job_state(state: i32) -> &'static str {
    match hookyard::v1::JobState::try_from(state) {
        Ok(hookyard::v1::JobState::Running) => "running",
        Ok(hookyard::v1::JobState::Succeeded) => "succeeded",
        Ok(hookyard::v1::JobState::Cancelled) => "cancelled",
        Ok(hookyard::v1::JobState::Failed) => "failed",
        _ => "unknown",
    }
}

fn endpoint_state(state: i32) -> &'static str {
    match EndpointState::try_from(state) {
        Ok(EndpointState::Enabled) => "enabled",
        Ok(EndpointState::Disabled) => "disabled",
        Ok(EndpointState::Gone) => "gone",
        Ok(EndpointState::Failing) => "failing",
        _ => "unknown",
    }
}

fn source_status(status: i32) -> &'static str {
    match SourceStatus::try_from(status) {
        Ok(SourceStatus::Active) => "active",
        Ok(SourceStatus::Inactive) => "inactive",
        Ok(SourceStatus::Suspended) => "suspended",
        _ => "unknown",
    }
}

fn delivery_status(status: i32) -> &'static str {
    match DeliveryStatus::try_from(status) {
        Ok(DeliveryStatus::Pending) => "pending",
        Ok(DeliveryStatus::InFlight) => "in_flight",
        Ok(DeliveryStatus::Succeeded) => "succeeded",
        Ok(DeliveryStatus::Failed) => "failed",
        Ok(DeliveryStatus::Dead) => "dead",
        _ => "unknown",
    }
}

fn run_state(state: i32) -> &'static str {
    match RunState::try_from(state) {
        Ok(RunState::Created) => "created",
        Ok(RunState::Running) => "running",
        Ok(RunState::Waiting) => "waiting",
        Ok(RunState::Succeeded) => "succeeded",
        Ok(RunState::Failed) => "failed",
        Ok(RunState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

/// Columns padded to their widest cell; the last one is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn payload_format(format: hookyard::v1::PayloadFormat) -> &'static str {
    use hookyard::v1::PayloadFormat as F;
    match format {
        F::Unspecified | F::Envelope => "envelope",
        F::StandardWebhooks => "standard_webhooks",
        F::Cloudevents => "cloudevents",
        F::CloudeventsBinary => "cloudevents_binary",
        F::Raw => "raw",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let rows = vec![
            vec!["crm".to_string(), "enabled".to_string()],
            vec!["billing-eu".to_string(), "disabled".to_string()],
        ];
        assert_eq!(
            table(&["ID", "STATE"], &rows),
            "ID          STATE\ncrm         enabled\nbilling-eu  disabled\n"
        );
    }
}
