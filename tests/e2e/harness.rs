//! Starts the real `hookyard` binary on ephemeral ports with a config written
//! into a temp dir, and hands out clients for its three APIs. When a test
//! panics, the daemon's log tail is printed so the failure explains itself.

use std::{
    fs::OpenOptions,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use hookyard::v1::{admin_client::AdminClient, events_client::EventsClient};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint},
    Request, Status,
};

pub const API_KEY: &str = "hy_test_key_0123456789abcdef";
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long a test waits for anything the daemon should do promptly.
pub const WAIT: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 80;

pub type Events = EventsClient<InterceptedService<Channel, Bearer>>;
pub type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call (nothing when `None`).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Bearer {
        Bearer(token.map(|t| {
            format!("Bearer {t}")
                .parse()
                .expect("a token that fits in metadata")
        }))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// An endpoint declared in the config file.
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    id: String,
    url: String,
    retry_schedule: Vec<String>,
    timeout: String,
    tenant_id: Option<String>,
}

impl EndpointSpec {
    pub fn new(id: &str, url: &str) -> EndpointSpec {
        EndpointSpec {
            id: id.to_string(),
            url: url.to_string(),
            retry_schedule: to_strings(&["0s", "200ms", "200ms"]),
            timeout: "5s".to_string(),
            tenant_id: None,
        }
    }

    pub fn timeout(mut self, timeout: &str) -> EndpointSpec {
        self.timeout = timeout.to_string();
        self
    }

    /// The endpoint belongs to `tenant`.
    pub fn tenant(mut self, tenant: &str) -> EndpointSpec {
        self.tenant_id = Some(tenant.to_string());
        self
    }

    pub fn retry_schedule(mut self, delays: &[&str]) -> EndpointSpec {
        self.retry_schedule = to_strings(delays);
        self
    }

    fn render(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "secret": SECRET,
            "headers": {"X-Env": "test"},
            "retry_schedule": self.retry_schedule,
            "timeout": self.timeout,
            "max_in_flight": 8,
            "tenant_id": self.tenant_id,
        })
    }
}

/// A small builder for the daemon's YAML config.
#[derive(Clone, Debug)]
pub struct TestConfig {
    allow_private_targets: bool,
    body_limit: usize,
    endpoints: Vec<EndpointSpec>,
    subscriptions: Vec<Value>,
    sources: Vec<Value>,
    trusted_proxies: Vec<String>,
    memory_queue: usize,
    data_dir: Option<PathBuf>,
    flows: Vec<Value>,
    flow_files: Vec<String>,
    time_scale: f64,
    secrets: Vec<(String, String)>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, Value)>,
    api_keys: Vec<Value>,
    umask: Option<u32>,
}

impl TestConfig {
    /// No endpoints or subscriptions; loopback targets allowed.
    pub fn new() -> TestConfig {
        TestConfig {
            allow_private_targets: true,
            body_limit: 262_144,
            endpoints: Vec::new(),
            subscriptions: Vec::new(),
            sources: Vec::new(),
            trusted_proxies: Vec::new(),
            memory_queue: 20_000,
            data_dir: None,
            flows: Vec::new(),
            flow_files: Vec::new(),
            time_scale: 1.0,
            secrets: Vec::new(),
            env: Vec::new(),
            overrides: Vec::new(),
            api_keys: Vec::new(),
            umask: None,
        }
    }

    /// Sets any config key by its dotted path (`http.idle_timeout`), over
    /// what the other builders render.
    pub fn set(mut self, path: &str, value: Value) -> TestConfig {
        self.overrides.push((path.to_string(), value));
        self
    }

    /// Declares a flow (the YAML `flows:` entry, as JSON).
    pub fn flow(mut self, def: Value) -> TestConfig {
        self.flows.push(def);
        self
    }

    /// Declares one of the shipped example flows, `examples/flows/<name>.yaml`.
    pub fn example_flow(mut self, name: &str) -> TestConfig {
        self.flow_files.push(format!(
            "{}/examples/flows/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ));
        self
    }

    /// Routes `patterns` to `flow:<flow>` with `inputs` templates over the event.
    pub fn flow_subscription(
        mut self,
        name: &str,
        patterns: &[&str],
        flow: &str,
        inputs: Value,
    ) -> TestConfig {
        self.subscriptions.push(json!({
            "name": name,
            "patterns": patterns,
            "target": format!("flow:{flow}"),
            "inputs": inputs,
        }));
        self
    }

    /// Multiplies every flow wait (tests run days in seconds).
    pub fn time_scale(mut self, scale: f64) -> TestConfig {
        self.time_scale = scale;
        self
    }

    /// A value for `secret(name)` in flow templates (a secrets file).
    pub fn secret(mut self, name: &str, value: &str) -> TestConfig {
        self.secrets.push((name.to_string(), value.to_string()));
        self
    }

    /// The usual route: endpoint `crm` at `url`, subscription `leads-to-crm`
    /// for `lead.*` except `lead.test`.
    pub fn crm(url: &str) -> TestConfig {
        TestConfig::new().route_leads(EndpointSpec::new("crm", url))
    }

    /// Declares `endpoint` and routes `lead.*` (except `lead.test`) to it.
    pub fn route_leads(self, endpoint: EndpointSpec) -> TestConfig {
        let target = format!("endpoint:{}", endpoint.id);
        self.endpoint(endpoint)
            .subscription("leads-to-crm", &["lead.*"], &["lead.test"], &target)
    }

    pub fn endpoint(mut self, endpoint: EndpointSpec) -> TestConfig {
        self.endpoints.push(endpoint);
        self
    }

    pub fn subscription(
        mut self,
        name: &str,
        patterns: &[&str],
        exclude: &[&str],
        target: &str,
    ) -> TestConfig {
        self.subscriptions.push(json!({
            "name": name,
            "patterns": patterns,
            "exclude": exclude,
            "target": target,
        }));
        self
    }

    pub fn deny_private_targets(mut self) -> TestConfig {
        self.allow_private_targets = false;
        self
    }

    /// Declares a source (the YAML `sources:` entry, as JSON).
    pub fn source(mut self, source: Value) -> TestConfig {
        self.sources.push(source);
        self
    }

    pub fn trusted_proxies(mut self, cidrs: &[&str]) -> TestConfig {
        self.trusted_proxies = to_strings(cidrs);
        self
    }

    pub fn body_limit(mut self, bytes: usize) -> TestConfig {
        self.body_limit = bytes;
        self
    }

    /// Deliveries the dispatcher may hold in memory; the rest wait in storage.
    pub fn memory_queue(mut self, deliveries: usize) -> TestConfig {
        self.memory_queue = deliveries;
        self
    }

    /// Keeps the data (database, admin token) in `dir` instead of the temp dir.
    pub fn data_dir(mut self, dir: &Path) -> TestConfig {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    fn all_api_keys(&self) -> Vec<Value> {
        let mut keys = vec![json!({"name": "crm-service", "key": API_KEY})];
        keys.extend(self.api_keys.iter().cloned());
        keys
    }

    /// Another API key besides `API_KEY`, bound to `tenant` when given.
    pub fn api_key(mut self, name: &str, key: &str, tenant: Option<&str>) -> TestConfig {
        self.api_keys
            .push(json!({"name": name, "key": key, "tenant_id": tenant}));
        self
    }

    /// Declares a subscription as written (the YAML entry, as JSON).
    pub fn subscription_entry(mut self, entry: Value) -> TestConfig {
        self.subscriptions.push(entry);
        self
    }

    /// An environment variable for the daemon (`HOOKYARD_*` included,
    /// which are otherwise removed; a debug build's fault hooks among them).
    pub fn env(mut self, name: &str, value: &str) -> TestConfig {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The daemon's umask (the test process's otherwise).
    pub fn umask(mut self, mask: u32) -> TestConfig {
        self.umask = Some(mask);
        self
    }

    /// JSON is YAML, and serde_json does the quoting.
    fn render(
        &self,
        data_dir: &Path,
        listen: SocketAddr,
        admin_listen: SocketAddr,
        postgres_url: Option<&str>,
    ) -> String {
        let allow: &[&str] = if self.allow_private_targets {
            &["127.0.0.0/8"]
        } else {
            &[]
        };
        let mut config = json!({
            "listen": listen.to_string(),
            "admin_listen": admin_listen.to_string(),
            "data_dir": data_dir,
            "api_keys": self.all_api_keys(),
            "http": {
                "body_limit": self.body_limit,
                "request_timeout": "30s",
                "header_timeout": "10s",
                "trusted_proxies": self.trusted_proxies,
            },
            "delivery": {
                "allow_private_targets": allow,
                "retry_schedule": ["0s", "5s", "5m"],
                "timeout": "10s",
                "max_in_flight": 16,
                "memory_queue": self.memory_queue,
            },
            "endpoints": self.endpoints.iter().map(EndpointSpec::render).collect::<Vec<_>>(),
            "subscriptions": self.subscriptions,
            "sources": self.sources,
            "flows": self.flows,
            "flow_files": self.flow_files,
            "flow_runner": {
                "time_scale": self.time_scale,
                "concurrency": 64,
                "retry": ["100ms", "100ms"],
                "timeout": "5s",
                "secrets_file": secrets_path(data_dir),
            },
        });
        if let Some(url) = postgres_url {
            config["storage"] = json!({"postgres_url": url});
        }
        for (path, value) in &self.overrides {
            let mut at = &mut config;
            for key in path.split('.') {
                at = &mut at[key];
            }
            *at = value.clone();
        }
        serde_json::to_string_pretty(&config).expect("a config renders")
    }
}

pub struct Daemon {
    /// Has a per-request timeout, so a killed daemon fails requests quickly.
    pub http: reqwest::Client,
    /// The database of its own on PostgreSQL, when this test binary runs
    /// on PostgreSQL (`crate::backend::POSTGRES`); kept across restarts.
    postgres_url: Option<String>,
    dir: TempDir,
    config: TestConfig,
    child: Option<Child>,
    listen: SocketAddr,
    admin_listen: SocketAddr,
}

impl Daemon {
    pub async fn start(config: TestConfig) -> Daemon {
        let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut daemon = Daemon {
            http: reqwest::Client::builder()
                .timeout(WAIT)
                .build()
                .expect("an HTTP client"),
            dir: tempfile::tempdir().expect("a temp dir"),
            postgres_url: match crate::backend::POSTGRES {
                true => Some(fresh_postgres_database().await),
                false => None,
            },
            config,
            child: None,
            listen: any_port,
            admin_listen: any_port,
        };
        daemon.spawn().await;
        daemon
    }

    pub fn http_base(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http_base())
    }

    /// `POST /v1/events` with the API key; the caller adds the body.
    pub fn post_events(&self) -> reqwest::RequestBuilder {
        self.http.post(self.url("/v1/events")).bearer_auth(API_KEY)
    }

    pub fn events_client(&self) -> Events {
        self.events_client_with_key(Some(API_KEY))
    }

    pub fn events_client_with_key(&self, key: Option<&str>) -> Events {
        EventsClient::with_interceptor(channel(self.listen), Bearer::new(key))
    }

    /// Where the Admin API listens, for clients started outside the test
    /// (the TUI).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listen
    }

    pub fn admin_client(&self) -> Admin {
        self.admin_client_with_token(&self.admin_token())
    }

    pub fn admin_client_with_token(&self, token: &str) -> Admin {
        AdminClient::with_interceptor(channel(self.admin_listen), Bearer::new(Some(token)))
    }

    pub fn admin_token(&self) -> String {
        let path = self.data_dir().join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// SIGKILL: no chance to flush or shut down cleanly.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL the daemon");
        }
    }

    /// SIGTERM, then waits for the daemon to exit.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let pid = libc::pid_t::try_from(pid).expect("a pid fits in pid_t");
            // SAFETY: `pid` is our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_err()
        {
            self.child = Some(child);
            panic!("the daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM");
        }
    }

    /// Waits up to `timeout` for the daemon to exit by itself; its status.
    pub async fn exited(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = tokio::time::timeout(timeout, child.wait()).await.ok()?;
        self.child = None;
        Some(status.expect("the daemon's exit status"))
    }

    /// Everything the daemon logged so far, across restarts.
    /// Writes `config` as the running daemon's config file and sends it
    /// SIGHUP, as `systemctl reload` does.
    pub fn reload_with(&mut self, config: TestConfig) {
        self.config = config;
        let yaml = self.config.render(
            &self.data_dir(),
            self.listen,
            self.admin_listen,
            self.postgres_url.as_deref(),
        );
        std::fs::write(self.dir.path().join("hookyard.yaml"), yaml).expect("write the config");
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill -HUP");
        assert!(sent.success(), "kill -HUP {pid}");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts again with `config` on the same data dir and ports; stops the
    /// running daemon first if there is one.
    pub async fn restart_with(&mut self, config: TestConfig) {
        self.stop().await;
        self.config = config;
        self.spawn().await;
    }

    /// Runs `hookyard SUBCOMMAND --config FILE` on this daemon's config (as
    /// last started), with a time limit; its exit status, stdout and stderr.
    pub async fn run_subcommand(
        &self,
        subcommand: &str,
    ) -> (std::process::ExitStatus, String, String) {
        self.run_subcommand_with(subcommand, &[]).await
    }

    /// `hookyard SUBCOMMAND ARGS… --config <this daemon's config>`.
    pub async fn run_subcommand_with(
        &self,
        subcommand: &str,
        args: &[&str],
    ) -> (std::process::ExitStatus, String, String) {
        let mut command = Command::new(binary());
        command
            .arg(subcommand)
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("hookyard.yaml"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOOKYARD_") {
                command.env_remove(key);
            }
        }
        let output = tokio::time::timeout(READY_TIMEOUT, command.output())
            .await
            .unwrap_or_else(|_| panic!("hookyard {subcommand} did not finish in {READY_TIMEOUT:?}"))
            .expect("run the hookyard binary");
        (
            output.status,
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The daemon's PostgreSQL database, when this binary runs on PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref()
    }

    /// Starts again on the same data dir and the same ports; stops the
    /// running daemon first if there is one.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// Where the daemon keeps its database and admin token.
    pub fn data_path(&self) -> PathBuf {
        self.data_dir()
    }

    fn data_dir(&self) -> PathBuf {
        match &self.config.data_dir {
            Some(dir) => dir.clone(),
            None => self.dir.path().join("data"),
        }
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("a running daemon")
    }

    /// `(VmRSS, VmHWM)` of the daemon in KiB: current and peak resident memory.
    pub fn memory_kib(&self) -> (u64, u64) {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {path}"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("hookyard.log")
    }

    async fn spawn(&mut self) {
        let config_path = self.dir.path().join("hookyard.yaml");
        let yaml = self.config.render(
            &self.data_dir(),
            self.listen,
            self.admin_listen,
            self.postgres_url.as_deref(),
        );
        std::fs::write(&config_path, yaml).expect("write the config");
        let secrets: serde_json::Map<String, Value> = self
            .config
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        std::fs::write(
            secrets_path(&self.data_dir()),
            Value::Object(secrets).to_string(),
        )
        .expect("write the secrets file");
        // Appended across restarts, so one file tells the whole story.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the daemon log");

        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            // Plain text in the log file the tail is printed from.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        // HOOKYARD_* variables would override the config file.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOOKYARD_") {
                command.env_remove(key);
            }
        }
        command.envs(self.config.env.iter().cloned());
        if let Some(mask) = self.config.umask {
            let mask = libc::mode_t::try_from(mask).expect("a umask fits in mode_t");
            // SAFETY: umask is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("spawn the hookyard binary");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);

        let mut lines = BufReader::new(stdout).lines();
        let line = match tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!("the daemon exited before it was ready"),
            Ok(Err(e)) => panic!("reading the daemon's stdout: {e}"),
            Err(_) => panic!("the daemon was not ready within {READY_TIMEOUT:?}"),
        };
        (self.listen, self.admin_listen) = parse_ready_line(&line);
        // Keep the pipe open and drained: a closed stdout would make a later
        // println! in the daemon fail.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }

    fn print_log_tail(&self) {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        eprintln!(
            "---- hookyard log (last {} lines of {}) ----\n{}\n---- end of hookyard log ----",
            tail.len(),
            self.log_path().display(),
            tail.join("\n")
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tail();
        }
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// `ready listen=127.0.0.1:PORT admin_listen=127.0.0.1:PORT`
fn parse_ready_line(line: &str) -> (SocketAddr, SocketAddr) {
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name))
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}<addr>` in the ready line {line:?}"))
    };
    assert!(
        line.starts_with("ready "),
        "expected the ready line, got {line:?}"
    );
    (field("listen="), field("admin_listen="))
}

/// Lazy, so a client made before a restart reconnects after it. The timeout
/// covers a call up to its response headers, not a stream's messages.
fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(WAIT)
        .timeout(WAIT)
        .connect_lazy()
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKYARD_BIN") {
        return PathBuf::from(path);
    }
    built_binary("hookyard")
}

/// A binary of this workspace, built next to the test binary's directory.
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        path.exists(),
        "{} is missing; build the binaries first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// Beside the data dir, in the test's temp dir.
fn secrets_path(data_dir: &Path) -> PathBuf {
    data_dir
        .parent()
        .map(|dir| dir.join("secrets.yaml"))
        .expect("the data dir has a parent")
}

fn to_strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Starts the daemon on `config` expecting it to refuse to start; returns
/// its exit status and what it wrote to stderr.
pub async fn refused_start(config: TestConfig) -> (std::process::ExitStatus, String) {
    run_once(config, "serve").await
}

/// `hookyard check-config` on `config`: its exit status and stderr.
pub async fn check_config(config: TestConfig) -> (std::process::ExitStatus, String) {
    run_once(config, "check-config").await
}

/// Runs `hookyard SUBCOMMAND --config FILE` once, expecting it to exit.
async fn run_once(config: TestConfig, subcommand: &str) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| dir.path().join("data"));
    let any_port: SocketAddr = ([127, 0, 0, 1], 0).into();
    let config_path = dir.path().join("hookyard.yaml");
    // Refused before storage opens, whichever backend: SQLite will do.
    std::fs::write(
        &config_path,
        config.render(&data_dir, any_port, any_port, None),
    )
    .expect("write the config");
    std::fs::write(secrets_path(&data_dir), "{}").expect("write the secrets file");
    let run = Command::new(binary())
        .arg(subcommand)
        .arg("--config")
        .arg(&config_path)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(READY_TIMEOUT, run)
        .await
        .expect("the daemon exits instead of starting")
        .expect("run the hookyard binary");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A new, empty database on the test PostgreSQL (`./scripts/test` starts
/// one and sets `HOOKYARD_TEST_POSTGRES_URL`); its URL.
async fn fresh_postgres_database() -> String {
    use sqlx::Connection;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let base = std::env::var("HOOKYARD_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "HOOKYARD_TEST_POSTGRES_URL is not set: run the tests with ./scripts/test, which \
             starts a PostgreSQL for them"
        )
    });
    let name = format!(
        "e2e_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to HOOKYARD_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let _ = conn.close().await;
    let mut url = reqwest::Url::parse(&base).expect("HOOKYARD_TEST_POSTGRES_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// The Python with the third-party client libraries the tests check
/// against (`scripts/python-env` makes it on first use); its path.
pub fn python() -> String {
    let python =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/python-env"))
            .output()
            .expect("run scripts/python-env");
    assert!(
        python.status.success(),
        "scripts/python-env: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    String::from_utf8(python.stdout)
        .expect("a path")
        .trim()
        .to_string()
}
