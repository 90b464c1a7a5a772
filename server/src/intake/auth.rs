//! Publish API keys. Keys are kept only as SHA-256 digests: a lookup hashes
//! what the caller presented and compares digests in constant time, so neither
//! the key nor its prefix leaks through timing, and a memory dump holds no key.
//!
//! A key may be bound to a tenant (`api_keys[].tenant_id`): its events carry
//! that tenant, it may not name another, and it starts only that tenant's
//! flows. The doors ask the `Principal` a key resolves to.

use std::{collections::HashMap, sync::Arc};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    rate::{self, Limiter},
    ApiError,
};
use crate::{config::ApiKeyConfig, model::NewEvent};

/// Who a valid key speaks for: its name (the default `source` of its
/// events) and the tenant it is bound to, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: Arc<str>,
    pub tenant: Option<Arc<str>>,
}

impl Principal {
    pub fn new(name: &str, tenant: Option<&str>) -> Principal {
        Principal {
            name: Arc::from(name),
            tenant: tenant.map(Arc::from),
        }
    }

    /// The tenant of an event this key publishes: the one it names, else
    /// the key's. Naming another is caught by `authorize`.
    pub fn tenant_for(&self, named: Option<String>) -> Option<String> {
        named.or_else(|| self.tenant.as_deref().map(String::from))
    }

    /// Refuses the whole request when one of its events names a tenant
    /// other than the key's: it is a question of permission, not of a field.
    pub fn authorize(&self, events: &[NewEvent]) -> Result<(), ApiError> {
        let Some(own) = self.tenant.as_deref() else {
            return Ok(());
        };
        match events.iter().find(|e| e.tenant_id.as_deref() != Some(own)) {
            None => Ok(()),
            Some(event) => Err(ApiError::Forbidden(format!(
                "this API key publishes for tenant `{own}` only; event `{}` names tenant `{}`",
                event.id,
                event.tenant_id.as_deref().unwrap_or("")
            ))),
        }
    }

    /// Whether this key may start runs of a flow of `flow_tenant`: a key
    /// bound to a tenant starts only that tenant's flows.
    pub fn may_start(&self, flow_tenant: Option<&str>) -> bool {
        self.tenant.is_none() || self.tenant.as_deref() == flow_tenant
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <api key>`")]
    Missing,
    #[error("the authorization header must be `Bearer <api key>`")]
    Malformed,
    #[error("the API key is not valid")]
    Invalid,
}

pub struct ApiKeys {
    keys: Vec<([u8; 32], Principal)>,
    /// By key name: keys that share a name (an old and a new one while a key
    /// is rotated) share one budget.
    limits: HashMap<Arc<str>, Limiter>,
}

impl ApiKeys {
    pub fn new(config: &[ApiKeyConfig]) -> ApiKeys {
        let mut limits = HashMap::new();
        for key in config {
            if let Some(limit) = key.rate_limit {
                limits
                    .entry(Arc::from(key.name.as_str()))
                    .or_insert_with(|| rate::limiter(limit));
            }
        }
        ApiKeys {
            keys: config
                .iter()
                .map(|k| {
                    (
                        digest(&k.key),
                        Principal::new(&k.name, k.tenant_id.as_deref()),
                    )
                })
                .collect(),
            limits,
        }
    }

    /// Charges `events` to the rate limit of the key named `name`, if it has one.
    pub fn admit(&self, name: &str, events: usize) -> Result<(), ApiError> {
        match self.limits.get(name) {
            Some(limiter) => rate::admit(limiter, events, format_args!("API key `{name}`")),
            None => Ok(()),
        }
    }

    /// Checks an `authorization` header value and returns whom the key
    /// speaks for (its name and tenant; two `Arc` clones, no allocation).
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let token = bearer_token(header)?;
        let presented = digest(token);
        // Compare against every key so the time taken does not depend on
        // which one (if any) matched.
        let mut found = None;
        for (hash, principal) in &self.keys {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(AuthError::Invalid)
    }
}

/// Extracts the token of `Bearer <token>`.
pub fn bearer_token(header: Option<&[u8]>) -> Result<&str, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = header.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(&[
            ApiKeyConfig {
                name: "crm".into(),
                key: "hy_test_key_0123456789abcdef".into(),
                key_env: None,
                tenant_id: None,
                rate_limit: None,
            },
            ApiKeyConfig {
                name: "acme-app".into(),
                key: "hy_acme_key_0123456789abcdef".into(),
                key_env: None,
                tenant_id: Some("acme".into()),
                rate_limit: None,
            },
        ])
    }

    #[test]
    fn keys_sharing_a_name_share_a_budget_and_others_are_not_limited() {
        let limited = |key: &str| ApiKeyConfig {
            name: "crm".into(),
            key: key.into(),
            key_env: None,
            tenant_id: None,
            rate_limit: Some(crate::model::RateLimit {
                per_second: 1,
                burst: 2,
            }),
        };
        let keys = ApiKeys::new(&[
            limited("hy_old_key_0123456789abcdef"),
            limited("hy_new_key_0123456789abcdef"),
            ApiKeyConfig {
                name: "batch".into(),
                key: "hy_batch_key_0123456789abcdef".into(),
                key_env: None,
                tenant_id: None,
                rate_limit: None,
            },
        ]);
        assert!(keys.admit("crm", 1).is_ok());
        assert!(keys.admit("crm", 1).is_ok());
        let refused = keys.admit("crm", 1).err().map(|e| e.to_string());
        assert_eq!(
            refused.as_deref(),
            Some("the rate limit of API key `crm` is used up; retry in 1 s")
        );
        assert!(keys.admit("batch", 1000).is_ok());
    }

    fn event(tenant: Option<&str>) -> NewEvent {
        let principal = Principal::new("k", None);
        let mut event =
            crate::intake::event::from_json(br#"{"name":"a.b","payload":{}}"#, &principal)
                .unwrap_or_else(|e| panic!("{e:?}"));
        event.tenant_id = tenant.map(String::from);
        event
    }

    #[test]
    fn a_valid_key_names_its_owner_and_tenant() {
        let keys = keys();
        let crm = keys.authenticate(Some(b"Bearer hy_test_key_0123456789abcdef"));
        assert_eq!(crm, Ok(Principal::new("crm", None)));
        let acme = keys.authenticate(Some(b"Bearer hy_acme_key_0123456789abcdef"));
        assert_eq!(acme, Ok(Principal::new("acme-app", Some("acme"))));
    }

    #[test]
    fn a_tenant_bound_key_fills_in_its_tenant_and_refuses_another() {
        let acme = Principal::new("acme-app", Some("acme"));
        assert_eq!(acme.tenant_for(None).as_deref(), Some("acme"));
        assert_eq!(
            acme.tenant_for(Some("globex".into())).as_deref(),
            Some("globex")
        );
        assert!(acme.authorize(&[event(Some("acme"))]).is_ok());
        let refused = acme.authorize(&[event(Some("acme")), event(Some("globex"))]);
        assert!(
            matches!(&refused, Err(ApiError::Forbidden(m)) if m.contains("globex")),
            "{refused:?}"
        );
        assert!(matches!(
            acme.authorize(&[event(None)]),
            Err(ApiError::Forbidden(_))
        ));
        assert!(acme.may_start(Some("acme")));
        assert!(!acme.may_start(Some("globex")));
        assert!(!acme.may_start(None));
    }

    #[test]
    fn a_key_without_a_tenant_behaves_as_before() {
        let crm = Principal::new("crm", None);
        assert_eq!(crm.tenant_for(None), None);
        assert!(crm
            .authorize(&[event(None), event(Some("acme")), event(Some("globex"))])
            .is_ok());
        assert!(crm.may_start(None) && crm.may_start(Some("acme")));
    }

    #[test]
    fn bad_keys_are_told_apart() {
        let keys = keys();
        assert_eq!(keys.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            keys.authenticate(Some(b"Basic abc")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            keys.authenticate(Some(b"Bearer ")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            keys.authenticate(Some(b"Bearer nope")),
            Err(AuthError::Invalid)
        );
    }
}
