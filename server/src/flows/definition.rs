//! Flow definitions as written (YAML in the config file or through the Admin
//! API) and their validation. Everything that can be wrong with a definition
//! — a field serde cannot read, an unknown step or input in a template, a
//! template that does not compile, a bad duration — is found here, at load or
//! create time, with the field (or YAML line) it concerns. A definition that
//! passes is compiled (`compiled.rs`) and never fails for a reason that was
//! visible before the run.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::model::run::{Concurrency, OnConflict};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FlowDef {
    /// [A-Za-z0-9_-], 1-64 characters.
    pub id: String,
    #[serde(default)]
    pub description: String,
    /// The tenant the flow works for: only that tenant's events start or
    /// cancel its runs, only API keys of that tenant (or keys bound to none)
    /// start it, and the events it emits carry that tenant. None: a flow of
    /// the operator's, which tenant-bound keys cannot start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub inputs: BTreeMap<String, InputDef>,
    /// A template over `inputs` naming the thing a run is about (a lead's
    /// email): concurrency and `cancel_on` work per key.
    #[serde(default)]
    pub correlate_by: Option<String>,
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    #[serde(default)]
    pub cancel_on: Vec<CancelOn>,
    /// `POST /hooks/{id}/{key}`: the key (stored hashed) and how the request
    /// becomes inputs. Without `inputs`, the body's fields named like the
    /// flow's inputs are taken.
    #[serde(default)]
    pub webhook: Option<WebhookDef>,
    pub steps: Vec<StepDef>,
}

impl FlowDef {
    /// Whether an event of `tenant` may start or cancel this flow's runs.
    pub fn takes_events_of(&self, tenant: Option<&str>) -> bool {
        self.tenant_id
            .as_deref()
            .is_none_or(|own| Some(own) == tenant)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    String,
    Integer,
    Number,
    Boolean,
    Email,
    Datetime,
    Enum,
    Object,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputDef {
    #[serde(rename = "type")]
    pub kind: InputType,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    /// The allowed values of an `enum`.
    #[serde(default)]
    pub values: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOn {
    /// An event name pattern (`lead.call_booked`, `lead.*`).
    pub event: String,
    /// A template over `event` giving the correlation key to cancel.
    pub key: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookDef {
    /// The key, for a definition kept in the config file; otherwise made by
    /// `RotateFlowWebhookKey`.
    #[serde(default, skip_serializing)]
    pub key: Option<String>,
    /// Each input as a template over `trigger.body` and `trigger.headers`.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Runs the webhook may start; `flow_runner.webhook_rate_limit` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::model::RateLimit>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// [A-Za-z0-9_], 1-64 characters, unique in the flow.
    pub id: String,
    /// An expression; the step is skipped when it is false.
    #[serde(default)]
    pub when: Option<String>,
    /// Wait this long (`5m`, `24h`) before the step.
    #[serde(default)]
    pub delay: Option<String>,
    /// Wait until this time (a template giving RFC 3339) before the step.
    #[serde(default)]
    pub until: Option<String>,
    #[serde(default)]
    pub http: Option<HttpDef>,
    #[serde(default)]
    pub emit: Option<EmitDef>,
    /// A templated line for the run's log.
    #[serde(default)]
    pub log: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpDef {
    #[serde(default = "post")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON with templated strings; a string that is one `{{ expression }}`
    /// keeps the expression's type.
    #[serde(default)]
    pub body: Option<Value>,
    /// Statuses that count as success; empty: any 2xx.
    #[serde(default)]
    pub accept: Vec<u16>,
    #[serde(default)]
    pub timeout: Option<String>,
    /// Delays before each retry (`["10s", "1m"]`); empty: the runner's default.
    #[serde(default)]
    pub retry: Option<Vec<String>>,
}

fn post() -> String {
    "POST".to_string()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmitDef {
    /// The event name; may be a template.
    pub name: String,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// One problem with a definition: where (`steps[1].http.url`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub field: String,
    pub message: String,
}

impl DefinitionError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> DefinitionError {
        DefinitionError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Reads a definition from YAML; a syntax or shape error names its line and
/// column.
pub fn parse_yaml(yaml: &str) -> Result<FlowDef, DefinitionError> {
    serde_yaml::from_str(yaml).map_err(|e| {
        let field = e
            .location()
            .map(|l| format!("line {}, column {}", l.line(), l.column()))
            .unwrap_or_default();
        DefinitionError::new(field, e.to_string())
    })
}

/// A duration as flows write it: `5m`, `24h`, `3d`, `500ms`.
pub fn parse_duration(field: &str, s: &str) -> Result<Duration, DefinitionError> {
    humantime::parse_duration(s.trim())
        .map_err(|e| DefinitionError::new(field, format!("`{s}` is not a duration: {e}")))
}

pub fn is_identifier(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses() {
        let def = parse_yaml(
            r#"
id: noshow-recovery
inputs:
  email: {type: email, required: true}
  first_name: {type: string, required: true}
  scheduled_time: {type: datetime}
correlate_by: "{{ inputs.email }}"
concurrency: {per_key: 1, on_conflict: skip}
cancel_on:
  - {event: "lead.call_booked", key: "{{ event.payload.email }}"}
steps:
  - {id: email1, delay: 5m, http: {method: POST, url: "{{ secret('MAIL_URL') }}",
       headers: {Authorization: "Bearer {{ secret('MAIL_KEY') }}"},
       body: {to: "{{ inputs.email }}", template: noshow-1, vars: {name: "{{ inputs.first_name }}"}}}}
  - {id: notify, when: "inputs.first_name != ''", emit: {name: "lead.noshow_followed_up", payload: {email: "{{ inputs.email }}"}}}
"#,
        )
        .unwrap();
        assert_eq!(def.steps.len(), 2);
        assert_eq!(def.inputs["email"].kind, InputType::Email);
        assert_eq!(def.concurrency.unwrap().on_conflict, OnConflict::Skip);
    }

    #[test]
    fn a_bad_shape_names_its_line() {
        let err = parse_yaml("id: a\nsteps:\n  - {id: x, htp: {}}\n").unwrap_err();
        assert!(err.field.starts_with("line 3"), "{err}");
        assert!(err.message.contains("htp"), "{err}");
    }
}
