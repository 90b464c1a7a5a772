//! How an accepted webhook gets its event name: a fixed name, the value of a
//! body field (`event_type`, or dotted `data.type`), or a minijinja template
//! over the payload (`lead.{{ payload.kind }}`). Templates are compiled once,
//! render in strict mode (a missing field is an error, not an empty string),
//! and every derived name must satisfy the event-name grammar.
//!
//! A template renders on the request path, so its work is bounded by fuel:
//! one that exhausts it even on an empty payload is refused when the source
//! is created; one that exhausts it on a given payload answers that webhook
//! 422, naming the derived name, instead of holding a request thread.

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

use super::NameRule;
use crate::{intake::event::FieldError, routing::validate_name};

const TEMPLATE: &str = "name";
/// Fuel for one name (see `flows::template::TEMPLATE_FUEL`): a name is at
/// most 255 bytes, so ordinary templates use well under a hundred.
const NAME_FUEL: u64 = 20_000;

pub enum Namer {
    Fixed(String),
    Field(Vec<String>),
    Template(Box<Environment<'static>>),
}

impl Namer {
    pub fn compile(rule: &NameRule) -> Result<Namer, String> {
        match rule {
            NameRule::Fixed(name) => {
                validate_name(name)
                    .map_err(|e| format!("`{name}` is not a valid event name: {e}"))?;
                Ok(Namer::Fixed(name.clone()))
            }
            NameRule::Field(field) => {
                let path: Vec<String> = field.split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) {
                    return Err(format!("`{field}` is not a field name (use `a` or `a.b`)"));
                }
                Ok(Namer::Field(path))
            }
            NameRule::Template(source) => {
                let mut env = Environment::new();
                env.set_fuel(Some(NAME_FUEL));
                env.set_undefined_behavior(UndefinedBehavior::Chainable);
                env.add_template_owned(TEMPLATE, source.clone())
                    .map_err(|e| format!("is not a valid template: {e}"))?;
                // Leniently, so loops over missing fields run empty and only
                // the template's own work is measured.
                let trial = env
                    .get_template(TEMPLATE)
                    .and_then(|t| t.render(minijinja::Value::UNDEFINED));
                if trial.is_err_and(|e| e.kind() == ErrorKind::OutOfFuel) {
                    return Err(format!(
                        "does more work than a name template may ({NAME_FUEL} steps); make it simpler"
                    ));
                }
                env.set_undefined_behavior(UndefinedBehavior::Strict);
                Ok(Namer::Template(Box::new(env)))
            }
        }
    }

    /// The event name for `payload`, or the field error that explains why
    /// there is none.
    pub fn derive(&self, payload: &Map<String, Value>) -> Result<String, FieldError> {
        let name = match self {
            Namer::Fixed(name) => return Ok(name.clone()),
            Namer::Field(path) => field(payload, path)?,
            Namer::Template(env) => render(env, payload)?,
        };
        validate_name(&name).map_err(|e| {
            let at: Vec<&str> = match self {
                Namer::Field(path) => path.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            };
            FieldError::new(
                &at,
                format!("derives the event name `{name}`, which is not valid: {e}"),
            )
        })?;
        Ok(name)
    }
}

fn field(payload: &Map<String, Value>, path: &[String]) -> Result<String, FieldError> {
    let at: Vec<&str> = path.iter().map(String::as_str).collect();
    let mut current = payload;
    for (i, segment) in path.iter().enumerate() {
        match current.get(segment) {
            Some(Value::String(s)) if i + 1 == path.len() => return Ok(s.clone()),
            Some(Value::Object(inner)) if i + 1 < path.len() => current = inner,
            Some(_) if i + 1 == path.len() => {
                return Err(FieldError::new(
                    &at,
                    "must be a string (it names the event)",
                ))
            }
            _ => break,
        }
    }
    Err(FieldError::new(&at, "is required (it names the event)"))
}

fn render(env: &Environment<'static>, payload: &Map<String, Value>) -> Result<String, FieldError> {
    let rendered = env.get_template(TEMPLATE).and_then(|t| {
        t.render(minijinja::context! { payload => minijinja::Value::from(minijinja::value::Serde(payload)) })
    });
    rendered
        .map(|s| s.trim().to_string())
        .map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => FieldError::new(
                &[],
                format!(
                    "the event name template ran out of fuel on this payload (more than \
                 {NAME_FUEL} steps), so no event name could be derived; the source's \
                 event_name template must be made simpler"
                ),
            ),
            _ => FieldError::new(
                &[],
                format!("the event name template could not be rendered: {e}"),
            ),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn payload(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn each_rule_derives_a_name() {
        let p =
            payload(json!({"event_type": "user.created", "kind": "signup", "data": {"t": "a.b"}}));
        let fixed = Namer::compile(&NameRule::Fixed("lead.x".into())).unwrap();
        assert_eq!(fixed.derive(&p).unwrap(), "lead.x");
        let field = Namer::compile(&NameRule::Field("event_type".into())).unwrap();
        assert_eq!(field.derive(&p).unwrap(), "user.created");
        let dotted = Namer::compile(&NameRule::Field("data.t".into())).unwrap();
        assert_eq!(dotted.derive(&p).unwrap(), "a.b");
        let template =
            Namer::compile(&NameRule::Template("lead.{{ payload.kind }}".into())).unwrap();
        assert_eq!(template.derive(&p).unwrap(), "lead.signup");
    }

    #[test]
    fn missing_or_bad_names_are_field_errors() {
        let field = Namer::compile(&NameRule::Field("event_type".into())).unwrap();
        let err = field.derive(&payload(json!({}))).unwrap_err();
        assert_eq!(err.pointer(), "/event_type");
        let err = field
            .derive(&payload(json!({"event_type": "a..b"})))
            .unwrap_err();
        assert_eq!(err.pointer(), "/event_type");
        let template =
            Namer::compile(&NameRule::Template("lead.{{ payload.kind }}".into())).unwrap();
        assert!(template.derive(&payload(json!({}))).is_err());
        assert!(Namer::compile(&NameRule::Template("{{ oops".into())).is_err());
        assert!(Namer::compile(&NameRule::Fixed("".into())).is_err());
    }

    #[test]
    fn a_runaway_template_is_refused_or_stopped_by_its_fuel() {
        let endless =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}a.b";
        let err = Namer::compile(&NameRule::Template(endless.into()))
            .err()
            .unwrap_or_default();
        assert!(err.contains("more work"), "{err}");
        // Only a payload makes this one loop: it must stop, not hang.
        let per_payload = Namer::compile(&NameRule::Template(
            "{% for i in payload.items %}{% for j in range(100000) %}{% endfor %}{% endfor %}a.b"
                .into(),
        ))
        .unwrap();
        let started = std::time::Instant::now();
        let err = per_payload
            .derive(&payload(json!({"items": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]})))
            .unwrap_err();
        assert!(err.message.contains("ran out of fuel"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(
            per_payload.derive(&payload(json!({"items": []}))).unwrap(),
            "a.b"
        );
    }
}
