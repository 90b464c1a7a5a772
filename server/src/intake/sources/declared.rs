//! Applying the config file's `sources:`: each is validated like an Admin
//! API write and upserted by id, with the token the file gives. Declaring a
//! token in the file makes the file its owner: a changed token replaces the
//! stored one at once.

use anyhow::{bail, Context};

use super::{registry, schema, token, Policy, Source, SourceStatus};
use crate::{config::sources::SourceConfig, store::Store};

pub async fn apply(declared: &[SourceConfig], store: &Store) -> anyhow::Result<()> {
    for (i, config) in declared.iter().enumerate() {
        let source =
            from_config(config).with_context(|| format!("sources[{i}] ({})", config.id))?;
        let errors = registry::validate(&source);
        if !errors.is_empty() {
            bail!(
                "sources[{i}] ({}): {}",
                config.id,
                crate::admin::validate::summary(&errors)
            );
        }
        store
            .upsert_source(&source)
            .await
            .with_context(|| format!("could not store sources[{i}] ({})", config.id))?;
    }
    Ok(())
}

fn from_config(c: &SourceConfig) -> anyhow::Result<Source> {
    let token = match (&c.token, &c.token_env) {
        (Some(token), None) => token.clone(),
        (None, Some(var)) => std::env::var(var)
            .with_context(|| format!("token_env names `{var}`, which is not set"))?,
        _ => bail!("give exactly one of `token` and `token_env`"),
    };
    if let Err(problem) = token::check(&token) {
        bail!("token {problem}");
    }
    let Some(status) = SourceStatus::parse(&c.status) else {
        bail!("status must be active, inactive or suspended");
    };
    let schema = match (&c.schema, c.required.is_empty()) {
        (Some(_), false) => bail!("give either `schema` or `required`, not both"),
        (Some(schema), true) => Some(schema.clone()),
        (None, false) => Some(schema::from_required(&c.required)),
        (None, true) => None,
    };
    Ok(Source {
        id: c.id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        status,
        tenant_id: c.tenant_id.clone(),
        policy: Policy {
            event_name: c.event_name.clone(),
            schema,
            signature: c.signature.clone(),
            allowed_cidrs: c.allowed_cidrs.clone(),
            rate_limit: c.rate_limit,
            allowed_origins: c.allowed_origins.clone(),
        },
        token_hash: token::hash(&token),
        previous_token: None,
        version: 0,
        created_ms: 0,
        updated_ms: 0,
        deleted_ms: None,
    })
}
