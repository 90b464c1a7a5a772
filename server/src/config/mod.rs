//! Settings: the embedded defaults, then the user's YAML file, then `HOOKYARD_*`
//! environment variables. Unknown keys are errors that name the key, and a
//! validation pass checks what serde cannot (CIDRs, schedules, references), so a
//! daemon never starts on a config it would misread.

pub mod sources;

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use figment::{
    providers::{Env, Format, Yaml},
    Figment,
};
use ipnet::IpNet;
use serde::Deserialize;

use crate::model::{EndpointAuth, EndpointTls, PayloadFormat, RateLimit};

const DEFAULTS: &str = include_str!("defaults.yaml");

/// Top-level keys that `HOOKYARD_*` variables may set; other `HOOKYARD_*`
/// variables belong to other programs (the TUI reads `HOOKYARD_TOKEN`).
const ENV_KEYS: &[&str] = &[
    "listen",
    "admin_listen",
    "api_keys",
    "data_dir",
    "log_format",
    "http",
    "delivery",
    "storage",
    "retention",
    "tls",
    "flow_runner",
    "flow_files",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP intake and gRPC Events, on one port.
    pub listen: SocketAddr,
    /// gRPC Admin, on its own port.
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    pub api_keys: Vec<ApiKeyConfig>,
    pub http: HttpConfig,
    pub delivery: DeliveryConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    /// TLS on both listeners; plain TCP when unset.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    pub endpoints: Vec<EndpointConfig>,
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Partners and forms posting to `/webhook/v1/{token}`.
    pub sources: Vec<sources::SourceConfig>,
    /// The event-type catalog: a JSON Schema per event name pattern,
    /// upserted on start by id.
    pub event_types: Vec<EventTypeConfig>,
    pub flow_runner: FlowRunnerConfig,
    /// Flow definitions, upserted on start by id (a changed one gets a new version).
    pub flows: Vec<crate::flows::definition::FlowDef>,
    /// Files holding one flow definition each (relative to the config
    /// file's folder); kept as written, comments included.
    pub flow_files: Vec<PathBuf>,
    /// The flow files' texts, read by `load`.
    #[serde(skip)]
    pub flow_file_texts: Vec<(PathBuf, String)>,
}

/// A certificate chain and its private key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How long finished work is kept before the janitor deletes it; `0s`
/// keeps it forever.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events whose deliveries all succeeded (or that matched nothing),
    /// with their deliveries and attempts.
    #[serde(with = "humantime_serde")]
    pub events: Duration,
    /// Events with a dead delivery (and none still to make): kept apart,
    /// for an operator to look into or retry.
    #[serde(with = "humantime_serde")]
    pub dead: Duration,
    /// Attempt records (request, response, timing) of older deliveries.
    #[serde(with = "humantime_serde")]
    pub attempts: Duration,
    /// Flow runs that ended (succeeded, failed or cancelled), with their logs.
    #[serde(with = "humantime_serde")]
    pub runs: Duration,
    /// How often the janitor looks.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRunnerConfig {
    /// Every wait is multiplied by this: 1.0 in production; a small value
    /// compresses days into seconds for rehearsals and tests.
    pub time_scale: f64,
    /// Runs executed at once.
    pub concurrency: usize,
    /// Delays before each retry of an HTTP step that sets no `retry`.
    #[serde(deserialize_with = "durations::list")]
    pub retry: Vec<Duration>,
    /// Per-request timeout of HTTP steps that set none.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A YAML map of secret names to values for `secret(name)`; names not in
    /// it are read from the environment.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Runs a flow's `POST /hooks/{id}/{key}` may start, for flows whose
    /// `webhook` sets no `rate_limit`: the key sits in public pages.
    pub webhook_rate_limit: crate::model::RateLimit,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub name: String,
    /// The key itself; or see `key_env`.
    #[serde(default)]
    pub key: String,
    /// The name of an environment variable holding the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Events per second this key may publish (flow runs count as one);
    /// keys that share a name share one budget.
    #[serde(default)]
    pub rate_limit: Option<crate::model::RateLimit>,
    /// The tenant the key publishes for: its events carry it, naming
    /// another is refused, and it starts only that tenant's flows.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a client may take to send its request headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// How long a connection may stay open with no request in progress.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Open connections allowed from one address (IPv6: one /64); 0 is no
    /// cap. Trusted proxies are not capped.
    pub max_connections_per_ip: usize,
    /// Largest body of a batch: gRPC PublishBatch and CloudEvents batches.
    pub batch_body_limit: usize,
    /// Proxies whose `X-Forwarded-For` hop is believed for a source's
    /// allowed CIDRs; requests from anyone else are judged by their peer address.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// CIDRs that outbound webhooks may reach although they are private.
    pub allow_private_targets: Vec<IpNet>,
    /// PEM certificates trusted for endpoints besides the system's roots
    /// (endpoints behind a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Delays before each retry, for endpoints without their own schedule.
    #[serde(deserialize_with = "durations::list")]
    pub retry_schedule: Vec<Duration>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Default per-endpoint limit of concurrent requests.
    pub max_in_flight: u32,
    /// Deliveries the dispatcher keeps in memory; the rest wait in storage.
    pub memory_queue: usize,
    /// Deliveries one endpoint may hold in memory (at least twice its
    /// `max_in_flight`); the rest of its backlog is claimed from storage.
    pub window: usize,
    /// Requests in flight over all endpoints, shared round robin.
    pub max_concurrent: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Most events committed in one transaction.
    pub max_batch: usize,
    /// Publish requests waiting for the writer before intake answers 503.
    pub queue: usize,
    /// PostgreSQL instead of SQLite in `data_dir`, for several daemons
    /// sharing one database (`postgres://user:password@host:5432/db`).
    #[serde(default)]
    pub postgres_url: Option<String>,
    /// PostgreSQL: how long a daemon's claim on an endpoint or a flow run
    /// outlives its last renewal (renewed every third of it). A daemon that
    /// dies without a word frees its endpoints and runs this long after.
    #[serde(with = "humantime_serde")]
    pub lease_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
    /// The name of an environment variable holding `secret`.
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "durations::optional_list")]
    pub retry_schedule: Option<Vec<Duration>>,
    #[serde(default)]
    pub max_in_flight: Option<u32>,
    #[serde(default)]
    pub description: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// The body: envelope (default), standard_webhooks, cloudevents,
    /// cloudevents_binary or raw.
    #[serde(default)]
    pub format: PayloadFormat,
    /// A template over `event` producing the body instead.
    #[serde(default)]
    pub transform: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Failing every attempt this long disables the endpoint (default 5
    /// days; `0s`: never).
    #[serde(default, with = "humantime_serde")]
    pub disable_after: Option<Duration>,
    /// `{basic: {username, password}}` or `{oauth2: {token_url, client_id,
    /// client_secret, scope, audience}}`.
    #[serde(default)]
    pub auth: Option<EndpointAuth>,
    /// A template over `event`; deliveries with the same key go one at a
    /// time, in publish order.
    #[serde(default)]
    pub ordering_key: Option<String>,
    /// `{client_cert_file, client_key_file, ca_file}`: PEM files of this
    /// endpoint's TLS client certificate and private roots.
    #[serde(default)]
    pub tls: Option<EndpointTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    pub name: String,
    pub patterns: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub tenant_id: Option<String>,
    pub target: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub description: String,
    /// For `flow:` targets: each input as a template over the event.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// An expression over `event`; only events it is true for are taken.
    #[serde(default)]
    pub filter: Option<String>,
    /// A template over `event` ordering this subscription's deliveries
    /// (over the endpoint's own).
    #[serde(default)]
    pub ordering_key: Option<String>,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeConfig {
    pub id: String,
    /// An event name pattern: `order.*`, `billing.**`.
    pub pattern: String,
    #[serde(default)]
    pub description: String,
    /// The JSON Schema, written in YAML or JSON.
    pub schema: serde_json::Value,
}

/// Lists of human durations (`["0s", "5s", "5m"]`), which humantime-serde
/// does not cover.
mod durations {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer};

    pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                humantime::parse_duration(s)
                    .map_err(|e| D::Error::custom(format!("item {i} (`{s}`): {e}")))
            })
            .collect()
    }

    pub fn optional_list<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<Duration>>, D::Error> {
        list(d).map(Some)
    }
}

impl Config {
    /// Loads the defaults, then `path` (when given), then the environment.
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::new().merge(Yaml::string(DEFAULTS));
        if let Some(path) = path {
            if !path.exists() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Yaml::file(path));
        }
        let env = Env::prefixed("HOOKYARD_")
            .split("__")
            // The filter sees the variable's own case (`HTTP__BODY_LIMIT`).
            .filter(|key| {
                ENV_KEYS.iter().any(|k| {
                    key.as_str()
                        .get(..k.len())
                        .is_some_and(|head| head.eq_ignore_ascii_case(k))
                })
            });
        let mut config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| anyhow::anyhow!(render_figment_error(e)))?;
        config.read_flow_files(path.and_then(std::path::Path::parent))?;
        config.read_env_secrets()?;
        // An empty HOOKYARD_STORAGE__POSTGRES_URL means SQLite, like none.
        if config.storage.postgres_url.as_deref() == Some("") {
            config.storage.postgres_url = None;
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads `flow_files`; a file that does not parse is named with its line.
    fn read_flow_files(&mut self, base: Option<&std::path::Path>) -> anyhow::Result<()> {
        for (i, file) in self.flow_files.clone().iter().enumerate() {
            let path = match base {
                Some(base) if file.is_relative() => base.join(file),
                _ => file.clone(),
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("flow_files[{i}]: could not read {}", path.display()))?;
            let def = crate::flows::definition::parse_yaml(&text)
                .map_err(|e| anyhow::anyhow!("flow_files[{i}] ({}): {e}", path.display()))?;
            if self.flows.iter().any(|f| f.id == def.id) {
                bail!(
                    "flow_files[{i}] ({}) declares flow `{}`, which is declared twice",
                    path.display(),
                    def.id
                );
            }
            self.flows.push(def);
            self.flow_file_texts.push((path, text));
        }
        Ok(())
    }

    /// What serde cannot check: values that must agree with each other.
    fn validate(&self) -> anyhow::Result<()> {
        if self.http.body_limit == 0 {
            bail!("http.body_limit must be greater than 0");
        }
        self.validate_limits()?;
        if let Some(url) = &self.storage.postgres_url {
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                bail!("storage.postgres_url must start with postgres:// (postgres://user:password@host:port/database)");
            }
            if let Err(e) = url.parse::<sqlx::postgres::PgConnectOptions>() {
                bail!("storage.postgres_url is not a PostgreSQL URL (postgres://user:password@host:port/database): {e}");
            }
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&self.storage.lease_timeout)
        {
            bail!(
                "storage.lease_timeout must be between 1s and 1h, not {}",
                humantime::format_duration(self.storage.lease_timeout)
            );
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(86_400))
            .contains(&self.retention.interval)
        {
            bail!(
                "retention.interval must be between 100ms and 1d, not {}",
                humantime::format_duration(self.retention.interval)
            );
        }
        if self.storage.max_batch == 0 || self.storage.queue == 0 {
            bail!("storage.max_batch and storage.queue must be greater than 0");
        }
        self.validate_ranges()?;
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.key.len() < 16 {
                bail!("api_keys[{i}].key must be at least 16 characters");
            }
        }
        if !(self.flow_runner.time_scale > 0.0 && self.flow_runner.time_scale <= 1.0) {
            bail!("flow_runner.time_scale must be greater than 0 and at most 1");
        }
        if self.flow_runner.concurrency == 0 {
            bail!("flow_runner.concurrency must be greater than 0");
        }
        for def in &self.flows {
            let compiled = crate::flows::compiled::compile(
                def.clone(),
                String::new(),
                0,
                std::sync::Arc::default(),
            );
            if let Err(errors) = compiled {
                bail!(
                    "flow `{}`: {}",
                    def.id,
                    crate::flows::catalog::summary(&errors)
                );
            }
        }
        self.check_tenants()?;
        for (i, sub) in self.subscriptions.iter().enumerate() {
            if let Some(flow) = sub.target.strip_prefix("flow:") {
                if !self.flows.iter().any(|f| f.id == flow) {
                    bail!(
                        "subscriptions[{i}].target names flow `{flow}`, which the config does not declare"
                    );
                }
            }
            if let Some(ep) = sub.target.strip_prefix("endpoint:") {
                if !self.endpoints.iter().any(|e| e.id == ep) {
                    bail!(
                        "subscriptions[{i}].target names endpoint `{ep}`, which the config does not declare"
                    );
                }
            }
        }
        Ok(())
    }

    /// Times, durations and sizes, each named by its key: a zero or a
    /// value far out of range would stall or overflow something at run time.
    fn validate_ranges(&self) -> anyhow::Result<()> {
        use crate::delivery::limits;
        for (key, value) in [
            ("delivery.memory_queue", self.delivery.memory_queue),
            ("delivery.window", self.delivery.window),
            ("delivery.max_concurrent", self.delivery.max_concurrent),
        ] {
            if !(1..=10_000_000).contains(&value) {
                bail!("{key} must be between 1 and 10000000, not {value}");
            }
        }
        limits::check_max_in_flight(self.delivery.max_in_flight)
            .map_err(|e| anyhow::anyhow!("delivery.max_in_flight {e}"))?;
        for (key, timeout) in [
            ("delivery.timeout", self.delivery.timeout),
            ("flow_runner.timeout", self.flow_runner.timeout),
        ] {
            limits::check_timeout(timeout).map_err(|e| anyhow::anyhow!("{key} {e}"))?;
        }
        for (key, schedule) in [
            ("delivery.retry_schedule", &self.delivery.retry_schedule),
            ("flow_runner.retry", &self.flow_runner.retry),
        ] {
            if let Some(problem) = limits::check_retry_schedule(schedule).first() {
                match problem.index {
                    Some(i) => bail!("{key}[{i}]: {}", problem.message),
                    None => bail!("{key}: {}", problem.message),
                }
            }
        }
        Ok(())
    }

    /// Connection, size and rate limits.
    fn validate_limits(&self) -> anyhow::Result<()> {
        let http = &self.http;
        if http.max_connections == 0 {
            bail!("http.max_connections must be greater than 0");
        }
        for (key, value) in [
            ("http.header_timeout", http.header_timeout),
            ("http.idle_timeout", http.idle_timeout),
            ("http.request_timeout", http.request_timeout),
        ] {
            if value.is_zero() {
                bail!("{key} must be greater than 0");
            }
        }
        if http.batch_body_limit < http.body_limit {
            bail!(
                "http.batch_body_limit ({}) must be at least http.body_limit ({}): a batch of one event is a batch too",
                http.batch_body_limit,
                http.body_limit
            );
        }
        if self.flow_runner.webhook_rate_limit.per_second == 0 {
            bail!("flow_runner.webhook_rate_limit.per_second must be greater than 0");
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.rate_limit.is_some_and(|r| r.per_second == 0) {
                bail!("api_keys[{i}].rate_limit.per_second must be greater than 0");
            }
            let first = self.api_keys.iter().position(|k| k.name == key.name);
            if let Some(first) = first.filter(|&first| first < i) {
                if self.api_keys[first].rate_limit != key.rate_limit {
                    bail!(
                        "api_keys[{i}].rate_limit differs from api_keys[{first}].rate_limit; keys named `{}` share one budget, so give them the same limit",
                        key.name
                    );
                }
            }
        }
        Ok(())
    }

    /// API keys' tenants are identifiers, and a subscription may name its
    /// target's tenant or none, not another (routing gives a tenant's
    /// endpoint or flow only its tenant's events).
    fn check_tenants(&self) -> anyhow::Result<()> {
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.tenant_id.as_deref().is_some_and(|t| !is_tenant(t)) {
                bail!("api_keys[{i}].tenant_id must be 1-128 characters of [A-Za-z0-9._:~-]");
            }
        }
        for (i, sub) in self.subscriptions.iter().enumerate() {
            let Some(own) = &sub.tenant_id else {
                continue;
            };
            let target = if let Some(id) = sub.target.strip_prefix("endpoint:") {
                self.endpoints
                    .iter()
                    .position(|e| e.id == id)
                    .and_then(|j| {
                        Some((
                            format!("endpoints[{j}]"),
                            self.endpoints[j].tenant_id.as_ref()?,
                        ))
                    })
            } else if let Some(id) = sub.target.strip_prefix("flow:") {
                self.flows
                    .iter()
                    .find(|f| f.id == id)
                    .and_then(|f| Some((format!("flow `{id}`"), f.tenant_id.as_ref()?)))
            } else {
                None
            };
            if let Some((target, theirs)) = target {
                if theirs != own {
                    bail!(
                        "subscriptions[{i}].tenant_id is `{own}`, but its target {target} has \
                         tenant_id `{theirs}` and takes only that tenant's events; leave \
                         subscriptions[{i}].tenant_id out or set it to `{theirs}`"
                    );
                }
            }
        }
        Ok(())
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("hookyard.db")
    }

    /// PostgreSQL when `storage.postgres_url` is set, else SQLite in `data_dir`.
    pub fn storage_target(&self) -> crate::store::Target {
        match &self.storage.postgres_url {
            Some(url) => crate::store::Target::Postgres(url.clone()),
            None => crate::store::Target::Sqlite(self.database_path()),
        }
    }

    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }
}

fn is_tenant(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b))
}

/// Figment's errors name the key and the file; keep every one of them.
fn render_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Reads the config for `hookyard serve`.
/// The value of the environment variable a `*_env` key names; the message
/// names the key.
fn env_secret(key: &str, var: &str) -> anyhow::Result<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => bail!("{key} names `{var}`, which is empty"),
        Err(_) => bail!("{key} names `{var}`, which is not set"),
    }
}

impl Config {
    /// Secrets kept out of the file: `api_keys[].key_env`,
    /// `endpoints[].secret_env` and `sources[].secret_env` name environment
    /// variables read here; giving both a value and its `_env` is an error.
    fn read_env_secrets(&mut self) -> anyhow::Result<()> {
        for (i, key) in self.api_keys.iter_mut().enumerate() {
            match (&key.key_env, key.key.is_empty()) {
                (Some(var), true) => key.key = env_secret(&format!("api_keys[{i}].key_env"), var)?,
                (Some(_), false) => bail!("api_keys[{i}]: give `key` or `key_env`, not both"),
                (None, true) => bail!("api_keys[{i}].key is required (or key_env)"),
                (None, false) => {}
            }
        }
        for (i, endpoint) in self.endpoints.iter_mut().enumerate() {
            if let Some(var) = &endpoint.secret_env {
                if endpoint.secret.is_some() {
                    bail!("endpoints[{i}]: give `secret` or `secret_env`, not both");
                }
                endpoint.secret = Some(env_secret(&format!("endpoints[{i}].secret_env"), var)?);
            }
        }
        for (i, source) in self.sources.iter_mut().enumerate() {
            if let Some(var) = &source.secret_env {
                if !source.signature.secret().is_empty() {
                    bail!("sources[{i}]: give `signature.secret` or `secret_env`, not both");
                }
                if source.signature.kind() == "none" {
                    bail!("sources[{i}].secret_env: the source has no signature to use it");
                }
                let secret = env_secret(&format!("sources[{i}].secret_env"), var)?;
                source.signature.set_secret(secret);
            }
        }
        Ok(())
    }
}

pub fn load_for_serve(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| match path {
        Some(p) => format!("invalid configuration in {}", p.display()),
        None => "invalid configuration".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml)?;
        Config::load(Some(&path))
    }

    #[test]
    fn defaults_load() -> anyhow::Result<()> {
        let config = Config::load(None)?;
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.http.body_limit, 256 * 1024);
        assert_eq!(config.delivery.retry_schedule.len(), 8);
        Ok(())
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load_str("listen: 127.0.0.1:1\nlisten_port: 3\n")
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn nested_unknown_key_is_named() {
        let err = load_str("delivery: {retries: 3}\n")
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("retries"), "{err}");
    }

    #[test]
    fn example_config_loads() -> anyhow::Result<()> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hookyard.yaml");
        let config = Config::load(Some(std::path::Path::new(path)))?;
        assert_eq!(config.endpoints.len(), 1);
        assert_eq!(
            config.subscriptions[0].exclude,
            vec!["lead.test".to_string()]
        );
        Ok(())
    }

    #[test]
    fn example_flows_load_and_a_broken_flow_is_named() -> anyhow::Result<()> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hookyard.yaml");
        let config = Config::load(Some(std::path::Path::new(path)))?;
        assert_eq!(config.flows.len(), 5);
        assert_eq!(config.flow_file_texts.len(), 5);
        let err =
            load_str("flows: [{id: f, steps: [{id: a, http: {url: '{{ inputs.nope }}'}}]}]\n")
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
        assert!(
            err.contains("steps[0].http.url") && err.contains("nope"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn sources_load_and_their_unknown_keys_are_named() -> anyhow::Result<()> {
        let config = load_str(concat!(
            "sources: [{id: form, name: Form, token_env: FORM_TOKEN,\n",
            "  event_name: {template: 'lead.{{ payload.kind }}'}, required: [email],\n",
            "  signature: {scheme: hmac_sha256, secret: abcdefghijklmnopq, header: x-sig, encoding: base64},\n",
            "  allowed_cidrs: [10.0.0.0/8], rate_limit: {per_second: 5}}]\n",
            "http: {trusted_proxies: [127.0.0.1/32]}\n",
        ))?;
        assert_eq!(config.sources[0].required, vec!["email".to_string()]);
        assert_eq!(config.http.trusted_proxies.len(), 1);
        let err = load_str(
            "sources: [{id: a, name: A, token: x, event_name: {fixed: a.b}, colour: red}]\n",
        )
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(err.contains("colour"), "{err}");
        Ok(())
    }

    fn load_err(yaml: &str) -> String {
        load_str(yaml)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default()
    }

    #[test]
    fn connection_and_rate_limits_load_and_bad_ones_are_named() -> anyhow::Result<()> {
        let config = load_str(concat!(
            "http: {idle_timeout: 5s, max_connections_per_ip: 4, batch_body_limit: 1048576}\n",
            "api_keys: [{name: crm, key: hy_test_key_0123456789abcdef,\n",
            "  rate_limit: {per_second: 5, burst: 10}}]\n",
        ))?;
        assert_eq!(config.http.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.http.max_connections_per_ip, 4);
        assert_eq!(config.api_keys[0].rate_limit.map(|r| r.burst), Some(10));
        assert_eq!(Config::load(None)?.flow_runner.webhook_rate_limit.burst, 20);

        let cases = [
            ("http: {batch_body_limit: 1000}\n", "http.batch_body_limit"),
            ("http: {idle_timeout: 0s}\n", "http.idle_timeout"),
            ("http: {max_connections: 0}\n", "http.max_connections"),
            (
                "flow_runner: {webhook_rate_limit: {per_second: 0}}\n",
                "flow_runner.webhook_rate_limit.per_second",
            ),
            (
                "api_keys: [{name: a, key: hy_test_key_0123456789abcdef, rate_limit: {per_second: 0}}]\n",
                "api_keys[0].rate_limit.per_second",
            ),
            (
                concat!(
                    "api_keys: [{name: a, key: hy_old_key_0123456789abcdef},\n",
                    "  {name: a, key: hy_new_key_0123456789abcdef, rate_limit: {per_second: 1}}]\n",
                ),
                "api_keys[1].rate_limit differs from api_keys[0].rate_limit",
            ),
            (
                "flows: [{id: f, webhook: {rate_limit: {per_second: 0}}, steps: [{id: a, log: x}]}]\n",
                "webhook.rate_limit.per_second",
            ),
        ];
        for (yaml, named) in cases {
            let err = load_err(yaml);
            assert!(err.contains(named), "{yaml}: {err}");
        }
        Ok(())
    }

    #[test]
    fn out_of_range_settings_are_named_by_key() {
        for (yaml, key) in [
            ("delivery: {timeout: 0s}", "delivery.timeout"),
            ("delivery: {timeout: 1y}", "delivery.timeout"),
            ("delivery: {max_in_flight: 0}", "delivery.max_in_flight"),
            (
                "delivery: {max_in_flight: 1000000}",
                "delivery.max_in_flight",
            ),
            (
                "delivery: {retry_schedule: [0s, 400d]}",
                "delivery.retry_schedule[1]",
            ),
            ("delivery: {memory_queue: 0}", "delivery.memory_queue"),
            ("storage: {queue: 0}", "storage.queue"),
            ("storage: {lease_timeout: 100ms}", "storage.lease_timeout"),
            (
                "storage: {postgres_url: 'mysql://x'}",
                "storage.postgres_url",
            ),
            ("http: {body_limit: 0}", "http.body_limit"),
            ("http: {request_timeout: 0s}", "http.request_timeout"),
            ("flow_runner: {timeout: 0s}", "flow_runner.timeout"),
            ("flow_runner: {retry: [1000000d]}", "flow_runner.retry[0]"),
            ("flow_runner: {time_scale: .nan}", "flow_runner.time_scale"),
            ("flow_runner: {time_scale: 0}", "flow_runner.time_scale"),
        ] {
            let err = load_str(&format!("{yaml}\n"))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(err.contains(key), "{yaml}: {err}");
        }
        let many = format!(
            "delivery: {{retry_schedule: [{}]}}\n",
            vec!["1s"; 21].join(", ")
        );
        let err = load_str(&many)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(err.contains("delivery.retry_schedule: at most 20"), "{err}");
    }

    #[test]
    fn tenants_are_checked_and_a_contradiction_names_the_key() {
        let config =
            load_str("api_keys: [{name: a, key: hy_acme_0123456789abcdef, tenant_id: acme}]\n");
        assert_eq!(
            config.ok().and_then(|c| c.api_keys[0].tenant_id.clone()),
            Some("acme".to_string())
        );
        let err =
            load_str("api_keys: [{name: a, key: hy_acme_0123456789abcdef, tenant_id: 'a b'}]\n")
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
        assert!(err.contains("api_keys[0].tenant_id"), "{err}");
        let err = load_str(concat!(
            "endpoints: [{id: crm, url: 'http://127.0.0.1:9/', tenant_id: acme}]\n",
            "subscriptions: [{name: a, patterns: ['a.*'], tenant_id: acme, target: 'endpoint:crm'},\n",
            "  {name: b, patterns: ['a.*'], tenant_id: globex, target: 'endpoint:crm'}]\n",
        ))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
        assert!(
            err.contains("subscriptions[1].tenant_id") && err.contains("endpoints[0]"),
            "{err}"
        );
    }

    #[test]
    fn subscription_to_undeclared_endpoint_is_refused() {
        let err =
            load_str("subscriptions: [{name: a, patterns: ['a.*'], target: 'endpoint:nope'}]\n")
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
        assert!(err.contains("nope"), "{err}");
    }
}

#[cfg(test)]
mod reference {
    /// Every key of `defaults.yaml`, with its default, is in
    /// docs/configuration.md: the reference cannot fall behind the file.
    #[test]
    fn the_reference_lists_every_default_key_with_its_value() {
        let reference = include_str!("../../../docs/configuration.md");
        let defaults: serde_yaml::Value =
            serde_yaml::from_str(super::DEFAULTS).expect("defaults.yaml parses");
        let mut keys = Vec::new();
        flatten("", &defaults, &mut keys);
        assert!(keys.len() > 30, "{keys:?}");
        for (key, value) in keys {
            let row = reference
                .lines()
                .find(|line| line.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("docs/configuration.md does not list `{key}`"));
            assert!(
                row.contains(&value),
                "docs/configuration.md gives `{key}` another default than {value}: {row}"
            );
        }
    }

    /// Dotted keys with their default as written in the reference.
    fn flatten(prefix: &str, value: &serde_yaml::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_yaml::Value::Mapping(map) if !map.is_empty() => {
                for (k, v) in map {
                    let k = k.as_str().unwrap_or_default();
                    let key = if prefix.is_empty() {
                        k.to_string()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            serde_yaml::Value::Sequence(items) => {
                let items: Vec<String> = items
                    .iter()
                    .map(|i| format!("\"{}\"", i.as_str().unwrap_or_default()))
                    .collect();
                out.push((prefix.to_string(), format!("`[{}]`", items.join(", "))));
            }
            serde_yaml::Value::String(s) => out.push((prefix.to_string(), format!("`{s}`"))),
            serde_yaml::Value::Number(n) => {
                let n = n.to_string();
                let n = if n.contains('.') || !prefix.ends_with("time_scale") {
                    n
                } else {
                    format!("{n}.0")
                };
                out.push((prefix.to_string(), format!("`{n}`")));
            }
            other => out.push((prefix.to_string(), format!("`{other:?}`"))),
        }
    }
}
