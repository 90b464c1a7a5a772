//! Subscription filters: a minijinja expression over the event, in the same
//! language as a flow step's `when` (`event.payload.amount > 100 and
//! event.payload.currency == "EUR"`). A filter is compiled when its
//! subscription is written or loaded, so a mistake is refused with its
//! position, and evaluated only for events whose name and tenant already
//! matched: subscriptions without one cost nothing more.

use minijinja::{Environment, ErrorKind, UndefinedBehavior};

use crate::{model::NewEvent, timestamp::format_rfc3339_millis};

/// The longest filter accepted.
pub const MAX_FILTER: usize = 4096;

/// How much work one evaluation may do (minijinja fuel). Filters run on the
/// publish path, so the bound is tighter than a flow template's.
const FILTER_FUEL: u64 = 20_000;

/// The condition is wrapped in `{% if (` … `) %}`; positions in errors are
/// given in the filter as written.
const PREFIX: &str = "{% if (";

pub struct Filter {
    env: Environment<'static>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Filter")
    }
}

impl Filter {
    /// Compiles `expr`; the error says what is wrong and where (1-based
    /// character position in `expr`).
    pub fn compile(expr: &str) -> Result<Filter, String> {
        if expr.trim().is_empty() {
            return Err("must be an expression such as `event.payload.amount > 100`".into());
        }
        if expr.len() > MAX_FILTER {
            return Err(format!("must be at most {MAX_FILTER} bytes"));
        }
        if expr.contains("%}") || expr.contains("}}") || expr.contains("{%") || expr.contains("{{")
        {
            return Err(
                "must be an expression such as `event.payload.amount > 100`, without {{ }} or {% %}"
                    .into(),
            );
        }
        let mut env = Environment::new();
        // Debug mode keeps the span of a syntax error, for its position.
        env.set_debug(true);
        env.set_fuel(Some(FILTER_FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_template_owned("filter", format!("{PREFIX}{expr}) %}}true{{% endif %}}"))
            .map_err(|e| compile_error(expr, &e))?;
        let template = env
            .get_template("filter")
            .map_err(|e| compile_error(expr, &e))?;
        if let Some(unknown) = template
            .undeclared_variables(false)
            .into_iter()
            .find(|name| !matches!(name.as_str(), "event" | "range" | "dict" | "namespace"))
        {
            return Err(format!(
                "refers to `{unknown}`; a filter can read only `event` (name, tenant_id, \
                 source, time, payload, attributes)"
            ));
        }
        if template
            .render(minijinja::Value::UNDEFINED)
            .is_err_and(|e| e.kind() == ErrorKind::OutOfFuel)
        {
            return Err("does more work than a filter may; make it simpler".into());
        }
        Ok(Filter { env })
    }

    /// Whether the event is taken; `Err` says why it could not be decided
    /// (a type error, out of fuel), which counts as not taken.
    pub fn accepts(&self, ctx: &minijinja::Value) -> Result<bool, String> {
        let rendered = self
            .env
            .get_template("filter")
            .and_then(|t| t.render(ctx))
            .map_err(|e| match e.kind() {
                ErrorKind::OutOfFuel => "the filter ran out of fuel".to_string(),
                _ => crate::flows::template::describe(&e),
            })?;
        Ok(rendered == "true")
    }
}

fn compile_error(expr: &str, e: &minijinja::Error) -> String {
    let detail = e
        .detail()
        .map_or_else(|| e.kind().to_string(), str::to_string);
    match e.range() {
        Some(range) if range.start >= PREFIX.len() => {
            let at = (range.start - PREFIX.len()).min(expr.len());
            let column = expr.get(..at).map_or(at, |before| before.chars().count()) + 1;
            format!("does not compile at character {column}: {detail}")
        }
        _ => format!("does not compile: {detail}"),
    }
}

/// What a filter sees: `event` with `id`, `name`, `tenant_id`, `source`,
/// `time` (RFC 3339), `time_ms`, `payload` and `attributes`. The payload is
/// read straight into template values, without a `serde_json::Value` on the
/// way: this is the per-event cost of filtering.
pub fn context(event: &NewEvent) -> minijinja::Value {
    let payload = serde_json::from_str::<minijinja::Value>(&event.payload)
        .unwrap_or(minijinja::Value::UNDEFINED);
    minijinja::context! {
        event => minijinja::context! {
            id => &event.id,
            name => &event.name,
            source => &event.source,
            tenant_id => &event.tenant_id,
            time_ms => event.time_ms,
            time => format_rfc3339_millis(event.time_ms),
            payload => payload,
            attributes => &event.attributes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: &str) -> NewEvent {
        NewEvent {
            id: "e1".into(),
            name: "order.paid".into(),
            source: "shop".into(),
            tenant_id: Some("acme".into()),
            time_ms: 1_700_000_000_000,
            payload: payload.into(),
            attributes: Default::default(),
            body_hash: [0; 32],
            routes: vec![],
            flow_starts: vec![],
            cancels: vec![],
        }
    }

    #[test]
    fn a_filter_takes_what_it_is_true_for() {
        let filter =
            Filter::compile(r#"event.payload.amount > 100 and event.payload.currency == "EUR""#)
                .expect("compiles");
        let take = |p: &str| filter.accepts(&context(&event(p)));
        assert_eq!(take(r#"{"amount": 150, "currency": "EUR"}"#), Ok(true));
        assert_eq!(take(r#"{"amount": 50, "currency": "EUR"}"#), Ok(false));
        assert_eq!(take(r#"{"amount": 150, "currency": "USD"}"#), Ok(false));
        let by_tenant = Filter::compile(
            r#"event.tenant_id == "acme" and event.name is startingwith("order.")"#,
        )
        .expect("compiles");
        assert_eq!(by_tenant.accepts(&context(&event("{}"))), Ok(true));
    }

    #[test]
    fn mistakes_are_refused_with_their_position() {
        let err = Filter::compile("event.payload.amount >")
            .err()
            .unwrap_or_default();
        assert!(err.contains("character"), "{err}");
        let err = Filter::compile("payload.amount > 1")
            .err()
            .unwrap_or_default();
        assert!(err.contains("`payload`"), "{err}");
        assert!(Filter::compile("{{ event.name }}").is_err());
        assert!(Filter::compile("  ").is_err());
    }
}
