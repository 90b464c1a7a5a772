//! OAuth2 client credentials (RFC 6749 §4.4) for endpoints that want a
//! bearer token: the token is fetched from the endpoint's `token_url`, kept
//! per endpoint until shortly before it expires, and shared by every
//! delivery to that endpoint.
//!
//! The grant is one form POST, so it is written here rather than taken from
//! an OAuth2 crate: `grant_type=client_credentials` (+ `scope`, `audience`),
//! the client authenticating with HTTP Basic as §2.3.1 prescribes (id and
//! secret form-encoded first). Secrets in the request body are not sent.
//!
//! Concurrency: a cached token is read under a plain mutex held for a clone,
//! never across an await. Only a refresh waits, on the endpoint's own async
//! mutex, so a burst of deliveries makes one fetch; those that waited for a
//! fetch that failed get its error instead of fetching again. From the
//! refresh time on (see [`lifetime`]) one caller refreshes while the others
//! keep using the still valid token.
//!
//! The cache is keyed by endpoint id and holds the grant it was fetched
//! with: an edited endpoint (another client, secret or scope) starts afresh.
//! A 401 from the receiver drops the token ([`Tokens::forget`]).
//! Neither the secret nor a token is ever logged.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use base64::Engine as _;
use serde::Deserialize;
use tokio::time::Instant;

use crate::model::EndpointAuth;

/// How long a token lives when the token endpoint does not say
/// (`expires_in` is only RECOMMENDED); a 401 drops it sooner.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// A token is refreshed this long before it expires, or a tenth of its
/// lifetime if that is longer…
const MIN_MARGIN: Duration = Duration::from_secs(30);
/// …but never earlier than halfway, so a short-lived token is still reused.
const MAX_MARGIN_SHARE: u32 = 2;
/// The most of a token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// What a token is fetched with: an endpoint's `oauth2` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: Option<String>,
    pub audience: Option<String>,
}

impl Grant {
    pub fn of(auth: &EndpointAuth) -> Option<Grant> {
        match auth {
            EndpointAuth::Oauth2 {
                token_url,
                client_id,
                client_secret,
                scope,
                audience,
            } => Some(Grant {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
                scope: scope.clone(),
                audience: audience.clone(),
            }),
            EndpointAuth::Basic { .. } => None,
        }
    }

    /// `Authorization: Basic` of the client (RFC 6749 §2.3.1: both parts
    /// `application/x-www-form-urlencoded` before base64).
    fn client_authorization(&self) -> String {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!(
            "{}:{}",
            encode(&self.client_id),
            encode(&self.client_secret)
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    fn form(&self) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = &self.scope {
            form.append_pair("scope", scope);
        }
        if let Some(audience) = &self.audience {
            form.append_pair("audience", audience);
        }
        form.finish()
    }
}

/// What a token endpoint issued.
pub struct Issued {
    pub access_token: String,
    pub expires_in: Option<Duration>,
}

/// When a token fetched now is refreshed and when it stops being used:
/// `(refresh after, valid for)`. The margin is a tenth of the lifetime or
/// 30 s, whichever is more, and at most half the lifetime.
pub fn lifetime(expires_in: Option<Duration>) -> (Duration, Duration) {
    let life = expires_in.unwrap_or(DEFAULT_LIFETIME);
    let margin = (life / 10).max(MIN_MARGIN).min(life / MAX_MARGIN_SHARE);
    (life - margin, life)
}

#[derive(Clone)]
struct Token {
    value: Arc<str>,
    refresh_at: Instant,
    expires_at: Instant,
}

struct Slot {
    grant: Grant,
    cached: Mutex<Option<Token>>,
    /// Held only while fetching; keeps the last failure for those who waited.
    fetching: tokio::sync::Mutex<Option<String>>,
    /// Fetches finished, so a waiter can tell that one ended while it waited.
    fetched: AtomicU64,
}

impl Slot {
    fn cached(&self) -> Option<Token> {
        self.cached.lock().map(|t| t.clone()).unwrap_or(None)
    }

    fn store(&self, token: Option<Token>) {
        if let Ok(mut cached) = self.cached.lock() {
            *cached = token;
        }
    }
}

/// Bearer tokens of all endpoints, by endpoint id.
#[derive(Default)]
pub struct Tokens {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

impl Tokens {
    /// The token to send to `endpoint`, fetched with `fetch` when there is
    /// none fresh. An error is the fetch's, to be recorded with the attempt.
    pub async fn get<F, Fut>(
        &self,
        endpoint: &str,
        grant: &Grant,
        fetch: F,
    ) -> Result<Arc<str>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, String>>,
    {
        let slot = self.slot(endpoint, grant)?;
        let seen = slot.fetched.load(Ordering::Acquire);
        let now = Instant::now();
        if let Some(token) = slot.cached() {
            if now < token.refresh_at {
                return Ok(token.value);
            }
            if now < token.expires_at {
                // Due for a refresh but still valid: one refreshes, the
                // others (and the refresher, if it fails) use this one.
                let Ok(mut last) = slot.fetching.try_lock() else {
                    return Ok(token.value);
                };
                return Ok(Self::fetch_into(&slot, &mut last, fetch)
                    .await
                    .unwrap_or(token.value));
            }
        }
        let mut last = slot.fetching.lock().await;
        if let Some(token) = slot.cached() {
            if Instant::now() < token.refresh_at {
                return Ok(token.value);
            }
        }
        if slot.fetched.load(Ordering::Acquire) != seen {
            if let Some(error) = last.as_ref() {
                return Err(error.clone());
            }
        }
        Self::fetch_into(&slot, &mut last, fetch).await
    }

    /// Drops `endpoint`'s token if it is still `token` (the receiver refused
    /// it), so the next attempt fetches a new one.
    pub fn forget(&self, endpoint: &str, token: &str) {
        let slot = self
            .slots
            .lock()
            .ok()
            .and_then(|slots| slots.get(endpoint).cloned());
        if let Some(slot) = slot {
            if let Ok(mut cached) = slot.cached.lock() {
                if cached.as_ref().is_some_and(|t| &*t.value == token) {
                    *cached = None;
                }
            }
        }
    }

    fn slot(&self, endpoint: &str, grant: &Grant) -> Result<Arc<Slot>, String> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| "oauth2 token cache is unusable".to_string())?;
        match slots.get(endpoint) {
            Some(slot) if slot.grant == *grant => Ok(slot.clone()),
            _ => {
                let slot = Arc::new(Slot {
                    grant: grant.clone(),
                    cached: Mutex::new(None),
                    fetching: tokio::sync::Mutex::new(None),
                    fetched: AtomicU64::new(0),
                });
                slots.insert(endpoint.to_string(), slot.clone());
                Ok(slot)
            }
        }
    }

    async fn fetch_into<F, Fut>(
        slot: &Slot,
        last: &mut Option<String>,
        fetch: F,
    ) -> Result<Arc<str>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued, String>>,
    {
        let started = Instant::now();
        let result = fetch().await;
        let result = result.map(|issued| {
            let (refresh_after, valid_for) = lifetime(issued.expires_in);
            let value: Arc<str> = issued.access_token.into();
            slot.store(Some(Token {
                value: value.clone(),
                refresh_at: started + refresh_after,
                expires_at: started + valid_for,
            }));
            value
        });
        *last = result.as_ref().err().cloned();
        slot.fetched.fetch_add(1, Ordering::Release);
        result
    }
}

/// Asks `grant.token_url` for a token through `client` (the endpoint's own
/// client: SSRF-guarded, no redirects, its TLS settings).
pub async fn fetch(
    client: &reqwest::Client,
    grant: &Grant,
    timeout: Duration,
) -> Result<Issued, String> {
    let mut response = client
        .post(&grant.token_url)
        .header(reqwest::header::AUTHORIZATION, grant.client_authorization())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(grant.form())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| super::sender::describe(&e))?;
    let status = response.status();
    let mut body = Vec::new();
    while body.len() < MAX_RESPONSE {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(super::sender::describe(&e)),
        }
    }
    if !status.is_success() {
        // RFC 6749 §5.2: `error` is a code such as `invalid_client`; the
        // description may echo what was sent, so it is left out.
        let code = serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|b| format!(" ({})", b.error))
            .unwrap_or_default();
        return Err(format!(
            "token endpoint answered HTTP {}{code}",
            status.as_u16()
        ));
    }
    parse(&body)
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    /// A number, though some servers send a string.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// A successful token response (RFC 6749 §5.1).
fn parse(body: &[u8]) -> Result<Issued, String> {
    let token: TokenBody = serde_json::from_slice(body)
        .map_err(|_| "token endpoint answered without a JSON access_token".to_string())?;
    if let Some(kind) = &token.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "token endpoint issued a `{kind}` token, not a bearer token"
            ));
        }
    }
    let usable =
        !token.access_token.is_empty() && token.access_token.bytes().all(|b| b.is_ascii_graphic());
    if !usable {
        return Err("token endpoint issued an access_token unfit for a header".into());
    }
    let expires_in = match token.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Duration::from_secs),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok().map(Duration::from_secs),
        Some(_) => None,
    };
    Ok(Issued {
        access_token: token.access_token,
        expires_in,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn grant(secret: &str) -> Grant {
        Grant {
            token_url: "https://auth.example/token".into(),
            client_id: "hook yard".into(),
            client_secret: secret.into(),
            scope: Some("a b".into()),
            audience: None,
        }
    }

    fn issued(token: &str, secs: Option<u64>) -> Result<Issued, String> {
        Ok(Issued {
            access_token: token.into(),
            expires_in: secs.map(Duration::from_secs),
        })
    }

    #[test]
    fn lifetime_refreshes_early_but_not_before_half() {
        let s = Duration::from_secs;
        assert_eq!(lifetime(Some(s(3600))), (s(3240), s(3600)));
        assert_eq!(lifetime(Some(s(120))), (s(90), s(120)));
        assert_eq!(lifetime(Some(s(2))), (s(1), s(2)));
        assert_eq!(lifetime(None), (s(270), s(300)));
        assert_eq!(lifetime(Some(s(0))), (s(0), s(0)));
    }

    #[test]
    fn client_authenticates_with_form_encoded_basic() {
        let g = grant("p:ss/word");
        let expected = base64::engine::general_purpose::STANDARD.encode("hook+yard:p%3Ass%2Fword");
        assert_eq!(g.client_authorization(), format!("Basic {expected}"));
        assert_eq!(g.form(), "grant_type=client_credentials&scope=a+b");
    }

    #[test]
    fn token_responses_are_checked() {
        let ok = parse(br#"{"access_token":"abc","token_type":"Bearer","expires_in":"60"}"#);
        assert_eq!(
            ok.as_ref().map(|i| i.expires_in),
            Ok(Some(Duration::from_secs(60)))
        );
        assert!(parse(br#"{"access_token":"abc","token_type":"mac"}"#).is_err());
        assert!(parse(br#"{"access_token":"a\nb"}"#).is_err());
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"access_token":"abc"}"#).is_ok_and(|i| i.expires_in.is_none()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_until_its_refresh_time_then_refreshed() {
        let tokens = Tokens::default();
        let g = grant("s");
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            issued(&format!("t{n}"), Some(100))
        };
        assert_eq!(tokens.get("ep", &g, fetch).await.as_deref(), Ok("t0"));
        tokio::time::advance(Duration::from_secs(69)).await;
        assert_eq!(tokens.get("ep", &g, fetch).await.as_deref(), Ok("t0"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(tokens.get("ep", &g, fetch).await.as_deref(), Ok("t1"));
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_still_valid_token_but_not_an_expired_one() {
        let tokens = Tokens::default();
        let g = grant("s");
        let _ = tokens
            .get("ep", &g, || async { issued("t0", Some(100)) })
            .await;
        tokio::time::advance(Duration::from_secs(80)).await;
        let down = || async { Err::<Issued, _>("connection failed".to_string()) };
        assert_eq!(tokens.get("ep", &g, down).await.as_deref(), Ok("t0"));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(
            tokens.get("ep", &g, down).await,
            Err("connection failed".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch_and_its_failure() {
        let tokens = Arc::new(Tokens::default());
        let g = grant("s");
        let fetches = Arc::new(AtomicUsize::new(0));
        let run = |ok: bool| {
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    let (tokens, g, fetches) = (tokens.clone(), g.clone(), fetches.clone());
                    tokio::spawn(async move {
                        tokens
                            .get("ep", &g, || async move {
                                fetches.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                if ok {
                                    issued("t", Some(60))
                                } else {
                                    Err("HTTP 503".into())
                                }
                            })
                            .await
                    })
                })
                .collect();
            handles
        };
        for handle in run(false) {
            assert_eq!(handle.await.ok(), Some(Err("HTTP 503".into())));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        for handle in run(true) {
            assert_eq!(handle.await.ok().and_then(Result::ok).as_deref(), Some("t"));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn forgetting_or_editing_the_grant_fetches_again() {
        let tokens = Tokens::default();
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            issued(&format!("t{n}"), Some(3600))
        };
        assert_eq!(
            tokens.get("ep", &grant("s"), fetch).await.as_deref(),
            Ok("t0")
        );
        tokens.forget("ep", "not-it");
        assert_eq!(
            tokens.get("ep", &grant("s"), fetch).await.as_deref(),
            Ok("t0")
        );
        tokens.forget("ep", "t0");
        assert_eq!(
            tokens.get("ep", &grant("s"), fetch).await.as_deref(),
            Ok("t1")
        );
        assert_eq!(
            tokens.get("ep", &grant("new"), fetch).await.as_deref(),
            Ok("t2")
        );
        assert_eq!(
            tokens.get("other", &grant("new"), fetch).await.as_deref(),
            Ok("t3")
        );
    }
}
