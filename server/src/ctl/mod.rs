//! `hookyard ctl`: the Admin API from scripts. Each command is one Admin
//! call (two for an update: read, change the flags given, write back with
//! the version read, so a concurrent edit is refused rather than lost).
//! Output is a table for people, or `--json` for scripts (one JSON value;
//! `tail` prints one object per line). Errors from the daemon are printed
//! with the fields they name, and the command exits 1.
//!
//! The Admin API and its token are found as the TUI finds them: `--addr` /
//! `HOOKYARD_ADDR`, `--token` / `HOOKYARD_TOKEN`, else the `admin.token`
//! file in `--data-dir` / `HOOKYARD_DATA_DIR`.

mod event_types;
mod render;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use hookyard::v1::{
    admin_client::AdminClient, events_client::EventsClient, CancelRunRequest,
    CreateEndpointRequest, CreateFlowRequest, CreateSubscriptionRequest, DeleteEndpointRequest,
    DeleteFlowRequest, DeleteSourceRequest, DeleteSubscriptionRequest, DeliveryFilter,
    DeliveryStatus, Endpoint, EndpointRateLimit, EndpointState, Event, GetDeliveryRequest,
    GetEndpointRequest, GetFlowRequest, GetRunRequest, GetSourceRequest, GetSubscriptionRequest,
    ListDeliveriesRequest, ListEndpointsRequest, ListFlowsRequest, ListRunsRequest,
    ListSourcesRequest, ListSubscriptionsRequest, PayloadFormat, PublishRequest,
    RecoverEndpointRequest, ResendDeliveryRequest, ResumeSourceRequest, RetryDeliveryRequest,
    RotateEndpointSecretRequest, RunState, SendTestEventRequest, Subscription,
    SuspendSourceRequest, UpdateEndpointRequest, UpdateFlowRequest, UpdateSubscriptionRequest,
    WatchDeliveriesRequest,
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::Channel,
    Request, Status,
};

use render::Output;

#[derive(Debug, Parser)]
#[command(
    name = "hookyard ctl",
    about = "Hookyard's Admin API from the command line"
)]
pub struct Ctl {
    #[command(flatten)]
    pub connection: Connection,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Args)]
pub struct Connection {
    /// The daemon's Admin API (`admin_listen`).
    #[arg(
        long,
        env = "HOOKYARD_ADDR",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    pub addr: String,
    /// The admin token; read from `<data-dir>/admin.token` when not given.
    #[arg(long, env = "HOOKYARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The daemon's data directory, where it wrote `admin.token`.
    #[arg(
        long,
        env = "HOOKYARD_DATA_DIR",
        default_value = "./hookyard-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// A PEM certificate to trust for an `https://` address (a daemon with
    /// its own `tls` certificate); the system's roots are trusted anyway.
    #[arg(long, env = "HOOKYARD_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

// Parsed once per invocation: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Tenant HTTP endpoints.
    #[command(subcommand)]
    Endpoints(EndpointCommand),
    /// Routing rules: patterns to an endpoint or a flow.
    #[command(subcommand)]
    Subscriptions(SubscriptionCommand),
    /// Partner and form webhooks (create them in the config file or the TUI).
    #[command(subcommand)]
    Sources(SourceCommand),
    /// Flow definitions.
    #[command(subcommand)]
    Flows(FlowCommand),
    /// The event-type catalog: a JSON Schema per event name pattern.
    #[command(subcommand)]
    EventTypes(event_types::EventTypeCommand),
    /// Deliveries: list, inspect, retry.
    #[command(subcommand)]
    Deliveries(DeliveryCommand),
    /// Flow runs: list, inspect, cancel.
    #[command(subcommand)]
    Runs(RunCommand),
    /// Fresh deliveries for the stored events received in a window (a job:
    /// throttled, watched with `jobs watch`, cancellable).
    Replay {
        /// Events whose name matches this pattern, through the current
        /// subscriptions.
        #[arg(
            long,
            conflicts_with = "subscription",
            required_unless_present = "subscription"
        )]
        pattern: Option<String>,
        /// Only the events this subscription takes, to its endpoint.
        #[arg(long)]
        subscription: Option<String>,
        /// Events received within this long, e.g. `6h`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Duration,
        /// Only deliveries to this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// Deliveries per second at most (default 100).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Follow the job's progress until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Every dead delivery (of one endpoint, or all) due again now (a job).
    RetryDead {
        #[arg(long)]
        endpoint: Option<String>,
        /// Only deliveries created within this long, e.g. `1d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Deliveries per second at most (default 100).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Failed deliveries waiting for a retry too (a throttled recovery).
        #[arg(long)]
        include_failed: bool,
        #[arg(long)]
        wait: bool,
    },
    /// Replays and bulk retries: list, follow, cancel.
    #[command(subcommand)]
    Jobs(JobCommand),
    /// Every delivery change as it happens, one line each, until Ctrl-C.
    Tail {
        #[arg(long)]
        endpoint: Option<String>,
        /// An event name pattern, e.g. `lead.*`.
        #[arg(long)]
        event: Option<String>,
    },
    /// Publish one event through the Events API (needs an API key).
    Publish {
        /// The event's name, e.g. `lead.created`.
        name: String,
        /// The payload, a JSON object.
        #[arg(long, default_value = "{}")]
        payload: String,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// The daemon's public address (`listen`).
        #[arg(
            long,
            env = "HOOKYARD_PUBLIC_ADDR",
            default_value = "http://127.0.0.1:8080"
        )]
        public_addr: String,
        /// An API key (`api_keys` in the config).
        #[arg(long, env = "HOOKYARD_API_KEY", hide_env_values = true)]
        api_key: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    List,
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        url: String,
        #[command(flatten)]
        fields: EndpointFields,
    },
    /// Changes only the fields given.
    Update {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[command(flatten)]
        fields: EndpointFields,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    Delete {
        id: String,
    },
    /// A new signing secret, printed once; the old one keeps signing beside
    /// it for the grace period.
    RotateSecret {
        id: String,
        /// How long the old secret keeps signing (default 24h; `0s`: stop now).
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<Duration>,
    },
    /// Sends a `hookyard.test` event now and prints the attempt.
    Test {
        id: String,
    },
    /// Re-queues the endpoint's failed and dead deliveries.
    Recover {
        id: String,
        /// Only deliveries created within this long, e.g. `6h`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
    },
}

#[derive(Debug, Args)]
pub struct EndpointFields {
    /// `whsec_…`; made by the daemon when a new endpoint has none.
    #[arg(long)]
    secret: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// Per-attempt timeout, e.g. `10s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    #[arg(long)]
    max_in_flight: Option<u32>,
    #[arg(long)]
    description: Option<String>,
    /// envelope, standard_webhooks, cloudevents, cloudevents_binary or raw.
    #[arg(long, value_parser = payload_format)]
    format: Option<PayloadFormat>,
    /// A template over `event` producing the body (empty: none).
    #[arg(long)]
    transform: Option<String>,
    /// Requests per second at most (0: no limit).
    #[arg(long)]
    rate_limit: Option<u32>,
    /// Requests allowed at once above the rate (default: one second's worth).
    #[arg(long)]
    rate_limit_burst: Option<u32>,
    /// Failing this long disables the endpoint (`0s`: never).
    #[arg(long, value_parser = humantime::parse_duration)]
    disable_after: Option<Duration>,
    /// A template over `event` (e.g. `{{ event.payload.customer_id }}`):
    /// deliveries with the same key go one at a time (empty: unordered).
    #[arg(long)]
    ordering_key: Option<String>,
    /// OAuth2 client credentials: the token endpoint (replaces basic auth).
    #[arg(long)]
    oauth2_token_url: Option<String>,
    #[arg(long)]
    oauth2_client_id: Option<String>,
    /// Left out on update: the stored one is kept. Also read from the
    /// environment, so it need not show in the process list.
    #[arg(long, env = "HOOKYARD_OAUTH2_CLIENT_SECRET", hide_env_values = true)]
    oauth2_client_secret: Option<String>,
    /// Empty: none.
    #[arg(long)]
    oauth2_scope: Option<String>,
    /// Empty: none.
    #[arg(long)]
    oauth2_audience: Option<String>,
    /// Removes OAuth2 (and basic) authentication.
    #[arg(long, conflicts_with_all = ["oauth2_token_url", "oauth2_client_id", "oauth2_scope", "oauth2_audience"])]
    no_auth: bool,
    /// PEM client certificate presented to the endpoint (mTLS), a path on
    /// the daemon's host; empty: none.
    #[arg(long)]
    client_cert: Option<String>,
    /// The private key of `--client-cert`, a path on the daemon's host.
    #[arg(long)]
    client_key: Option<String>,
    /// PEM roots trusted for this endpoint only, a path on the daemon's host
    /// (`--ca-file` is the CLI's own connection to the daemon).
    #[arg(long)]
    endpoint_ca_file: Option<String>,
}

fn payload_format(s: &str) -> Result<PayloadFormat, String> {
    crate::model::PayloadFormat::parse(s)
        .map(crate::admin::convert::format_to_pb)
        .ok_or_else(|| {
            "expected envelope, standard_webhooks, cloudevents, cloudevents_binary or raw".into()
        })
}

#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    List,
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        /// A pattern (repeat for several), e.g. `lead.*`.
        #[arg(long = "pattern", required = true)]
        patterns: Vec<String>,
        /// `endpoint:<id>` or `flow:<id>`.
        #[arg(long)]
        target: String,
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// An expression over `event`, e.g. `event.payload.amount > 100`.
        #[arg(long)]
        filter: Option<String>,
        /// A template over `event` ordering the deliveries it makes.
        #[arg(long)]
        ordering_key: Option<String>,
        #[arg(long)]
        disabled: bool,
    },
    /// Changes only the fields given (patterns given replace the list).
    Update {
        id: String,
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long = "exclude")]
        exclude: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// An expression over `event` (empty: none).
        #[arg(long)]
        filter: Option<String>,
        /// A template over `event` ordering its deliveries (empty: none).
        #[arg(long)]
        ordering_key: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    List,
    Get { id: String },
    Suspend { id: String },
    Resume { id: String },
    Delete { id: String },
}

#[derive(Debug, Subcommand)]
pub enum FlowCommand {
    List,
    Get {
        id: String,
    },
    /// From a YAML definition file.
    Create {
        file: PathBuf,
    },
    /// A new version from a YAML definition file (its `id` names the flow).
    Update {
        file: PathBuf,
    },
    Delete {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveryCommand {
    List {
        /// pending, in_flight, succeeded, failed or dead.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        endpoint: Option<String>,
        /// An event name pattern.
        #[arg(long)]
        event: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    Get {
        id: u64,
    },
    /// Attempt a failed or dead delivery again now.
    Retry {
        id: u64,
    },
    /// Send a delivery's event to its endpoint again, as a new delivery.
    Resend {
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    List,
    Get {
        id: String,
    },
    /// Its progress, a line per change, until it ends.
    Watch {
        id: String,
    },
    Cancel {
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunCommand {
    List {
        #[arg(long)]
        flow: Option<String>,
        /// created, running, waiting, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    Get {
        id: String,
    },
    Cancel {
        id: String,
    },
}

type Admin = AdminClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Runs one command; the error is what to print (exit 1).
pub async fn run(ctl: Ctl) -> anyhow::Result<()> {
    let out = Output::new(ctl.json);
    match ctl.command {
        CtlCommand::Publish {
            name,
            payload,
            id,
            tenant,
            public_addr,
            api_key,
        } => {
            let ca_file = ctl.connection.ca_file.as_deref();
            publish(
                &out,
                ca_file,
                &public_addr,
                &api_key,
                name,
                payload,
                id,
                tenant,
            )
            .await
        }
        command => {
            let mut admin = connect(&ctl.connection)?;
            admin_command(&out, &mut admin, command).await
        }
    }
}

fn connect(connection: &Connection) -> anyhow::Result<Admin> {
    let addr = with_scheme(&connection.addr);
    let token = match &connection.token {
        Some(token) => token.trim().to_string(),
        None => {
            let path = connection.data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "no admin token: pass --token, set HOOKYARD_TOKEN, or point --data-dir \
                         at the daemon's data directory ({} is unreadable)",
                        path.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    let header: MetadataValue<Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the admin token has characters a header cannot carry"))?;
    let channel = channel(&addr, "--addr", connection.ca_file.as_deref())?;
    Ok(AdminClient::with_interceptor(channel, Bearer(header)))
}

/// A lazy channel to `addr`, over TLS for `https://` (trusting the system's
/// roots and `ca_file`).
fn channel(addr: &str, flag: &str, ca_file: Option<&std::path::Path>) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(addr.to_string())
        .map_err(|e| anyhow::anyhow!("{flag} {addr:?} is not a URL: {e}"))?
        .connect_timeout(Duration::from_secs(5));
    if addr.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("--ca-file: cannot read {}", path.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .context("could not set up TLS for the connection")?;
    }
    Ok(endpoint.connect_lazy())
}

fn with_scheme(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn admin_command(out: &Output, admin: &mut Admin, command: CtlCommand) -> anyhow::Result<()> {
    match command {
        CtlCommand::Endpoints(c) => endpoints(out, admin, c).await,
        CtlCommand::Subscriptions(c) => subscriptions(out, admin, c).await,
        CtlCommand::Sources(c) => sources(out, admin, c).await,
        CtlCommand::Flows(c) => flows(out, admin, c).await,
        CtlCommand::EventTypes(c) => event_types::run(out, admin, c).await,
        CtlCommand::Deliveries(c) => deliveries(out, admin, c).await,
        CtlCommand::Runs(c) => runs(out, admin, c).await,
        CtlCommand::Replay {
            pattern,
            subscription,
            since,
            endpoint,
            rate,
            wait,
        } => {
            let job = admin
                .replay_events(hookyard::v1::ReplayEventsRequest {
                    pattern: pattern.unwrap_or_default(),
                    subscription_id: subscription.unwrap_or_default(),
                    from: Some(ago(since)),
                    to: None,
                    endpoint_id: endpoint.unwrap_or_default(),
                    per_second: rate,
                })
                .await
                .map_err(refused)?
                .into_inner();
            follow(out, admin, job, wait).await
        }
        CtlCommand::RetryDead {
            endpoint,
            since,
            rate,
            include_failed,
            wait,
        } => {
            let job = admin
                .retry_dead_letters(hookyard::v1::RetryDeadLettersRequest {
                    endpoint_id: endpoint.unwrap_or_default(),
                    from: since.map(ago),
                    to: None,
                    per_second: rate,
                    include_failed,
                })
                .await
                .map_err(refused)?
                .into_inner();
            follow(out, admin, job, wait).await
        }
        CtlCommand::Jobs(c) => jobs(out, admin, c).await,
        CtlCommand::Tail { endpoint, event } => tail(out, admin, endpoint, event).await,
        CtlCommand::Publish { .. } => Ok(()),
    }
}

/// The time `ago` before now.
fn ago(ago: Duration) -> prost_types::Timestamp {
    let at = crate::model::now_ms().saturating_sub(ago.as_millis().min(i64::MAX as u128) as i64);
    crate::admin::convert::timestamp(at).unwrap_or_default()
}

/// Prints the job; with `wait`, each change until it ends.
async fn follow(
    out: &Output,
    admin: &mut Admin,
    job: hookyard::v1::Job,
    wait: bool,
) -> anyhow::Result<()> {
    if !wait {
        out.jobs(std::slice::from_ref(&job));
        return Ok(());
    }
    watch_job(out, admin, job.id).await
}

async fn watch_job(out: &Output, admin: &mut Admin, id: String) -> anyhow::Result<()> {
    let mut stream = admin
        .watch_job(hookyard::v1::GetJobRequest { id })
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(job) = stream.message().await.map_err(refused)? {
        out.jobs(std::slice::from_ref(&job));
    }
    Ok(())
}

async fn jobs(out: &Output, admin: &mut Admin, c: JobCommand) -> anyhow::Result<()> {
    use hookyard::v1::{GetJobRequest, ListJobsRequest};
    match c {
        JobCommand::List => {
            let jobs = admin
                .list_jobs(ListJobsRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .jobs;
            out.jobs(&jobs);
        }
        JobCommand::Get { id } => {
            let job = admin
                .get_job(GetJobRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.jobs(std::slice::from_ref(&job));
        }
        JobCommand::Watch { id } => watch_job(out, admin, id).await?,
        JobCommand::Cancel { id } => {
            let job = admin
                .cancel_job(GetJobRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.jobs(std::slice::from_ref(&job));
        }
    }
    Ok(())
}

/// The daemon's refusal, with the fields it names.
fn refused(status: Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let mut message = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for violation in bad.field_violations {
            let line = format!("{}: {}", violation.field, violation.description);
            if !status.message().contains(&line) {
                message.push_str(&format!("\n  {line}"));
            }
        }
    }
    anyhow::anyhow!(message)
}

async fn endpoints(out: &Output, admin: &mut Admin, c: EndpointCommand) -> anyhow::Result<()> {
    match c {
        EndpointCommand::List => {
            let list = admin
                .list_endpoints(ListEndpointsRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            out.endpoints(&list.endpoints);
        }
        EndpointCommand::Get { id } => {
            let e = admin
                .get_endpoint(GetEndpointRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.endpoints(std::slice::from_ref(&e));
        }
        EndpointCommand::Create { id, url, fields } => {
            let mut endpoint = Endpoint {
                id,
                url,
                state: EndpointState::Enabled as i32,
                ..Endpoint::default()
            };
            fields.apply(&mut endpoint);
            let e = admin
                .create_endpoint(CreateEndpointRequest {
                    endpoint: Some(endpoint),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.endpoints(std::slice::from_ref(&e));
        }
        EndpointCommand::Update {
            id,
            url,
            fields,
            enable,
            disable,
        } => {
            let mut endpoint = admin
                .get_endpoint(GetEndpointRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            if let Some(url) = url {
                endpoint.url = url;
            }
            fields.apply(&mut endpoint);
            if enable {
                endpoint.state = EndpointState::Enabled as i32;
            }
            if disable {
                endpoint.state = EndpointState::Disabled as i32;
            }
            let e = admin
                .update_endpoint(UpdateEndpointRequest {
                    endpoint: Some(endpoint),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.endpoints(std::slice::from_ref(&e));
        }
        EndpointCommand::Delete { id } => {
            admin
                .delete_endpoint(DeleteEndpointRequest { id: id.clone() })
                .await
                .map_err(refused)?;
            out.done("deleted endpoint", &id);
        }
        EndpointCommand::RotateSecret { id, grace } => {
            let rotated = admin
                .rotate_endpoint_secret(RotateEndpointSecretRequest {
                    id,
                    grace_ms: grace.map(|g| g.as_millis().min(u64::MAX as u128) as u64),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.secret(&rotated.secret);
        }
        EndpointCommand::Test { id } => {
            let answer = admin
                .send_test_event(SendTestEventRequest {
                    endpoint_id: id,
                    ..SendTestEventRequest::default()
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.test_sent(&answer);
            if !answer.succeeded {
                anyhow::bail!("the endpoint did not accept the test event");
            }
        }
        EndpointCommand::Recover { id, since } => {
            let since = since.map(|ago| {
                let at = crate::model::now_ms()
                    .saturating_sub(ago.as_millis().min(i64::MAX as u128) as i64);
                crate::admin::convert::timestamp(at).unwrap_or_default()
            });
            let recovered = admin
                .recover_endpoint(RecoverEndpointRequest {
                    endpoint_id: id.clone(),
                    since,
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.done(
                &format!("re-queued {} deliveries of endpoint", recovered.requeued),
                &id,
            );
        }
    }
    Ok(())
}

impl EndpointFields {
    fn apply(mut self, e: &mut Endpoint) {
        self.apply_auth(e);
        if self.client_cert.is_some()
            || self.client_key.is_some()
            || self.endpoint_ca_file.is_some()
        {
            let t = e.tls.get_or_insert_with(Default::default);
            if let Some(cert) = self.client_cert.take() {
                t.client_cert_file = cert;
            }
            if let Some(key) = self.client_key.take() {
                t.client_key_file = key;
            }
            if let Some(ca) = self.endpoint_ca_file.take() {
                t.ca_file = ca;
            }
        }

        if let Some(secret) = self.secret {
            e.secret = secret;
        }
        if let Some(tenant) = self.tenant {
            e.tenant_id = tenant;
        }
        if let Some(timeout) = self.timeout {
            e.timeout_ms = timeout.as_millis().min(u32::MAX as u128) as u32;
        }
        if let Some(max) = self.max_in_flight {
            e.max_in_flight = max;
        }
        if let Some(description) = self.description {
            e.description = description;
        }
        if let Some(format) = self.format {
            e.set_format(format);
        }
        if let Some(transform) = self.transform {
            e.transform = transform;
        }
        if let Some(key) = self.ordering_key {
            e.ordering_key = key;
        }
        match self.rate_limit {
            Some(0) => e.rate_limit = None,
            Some(per_second) => {
                e.rate_limit = Some(EndpointRateLimit {
                    per_second,
                    burst: self.rate_limit_burst.unwrap_or(0),
                })
            }
            None => {
                if let (Some(limit), Some(burst)) = (e.rate_limit.as_mut(), self.rate_limit_burst) {
                    limit.burst = burst;
                }
            }
        }
        if let Some(after) = self.disable_after {
            e.disable_after_ms = Some(after.as_millis().min(u64::MAX as u128) as u64);
        }
    }

    fn apply_auth(&mut self, e: &mut Endpoint) {
        if self.no_auth {
            e.oauth2 = None;
            e.basic_auth = None;
            return;
        }
        let oauth2 = [
            &self.oauth2_token_url,
            &self.oauth2_client_id,
            &self.oauth2_scope,
            &self.oauth2_audience,
        ];
        // The secret alone (perhaps only exported in the environment) does
        // not turn OAuth2 on for an endpoint without it.
        let touched = oauth2.iter().any(|flag| flag.is_some())
            || (self.oauth2_client_secret.is_some() && e.oauth2.is_some());
        if touched {
            let o = e.oauth2.get_or_insert_with(Default::default);
            let set = |field: &mut String, value: Option<String>| {
                if let Some(value) = value {
                    *field = value;
                }
            };
            set(&mut o.token_url, self.oauth2_token_url.take());
            set(&mut o.client_id, self.oauth2_client_id.take());
            set(&mut o.client_secret, self.oauth2_client_secret.take());
            set(&mut o.scope, self.oauth2_scope.take());
            set(&mut o.audience, self.oauth2_audience.take());
            e.basic_auth = None;
        }
    }
}

async fn subscriptions(
    out: &Output,
    admin: &mut Admin,
    c: SubscriptionCommand,
) -> anyhow::Result<()> {
    match c {
        SubscriptionCommand::List => {
            let list = admin
                .list_subscriptions(ListSubscriptionsRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            out.subscriptions(&list.subscriptions);
        }
        SubscriptionCommand::Get { id } => {
            let s = admin
                .get_subscription(GetSubscriptionRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.subscriptions(std::slice::from_ref(&s));
        }
        SubscriptionCommand::Create {
            name,
            patterns,
            target,
            exclude,
            tenant,
            description,
            filter,
            ordering_key,
            disabled,
        } => {
            let s = admin
                .create_subscription(CreateSubscriptionRequest {
                    subscription: Some(Subscription {
                        name,
                        patterns,
                        exclude,
                        target,
                        tenant_id: tenant.unwrap_or_default(),
                        description: description.unwrap_or_default(),
                        filter: filter.unwrap_or_default(),
                        ordering_key: ordering_key.unwrap_or_default(),
                        enabled: !disabled,
                        ..Subscription::default()
                    }),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.subscriptions(std::slice::from_ref(&s));
        }
        SubscriptionCommand::Update {
            id,
            patterns,
            target,
            exclude,
            description,
            filter,
            ordering_key,
            enable,
            disable,
        } => {
            let mut s = admin
                .get_subscription(GetSubscriptionRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            if !patterns.is_empty() {
                s.patterns = patterns;
            }
            if !exclude.is_empty() {
                s.exclude = exclude;
            }
            if let Some(target) = target {
                s.target = target;
            }
            if let Some(description) = description {
                s.description = description;
            }
            if let Some(filter) = filter {
                s.filter = filter;
            }
            if let Some(key) = ordering_key {
                s.ordering_key = key;
            }
            if enable {
                s.enabled = true;
            }
            if disable {
                s.enabled = false;
            }
            let s = admin
                .update_subscription(UpdateSubscriptionRequest {
                    subscription: Some(s),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.subscriptions(std::slice::from_ref(&s));
        }
        SubscriptionCommand::Delete { id } => {
            admin
                .delete_subscription(DeleteSubscriptionRequest { id: id.clone() })
                .await
                .map_err(refused)?;
            out.done("deleted subscription", &id);
        }
    }
    Ok(())
}

async fn sources(out: &Output, admin: &mut Admin, c: SourceCommand) -> anyhow::Result<()> {
    let source = match c {
        SourceCommand::List => {
            let list = admin
                .list_sources(ListSourcesRequest::default())
                .await
                .map_err(refused)?
                .into_inner();
            out.sources(&list.sources);
            return Ok(());
        }
        SourceCommand::Get { id } => admin.get_source(GetSourceRequest { id }).await,
        SourceCommand::Suspend { id } => admin.suspend_source(SuspendSourceRequest { id }).await,
        SourceCommand::Resume { id } => admin.resume_source(ResumeSourceRequest { id }).await,
        SourceCommand::Delete { id } => {
            admin
                .delete_source(DeleteSourceRequest { id: id.clone() })
                .await
                .map_err(refused)?;
            out.done("deleted source", &id);
            return Ok(());
        }
    }
    .map_err(refused)?
    .into_inner();
    out.sources(std::slice::from_ref(&source));
    Ok(())
}

async fn flows(out: &Output, admin: &mut Admin, c: FlowCommand) -> anyhow::Result<()> {
    let flow = match c {
        FlowCommand::List => {
            let list = admin
                .list_flows(ListFlowsRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            out.flows(&list.flows);
            return Ok(());
        }
        FlowCommand::Get { id } => {
            let flow = admin
                .get_flow(GetFlowRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.flow_definition(&flow);
            return Ok(());
        }
        FlowCommand::Create { file } => {
            admin
                .create_flow(CreateFlowRequest {
                    definition_yaml: read(&file)?,
                })
                .await
        }
        FlowCommand::Update { file } => {
            admin
                .update_flow(UpdateFlowRequest {
                    definition_yaml: read(&file)?,
                    version: 0,
                })
                .await
        }
        FlowCommand::Delete { id } => {
            admin
                .delete_flow(DeleteFlowRequest { id: id.clone() })
                .await
                .map_err(refused)?;
            out.done("deleted flow", &id);
            return Ok(());
        }
    }
    .map_err(refused)?
    .into_inner();
    out.flows(std::slice::from_ref(&flow));
    Ok(())
}

fn read(file: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("could not read {}", file.display()))
}

async fn deliveries(out: &Output, admin: &mut Admin, c: DeliveryCommand) -> anyhow::Result<()> {
    match c {
        DeliveryCommand::List {
            status,
            endpoint,
            event,
            limit,
        } => {
            let status = match status.as_deref() {
                None => DeliveryStatus::Unspecified,
                Some(s) => delivery_status(s)?,
            };
            let page = admin
                .list_deliveries(ListDeliveriesRequest {
                    filter: Some(DeliveryFilter {
                        status: status as i32,
                        endpoint_id: endpoint.unwrap_or_default(),
                        event_name: event.unwrap_or_default(),
                        ..DeliveryFilter::default()
                    }),
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.deliveries(&page.deliveries);
        }
        DeliveryCommand::Get { id } => {
            let detail = admin
                .get_delivery(GetDeliveryRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.delivery_detail(&detail);
        }
        DeliveryCommand::Retry { id } => {
            let d = admin
                .retry_delivery(RetryDeliveryRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.deliveries(std::slice::from_ref(&d));
        }
        DeliveryCommand::Resend { id } => {
            let d = admin
                .resend_delivery(ResendDeliveryRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.deliveries(std::slice::from_ref(&d));
        }
    }
    Ok(())
}

fn delivery_status(s: &str) -> anyhow::Result<DeliveryStatus> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "pending" => DeliveryStatus::Pending,
        "in_flight" => DeliveryStatus::InFlight,
        "succeeded" => DeliveryStatus::Succeeded,
        "failed" => DeliveryStatus::Failed,
        "dead" => DeliveryStatus::Dead,
        other => {
            bail!("--status: `{other}` is not one of pending, in_flight, succeeded, failed, dead")
        }
    })
}

fn run_state(s: &str) -> anyhow::Result<RunState> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "created" => RunState::Created,
        "running" => RunState::Running,
        "waiting" => RunState::Waiting,
        "succeeded" => RunState::Succeeded,
        "failed" => RunState::Failed,
        "cancelled" => RunState::Cancelled,
        other => bail!(
            "--state: `{other}` is not one of created, running, waiting, succeeded, failed, cancelled"
        ),
    })
}

async fn runs(out: &Output, admin: &mut Admin, c: RunCommand) -> anyhow::Result<()> {
    match c {
        RunCommand::List { flow, state, limit } => {
            let state = match state.as_deref() {
                None => RunState::Unspecified,
                Some(s) => run_state(s)?,
            };
            let page = admin
                .list_runs(ListRunsRequest {
                    flow_id: flow.unwrap_or_default(),
                    state: state as i32,
                    page_size: limit,
                    ..ListRunsRequest::default()
                })
                .await
                .map_err(refused)?
                .into_inner();
            out.runs(&page.runs);
        }
        RunCommand::Get { id } => {
            let detail = admin
                .get_run(GetRunRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.run_detail(&detail);
        }
        RunCommand::Cancel { id } => {
            let run = admin
                .cancel_run(CancelRunRequest { id })
                .await
                .map_err(refused)?
                .into_inner();
            out.runs(std::slice::from_ref(&run));
        }
    }
    Ok(())
}

async fn tail(
    out: &Output,
    admin: &mut Admin,
    endpoint: Option<String>,
    event: Option<String>,
) -> anyhow::Result<()> {
    let mut stream = admin
        .watch_deliveries(WatchDeliveriesRequest {
            filter: Some(DeliveryFilter {
                endpoint_id: endpoint.unwrap_or_default(),
                event_name: event.unwrap_or_default(),
                ..DeliveryFilter::default()
            }),
        })
        .await
        .map_err(refused)?
        .into_inner();
    while let Some(update) = stream.message().await.map_err(refused)? {
        out.update(&update);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn publish(
    out: &Output,
    ca_file: Option<&std::path::Path>,
    public_addr: &str,
    api_key: &str,
    name: String,
    payload: String,
    id: Option<String>,
    tenant: Option<String>,
) -> anyhow::Result<()> {
    let addr = with_scheme(public_addr);
    let channel = channel(&addr, "--public-addr", ca_file)?;
    let header: MetadataValue<Ascii> = format!("Bearer {api_key}")
        .parse()
        .map_err(|_| anyhow::anyhow!("the API key has characters a header cannot carry"))?;
    let mut events = EventsClient::with_interceptor(channel, Bearer(header));
    let published = events
        .publish(PublishRequest {
            event: Some(Event {
                id: id.unwrap_or_default(),
                name,
                source: "hookyard-ctl".to_string(),
                tenant_id: tenant.unwrap_or_default(),
                payload: payload.into_bytes(),
                ..Event::default()
            }),
        })
        .await
        .map_err(refused)?
        .into_inner();
    out.published(&published);
    Ok(())
}
