//! Ordering keys: a minijinja template over the event (`{{
//! event.payload.customer_id }}`) on an endpoint or a subscription. Its
//! output is stored with each delivery, and deliveries to one endpoint with
//! the same key go one at a time, in publish order: storage parks a delivery
//! behind an earlier unfinished one with its key and makes it due when that
//! one succeeds or is dead. The dispatcher itself knows nothing of keys, so a
//! failing head holds only its own key while the others flow.
//!
//! A template that renders empty (the field is missing) or fails leaves the
//! delivery unordered: an event without a customer has nothing to be
//! ordered with.

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use sha2::{Digest, Sha256};

/// The longest template accepted.
pub const MAX_TEMPLATE: usize = 1024;
/// Longer keys are stored as their SHA-256 (hex): the index stays small and
/// equal keys stay equal.
const MAX_KEY: usize = 200;
/// How much work one rendering may do (minijinja fuel): it runs on the
/// publish path for every delivery to an ordered endpoint.
const KEY_FUEL: u64 = 20_000;

pub struct OrderingKey {
    env: Environment<'static>,
}

impl std::fmt::Debug for OrderingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderingKey")
    }
}

impl OrderingKey {
    /// Compiles a key template; the error says what is wrong.
    pub fn compile(template: &str) -> Result<OrderingKey, String> {
        if template.trim().is_empty() {
            return Err("must be a template such as `{{ event.payload.customer_id }}`".into());
        }
        if template.len() > MAX_TEMPLATE {
            return Err(format!("must be at most {MAX_TEMPLATE} bytes"));
        }
        let mut env = Environment::new();
        env.set_debug(true);
        env.set_fuel(Some(KEY_FUEL));
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.add_template_owned("key", template.to_string())
            .map_err(|e| format!("does not compile: {}", crate::flows::template::describe(&e)))?;
        let compiled = env
            .get_template("key")
            .map_err(|e| format!("does not compile: {}", crate::flows::template::describe(&e)))?;
        if let Some(unknown) = compiled
            .undeclared_variables(false)
            .into_iter()
            .find(|name| !matches!(name.as_str(), "event" | "range" | "dict" | "namespace"))
        {
            return Err(format!(
                "refers to `{unknown}`; an ordering key can read only `event` (name, \
                 tenant_id, source, time, payload, attributes)"
            ));
        }
        if !template.contains("{{") && !template.contains("{%") {
            return Err(
                "is the same for every event, so it would send them all one at a time; use \
                 a template such as `{{ event.payload.customer_id }}`"
                    .into(),
            );
        }
        if compiled
            .render(minijinja::Value::UNDEFINED)
            .is_err_and(|e| e.kind() == ErrorKind::OutOfFuel)
        {
            return Err("does more work than an ordering key may; make it simpler".into());
        }
        Ok(OrderingKey { env })
    }

    /// The key of the event whose context is `ctx` (see
    /// [`crate::filter::context`]); `None`: the delivery is unordered.
    pub fn render(&self, ctx: &minijinja::Value) -> Option<Box<str>> {
        let rendered = self
            .env
            .get_template("key")
            .and_then(|t| t.render(ctx))
            .map_err(|e| tracing::debug!(error = %e, "Ordering key could not be rendered; the delivery is unordered."))
            .ok()?;
        let key = rendered.trim();
        if key.is_empty() {
            None
        } else if key.len() > MAX_KEY {
            Some(hex::encode(Sha256::digest(key.as_bytes())).into_boxed_str())
        } else {
            Some(key.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NewEvent;

    fn ctx(payload: &str) -> minijinja::Value {
        crate::filter::context(&NewEvent {
            id: "e1".into(),
            name: "order.paid".into(),
            source: "test".into(),
            tenant_id: None,
            time_ms: 0,
            payload: payload.into(),
            attributes: Default::default(),
            body_hash: [0; 32],
            routes: Vec::new(),
            flow_starts: Vec::new(),
            cancels: Vec::new(),
        })
    }

    #[test]
    fn a_key_is_what_the_template_renders_and_missing_means_unordered() {
        let key = OrderingKey::compile("{{ event.payload.customer }}").expect("compiles");
        assert_eq!(
            key.render(&ctx(r#"{"customer":"c1"}"#)).as_deref(),
            Some("c1")
        );
        assert_eq!(key.render(&ctx(r#"{"customer":7}"#)).as_deref(), Some("7"));
        assert_eq!(key.render(&ctx(r#"{"other":1}"#)), None);
        let long = format!(r#"{{"customer":"{}"}}"#, "x".repeat(500));
        let hashed = key.render(&ctx(&long)).expect("a key");
        assert_eq!(hashed.len(), 64);
        assert_eq!(key.render(&ctx(&long)), Some(hashed));
    }

    #[test]
    fn mistakes_are_refused() {
        for (template, says) in [
            ("", "must be a template"),
            ("{{ event.payload.x ", "does not compile"),
            ("{{ secret }}", "refers to `secret`"),
            ("customer", "same for every event"),
        ] {
            let error = OrderingKey::compile(template).expect_err(template);
            assert!(error.contains(says), "{template}: {error}");
        }
    }
}
