//! Executing one step of one run and saying where the run goes next. A step
//! first waits (`delay` / `until`), then checks `when`, then acts: an HTTP
//! call, an emitted event, a log line, or nothing. The engine commits the
//! returned transition before it runs anything else, so each side effect
//! happens after the previous one is on disk.

use crate::metrics::Door;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, USER_AGENT};
use serde_json::{json, Map, Value};

use super::compiled::{Action, CompiledEmit, CompiledFlow, CompiledHttp, CompiledStep, Wait};
use crate::{
    delivery::Sender,
    intake::event,
    model::{
        now_ms,
        run::{Run, StepRecord},
    },
    publish::{PublishError, Publisher},
    timestamp,
};

/// How much of an HTTP step's response is kept for later steps.
const RESPONSE_LIMIT: usize = 64 * 1024;

/// Where a run goes after one step's work.
pub enum Transition {
    /// The step's wait has begun; wake up at `until_ms`.
    Wait { until_ms: i64, log: String },
    /// The step is done (succeeded or skipped); on to the next.
    Done { record: StepRecord, log: String },
    /// The attempt failed; try again at `until_ms`.
    Retry {
        record: StepRecord,
        until_ms: i64,
        log: String,
    },
    /// The step failed for good; so does the run.
    Fail { record: StepRecord, log: String },
    /// Storage could not take the step's work (an emitted event); nothing
    /// changed, try the step again later.
    Defer(String),
}

/// What a step needs from the daemon.
pub struct StepEnv<'a> {
    pub sender: &'a Sender,
    pub publisher: &'a Publisher,
    pub time_scale: f64,
    pub default_retry: &'a [Duration],
    pub default_timeout: Duration,
}

impl StepEnv<'_> {
    /// A nominal wait, compressed by the time scale (tests run days in
    /// seconds). The float-to-integer cast saturates, so no wait overflows.
    pub fn scaled(&self, nominal: Duration) -> i64 {
        (nominal.as_millis() as f64 * self.time_scale).round() as i64
    }
}

pub async fn execute(
    env: &StepEnv<'_>,
    flow: &CompiledFlow,
    step: &CompiledStep,
    run: &Run,
    ctx: &minijinja::Value,
) -> Transition {
    let now = now_ms();
    if !run.step_waited {
        if let Some(wait) = &step.wait {
            match wake_time(env, flow, wait, ctx, now) {
                Ok(Some(until_ms)) => {
                    return Transition::Wait {
                        until_ms,
                        log: format!("waiting until {}", rfc3339(until_ms)),
                    }
                }
                Ok(None) => {}
                Err(error) => return fail(run, None, format!("the wait did not render: {error}")),
            }
        }
    }
    if let Some(when) = step.when {
        match flow.templates.is_true(when, ctx) {
            Ok(true) => {}
            Ok(false) => {
                return Transition::Done {
                    record: record(run, "skipped", None, None, None),
                    log: "skipped: `when` is false".into(),
                }
            }
            Err(error) => return fail(run, None, format!("`when` did not evaluate: {error}")),
        }
    }
    match &step.action {
        Action::Nothing => Transition::Done {
            record: record(run, "succeeded", None, None, None),
            log: "waited".into(),
        },
        Action::Log(t) => match flow.templates.render(*t, ctx) {
            Ok(line) => Transition::Done {
                record: record(run, "succeeded", None, None, None),
                log: line,
            },
            Err(error) => fail(run, None, format!("the log line did not render: {error}")),
        },
        Action::Emit(emit) => emit_event(env, flow, emit, run, ctx).await,
        Action::Http(http) => call(env, flow, http, run, step, ctx).await,
    }
}

/// When the wait ends, or `None` when it already has.
fn wake_time(
    env: &StepEnv,
    flow: &CompiledFlow,
    wait: &Wait,
    ctx: &minijinja::Value,
    now: i64,
) -> Result<Option<i64>, String> {
    let nominal = match wait {
        Wait::For(d) => *d,
        Wait::Until(t) => {
            let text = flow.templates.render(*t, ctx)?;
            let at = timestamp::parse_rfc3339(&text)
                .map_err(|e| format!("`until` rendered `{}`, which {e}", text.trim()))?;
            match u64::try_from(at.saturating_sub(now)) {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => return Ok(None),
            }
        }
    };
    if nominal.is_zero() {
        return Ok(None);
    }
    Ok(Some(now.saturating_add(env.scaled(nominal))))
}

/// `2026-11-30T05:08:54.120Z`, for log lines.
fn rfc3339(ms: i64) -> String {
    timestamp::format_rfc3339_millis(ms)
}

fn record(
    run: &Run,
    state: &str,
    status: Option<u16>,
    body: Option<Value>,
    error: Option<String>,
) -> StepRecord {
    StepRecord {
        state: state.to_string(),
        attempts: run.attempt + u32::from(state != "skipped"),
        status,
        body,
        error,
        finished_ms: Some(now_ms()),
    }
}

/// A step whose execution panicked fails like any other failed step, so the
/// run ends with the reason instead of staying claimed forever.
pub fn crashed(run: &Run, message: &str) -> Transition {
    fail(run, None, format!("internal error in this step: {message}"))
}

fn fail(run: &Run, status: Option<u16>, error: String) -> Transition {
    Transition::Fail {
        record: record(run, "failed", status, None, Some(error.clone())),
        log: format!("failed: {error}"),
    }
}

async fn emit_event(
    env: &StepEnv<'_>,
    flow: &CompiledFlow,
    emit: &CompiledEmit,
    run: &Run,
    ctx: &minijinja::Value,
) -> Transition {
    let rendered = (|| -> Result<event::Draft, String> {
        let name = flow.templates.render(emit.name, ctx)?;
        let payload = match &emit.payload {
            Some(p) => match flow.templates.render_json(p, ctx)? {
                Value::Object(map) => map,
                other => return Err(format!("the payload must be an object, not {other}")),
            },
            None => Map::new(),
        };
        let tenant_id = match emit.tenant_id {
            Some(t) => Some(flow.templates.render(t, ctx)?).filter(|t| !t.is_empty()),
            None => None,
        };
        Ok(event::Draft {
            // The same id on a re-run of the step: a duplicate, not a second event.
            id: Some(format!("{}.{}", run.id, run.step_index)),
            name: name.trim().to_string(),
            source: Some(format!("flow:{}", flow.def.id)),
            tenant_id,
            payload: crate::intake::payload::from_map(payload),
            ..event::Draft::default()
        })
    })();
    let mut draft = match rendered {
        Ok(d) => d,
        Err(error) => return fail(run, None, format!("the event did not render: {error}")),
    };
    // A tenant's flow publishes for that tenant only, whatever its inputs say.
    if let Some(own) = &flow.def.tenant_id {
        match draft.tenant_id.as_deref() {
            None => draft.tenant_id = Some(own.clone()),
            Some(named) if named != own => {
                return fail(
                    run,
                    None,
                    format!(
                        "the event names tenant `{named}`, but this flow belongs to tenant `{own}`"
                    ),
                )
            }
            Some(_) => {}
        }
    }
    let mut errors = Vec::new();
    if let Err(e) = crate::routing::validate_name(&draft.name) {
        errors.push(format!("name: {e}"));
    }
    let new_event = match event::finish(draft, "", Vec::new()) {
        Ok(e) if errors.is_empty() => e,
        Ok(_) => {
            return fail(
                run,
                None,
                format!("the event is not valid: {}", errors.join("; ")),
            )
        }
        Err(fields) => {
            let list: Vec<String> = fields
                .iter()
                .map(|f| format!("{}: {}", f.dotted(""), f.message))
                .collect();
            return fail(
                run,
                None,
                format!("the event is not valid: {}", list.join("; ")),
            );
        }
    };
    let name = new_event.name.clone();
    match env.publisher.publish_one(Door::Flow, new_event).await {
        Ok((id, published)) => Transition::Done {
            record: record(
                run,
                "succeeded",
                None,
                Some(json!({"event_id": id, "seq": published.seq, "matched": published.matched})),
                None,
            ),
            log: format!(
                "emitted {name} ({id}), matched {}{}",
                published.matched,
                if published.duplicate {
                    ", already emitted"
                } else {
                    ""
                }
            ),
        },
        Err(conflict @ PublishError::Conflict { .. }) => fail(run, None, conflict.to_string()),
        // Emitting it again would be refused again: the step fails.
        Err(invalid @ PublishError::Invalid { .. }) => {
            fail(run, None, format!("could not emit {name}: {invalid}"))
        }
        Err(other) => Transition::Defer(format!("could not emit {name}: {other}")),
    }
}

async fn call(
    env: &StepEnv<'_>,
    flow: &CompiledFlow,
    http: &CompiledHttp,
    run: &Run,
    step: &CompiledStep,
    ctx: &minijinja::Value,
) -> Transition {
    let request = match build_request(env, flow, http, run, step, ctx) {
        Ok(r) => r,
        Err(error) => return fail(run, None, error),
    };
    let method = http.method.clone();
    let url = request.url().clone();
    let started = Instant::now();
    let result = send(env, request).await;
    let took = started.elapsed().as_millis();
    let secrets = &flow.secrets;
    let target = secrets.redact(&format!("{method} {url}"));
    let (status, body, error) = match result {
        Ok((status, body)) => {
            let ok = if http.accept.is_empty() {
                (200..300).contains(&status)
            } else {
                http.accept.contains(&status)
            };
            if ok {
                return Transition::Done {
                    record: record(run, "succeeded", Some(status), Some(body), None),
                    log: format!("{target} → {status} in {took} ms"),
                };
            }
            (Some(status), Some(body), format!("answered HTTP {status}"))
        }
        Err(error) => (None, None, secrets.redact(&error)),
    };
    let schedule = http.retry.as_deref().unwrap_or(env.default_retry);
    let mut failed = record(run, "failed", status, body, Some(error.clone()));
    match schedule.get(run.attempt as usize) {
        Some(delay) => {
            failed.state = "waiting".into();
            let until_ms = now_ms().saturating_add(env.scaled(*delay));
            Transition::Retry {
                record: failed,
                until_ms,
                log: format!(
                    "{target} → {error} in {took} ms; retry {} of {} at {}",
                    run.attempt + 1,
                    schedule.len(),
                    rfc3339(until_ms)
                ),
            }
        }
        None => Transition::Fail {
            record: failed,
            log: format!(
                "{target} → {error} in {took} ms; failed after {} attempts",
                run.attempt + 1
            ),
        },
    }
}

fn build_request(
    env: &StepEnv,
    flow: &CompiledFlow,
    http: &CompiledHttp,
    run: &Run,
    step: &CompiledStep,
    ctx: &minijinja::Value,
) -> Result<reqwest::Request, String> {
    let url = flow
        .templates
        .render(http.url, ctx)
        .map_err(|e| format!("the URL did not render: {e}"))?;
    let url = reqwest::Url::parse(url.trim())
        .map_err(|e| format!("`{}` is not a URL: {e}", flow.secrets.redact(url.trim())))?;
    env.sender
        .policy()
        .check_url(&url)
        .map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(agent) = HeaderValue::from_str(env.sender.user_agent()) {
        headers.insert(USER_AGENT, agent);
    }
    let key = format!("{}-{}-{}", run.id, step.id, run.attempt_group);
    if let Ok(value) = HeaderValue::from_str(&key) {
        headers.insert("idempotency-key", value);
    }
    for (name, t) in &http.headers {
        let value = flow
            .templates
            .render(*t, ctx)
            .map_err(|e| format!("header `{name}` did not render: {e}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header `{name}` rendered to a value HTTP cannot carry"))?;
        headers.insert(name.clone(), value);
    }
    let body = match &http.body {
        Some(b) => Some(
            flow.templates
                .render_json(b, ctx)
                .map_err(|e| format!("the body did not render: {e}"))?
                .to_string(),
        ),
        None => None,
    };
    let mut builder = env
        .sender
        .client()
        .request(http.method.clone(), url)
        .headers(headers)
        .timeout(http.timeout.unwrap_or(env.default_timeout));
    if let Some(body) = body {
        builder = builder.body(body);
    }
    builder.build().map_err(|e| e.to_string())
}

/// The status and the body (JSON when it parses, else text).
async fn send(env: &StepEnv<'_>, request: reqwest::Request) -> Result<(u16, Value), String> {
    let mut response = env
        .sender
        .client()
        .execute(request)
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = RESPONSE_LIMIT.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room == 0 {
            break;
        }
    }
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, body))
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    message
}
