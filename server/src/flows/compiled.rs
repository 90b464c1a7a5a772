//! A flow definition compiled for running: templates compiled into the
//! flow's own environment, durations parsed, step references checked. Built
//! once per (flow, version); runs share it through an `Arc`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use reqwest::{header::HeaderName, Method};
use serde_json::Value;

use super::{
    definition::{self, DefinitionError, FlowDef, HttpDef, StepDef},
    template::{JsonTemplate, Scope, Secrets, TemplateId, Templates},
};
use crate::{delivery::limits, routing::Pattern};

/// The longest `delay:` a step may give.
const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

pub struct CompiledFlow {
    pub def: FlowDef,
    pub version: u64,
    /// The definition as it was given, for `GetFlow`.
    pub yaml: String,
    pub templates: Templates,
    pub correlate_by: Option<TemplateId>,
    pub cancel_on: Vec<CompiledCancel>,
    pub webhook_inputs: Vec<(String, TemplateId)>,
    pub steps: Vec<CompiledStep>,
    /// For redacting what the templates handed out.
    pub secrets: Arc<Secrets>,
}

pub struct CompiledCancel {
    pub pattern: Pattern,
    pub key: TemplateId,
}

pub struct CompiledStep {
    pub id: String,
    pub when: Option<TemplateId>,
    pub wait: Option<Wait>,
    pub action: Action,
}

pub enum Wait {
    For(Duration),
    /// A template giving an RFC 3339 time.
    Until(TemplateId),
}

pub enum Action {
    /// Only a wait.
    Nothing,
    Http(CompiledHttp),
    Emit(CompiledEmit),
    Log(TemplateId),
}

pub struct CompiledHttp {
    pub method: Method,
    pub url: TemplateId,
    pub headers: Vec<(HeaderName, TemplateId)>,
    pub body: Option<JsonTemplate>,
    pub accept: Vec<u16>,
    pub timeout: Option<Duration>,
    pub retry: Option<Vec<Duration>>,
}

pub struct CompiledEmit {
    pub name: TemplateId,
    pub payload: Option<JsonTemplate>,
    pub tenant_id: Option<TemplateId>,
}

/// What the run context offers at each place a template can stand.
const RUN_ROOTS: &[&str] = &["inputs", "event", "trigger", "steps", "run"];

/// Compiles `def`, or lists every problem with it.
pub fn compile(
    def: FlowDef,
    yaml: String,
    version: u64,
    secrets: Arc<Secrets>,
) -> Result<CompiledFlow, Vec<DefinitionError>> {
    let mut errors = Vec::new();
    let mut templates = Templates::new(secrets.clone());
    if !definition::is_identifier(&def.id, 64, b"_-") {
        errors.push(DefinitionError::new(
            "id",
            "must be 1-64 characters of [A-Za-z0-9_-]",
        ));
    }
    if let Some(tenant) = &def.tenant_id {
        if !definition::is_identifier(tenant, 128, b"._:~-") {
            errors.push(DefinitionError::new(
                "tenant_id",
                "must be 1-128 characters of [A-Za-z0-9._:~-]",
            ));
        }
    }
    check_inputs(&def, &mut errors);
    if def.steps.is_empty() {
        errors.push(DefinitionError::new(
            "steps",
            "a flow needs at least one step",
        ));
    }
    let inputs_only = Scope {
        roots: &["inputs"],
        inputs: Some(&def.inputs),
        steps: &[],
    };
    let correlate_by = def
        .correlate_by
        .as_deref()
        .and_then(|s| keep(templates.text("correlate_by", s, &inputs_only), &mut errors));
    if def.concurrency.is_some() && def.correlate_by.is_none() {
        errors.push(DefinitionError::new(
            "concurrency",
            "needs `correlate_by`: concurrency is counted per correlation key",
        ));
    }
    if let Some(c) = &def.concurrency {
        if c.per_key == 0 {
            errors.push(DefinitionError::new(
                "concurrency.per_key",
                "must be at least 1",
            ));
        }
    }
    let event_only = Scope {
        roots: &["event"],
        inputs: None,
        steps: &[],
    };
    let mut cancel_on = Vec::new();
    for (i, c) in def.cancel_on.iter().enumerate() {
        let field = format!("cancel_on[{i}]");
        if def.correlate_by.is_none() {
            errors.push(DefinitionError::new(
                &field,
                "needs `correlate_by`: a cancelling event names the key of the runs it cancels",
            ));
        }
        let pattern = match Pattern::parse(&c.event) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(DefinitionError::new(
                    format!("{field}.event"),
                    e.to_string(),
                ));
                None
            }
        };
        let key = keep(
            templates.text(&format!("{field}.key"), &c.key, &event_only),
            &mut errors,
        );
        if let (Some(pattern), Some(key)) = (pattern, key) {
            cancel_on.push(CompiledCancel { pattern, key });
        }
    }
    let trigger_only = Scope {
        roots: &["trigger"],
        inputs: None,
        steps: &[],
    };
    let mut webhook_inputs = Vec::new();
    if let Some(webhook) = &def.webhook {
        if webhook.rate_limit.is_some_and(|r| r.per_second == 0) {
            errors.push(DefinitionError::new(
                "webhook.rate_limit.per_second",
                "must be greater than 0",
            ));
        }
        for (name, source) in &webhook.inputs {
            let field = format!("webhook.inputs.{name}");
            if !def.inputs.contains_key(name) {
                errors.push(DefinitionError::new(&field, "is not a declared input"));
            }
            if let Some(t) = keep(templates.text(&field, source, &trigger_only), &mut errors) {
                webhook_inputs.push((name.clone(), t));
            }
        }
    }
    let mut steps = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, step) in def.steps.iter().enumerate() {
        let field = format!("steps[{i}]");
        if !definition::is_identifier(&step.id, 64, b"_-") {
            errors.push(DefinitionError::new(
                format!("{field}.id"),
                "must be 1-64 characters of [A-Za-z0-9_-]",
            ));
        } else if seen.contains(&step.id.as_str()) {
            errors.push(DefinitionError::new(
                format!("{field}.id"),
                format!("`{}` is used by an earlier step", step.id),
            ));
        }
        let scope = Scope {
            roots: RUN_ROOTS,
            inputs: Some(&def.inputs),
            steps: &seen,
        };
        if let Some(s) = compile_step(&field, step, &scope, &mut templates, &mut errors) {
            steps.push(s);
        }
        seen.push(&step.id);
    }
    drop(seen);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(CompiledFlow {
        def,
        version,
        yaml,
        templates,
        correlate_by,
        cancel_on,
        webhook_inputs,
        steps,
        secrets,
    })
}

fn keep<T>(result: Result<T, DefinitionError>, errors: &mut Vec<DefinitionError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

fn check_inputs(def: &FlowDef, errors: &mut Vec<DefinitionError>) {
    for (name, input) in &def.inputs {
        let field = format!("inputs.{name}");
        if !definition::is_identifier(name, 64, b"_") {
            errors.push(DefinitionError::new(&field, "input names are [A-Za-z0-9_]"));
        }
        let is_enum = input.kind == definition::InputType::Enum;
        if is_enum && input.values.is_empty() {
            errors.push(DefinitionError::new(
                format!("{field}.values"),
                "an enum needs its values",
            ));
        }
        if !is_enum && !input.values.is_empty() {
            errors.push(DefinitionError::new(
                format!("{field}.values"),
                "only an enum has values",
            ));
        }
        if let Some(default) = &input.default {
            let mut one = BTreeMap::new();
            one.insert(name.clone(), input.clone());
            let mut given = serde_json::Map::new();
            given.insert(name.clone(), default.clone());
            if let Err(e) = super::inputs::validate(&one, given, false) {
                for e in e {
                    errors.push(DefinitionError::new(format!("{field}.default"), e.message));
                }
            }
        }
    }
}

fn compile_step(
    field: &str,
    step: &StepDef,
    scope: &Scope,
    templates: &mut Templates,
    errors: &mut Vec<DefinitionError>,
) -> Option<CompiledStep> {
    let actions = [step.http.is_some(), step.emit.is_some(), step.log.is_some()]
        .iter()
        .filter(|&&a| a)
        .count();
    let waits = step.delay.is_some() as usize + step.until.is_some() as usize;
    if actions > 1 {
        errors.push(DefinitionError::new(
            field,
            "a step does one thing: http, emit or log",
        ));
    }
    if waits > 1 {
        errors.push(DefinitionError::new(
            field,
            "give `delay` or `until`, not both",
        ));
    }
    if actions == 0 && waits == 0 {
        errors.push(DefinitionError::new(
            field,
            "a step needs http, emit, log, delay or until",
        ));
    }
    let when = step.when.as_deref().and_then(|w| {
        keep(
            templates.condition(&format!("{field}.when"), w, scope),
            errors,
        )
    });
    let wait = match (&step.delay, &step.until) {
        (Some(d), _) => keep(delay(&format!("{field}.delay"), d), errors).map(Wait::For),
        (None, Some(u)) => {
            keep(templates.text(&format!("{field}.until"), u, scope), errors).map(Wait::Until)
        }
        (None, None) => None,
    };
    let action = if let Some(http) = &step.http {
        Action::Http(compile_http(
            &format!("{field}.http"),
            http,
            scope,
            templates,
            errors,
        )?)
    } else if let Some(emit) = &step.emit {
        let f = format!("{field}.emit");
        Action::Emit(CompiledEmit {
            name: keep(
                templates.text(&format!("{f}.name"), &emit.name, scope),
                errors,
            )?,
            payload: match &emit.payload {
                Some(p) => Some(keep(
                    templates.json(&format!("{f}.payload"), p, scope),
                    errors,
                )?),
                None => None,
            },
            tenant_id: match &emit.tenant_id {
                Some(t) => Some(keep(
                    templates.text(&format!("{f}.tenant_id"), t, scope),
                    errors,
                )?),
                None => None,
            },
        })
    } else if let Some(log) = &step.log {
        Action::Log(keep(
            templates.text(&format!("{field}.log"), log, scope),
            errors,
        )?)
    } else {
        Action::Nothing
    };
    Some(CompiledStep {
        id: step.id.clone(),
        when,
        wait,
        action,
    })
}

fn compile_http(
    field: &str,
    http: &HttpDef,
    scope: &Scope,
    templates: &mut Templates,
    errors: &mut Vec<DefinitionError>,
) -> Option<CompiledHttp> {
    let method = match Method::from_bytes(http.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => Some(m),
        Err(_) => {
            errors.push(DefinitionError::new(
                format!("{field}.method"),
                format!("`{}` is not an HTTP method", http.method),
            ));
            None
        }
    };
    let url = keep(
        templates.text(&format!("{field}.url"), &http.url, scope),
        errors,
    );
    let mut headers = Vec::new();
    for (name, value) in &http.headers {
        let f = format!("{field}.headers.{name}");
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => {
                if let Some(t) = keep(templates.text(&f, value, scope), errors) {
                    headers.push((h, t));
                }
            }
            Err(_) => errors.push(DefinitionError::new(f, "is not a valid header name")),
        }
    }
    let body = match &http.body {
        Some(b) => keep(templates.json(&format!("{field}.body"), b, scope), errors),
        None => None,
    };
    for (i, status) in http.accept.iter().enumerate() {
        if !(100..=599).contains(status) {
            errors.push(DefinitionError::new(
                format!("{field}.accept[{i}]"),
                "is not an HTTP status",
            ));
        }
    }
    let timeout = match &http.timeout {
        Some(t) => keep(timeout(&format!("{field}.timeout"), t), errors),
        None => None,
    };
    let retry = http
        .retry
        .as_ref()
        .map(|list| retry_schedule(&format!("{field}.retry"), list, errors));
    Some(CompiledHttp {
        method: method?,
        url: url?,
        headers,
        body,
        accept: http.accept.clone(),
        timeout,
        retry,
    })
}

/// A `delay:`; anything longer than a year is better written as `until:`.
fn delay(field: &str, text: &str) -> Result<Duration, DefinitionError> {
    let d = definition::parse_duration(field, text)?;
    if d > MAX_DELAY {
        return Err(DefinitionError::new(
            field,
            format!("`{text}` is longer than 365 days; use `until` for a later time"),
        ));
    }
    Ok(d)
}

fn timeout(field: &str, text: &str) -> Result<Duration, DefinitionError> {
    let d = definition::parse_duration(field, text)?;
    limits::check_timeout(d).map_err(|m| DefinitionError::new(field, m))?;
    Ok(d)
}

/// The delays that parse; every one that does not, or is out of range, is
/// an error.
fn retry_schedule(
    field: &str,
    list: &[String],
    errors: &mut Vec<DefinitionError>,
) -> Vec<Duration> {
    let delays: Vec<Duration> = list
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            keep(
                definition::parse_duration(&format!("{field}[{i}]"), d),
                errors,
            )
        })
        .collect();
    if delays.len() == list.len() {
        for problem in limits::check_retry_schedule(&delays) {
            let at = match problem.index {
                Some(i) => format!("{field}[{i}]"),
                None => field.to_string(),
            };
            errors.push(DefinitionError::new(at, problem.message));
        }
    }
    delays
}

impl CompiledFlow {
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
}

/// The `inputs` templates of a subscription that targets a flow, over `event`.
pub struct SubscriptionInputs {
    templates: Templates,
    inputs: Vec<(String, TemplateId)>,
}

impl SubscriptionInputs {
    pub fn compile(
        inputs: &BTreeMap<String, String>,
        secrets: Arc<Secrets>,
    ) -> Result<SubscriptionInputs, Vec<DefinitionError>> {
        let mut templates = Templates::new(secrets);
        let scope = Scope {
            roots: &["event"],
            inputs: None,
            steps: &[],
        };
        let mut errors = Vec::new();
        let mut compiled = Vec::new();
        for (name, source) in inputs {
            match templates.text(&format!("inputs.{name}"), source, &scope) {
                Ok(t) => compiled.push((name.clone(), t)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(SubscriptionInputs {
                templates,
                inputs: compiled,
            })
        } else {
            Err(errors)
        }
    }

    /// The inputs for one event. A value that renders as JSON (a number, an
    /// object) keeps its type, so `{{ event.payload.score }}` stays a number.
    pub fn render(&self, ctx: &minijinja::Value) -> Result<serde_json::Map<String, Value>, String> {
        render_inputs(&self.templates, &self.inputs, ctx)
    }
}

pub fn render_inputs(
    templates: &Templates,
    inputs: &[(String, TemplateId)],
    ctx: &minijinja::Value,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    for (name, t) in inputs {
        let text = templates
            .render(*t, ctx)
            .map_err(|e| format!("input `{name}`: {e}"))?;
        let value = match serde_json::from_str::<Value>(&text) {
            Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Object(_) | Value::Array(_))) => v,
            _ if text.is_empty() => Value::Null,
            _ => Value::String(text),
        };
        out.insert(name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::flows::definition::parse_yaml;

    fn compile_yaml(yaml: &str) -> Result<CompiledFlow, Vec<DefinitionError>> {
        compile(
            parse_yaml(yaml).unwrap(),
            yaml.to_string(),
            1,
            Arc::default(),
        )
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let errors = compile_yaml(
            r#"
id: bad flow
inputs: {email: {type: email}}
cancel_on: [{event: "lead..x", key: "{{ inputs.email }}"}]
steps:
  - {id: a, delay: soon}
  - {id: a, http: {url: "{{ inputs.mail }}", method: "GE T"}}
  - {id: c, log: "{{ steps.d.status }}", emit: {name: x}}
  - {id: d}
"#,
        )
        .err()
        .unwrap();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let all = text.join("\n");
        for needle in [
            "id: must be",
            "cancel_on[0]: needs `correlate_by`",
            "cancel_on[0].event",
            "cancel_on[0].key: refers to `inputs.email`",
            "steps[0].delay: `soon`",
            "steps[1].id: `a` is used",
            "steps[1].http.method",
            "steps[1].http.url: refers to input `mail`",
            "steps[2]: a step does one thing",
            "steps[3]: a step needs",
        ] {
            assert!(all.contains(needle), "missing `{needle}` in:\n{all}");
        }
    }

    #[test]
    fn durations_out_of_range_are_named() {
        let errors = compile_yaml(
            r#"
id: far
steps:
  - {id: a, delay: 400d}
  - {id: b, http: {url: "http://x/", timeout: 0s, retry: [1s, 31d]}}
  - {id: c, http: {url: "http://x/", timeout: 6m, retry: [1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s, 1s]}}
"#,
        )
        .err()
        .unwrap();
        let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "steps[0].delay",
                "steps[1].http.retry[1]",
                "steps[1].http.timeout",
                "steps[2].http.retry",
                "steps[2].http.timeout"
            ]
        );
    }

    #[test]
    fn a_good_flow_compiles() {
        let flow = compile_yaml(
            r#"
id: ok
inputs: {email: {type: email, required: true}}
correlate_by: "{{ inputs.email }}"
concurrency: {per_key: 1, on_conflict: replace}
cancel_on: [{event: "lead.call_booked", key: "{{ event.payload.email }}"}]
steps:
  - {id: first, delay: 5m, http: {url: "http://x/{{ inputs.email }}", body: {a: "{{ inputs.email }}"}, retry: [1s]}}
  - {id: second, when: "steps.first.status == 200", emit: {name: "lead.done", payload: {e: "{{ inputs.email }}"}}}
  - {id: third, until: "{{ now() | plus('1h') }}"}
"#,
        )
        .unwrap();
        assert_eq!(flow.steps.len(), 3);
        assert_eq!(flow.step_index("third"), Some(2));
    }
}
