//! Templates and conditions for flows, in one language (Jinja via minijinja):
//! `{{ inputs.email }}`, `{{ secret('MAIL_KEY') }}`, `steps.email1.status == 200`.
//!
//! Every template of a flow is compiled once into the flow's environment when
//! the definition is loaded, and its references are checked then: an unknown
//! input, a step that does not come earlier, or a root the context does not
//! have is a definition error, not a surprise at 3 a.m. Rendering at run time
//! only fills in values.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
};

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::Value;

use super::definition::{DefinitionError, InputDef};

/// Secret values for `secret(name)`: a secrets file (a YAML map) first, then
/// the environment variable `HOOKYARD_SECRET_<name>` — never the rest of the
/// daemon's environment, which holds what templates have no business reading
/// (`PATH`, `HOME`, cloud credentials). Every value handed out is remembered
/// so logs can redact it.
#[derive(Default)]
pub struct Secrets {
    file: BTreeMap<String, String>,
    handed_out: Mutex<HashSet<String>>,
}

/// `secret('MAIL_URL')` reads `HOOKYARD_SECRET_MAIL_URL` when the secrets
/// file has no `MAIL_URL`.
pub const SECRET_ENV_PREFIX: &str = "HOOKYARD_SECRET_";

/// Secret names are plain identifiers, so a name cannot reach outside the
/// prefix or make a malformed variable name.
fn is_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Values shorter than this are not redacted: they would blank out ordinary words.
const MIN_REDACTED_LEN: usize = 4;

impl Secrets {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Secrets> {
        let file = match path {
            None => BTreeMap::new(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("could not read secrets file {}: {e}", path.display())
                })?;
                serde_yaml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "secrets file {} must be a map of names to strings: {e}",
                        path.display()
                    )
                })?
            }
        };
        Ok(Secrets {
            file,
            handed_out: Mutex::default(),
        })
    }

    pub fn get(&self, name: &str) -> Option<String> {
        if !is_secret_name(name) {
            return None;
        }
        let value = self
            .file
            .get(name)
            .cloned()
            .or_else(|| std::env::var(format!("{SECRET_ENV_PREFIX}{name}")).ok())?;
        if value.len() >= MIN_REDACTED_LEN {
            if let Ok(mut seen) = self.handed_out.lock() {
                seen.insert(value.clone());
            }
        }
        Some(value)
    }

    /// `text` with every secret value handed out so far replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let Ok(seen) = self.handed_out.lock() else {
            return text.to_string();
        };
        let mut out = text.to_string();
        for secret in seen.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

/// What a template may refer to, checked when it is compiled.
pub struct Scope<'a> {
    /// Allowed roots: `inputs`, `event`, `trigger`, `steps`, `run`.
    pub roots: &'a [&'a str],
    /// When set, `inputs.<name>` must be one of these.
    pub inputs: Option<&'a BTreeMap<String, InputDef>>,
    /// Step ids that `steps.<id>` may name (the earlier steps).
    pub steps: &'a [&'a str],
}

/// Functions every template may call.
const FUNCTIONS: &[&str] = &["secret", "now", "range", "dict", "namespace", "debug"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateId(usize);

/// A JSON value whose strings may be templates.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    Literal(Value),
    /// Renders to a string.
    Text(TemplateId),
    /// One `{{ expression }}`: keeps the expression's JSON type.
    Expr(TemplateId),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

/// The work one render may do, in minijinja's fuel (about one unit per
/// instruction, or per 64 bytes it makes, so also about 6 MiB of memory).
/// Without a bound, a template such as two nested `range(100000)` loops
/// holds a runner thread for hours; with it the render fails in
/// milliseconds and the step fails, naming the template. Ordinary templates
/// use a few hundred; rendering a whole 256 KiB payload (the default body
/// limit) as JSON fits with room to spare (see the tests).
pub const TEMPLATE_FUEL: u64 = 100_000;

/// The compiled templates of one flow.
pub struct Templates {
    env: Environment<'static>,
    /// The field each template was compiled from, by id, to name it when
    /// its render runs out of fuel.
    fields: Vec<String>,
}

impl Templates {
    pub fn new(secrets: Arc<Secrets>) -> Templates {
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_function("secret", move |name: String| {
            secrets.get(&name).ok_or_else(|| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!(
                        "secret `{name}` is not set (in the secrets file, or as the \
                         environment variable {SECRET_ENV_PREFIX}{name})"
                    ),
                )
            })
        });
        env.add_function("now", || chrono::Utc::now().to_rfc3339());
        env.add_filter("plus", plus);
        Templates {
            env,
            fields: Vec::new(),
        }
    }

    /// Compiles a string template.
    pub fn text(
        &mut self,
        field: &str,
        source: &str,
        scope: &Scope,
    ) -> Result<TemplateId, DefinitionError> {
        self.compile(field, source.to_string(), scope)
    }

    /// Compiles a condition (`payload.score >= 80`).
    pub fn condition(
        &mut self,
        field: &str,
        expr: &str,
        scope: &Scope,
    ) -> Result<TemplateId, DefinitionError> {
        if expr.contains("%}") || expr.contains("}}") {
            return Err(DefinitionError::new(
                field,
                "must be an expression such as `inputs.score >= 80`, without {{ }} or {% %}",
            ));
        }
        self.compile(
            field,
            format!("{{% if ({expr}) %}}true{{% endif %}}"),
            scope,
        )
    }

    /// Compiles every string inside a JSON value.
    pub fn json(
        &mut self,
        field: &str,
        value: &Value,
        scope: &Scope,
    ) -> Result<JsonTemplate, DefinitionError> {
        Ok(match value {
            Value::String(s) if !s.contains("{{") && !s.contains("{%") => {
                JsonTemplate::Literal(value.clone())
            }
            Value::String(s) => match single_expression(s) {
                Some(expr) => JsonTemplate::Expr(self.compile(
                    field,
                    format!("{{{{ ({expr}) | tojson }}}}"),
                    scope,
                )?),
                None => JsonTemplate::Text(self.text(field, s, scope)?),
            },
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.json(&format!("{field}[{i}]"), item, scope))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.json(&format!("{field}.{k}"), v, scope)?)))
                    .collect::<Result<_, DefinitionError>>()?,
            ),
            other => JsonTemplate::Literal(other.clone()),
        })
    }

    fn compile(
        &mut self,
        field: &str,
        source: String,
        scope: &Scope,
    ) -> Result<TemplateId, DefinitionError> {
        let id = TemplateId(self.fields.len());
        let name = template_name(id);
        self.env
            .add_template_owned(name.clone(), source)
            .map_err(|e| DefinitionError::new(field, format!("template does not compile: {e}")))?;
        let template = self
            .env
            .get_template(&name)
            .map_err(|e| DefinitionError::new(field, e.to_string()))?;
        check_references(field, &template.undeclared_variables(true), scope)?;
        // A template that exhausts its fuel with no data at all (loops over
        // `range`) can never render: refuse it now rather than fail every run.
        if template
            .render(minijinja::Value::UNDEFINED)
            .is_err_and(|e| e.kind() == ErrorKind::OutOfFuel)
        {
            return Err(DefinitionError::new(field, out_of_fuel(field)));
        }
        self.fields.push(field.to_string());
        Ok(id)
    }

    pub fn render(&self, id: TemplateId, ctx: &minijinja::Value) -> Result<String, String> {
        self.env
            .get_template(&template_name(id))
            .and_then(|t| t.render(ctx))
            .map_err(|e| match e.kind() {
                ErrorKind::OutOfFuel => {
                    out_of_fuel(self.fields.get(id.0).map_or("a template", String::as_str))
                }
                _ => describe(&e),
            })
    }

    pub fn is_true(&self, id: TemplateId, ctx: &minijinja::Value) -> Result<bool, String> {
        Ok(self.render(id, ctx)? == "true")
    }

    pub fn render_json(&self, t: &JsonTemplate, ctx: &minijinja::Value) -> Result<Value, String> {
        Ok(match t {
            JsonTemplate::Literal(v) => v.clone(),
            JsonTemplate::Text(id) => Value::String(self.render(*id, ctx)?),
            JsonTemplate::Expr(id) => {
                let json = self.render(*id, ctx)?;
                serde_json::from_str(&json).unwrap_or(Value::String(json))
            }
            JsonTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.render_json(i, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_json(v, ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

fn template_name(id: TemplateId) -> String {
    format!("t{}", id.0)
}

/// The inside of a string that is exactly one `{{ … }}`.
fn single_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !s.contains("{%")).then_some(inner.trim())
}

fn check_references(
    field: &str,
    names: &HashSet<String>,
    scope: &Scope,
) -> Result<(), DefinitionError> {
    let mut names: Vec<&String> = names.iter().collect();
    names.sort();
    for name in names {
        let mut parts = name.split('.');
        let root = parts.next().unwrap_or_default();
        if FUNCTIONS.contains(&root) {
            continue;
        }
        if !scope.roots.contains(&root) {
            return Err(DefinitionError::new(
                field,
                format!(
                    "refers to `{name}`, but only {} can be used here",
                    scope.roots.join(", ")
                ),
            ));
        }
        let second = parts.next();
        match (root, second) {
            ("inputs", Some(input)) => {
                if let Some(inputs) = scope.inputs {
                    if !inputs.contains_key(input) {
                        return Err(DefinitionError::new(
                            field,
                            format!("refers to input `{input}`, which the flow does not declare"),
                        ));
                    }
                }
            }
            ("steps", Some(step)) if !scope.steps.contains(&step) => {
                return Err(DefinitionError::new(
                    field,
                    format!("refers to step `{step}`, which is not an earlier step of the flow"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `{{ inputs.email_1_sent_at | plus('2d') }}`: an RFC 3339 time plus a duration.
fn plus(time: String, duration: String) -> Result<String, minijinja::Error> {
    let bad = |msg: String| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg);
    let at = chrono::DateTime::parse_from_rfc3339(time.trim())
        .map_err(|e| bad(format!("`{time}` is not an RFC 3339 time: {e}")))?;
    let by = humantime::parse_duration(duration.trim())
        .map_err(|e| bad(format!("`{duration}` is not a duration: {e}")))?;
    // The sum must still be a time every door accepts (years 1970-9999).
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| at.checked_add_signed(by))
        .filter(|t| crate::timestamp::check(t.timestamp_millis()).is_ok())
        .map(|t| t.to_rfc3339())
        .ok_or_else(|| {
            bad(format!(
                "`{time}` plus `{duration}` is outside the years 1970 to 9999"
            ))
        })
}

fn out_of_fuel(field: &str) -> String {
    format!(
        "template `{field}` ran out of fuel: it does more work than a template may \
         ({TEMPLATE_FUEL} steps); make it simpler (fewer or shorter loops)"
    )
}

/// minijinja's message plus its own detail, on one line.
pub fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.to_string(),
    }
}

/// Turns JSON into a template value.
pub fn value(json: &Value) -> minijinja::Value {
    minijinja::Value::from(minijinja::value::Serde(json))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::flows::definition::InputType;

    fn scope_with<'a>(inputs: &'a BTreeMap<String, InputDef>, steps: &'a [&'a str]) -> Scope<'a> {
        Scope {
            roots: &["inputs", "steps", "run"],
            inputs: Some(inputs),
            steps,
        }
    }

    fn inputs() -> BTreeMap<String, InputDef> {
        let mut map = BTreeMap::new();
        map.insert(
            "email".to_string(),
            InputDef {
                kind: InputType::Email,
                required: true,
                default: None,
                values: vec![],
                description: String::new(),
            },
        );
        map
    }

    #[test]
    fn unknown_inputs_and_later_steps_are_refused_at_compile_time() {
        let inputs = inputs();
        let mut t = Templates::new(Arc::default());
        let scope = scope_with(&inputs, &["first"]);
        assert!(t.text("a", "{{ inputs.email }}", &scope).is_ok());
        let err = t.text("b", "{{ inputs.emial }}", &scope).unwrap_err();
        assert!(err.message.contains("emial"), "{err}");
        let err = t.text("c", "{{ steps.later.status }}", &scope).unwrap_err();
        assert!(err.message.contains("later"), "{err}");
        let err = t.text("d", "{{ event.payload.x }}", &scope).unwrap_err();
        assert!(err.message.contains("event"), "{err}");
        let err = t.text("e", "{{ inputs.email ", &scope).unwrap_err();
        assert!(err.message.contains("compile"), "{err}");
    }

    #[test]
    fn json_keeps_the_type_of_a_lone_expression() {
        let inputs = inputs();
        let mut t = Templates::new(Arc::default());
        let scope = scope_with(&inputs, &[]);
        let body = json!({"to": "{{ inputs.email }}", "n": "{{ run.n + 1 }}", "s": "x {{ run.n }}", "k": [1, "lit"]});
        let compiled = t.json("body", &body, &scope).unwrap();
        let ctx = value(&json!({"inputs": {"email": "a@b.c"}, "run": {"n": 41}}));
        assert_eq!(
            t.render_json(&compiled, &ctx).unwrap(),
            json!({"to": "a@b.c", "n": 42, "s": "x 41", "k": [1, "lit"]})
        );
    }

    #[test]
    fn conditions_and_the_plus_filter() {
        let inputs = inputs();
        let mut t = Templates::new(Arc::default());
        let scope = scope_with(&inputs, &[]);
        let cond = t.condition("when", "inputs.email != ''", &scope).unwrap();
        assert!(t
            .is_true(cond, &value(&json!({"inputs": {"email": "x"}})))
            .unwrap());
        assert!(!t
            .is_true(cond, &value(&json!({"inputs": {"email": ""}})))
            .unwrap());
        let later = t
            .text("until", "{{ run.at | plus('2d') }}", &scope)
            .unwrap();
        let out = t
            .render(
                later,
                &value(&json!({"run": {"at": "2025-12-01T10:30:00Z"}})),
            )
            .unwrap();
        assert_eq!(out, "2025-12-03T10:30:00+00:00");
        let far = t
            .text("far", "{{ run.at | plus('100000000d') }}", &scope)
            .unwrap();
        let err = t
            .render(far, &value(&json!({"run": {"at": "2025-12-01T10:30:00Z"}})))
            .unwrap_err();
        assert!(err.contains("outside the years 1970 to 9999"), "{err}");
        let just_past = t.text("just", "{{ run.at | plus('2d') }}", &scope).unwrap();
        let err = t
            .render(
                just_past,
                &value(&json!({"run": {"at": "9999-12-30T10:30:00Z"}})),
            )
            .unwrap_err();
        assert!(err.contains("outside the years 1970 to 9999"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_once_handed_out() {
        std::env::set_var("HOOKYARD_SECRET_TEST_XYZ", "s3cr3t-value");
        let secrets = Arc::new(Secrets::default());
        let mut t = Templates::new(secrets.clone());
        let scope = Scope {
            roots: &[],
            inputs: None,
            steps: &[],
        };
        let id = t
            .text("h", "Bearer {{ secret('TEST_XYZ') }}", &scope)
            .unwrap();
        let out = t.render(id, &value(&json!({}))).unwrap();
        assert_eq!(out, "Bearer s3cr3t-value");
        assert_eq!(secrets.redact(&out), "Bearer ***");
        let missing = t
            .text("m", "{{ secret('NOPE_NOT_SET_1') }}", &scope)
            .unwrap();
        assert!(t
            .render(missing, &value(&json!({})))
            .unwrap_err()
            .contains("NOPE_NOT_SET_1"));
    }

    #[test]
    fn runaway_templates_are_refused_or_stopped_by_their_fuel() {
        let inputs = inputs();
        let mut t = Templates::new(Arc::default());
        let scope = scope_with(&inputs, &[]);
        let nested =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let err = t.text("steps[0].log", nested, &scope).unwrap_err();
        assert_eq!(err.field, "steps[0].log");
        assert!(err.message.contains("ran out of fuel"), "{err}");
        let err = t
            .condition(
                "steps[1].when",
                "range(100000) | map('string') | join | length > 0",
                &scope,
            )
            .unwrap_err();
        assert!(err.message.contains("ran out of fuel"), "{err}");
        // Loops only as long as the data: compiles, and fails fast on big data.
        let per_item = t
            .text(
                "steps[2].http.url",
                "{% for e in inputs.email %}{% for j in range(100000) %}{% endfor %}{% endfor %}ok",
                &scope,
            )
            .unwrap();
        assert_eq!(t.render(per_item, &value(&json!({}))).unwrap(), "ok");
        let started = std::time::Instant::now();
        let err = t
            .render(per_item, &value(&json!({"inputs": {"email": "abcdefgh"}})))
            .unwrap_err();
        assert!(err.contains("`steps[2].http.url` ran out of fuel"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_whole_payload_at_the_body_limit_renders_within_the_fuel() {
        let mut t = Templates::new(Arc::default());
        let scope = Scope {
            roots: &["event"],
            inputs: None,
            steps: &[],
        };
        let body = json!({"event": "{{ event.payload }}", "copy": "{{ event.payload.text }} {{ event.payload.items | length }}"});
        let compiled = t.json("steps[0].http.body", &body, &scope).unwrap();
        let items: Vec<Value> = (0..2000).map(|i| json!({"n": i, "s": "x"})).collect();
        let payload = json!({"text": "a".repeat(200 * 1024), "items": items});
        assert!(payload.to_string().len() > 220 * 1024);
        let out = t
            .render_json(&compiled, &value(&json!({ "event": {"payload": payload} })))
            .unwrap();
        assert_eq!(out["event"], payload);
    }

    #[test]
    fn subscription_inputs_have_fuel_too() {
        let mut inputs = BTreeMap::new();
        inputs.insert(
            "email".to_string(),
            "{% for i in range(100000) %}{% for j in range(10) %}{% endfor %}{% endfor %}"
                .to_string(),
        );
        let errors = crate::flows::compiled::SubscriptionInputs::compile(&inputs, Arc::default())
            .err()
            .unwrap();
        assert!(
            errors[0].message.contains("ran out of fuel"),
            "{:?}",
            errors
        );
    }

    #[test]
    fn secrets_come_from_the_file_or_prefixed_variables_only() {
        std::env::set_var("HOOKYARD_SECRET_PREFIXED_ONE", "from-env");
        std::env::set_var("UNPREFIXED_SECRET_ONE", "leak");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.yaml");
        std::fs::write(&path, "FILED: from-file\nPREFIXED_ONE: file-wins\n").unwrap();
        let secrets = Secrets::load(Some(&path)).unwrap();
        assert_eq!(secrets.get("FILED").as_deref(), Some("from-file"));
        assert_eq!(secrets.get("PREFIXED_ONE").as_deref(), Some("file-wins"));
        let env_only = Secrets::default();
        assert_eq!(env_only.get("PREFIXED_ONE").as_deref(), Some("from-env"));
        for name in ["PATH", "HOME", "UNPREFIXED_SECRET_ONE", "", "A=B", "../X"] {
            assert_eq!(env_only.get(name), None, "{name}");
        }
    }
}
