//! Rules for endpoints and subscriptions, applied the same way to the Admin
//! API and to what the config file declares. Every problem is reported, each
//! naming its field.

use std::{sync::Arc, time::Duration};

use crate::{
    catalog::Catalog,
    delivery::{endpoint_tls, limits, request::Transform, signing::SigningSecret},
    flows::{catalog::FlowSet, compiled::SubscriptionInputs, template::Secrets},
    intake::event::FieldError,
    model::{Endpoint, EndpointAuth, EndpointOptions, Subscription},
    routing::Pattern,
};

const MAX_DESCRIPTION: usize = 4096;
const MAX_PATTERNS: usize = 64;

pub fn endpoint(e: &Endpoint) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !is_identifier(&e.id, 64, b"_-") {
        errors.push(FieldError::new(
            &["id"],
            "must be 1-64 characters of [A-Za-z0-9_-]",
        ));
    }
    match reqwest::Url::parse(&e.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(_) => errors.push(FieldError::new(
            &["url"],
            "must be an http:// or https:// URL with a host",
        )),
        Err(err) => errors.push(FieldError::new(
            &["url"],
            format!("is not a valid URL: {err}"),
        )),
    }
    if !e.secret.is_empty() {
        if let Err(err) = SigningSecret::parse(&e.secret) {
            errors.push(FieldError::new(&["secret"], err.to_string()));
        }
    }
    for (name, value) in &e.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push(FieldError::new(
                &["headers", name],
                "is not a valid header name",
            ));
        } else if reqwest::header::HeaderValue::from_str(value).is_err() {
            errors.push(FieldError::new(
                &["headers", name],
                "is not a valid header value",
            ));
        } else if is_reserved_header(name) {
            errors.push(FieldError::new(
                &["headers", name],
                "is set by Hookyard on every request and cannot be overridden",
            ));
        }
    }
    if let Some(Err(message)) = e.timeout.map(limits::check_timeout) {
        errors.push(FieldError::new(&["timeout_ms"], message));
    }
    for problem in limits::check_retry_schedule(e.retry_schedule.as_deref().unwrap_or_default()) {
        let field = match problem.index {
            Some(i) => format!("retry_schedule_ms[{i}]"),
            None => "retry_schedule_ms".to_string(),
        };
        errors.push(FieldError::new(&[&field], problem.message));
    }
    if let Some(Err(message)) = e.max_in_flight.map(limits::check_max_in_flight) {
        errors.push(FieldError::new(&["max_in_flight"], message));
    }
    if e.description.len() > MAX_DESCRIPTION {
        errors.push(FieldError::new(
            &["description"],
            format!("must be at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    check_options(&e.options, &mut errors);
    errors
}

const MAX_TRANSFORM: usize = 64 * 1024;

fn check_options(o: &EndpointOptions, errors: &mut Vec<FieldError>) {
    if let Some(transform) = &o.transform {
        if transform.len() > MAX_TRANSFORM {
            errors.push(FieldError::new(
                &["transform"],
                format!("must be at most {MAX_TRANSFORM} bytes"),
            ));
        } else if let Err(message) = Transform::compile(transform) {
            errors.push(FieldError::new(&["transform"], message));
        }
    }
    if let Some(key) = &o.ordering_key {
        if let Err(message) = crate::ordering::OrderingKey::compile(key) {
            errors.push(FieldError::new(&["ordering_key"], message));
        }
    }
    if let Some(limit) = o.rate_limit {
        if limit.per_second == 0 {
            errors.push(FieldError::new(
                &["rate_limit", "per_second"],
                "must be at least 1",
            ));
        }
        if limit.per_second > 100_000 || limit.burst > 100_000 {
            errors.push(FieldError::new(
                &["rate_limit"],
                "per_second and burst must be at most 100000",
            ));
        }
    }
    if let Some(after) = o.disable_after_ms {
        if !after.is_zero() && after < Duration::from_secs(1) {
            errors.push(FieldError::new(
                &["disable_after_ms"],
                "must be 0 (never) or at least one second",
            ));
        }
    }
    if let Some(EndpointAuth::Basic { username, password }) = &o.auth {
        if username.is_empty() || username.contains(':') {
            errors.push(FieldError::new(
                &["basic_auth", "username"],
                "must be non-empty and without `:`",
            ));
        }
        if password.is_empty() {
            errors.push(FieldError::new(&["basic_auth", "password"], "is required"));
        }
    }
    if let Some(EndpointAuth::Oauth2 {
        token_url,
        client_id,
        client_secret,
        scope,
        audience,
    }) = &o.auth
    {
        check_oauth2(token_url, client_id, client_secret, scope, audience, errors);
    }
    if let Some(tls) = &o.tls {
        // Read now, so a path the daemon cannot use is refused before it is
        // stored rather than found by the first delivery.
        if let Err(problems) = endpoint_tls::load(tls) {
            for problem in problems {
                errors.push(FieldError::new(&["tls", problem.field], problem.message));
            }
        }
    }
}

const MAX_OAUTH2_FIELD: usize = 1024;

fn check_oauth2(
    token_url: &str,
    client_id: &str,
    client_secret: &str,
    scope: &Option<String>,
    audience: &Option<String>,
    errors: &mut Vec<FieldError>,
) {
    match reqwest::Url::parse(token_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => errors.push(FieldError::new(
            &["oauth2", "token_url"],
            "must be an http:// or https:// URL with a host",
        )),
    }
    let fields = [
        ("client_id", Some(client_id), true),
        ("client_secret", Some(client_secret), true),
        ("scope", scope.as_deref(), false),
        ("audience", audience.as_deref(), false),
    ];
    for (field, value, required) in fields {
        match value {
            Some("") | None if required => {
                errors.push(FieldError::new(&["oauth2", field], "is required"))
            }
            Some(v) if v.len() > MAX_OAUTH2_FIELD || v.chars().any(char::is_control) => errors
                .push(FieldError::new(
                    &["oauth2", field],
                    format!("must be at most {MAX_OAUTH2_FIELD} bytes, without control characters"),
                )),
            _ => {}
        }
    }
}

fn is_reserved_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("webhook-")
        || matches!(name.as_str(), "content-type" | "content-length" | "host")
}

/// Checks a subscription; `catalog` and `flows` tell which endpoints and
/// flows exist.
pub fn subscription(
    s: &Subscription,
    catalog: &Catalog,
    flows: &FlowSet,
    secrets: &Arc<Secrets>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !is_identifier(&s.name, 128, b"_.-") {
        errors.push(FieldError::new(
            &["name"],
            "must be 1-128 characters of [A-Za-z0-9_.-]",
        ));
    }
    if s.patterns.is_empty() {
        errors.push(FieldError::new(
            &["patterns"],
            "at least one pattern is required",
        ));
    }
    check_patterns("patterns", &s.patterns, &mut errors);
    check_patterns("exclude", &s.exclude, &mut errors);
    if let Some(filter) = &s.filter {
        if let Err(message) = crate::filter::Filter::compile(filter) {
            errors.push(FieldError::new(&["filter"], message));
        }
    }
    if let Some(key) = &s.ordering_key {
        if let Err(message) = crate::ordering::OrderingKey::compile(key) {
            errors.push(FieldError::new(&["ordering_key"], message));
        }
    }
    if let Some(tenant) = &s.tenant_id {
        if !is_identifier(tenant, 128, b"._:~-") {
            errors.push(FieldError::new(
                &["tenant_id"],
                "must be 1-128 characters of [A-Za-z0-9._:~-]",
            ));
        }
    }
    match s.target.split_once(':') {
        Some(("endpoint", id)) if catalog.endpoint(id).is_some() => {}
        Some(("endpoint", id)) => errors.push(FieldError::new(
            &["target"],
            format!("endpoint `{id}` does not exist"),
        )),
        Some(("flow", id)) => check_flow_target(s, id, flows, secrets, &mut errors),
        Some(("consumer", _)) => errors.push(FieldError::new(
            &["target"],
            "consumer targets are not supported yet; use endpoint:<id> or flow:<id>",
        )),
        _ => errors.push(FieldError::new(
            &["target"],
            "must be endpoint:<id> or flow:<id>",
        )),
    }
    if s.description.len() > MAX_DESCRIPTION {
        errors.push(FieldError::new(
            &["description"],
            format!("must be at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    if s.flow_id().is_none() && !s.inputs.is_empty() {
        errors.push(FieldError::new(
            &["inputs"],
            "only a subscription to a flow takes inputs",
        ));
    }
    errors
}

/// The flow must exist, and the inputs must be its inputs and compile.
fn check_flow_target(
    s: &Subscription,
    id: &str,
    flows: &FlowSet,
    secrets: &Arc<Secrets>,
    errors: &mut Vec<FieldError>,
) {
    let Some(flow) = flows.get(id) else {
        errors.push(FieldError::new(
            &["target"],
            format!("flow `{id}` does not exist"),
        ));
        return;
    };
    for name in s.inputs.keys() {
        if !flow.def.inputs.contains_key(name) {
            errors.push(FieldError::new(
                &["inputs", name],
                format!("flow `{id}` has no input `{name}`"),
            ));
        }
    }
    for (name, input) in &flow.def.inputs {
        if input.required && input.default.is_none() && !s.inputs.contains_key(name) {
            errors.push(FieldError::new(
                &["inputs", name],
                format!("flow `{id}` requires this input; give a template over the event"),
            ));
        }
    }
    if let Err(problems) = SubscriptionInputs::compile(&s.inputs, secrets.clone()) {
        for p in problems {
            let name = p.field.trim_start_matches("inputs.").to_string();
            errors.push(FieldError::new(&["inputs", &name], p.message));
        }
    }
}

fn check_patterns(field: &str, patterns: &[String], errors: &mut Vec<FieldError>) {
    if patterns.len() > MAX_PATTERNS {
        errors.push(FieldError::new(
            &[field],
            format!("at most {MAX_PATTERNS} patterns"),
        ));
        return;
    }
    for (i, pattern) in patterns.iter().enumerate() {
        if let Err(err) = Pattern::parse(pattern) {
            errors.push(FieldError::new(
                &[&format!("{field}[{i}]")],
                format!("`{pattern}` {err}"),
            ));
        }
    }
}

fn is_identifier(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// `field: message; field: message`, for a one-line error.
pub fn summary(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.dotted(""), e.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An endpoint's tenant, when it has one, is an identifier like an event's.
pub fn endpoint_tenant(e: &Endpoint) -> Vec<FieldError> {
    match &e.tenant_id {
        Some(tenant) if !is_identifier(tenant, 128, b"._:~-") => vec![FieldError::new(
            &["tenant_id"],
            "must be 1-128 characters of [A-Za-z0-9._:~-]",
        )],
        _ => Vec::new(),
    }
}

/// A subscription may name its target's tenant or none, not another: a
/// tenant's endpoint or flow takes only that tenant's events, so the
/// subscription would be a promise routing does not keep.
pub fn subscription_tenant(
    s: &Subscription,
    catalog: &Catalog,
    flows: &FlowSet,
) -> Vec<FieldError> {
    let Some(own) = &s.tenant_id else {
        return Vec::new();
    };
    let (kind, id, theirs) = if let Some(id) = s.endpoint_id() {
        let tenant = catalog.endpoint(id).and_then(|e| e.tenant_id.clone());
        ("endpoint", id, tenant)
    } else if let Some(id) = s.flow_id() {
        (
            "flow",
            id,
            flows.get(id).and_then(|f| f.def.tenant_id.clone()),
        )
    } else {
        return Vec::new();
    };
    match theirs {
        Some(theirs) if theirs != *own => vec![FieldError::new(
            &["tenant_id"],
            format!(
                "is `{own}`, but {kind} `{id}` belongs to tenant `{theirs}` and takes only \
                 its events; leave tenant_id empty or set it to `{theirs}`"
            ),
        )],
        _ => Vec::new(),
    }
}

/// Why `target` (`endpoint:<id>` or `flow:<id>`) cannot belong to `tenant`:
/// the subscriptions to it that name another tenant, or `None` when there
/// are none.
pub fn target_tenant_conflicts<'a>(
    target: &str,
    tenant: Option<&str>,
    subscriptions: impl IntoIterator<Item = &'a Subscription>,
) -> Option<String> {
    let tenant = tenant?;
    let mut names: Vec<String> = subscriptions
        .into_iter()
        .filter(|s| s.target == target)
        .filter_map(|s| {
            let own = s.tenant_id.as_deref()?;
            (own != tenant).then(|| format!("subscription `{}` (tenant `{own}`)", s.name))
        })
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    Some(format!(
        "{target} cannot belong to tenant `{tenant}`: {} targets it with another tenant; \
         change the subscription's tenant_id or delete it first",
        names.join(", ")
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tenant_tests {
    use super::*;
    use crate::{flows::definition::parse_yaml, model::EndpointState};

    fn endpoint(id: &str, tenant: Option<&str>) -> Endpoint {
        Endpoint {
            id: id.into(),
            url: "http://127.0.0.1:1/".into(),
            tenant_id: tenant.map(String::from),
            secret: String::new(),
            headers: Default::default(),
            timeout: None,
            retry_schedule: None,
            max_in_flight: None,
            state: EndpointState::Enabled,
            description: String::new(),
            options: Default::default(),
            previous_secret: None,
            disabled_reason: None,
            failing_since_ms: None,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn subscription(name: &str, tenant: Option<&str>, target: &str) -> Subscription {
        Subscription {
            id: name.into(),
            name: name.into(),
            patterns: vec!["lead.*".into()],
            exclude: vec![],
            tenant_id: tenant.map(String::from),
            target: target.into(),
            enabled: true,
            description: String::new(),
            inputs: Default::default(),
            filter: None,
            ordering_key: None,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn flows() -> FlowSet {
        let def = parse_yaml("id: welcome\ntenant_id: acme\nsteps: [{id: a, log: hi}]\n").unwrap();
        let flow = crate::flows::compiled::compile(def, String::new(), 1, Arc::default()).unwrap();
        FlowSet::build(vec![(Arc::new(flow), None)])
    }

    #[test]
    fn a_subscription_may_name_its_targets_tenant_or_none_but_not_another() {
        let catalog = Catalog::build(
            vec![endpoint("acme-crm", Some("acme")), endpoint("shared", None)],
            vec![],
            &Arc::default(),
        );
        let flows = flows();
        let check = |tenant, target| {
            subscription_tenant(&subscription("s", tenant, target), &catalog, &flows)
        };
        assert!(check(None, "endpoint:acme-crm").is_empty());
        assert!(check(Some("acme"), "endpoint:acme-crm").is_empty());
        assert!(check(Some("globex"), "endpoint:shared").is_empty());
        assert!(check(Some("acme"), "flow:welcome").is_empty());
        for target in ["endpoint:acme-crm", "flow:welcome"] {
            let errors = check(Some("globex"), target);
            assert_eq!(errors.len(), 1, "{target}");
            assert_eq!(errors[0].pointer(), "/tenant_id");
            assert!(errors[0].message.contains("acme"), "{}", errors[0].message);
        }
    }

    #[test]
    fn a_target_cannot_move_to_a_tenant_its_subscriptions_contradict() {
        let subs = [
            subscription("any", None, "endpoint:crm"),
            subscription("acme-leads", Some("acme"), "endpoint:crm"),
            subscription("elsewhere", Some("globex"), "endpoint:other"),
        ];
        assert_eq!(target_tenant_conflicts("endpoint:crm", None, &subs), None);
        assert_eq!(
            target_tenant_conflicts("endpoint:crm", Some("acme"), &subs),
            None
        );
        let conflict = target_tenant_conflicts("endpoint:crm", Some("globex"), &subs).unwrap();
        assert!(conflict.contains("subscription `acme-leads`"), "{conflict}");
        assert!(!conflict.contains("elsewhere"), "{conflict}");
    }

    #[test]
    fn an_endpoints_tenant_is_an_identifier() {
        assert!(endpoint_tenant(&endpoint("e", Some("acme:eu-1"))).is_empty());
        let errors = endpoint_tenant(&endpoint("e", Some("a b")));
        assert_eq!(errors[0].pointer(), "/tenant_id");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::EndpointState;

    fn endpoint() -> Endpoint {
        Endpoint {
            id: "crm".into(),
            url: "https://crm.example.com/hook".into(),
            tenant_id: None,
            secret: String::new(),
            headers: Default::default(),
            timeout: None,
            retry_schedule: None,
            max_in_flight: None,
            state: EndpointState::Enabled,
            description: String::new(),
            options: Default::default(),
            previous_secret: None,
            disabled_reason: None,
            failing_since_ms: None,
            version: 0,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn fields(e: &Endpoint) -> Vec<String> {
        super::endpoint(e).iter().map(|f| f.dotted("")).collect()
    }

    #[test]
    fn extreme_delivery_settings_are_named() {
        assert!(fields(&endpoint()).is_empty());
        let mut e = endpoint();
        e.timeout = Some(Duration::ZERO);
        e.retry_schedule = Some(vec![Duration::ZERO, Duration::from_millis(u64::MAX)]);
        e.max_in_flight = Some(1_000_000);
        assert_eq!(
            fields(&e),
            ["timeout_ms", "retry_schedule_ms[1]", "max_in_flight"]
        );
        e.timeout = Some(Duration::from_millis(u64::from(u32::MAX)));
        e.retry_schedule = Some(vec![Duration::ZERO; 21]);
        e.max_in_flight = Some(1024);
        assert_eq!(fields(&e), ["timeout_ms", "retry_schedule_ms"]);
    }
}
