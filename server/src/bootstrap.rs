//! Applying what the config file declares: endpoints and subscriptions are
//! upserted on start (endpoints by id, subscriptions by name), through the
//! same validation as the Admin API; so are sources, flows and event types
//! (by id).

use anyhow::{bail, Context};

use crate::{
    admin::validate,
    catalog::CatalogHandle,
    config::{Config, EndpointConfig, SubscriptionConfig},
    delivery::signing::SigningSecret,
    flows::{definition::parse_yaml, FlowCatalog},
    intake::event::FieldError,
    model::{Endpoint, EndpointOptions, EndpointState, EventType, Subscription},
    store::{self, Store},
};

pub async fn apply_declared(
    config: &Config,
    store: &Store,
    catalog: &CatalogHandle,
    flows: &FlowCatalog,
) -> anyhow::Result<()> {
    apply_flows(config, store, flows, catalog).await?;
    for (i, declared) in config.endpoints.iter().enumerate() {
        let mut endpoint = endpoint_from_config(declared);
        let mut errors: Vec<_> = validate::endpoint(&endpoint)
            .into_iter()
            .map(config_key)
            .collect();
        errors.extend(validate::endpoint_tenant(&endpoint));
        if !errors.is_empty() {
            bail!(
                "endpoints[{i}] ({}): {}",
                declared.id,
                validate::summary(&errors)
            );
        }
        check_stored_subscriptions(
            config,
            catalog,
            &format!("endpoint:{}", endpoint.id),
            endpoint.tenant_id.as_deref(),
        )
        .with_context(|| format!("endpoints[{i}].tenant_id ({})", declared.id))?;
        if endpoint.secret.is_empty() {
            endpoint.secret = match store.get_endpoint(&endpoint.id).await {
                Ok(existing) => existing.secret,
                Err(store::Error::NotFound { .. }) => SigningSecret::generate().0,
                Err(e) => return Err(e.into()),
            };
        }
        store
            .upsert_endpoint(&endpoint)
            .await
            .with_context(|| format!("could not store endpoints[{i}] ({})", declared.id))?;
    }
    catalog.reload().await?;
    for (i, declared) in config.subscriptions.iter().enumerate() {
        let sub = subscription_from_config(declared);
        let mut errors =
            validate::subscription(&sub, &catalog.get(), &flows.get(), flows.secrets());
        errors.extend(validate::subscription_tenant(
            &sub,
            &catalog.get(),
            &flows.get(),
        ));
        if !errors.is_empty() {
            bail!(
                "subscriptions[{i}] ({}): {}",
                declared.name,
                validate::summary(&errors)
            );
        }
        store
            .upsert_subscription(&sub)
            .await
            .with_context(|| format!("could not store subscriptions[{i}] ({})", declared.name))?;
    }
    catalog.reload().await?;
    crate::intake::sources::declared::apply(&config.sources, store).await?;
    apply_event_types(config, store).await?;
    catalog.reload().await?;
    Ok(())
}

/// Event types are upserted by id, through the Admin API's checks; one that
/// fails them stops the start (or the reload) before it is stored.
async fn apply_event_types(config: &Config, store: &Store) -> anyhow::Result<()> {
    let declared: Vec<EventType> = config
        .event_types
        .iter()
        .map(|t| EventType {
            id: t.id.clone(),
            pattern: t.pattern.clone(),
            description: t.description.clone(),
            schema: t.schema.to_string(),
            version: 0,
            created_ms: 0,
            updated_ms: 0,
        })
        .collect();
    for (i, event_type) in declared.iter().enumerate() {
        let errors = crate::event_types::validate(event_type);
        if !errors.is_empty() {
            bail!(
                "event_types[{i}] ({}): {}",
                event_type.id,
                crate::event_types::summary(&errors)
            );
        }
    }
    for (i, event_type) in declared.iter().enumerate() {
        store
            .upsert_event_type(event_type)
            .await
            .with_context(|| format!("could not store event_types[{i}] ({})", event_type.id))?;
    }
    Ok(())
}

/// Flows from files are stored as written; inline ones as YAML written from
/// the parsed definition, so an unchanged definition keeps its version
/// across restarts.
async fn apply_flows(
    config: &Config,
    store: &Store,
    flows: &FlowCatalog,
    catalog: &CatalogHandle,
) -> anyhow::Result<()> {
    for (i, def) in config.flows.iter().enumerate() {
        check_stored_subscriptions(
            config,
            catalog,
            &format!("flow:{}", def.id),
            def.tenant_id.as_deref(),
        )
        .with_context(|| format!("flow `{}`: tenant_id", def.id))?;
        let yaml = match config
            .flow_file_texts
            .iter()
            .find(|(_, text)| parse_yaml(text).is_ok_and(|d| d.id == def.id))
        {
            Some((_, text)) => text.clone(),
            None => serde_yaml::to_string(def)
                .with_context(|| format!("flows[{i}] ({}) could not be written as YAML", def.id))?,
        };
        if let Err(errors) = flows.compile(&yaml, 0) {
            bail!(
                "flow `{}`: {}",
                def.id,
                crate::flows::catalog::summary(&errors)
            );
        }
        store
            .save_flow(&def.id, &yaml, None, false)
            .await
            .with_context(|| format!("could not store flow `{}`", def.id))?;
        if let Some(key) = def.webhook.as_ref().and_then(|w| w.key.as_deref()) {
            if key.len() < 16 {
                bail!(
                    "flow `{}`: webhook.key must be at least 16 characters",
                    def.id
                );
            }
            store
                .set_flow_webhook_key(&def.id, Some(&crate::flows::webhook_key_hash(key)))
                .await?;
        }
    }
    flows.reload().await?;
    Ok(())
}

/// The Admin API's field names (`timeout_ms`) as the config file's keys
/// (`timeout`), so an error names what the operator wrote.
fn config_key(mut error: FieldError) -> FieldError {
    if let Some(first) = error.path.first_mut() {
        if let Some(rest) = first.strip_prefix("retry_schedule_ms") {
            *first = format!("retry_schedule{rest}");
        } else if first == "timeout_ms" {
            *first = "timeout".into();
        } else if first == "basic_auth" {
            *first = "auth.basic".into();
        } else if first == "oauth2" {
            *first = "auth.oauth2".into();
        }
    }
    error
}

/// A declared endpoint or flow may not take a tenant that stored
/// subscriptions to it contradict. Subscriptions the config declares are
/// left out: they are checked (with the config's view) by `Config::load`.
fn check_stored_subscriptions(
    config: &Config,
    catalog: &CatalogHandle,
    target: &str,
    tenant: Option<&str>,
) -> anyhow::Result<()> {
    let stored = catalog.get();
    let undeclared = stored
        .subscriptions()
        .filter(|s| !config.subscriptions.iter().any(|d| d.name == s.name))
        .map(|s| &**s);
    match validate::target_tenant_conflicts(target, tenant, undeclared) {
        Some(conflict) => bail!(conflict),
        None => Ok(()),
    }
}

fn endpoint_from_config(c: &EndpointConfig) -> Endpoint {
    Endpoint {
        id: c.id.clone(),
        url: c.url.clone(),
        tenant_id: c.tenant_id.clone(),
        secret: c.secret.clone().unwrap_or_default(),
        headers: c.headers.clone(),
        timeout: c.timeout,
        retry_schedule: c.retry_schedule.clone(),
        max_in_flight: c.max_in_flight,
        state: if c.enabled {
            EndpointState::Enabled
        } else {
            EndpointState::Disabled
        },
        description: c.description.clone(),
        options: EndpointOptions {
            format: c.format,
            transform: c.transform.clone(),
            rate_limit: c.rate_limit,
            disable_after_ms: c.disable_after,
            auth: c.auth.clone(),
            ordering_key: c.ordering_key.clone(),
            tls: c.tls.clone().filter(|t| !t.is_empty()),
        },
        previous_secret: None,
        disabled_reason: None,
        failing_since_ms: None,
        version: 0,
        created_ms: 0,
        updated_ms: 0,
    }
}

fn subscription_from_config(c: &SubscriptionConfig) -> Subscription {
    Subscription {
        id: uuid::Uuid::now_v7().to_string(),
        name: c.name.clone(),
        patterns: c.patterns.clone(),
        exclude: c.exclude.clone(),
        tenant_id: c.tenant_id.clone(),
        target: c.target.clone(),
        enabled: c.enabled,
        description: c.description.clone(),
        inputs: c.inputs.clone(),
        filter: c.filter.clone(),
        ordering_key: c.ordering_key.clone(),
        version: 0,
        created_ms: 0,
        updated_ms: 0,
    }
}
