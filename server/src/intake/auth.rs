//! Publish API keys. Keys are kept only as SHA-256 digests: a lookup hashes
//! what the caller presented and compares digests in constant time, so neither
//! the key nor its prefix leaks through timing, and a memory dump holds no key.

use std::{collections::HashMap, sync::Arc};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    rate::{self, Limiter},
    ApiError,
};
use crate::config::ApiKeyConfig;

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
    keys: Vec<([u8; 32], Arc<str>)>,
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
                .map(|k| (digest(&k.key), Arc::from(k.name.as_str())))
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

    /// Checks an `authorization` header value and returns the key's name.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<str>, AuthError> {
        let token = bearer_token(header)?;
        let presented = digest(token);
        // Compare against every key so the time taken does not depend on
        // which one (if any) matched.
        let mut found = None;
        for (hash, name) in &self.keys {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(name.clone());
            }
        }
        found.ok_or(AuthError::Invalid)
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
        ApiKeys::new(&[ApiKeyConfig {
            name: "crm".into(),
            key: "hy_test_key_0123456789abcdef".into(),
            rate_limit: None,
        }])
    }

    #[test]
    fn keys_sharing_a_name_share_a_budget_and_others_are_not_limited() {
        let limited = |key: &str| ApiKeyConfig {
            name: "crm".into(),
            key: key.into(),
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

    #[test]
    fn a_valid_key_names_its_owner() {
        let name = keys().authenticate(Some(b"Bearer hy_test_key_0123456789abcdef"));
        assert_eq!(name.as_deref().ok(), Some("crm"));
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
