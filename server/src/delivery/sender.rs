//! One HTTP attempt of one delivery: build the Standard Webhooks request, send
//! it through the shared pooled client, and report what happened. The client
//! resolves names through the SSRF guard and never follows redirects, so the
//! address checked is the address connected to. An endpoint with its own TLS
//! settings gets a client of its own built the same way (`endpoint_tls`); an
//! OAuth2 endpoint's bearer token comes from the token cache (`oauth`).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{header::HeaderMap, redirect, Url};

use super::{
    endpoint_tls::Clients,
    oauth::{self, Grant, Tokens},
    request::{self, Transforms},
    retry::{self, Outcome},
    ssrf::{AddressPolicy, GuardedResolver},
};
use crate::model::{now_ms, Attempt, DueDelivery, Endpoint, EventEnvelope};

/// How much of a response body an attempt records.
const RESPONSE_EXCERPT: usize = 4096;
/// How much more is read (and dropped) so the connection can be reused.
const RESPONSE_DRAIN: usize = 64 * 1024;

pub struct Sender {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    extra_roots: Vec<reqwest::Certificate>,
    default_timeout: Duration,
    user_agent: String,
    transforms: Transforms,
    tokens: Tokens,
    clients: Clients,
}

/// What one attempt produced.
pub struct Report {
    pub attempt: Attempt,
    pub outcome: Outcome,
}

impl Sender {
    /// `extra_roots`: certificates trusted besides the usual roots
    /// (`delivery.ca_file`, for endpoints behind a private CA).
    pub fn new(
        policy: AddressPolicy,
        default_timeout: Duration,
        extra_roots: &[reqwest::Certificate],
    ) -> reqwest::Result<Sender> {
        let policy = Arc::new(policy);
        let client = client_builder(&policy, extra_roots).build()?;
        Ok(Sender {
            client,
            policy,
            extra_roots: extra_roots.to_vec(),
            default_timeout,
            user_agent: format!("hookyard/{}", env!("CARGO_PKG_VERSION")),
            transforms: Transforms::default(),
            tokens: Tokens::default(),
            clients: Clients::default(),
        })
    }

    /// The client `endpoint` is sent through: the shared one, or its own when
    /// it has TLS settings.
    fn client_for(&self, endpoint: &Endpoint) -> Result<reqwest::Client, String> {
        let Some(tls) = endpoint.options.tls.as_ref().filter(|t| !t.is_empty()) else {
            return Ok(self.client.clone());
        };
        self.clients.get(&endpoint.id, tls, |material| {
            let mut builder = client_builder(&self.policy, &self.extra_roots);
            for root in material.roots {
                builder = builder.add_root_certificate(root);
            }
            if let Some(identity) = material.identity {
                builder = builder.identity(identity);
            }
            builder
                .build()
                .map_err(|e| format!("tls: cannot build the client: {}", describe(&e)))
        })
    }

    /// The bearer token of an OAuth2 endpoint, from the cache or fetched.
    async fn bearer(
        &self,
        client: &reqwest::Client,
        endpoint: &Endpoint,
        grant: &Grant,
        timeout: Duration,
    ) -> Result<Arc<str>, String> {
        let url = Url::parse(&grant.token_url).map_err(|e| format!("invalid token_url: {e}"))?;
        self.policy.check_url(&url).map_err(|e| e.to_string())?;
        self.tokens
            .get(&endpoint.id, grant, || oauth::fetch(client, grant, timeout))
            .await
    }

    /// The certificates of a PEM file (`delivery.ca_file`).
    pub fn roots_from(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
        use anyhow::Context;
        let pem = std::fs::read(path)
            .with_context(|| format!("delivery.ca_file: cannot read {}", path.display()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("delivery.ca_file: {} is not PEM", path.display()))?;
        if roots.is_empty() {
            anyhow::bail!("delivery.ca_file: no certificate in {}", path.display());
        }
        Ok(roots)
    }

    /// The pooled, SSRF-guarded client, shared with flows' HTTP steps.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// Sends `delivery` to `endpoint` once. Never fails: every problem becomes
    /// part of the recorded attempt.
    pub async fn attempt(&self, delivery: &DueDelivery, endpoint: &Endpoint) -> Report {
        #[cfg(debug_assertions)]
        fault::panic_if_asked(&delivery.event.name);
        let mut report = self.attempt_event(&delivery.event, endpoint).await;
        report.attempt.number = delivery.attempts + 1;
        report
    }

    /// Sends `event` to `endpoint` once, as a delivery would be sent; the
    /// attempt is numbered 1.
    pub async fn attempt_event(&self, event: &EventEnvelope, endpoint: &Endpoint) -> Report {
        let started_ms = now_ms();
        let started = Instant::now();
        let timestamp = started_ms / 1000;
        let mut recorded = BTreeMap::new();
        let timeout = endpoint.timeout.unwrap_or(self.default_timeout);
        let grant = endpoint.options.auth.as_ref().and_then(Grant::of);
        let mut bearer = None;
        let result = async {
            let (url, mut headers, body) =
                self.prepare(event, endpoint, timestamp, started_ms, &mut recorded)?;
            let client = self.client_for(endpoint)?;
            if let Some(grant) = &grant {
                let token = self
                    .bearer(&client, endpoint, grant, timeout)
                    .await
                    .map_err(|e| format!("oauth2 token: {e}"))?;
                let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "oauth2 token: unfit for a header".to_string())?;
                headers.insert(reqwest::header::AUTHORIZATION, value);
                recorded.insert("authorization".into(), "<redacted>".into());
                bearer = Some(token);
            }
            self.send(&client, url, headers, body, timeout).await
        }
        .await;
        if let (Ok(answer), Some(token)) = (&result, &bearer) {
            // The receiver refused the token (revoked, or the keys rotated):
            // the next attempt fetches a new one instead of waiting it out.
            if answer.status == 401 {
                self.tokens.forget(&endpoint.id, token);
            }
        }
        let duration_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
        let (status_code, error, response_body, outcome) = match result {
            Ok(answer) => {
                let mut outcome =
                    retry::classify(Some(answer.status), answer.retry_after.as_deref());
                if answer.abort && !matches!(outcome, Outcome::Success) {
                    outcome = Outcome::Aborted;
                }
                let error = match outcome {
                    Outcome::Success => None,
                    Outcome::Aborted => Some(format!(
                        "endpoint answered HTTP {} with webhook-delivery: abort",
                        answer.status
                    )),
                    _ => Some(format!("endpoint answered HTTP {}", answer.status)),
                };
                (Some(answer.status), error, answer.excerpt, outcome)
            }
            Err(error) => (
                None,
                Some(error),
                String::new(),
                retry::classify(None, None),
            ),
        };
        Report {
            attempt: Attempt {
                number: 1,
                started_ms,
                duration_ms,
                status_code,
                error,
                response_body,
                request_headers: recorded,
            },
            outcome,
        }
    }

    /// The URL, headers and body, after the SSRF check of literal addresses.
    fn prepare(
        &self,
        event: &EventEnvelope,
        endpoint: &Endpoint,
        timestamp: i64,
        now_ms: i64,
        recorded: &mut BTreeMap<String, String>,
    ) -> Result<(Url, HeaderMap, String), String> {
        let url = Url::parse(&endpoint.url).map_err(|e| format!("invalid endpoint URL: {e}"))?;
        self.policy.check_url(&url).map_err(|e| e.to_string())?;
        let outbound = request::build(event, endpoint, &self.transforms, timestamp, now_ms)?;
        let mut pairs: Vec<(&str, String)> = outbound.headers;
        pairs.push(("user-agent", self.user_agent.clone()));
        pairs.extend(
            endpoint
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone())),
        );
        let mut headers = HeaderMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name `{name}`"))?;
            let header_value = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| format!("invalid value for header `{name}`"))?;
            let shown = match name {
                "webhook-signature" => "v1,<redacted>".to_string(),
                "authorization" => "<redacted>".to_string(),
                _ => value,
            };
            recorded.insert(name.to_ascii_lowercase(), shown);
            headers.insert(header_name, header_value);
        }
        Ok((url, headers, outbound.body))
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        url: Url,
        headers: HeaderMap,
        body: String,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let request = client
            .post(url)
            .headers(headers)
            .body(body)
            .timeout(timeout);
        let mut response = request.send().await.map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let abort = response
            .headers()
            .get("webhook-delivery")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("abort"));
        let mut excerpt = Vec::new();
        let mut read = 0usize;
        while read < RESPONSE_DRAIN {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = RESPONSE_EXCERPT.saturating_sub(excerpt.len());
                    excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                // The status is what counts; a body cut short is not a failure.
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Answer {
            status,
            retry_after,
            abort,
            excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
        })
    }
}

/// What an endpoint answered.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    /// `webhook-delivery: abort`: stop retrying this delivery.
    abort: bool,
    excerpt: String,
}

/// The settings every delivery client shares; `extra_roots`: certificates
/// trusted besides the usual roots.
fn client_builder(
    policy: &Arc<AddressPolicy>,
    extra_roots: &[reqwest::Certificate],
) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder();
    for root in extra_roots {
        builder = builder.add_root_certificate(root.clone());
    }
    builder
        .dns_resolver(Arc::new(GuardedResolver::new(policy.clone())))
        .redirect(redirect::Policy::none())
        // One request per recorded attempt: retries are the dispatcher's,
        // on the endpoint's schedule, never the client's.
        .retry(reqwest::retry::never())
        .pool_max_idle_per_host(64)
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        // Through a proxy the guard would only see the proxy's address.
        .no_proxy()
}

/// reqwest's top-level message hides the cause (refused, timed out, refused
/// by the SSRF guard, a TLS handshake refused); keep the whole chain.
pub(super) fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut message = kind.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Debug builds only: `HOOKYARD_FAULT_PANIC_EVENT=<event name>` makes every
/// attempt of that event's deliveries panic, so the end-to-end tests can show
/// that a panicking attempt neither leaks its slot nor stops delivery.
#[cfg(debug_assertions)]
mod fault {
    use std::sync::OnceLock;

    pub fn panic_if_asked(event_name: &str) {
        static NAME: OnceLock<Option<String>> = OnceLock::new();
        let name = NAME.get_or_init(|| std::env::var("HOOKYARD_FAULT_PANIC_EVENT").ok());
        if name.as_deref() == Some(event_name) {
            panic!("injected fault: HOOKYARD_FAULT_PANIC_EVENT={event_name}");
        }
    }
}
