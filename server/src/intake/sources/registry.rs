//! The sources in force, compiled for the hot path: a map from token hash to
//! the source's parsed policy (schema validator, name template, signature
//! key, rate limiter), swapped atomically after every change. Deleted
//! sources are simply absent, so an unknown and a deleted token take the same
//! path and get the same answer. Rejection counters and rate limiters are
//! kept per source id across reloads.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroU32,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota};
use subtle::ConstantTimeEq;

use super::{naming::Namer, schema::Schema, signature::Verifier, token, RateLimit, Source};
use crate::{
    intake::event::FieldError,
    model::now_ms,
    store::{self, Store},
};

const MAX_ID_LEN: usize = 64;

/// A source with its policy ready to apply.
pub struct Compiled {
    pub source: Source,
    pub namer: Namer,
    pub schema: Option<Schema>,
    pub verifier: Verifier,
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
    pub rejections: Arc<Rejections>,
}

/// Rejected requests per reason, for one source.
#[derive(Default)]
pub struct Rejections(Mutex<BTreeMap<&'static str, u64>>);

impl Rejections {
    pub fn count(&self, reason: &'static str) {
        if let Ok(mut map) = self.0.lock() {
            *map.entry(reason).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .map(|map| map.iter().map(|(k, v)| (k.to_string(), *v)).collect())
            .unwrap_or_default()
    }
}

struct Entry {
    hash: [u8; 32],
    /// When a rotated-out token stops working (ms); `None` for the current one.
    expires_ms: Option<i64>,
    compiled: Arc<Compiled>,
}

pub struct SourceRegistry {
    store: Store,
    by_token: ArcSwap<HashMap<[u8; 32], Entry>>,
    rejections: Mutex<HashMap<String, Arc<Rejections>>>,
    limiters: Mutex<HashMap<String, (RateLimit, Arc<DefaultDirectRateLimiter>)>>,
    unknown_tokens: AtomicU64,
}

impl SourceRegistry {
    pub async fn load(store: Store) -> store::Result<SourceRegistry> {
        let registry = SourceRegistry {
            store,
            by_token: ArcSwap::from_pointee(HashMap::new()),
            rejections: Mutex::default(),
            limiters: Mutex::default(),
            unknown_tokens: AtomicU64::new(0),
        };
        registry.reload().await?;
        Ok(registry)
    }

    /// Rebuilds the map from storage. A stored source that no longer
    /// compiles (it should not happen: writes are validated) is left out
    /// and logged rather than stopping every other source.
    pub async fn reload(&self) -> store::Result<()> {
        let sources = self.store.list_sources(false).await?;
        let mut map = HashMap::new();
        for source in sources {
            let compiled = match self.compile(source) {
                Ok(compiled) => Arc::new(compiled),
                Err((id, errors)) => {
                    tracing::error!(source = %id, problems = %crate::admin::validate::summary(&errors), "A stored source is invalid; its webhooks are refused.");
                    continue;
                }
            };
            let current = compiled.source.token_hash;
            if let Some((hash, expires)) = compiled.source.previous_token {
                map.insert(
                    hash,
                    Entry {
                        hash,
                        expires_ms: Some(expires),
                        compiled: compiled.clone(),
                    },
                );
            }
            map.insert(
                current,
                Entry {
                    hash: current,
                    expires_ms: None,
                    compiled,
                },
            );
        }
        self.by_token.store(Arc::new(map));
        Ok(())
    }

    /// The live source `token` belongs to, if any.
    pub fn lookup(&self, token: &str) -> Option<Arc<Compiled>> {
        let presented = token::hash(token);
        let map = self.by_token.load();
        let entry = map.get(&presented)?;
        let same = bool::from(entry.hash.ct_eq(&presented));
        let live = entry.expires_ms.is_none_or(|expires| now_ms() < expires);
        (same && live).then(|| entry.compiled.clone())
    }

    pub fn count_unknown_token(&self) {
        self.unknown_tokens.fetch_add(1, Ordering::Relaxed);
    }

    pub fn unknown_tokens(&self) -> u64 {
        self.unknown_tokens.load(Ordering::Relaxed)
    }

    /// Rejection counts of the source `id` (empty when it has none).
    pub fn rejections(&self, id: &str) -> BTreeMap<String, u64> {
        self.rejections
            .lock()
            .ok()
            .and_then(|map| map.get(id).map(|r| r.snapshot()))
            .unwrap_or_default()
    }

    fn compile(&self, source: Source) -> Result<Compiled, (String, Vec<FieldError>)> {
        let (namer, schema, verifier) =
            compile_policy(&source).map_err(|errors| (source.id.clone(), errors))?;
        let limiter = source
            .policy
            .rate_limit
            .map(|limit| self.limiter(&source.id, limit));
        let rejections = self
            .rejections
            .lock()
            .map(|mut map| map.entry(source.id.clone()).or_default().clone())
            .unwrap_or_default();
        Ok(Compiled {
            source,
            namer,
            schema,
            verifier,
            limiter,
            rejections,
        })
    }

    /// Keeps a source's limiter (and so its state) while its limit is unchanged.
    fn limiter(&self, id: &str, limit: RateLimit) -> Arc<DefaultDirectRateLimiter> {
        let fresh = || Arc::new(DefaultDirectRateLimiter::direct(quota(limit)));
        let Ok(mut map) = self.limiters.lock() else {
            return fresh();
        };
        match map.get(id) {
            Some((current, limiter)) if *current == limit => limiter.clone(),
            _ => {
                let limiter = fresh();
                map.insert(id.to_string(), (limit, limiter.clone()));
                limiter
            }
        }
    }
}

fn quota(limit: RateLimit) -> Quota {
    let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
    Quota::per_second(per_second).allow_burst(burst)
}

/// Every problem with a source, each naming its field.
pub fn validate(source: &Source) -> Vec<FieldError> {
    compile_policy(source).err().unwrap_or_default()
}

fn compile_policy(source: &Source) -> Result<(Namer, Option<Schema>, Verifier), Vec<FieldError>> {
    let mut errors = Vec::new();
    let ok_id = !source.id.is_empty()
        && source.id.len() <= MAX_ID_LEN
        && source
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok_id {
        errors.push(FieldError::new(
            &["id"],
            format!("must be 1-{MAX_ID_LEN} characters of [A-Za-z0-9_-]"),
        ));
    }
    if source.name.trim().is_empty() || source.name.len() > 255 {
        errors.push(FieldError::new(&["name"], "must be 1-255 characters"));
    }
    if let Some(tenant) = &source.tenant_id {
        let ok = !tenant.is_empty()
            && tenant.len() <= 128
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b));
        if !ok {
            errors.push(FieldError::new(
                &["tenant_id"],
                "must be 1-128 characters of [A-Za-z0-9._:~-]",
            ));
        }
    }
    let policy = &source.policy;
    let namer = Namer::compile(&policy.event_name)
        .map_err(|e| errors.push(FieldError::new(&["event_name"], e)))
        .ok();
    let schema = match &policy.schema {
        None => Some(None),
        Some(schema) => Schema::compile(schema)
            .map(Some)
            .map_err(|e| errors.push(FieldError::new(&["schema"], e)))
            .ok(),
    };
    let verifier = Verifier::compile(&policy.signature)
        .map_err(|e| errors.push(FieldError::new(&["signature"], e)))
        .ok();
    for (i, origin) in policy.allowed_origins.iter().enumerate() {
        let ok = origin == "*"
            || ((origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.contains(char::is_whitespace));
        if !ok {
            errors.push(FieldError::new(
                &["allowed_origins", &i.to_string()],
                "must be `*` or an origin such as https://www.example.com",
            ));
        }
    }
    if let Some(limit) = policy.rate_limit {
        if limit.per_second == 0 {
            errors.push(FieldError::new(
                &["rate_limit", "per_second"],
                "must be greater than 0",
            ));
        }
    }
    match (namer, schema, verifier) {
        (Some(namer), Some(schema), Some(verifier)) if errors.is_empty() => {
            Ok((namer, schema, verifier))
        }
        _ => Err(errors),
    }
}
