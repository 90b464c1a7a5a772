//! Hookyard's daemon as a library: `main.rs` parses flags and calls `start`;
//! tests can do the same with listeners bound to `127.0.0.1:0`.
//!
//! # Where an event goes
//! 1. door (`intake`: HTTP, gRPC, CloudEvents, sources; or a flow's `emit`):
//!    authenticates and validates, turns the request into a `NewEvent`;
//! 2. `publish::Publisher`: routes it (`catalog`, `routing`), adds the flow
//!    runs it starts and cancels, hands it to the writer;
//! 3. `store::Writer`: group-commits it with its deliveries and runs, fsyncs,
//!    then answers the door and reports what it committed;
//! 4. `delivery::Dispatcher` (deliveries, over an mpsc channel),
//!    `flows::engine` (runs, through `store::RunsCommitted`) and the live feeds;
//! 5. `delivery::Sender`: the signed HTTP request to the endpoint; its result
//!    goes back through the writer.
//!
//! # Layers
//! `model` is the bottom layer (every persisted type); `store` depends only
//! on `model`, and its outputs leave through the channel and trait that this
//! file wires up. Everything else sits above `store`.
//!
//! # Layout
//! - `model`: events, endpoints, subscriptions, deliveries, attempts,
//!   sources, runs; `FieldError`.
//! - `intake`: HTTP and gRPC doors — authentication, validation — plus
//!   sources (partner and form webhooks) and CloudEvents.
//! - `publish`: the one publish pipeline every door and `emit` call.
//! - `routing`: the pattern grammar and the matcher index.
//! - `catalog`: the endpoints and subscriptions in force, swapped atomically;
//!   with them the event types (`event_types`: a JSON Schema per event name
//!   pattern, checked by the publish pipeline; `schema` compiles them).
//! - `store`: storage behind one `Store` (SQLite today) and the group-commit
//!   writer.
//! - `delivery`: the dispatcher, the signed HTTP sender, retries, SSRF guard.
//! - `flows`: flow definitions, run starts and the engine that steps runs.
//! - `admin`: the Admin gRPC API and the live feeds of delivery and run
//!   changes (on PostgreSQL, every node's, over `store::FeedBus`).
//! - `config`, `bootstrap`, `server`: settings, declared resources, serving.
//! - `supervise`: notices a component that stops, turns readiness off and
//!   ends the daemon for a restart.
//! - `timestamp`: the accepted range of times, and formatting that cannot fail.

pub mod admin;
pub mod bootstrap;
pub mod catalog;
pub mod config;
pub mod ctl;
pub mod delivery;
pub mod event_types;
pub mod filter;
pub mod flows;
pub mod intake;
pub mod metrics;
pub mod model;
pub mod ordering;
pub mod publish;
pub mod routing;
pub mod schema;
pub mod server;
pub mod store;
pub mod supervise;
pub mod timestamp;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use hookyard::v1::{admin_server::AdminServer, events_server::EventsServer};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tower_http::timeout::TimeoutLayer;

use crate::{
    admin::{
        feed::{LiveFeed, NodeFeeds},
        flows::FlowAdmin,
        token::AdminAuth,
        AdminService,
    },
    catalog::CatalogHandle,
    config::Config,
    delivery::{ssrf::AddressPolicy, Dispatcher, DispatcherConfig, Sender},
    flows::{
        engine::{Engine, EngineConfig},
        template::Secrets,
        FlowCatalog, FlowSignals,
    },
    intake::{
        auth::ApiKeys,
        grpc::EventsService,
        grpc_gate::{ApiKeyGate, MessageLimit, MessageLimits},
        sources::{webhook::WebhookState, SourceRegistry},
        Intake,
    },
    publish::Publisher,
    server::ConnectionLimits,
    store::{Store, WriterConfig},
    supervise::{Failure, Health, Supervisor},
};

/// The two listeners the daemon serves on, bound by the caller.
pub struct Listeners {
    /// HTTP intake and gRPC Events.
    pub public: TcpListener,
    /// gRPC Admin.
    pub admin: TcpListener,
}

/// A started daemon.
pub struct Running {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Whether this start created the admin token file.
    pub admin_token_created: bool,
    /// Applies a re-read config's declared resources (SIGHUP).
    pub reloader: Reloader,
    supervisor: Supervisor,
}

/// Applies the endpoints, subscriptions, sources and flows a config file
/// declares to the running daemon, as a start does (upserts by id or
/// name; nothing declared before is deleted). Other settings take effect on
/// the next start.
#[derive(Clone)]
pub struct Reloader {
    store: Store,
    catalog: Arc<CatalogHandle>,
    flows: Arc<FlowCatalog>,
    sources: Arc<SourceRegistry>,
}

impl Reloader {
    /// Checks the whole file first (as `check-config` does), so a file with
    /// a mistake changes nothing.
    pub async fn apply(&self, config: &Config) -> anyhow::Result<()> {
        check_config(config).await?;
        bootstrap::apply_declared(config, &self.store, &self.catalog, &self.flows).await?;
        self.flows.reload().await?;
        self.sources.reload().await?;
        Ok(())
    }
}

impl Running {
    /// Waits until every component has stopped, after `shutdown` is
    /// cancelled or after one stopped by itself (the error: exit non-zero).
    pub async fn wait(self) -> Result<(), Failure> {
        self.supervisor.wait().await
    }
}

/// `hookyard check-config`: every check `serve` makes of the file, without
/// serving. The declared endpoints, subscriptions, sources and flows are
/// applied, through the same validation as on start, to a scratch SQLite
/// database that is removed afterwards; the configured storage is not
/// touched.
pub async fn check_config(config: &Config) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir().context("could not create a scratch directory")?;
    let secrets = Arc::new(Secrets::load(config.flow_runner.secrets_file.as_deref())?);
    let (committed, _ignored) = mpsc::channel(1024);
    let writer_config = WriterConfig {
        max_batch: config.storage.max_batch,
        queue: config.storage.queue,
    };
    let (store, _writer, _tasks) = Store::open_sqlite(
        &scratch.path().join("check.db"),
        writer_config,
        committed,
        Arc::new(FlowSignals::new()),
    )
    .await?;
    let catalog = CatalogHandle::load(store.clone(), secrets.clone()).await?;
    let flows = FlowCatalog::load(store.clone(), secrets).await?;
    bootstrap::apply_declared(config, &store, &catalog, &flows).await?;
    SourceRegistry::load(store).await?;
    Sender::new(
        AddressPolicy::new(config.delivery.allow_private_targets.clone()),
        config.delivery.timeout,
        &extra_roots(config)?,
    )?;
    if let Some(tls) = &config.tls {
        server::tls::acceptor(tls)?;
    }
    Ok(())
}

/// `hookyard migrate`: brings the configured storage's schema up to date
/// (SQLite: creating the data directory and database if needed) and returns
/// the versions applied. `start` does the same before serving.
pub async fn migrate(config: &Config) -> anyhow::Result<Vec<i64>> {
    let target = config.storage_target();
    if let store::Target::Sqlite(_) = target {
        create_data_dir(&config.data_dir).with_context(|| {
            format!(
                "could not create data directory {}",
                config.data_dir.display()
            )
        })?;
    }
    Store::migrate(&target)
        .await
        .with_context(|| format!("could not migrate {target}"))
}

/// `delivery.ca_file`'s certificates, trusted for endpoints besides the
/// usual roots.
fn extra_roots(config: &Config) -> anyhow::Result<Vec<reqwest::Certificate>> {
    match &config.delivery.ca_file {
        Some(path) => Sender::roots_from(path),
        None => Ok(Vec::new()),
    }
}

/// The retention settings as the janitor takes them (`0s`: keep forever).
fn retention(config: &config::RetentionConfig) -> store::retention::Retention {
    let keep = |d: std::time::Duration| (!d.is_zero()).then_some(d);
    store::retention::Retention {
        events: keep(config.events),
        dead: keep(config.dead),
        attempts: keep(config.attempts),
        runs: keep(config.runs),
        interval: config.interval,
    }
}

/// `hookyard backup FILE`: an online, consistent copy of the SQLite
/// database into `file` (which must not exist); its size in bytes.
pub async fn backup(config: &Config, file: &std::path::Path) -> anyhow::Result<u64> {
    let target = config.storage_target();
    Store::backup(&target, file)
        .await
        .with_context(|| format!("could not back up {target} into {}", file.display()))
}

/// Opens storage, applies the config's declared resources, starts the writer,
/// dispatcher and both servers. Returns once everything accepts work.
pub async fn start(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    create_data_dir(&config.data_dir).with_context(|| {
        format!(
            "could not create data directory {}",
            config.data_dir.display()
        )
    })?;
    let (admin_token, admin_token_created) =
        admin::token::load_or_create(&config.admin_token_path()).with_context(|| {
            format!(
                "could not read or write {}",
                config.admin_token_path().display()
            )
        })?;

    let mut supervisor = Supervisor::new(shutdown);
    let secrets = Arc::new(Secrets::load(config.flow_runner.secrets_file.as_deref())?);
    let (committed_tx, committed_rx) = mpsc::channel(1024);
    let writer_config = WriterConfig {
        max_batch: config.storage.max_batch,
        queue: config.storage.queue,
    };
    let signals = FlowSignals::new();
    let target = config.storage_target();
    let (store, writer, storage_tasks) = Store::open(
        &target,
        writer_config,
        committed_tx,
        Arc::new(signals.clone()),
    )
    .await
    .with_context(|| format!("could not open {target}"))?;
    let store = store.named(listeners.public.local_addr()?);
    supervisor.watch("writer", storage_tasks.writer);
    if let Some(checkpointer) = storage_tasks.checkpointer {
        supervisor.watch("checkpointer", checkpointer);
    }
    let catalog = Arc::new(CatalogHandle::load(store.clone(), secrets.clone()).await?);
    let flows = Arc::new(FlowCatalog::load(store.clone(), secrets).await?);
    bootstrap::apply_declared(&config, &store, &catalog, &flows).await?;
    let sources = Arc::new(SourceRegistry::load(store.clone()).await?);
    let catalog_sync = storage_tasks
        .catalog_changes
        .map(|changes| sync_catalog(changes, catalog.clone(), flows.clone(), sources.clone()));

    let feed = LiveFeed::new();
    // PostgreSQL: the feeds show every node sharing the database.
    let feed_bus = store.feed_bus().map(|(bus, task)| {
        feed.attach(bus.clone());
        signals.feed.attach(bus);
        let here = Arc::new(NodeFeeds {
            deliveries: feed.clone(),
            runs: signals.feed.clone(),
        });
        task.run(here, supervisor.work())
    });
    let sender = Arc::new(Sender::new(
        AddressPolicy::new(config.delivery.allow_private_targets.clone()),
        config.delivery.timeout,
        &extra_roots(&config)?,
    )?);
    let admin_sender = sender.clone();
    let (health_tx, health_rx) = mpsc::unbounded_channel();
    let (control_tx, control_rx) = mpsc::channel(1024);
    let dispatcher = Dispatcher::new(
        DispatcherConfig {
            memory_queue: config.delivery.memory_queue,
            window: config.delivery.window,
            max_in_flight: config.delivery.max_in_flight,
            max_concurrent: config.delivery.max_concurrent,
            retry_schedule: config.delivery.retry_schedule.clone(),
            lease_timeout: config.storage.lease_timeout,
        },
        store.clone(),
        writer.clone(),
        catalog.clone(),
        sender.clone(),
        feed.clone(),
        crate::delivery::health::EndpointHealth::new(health_tx),
    )
    .await?;

    let publisher = Arc::new(Publisher::new(
        catalog.clone(),
        flows.clone(),
        writer.clone(),
    ));
    tokio::spawn(crate::delivery::health::run(
        health_rx,
        store.clone(),
        catalog.clone(),
        publisher.clone(),
    ));
    let intake = Arc::new(Intake {
        publisher: publisher.clone(),
        flows: flows.clone(),
        writer: writer.clone(),
        keys: ApiKeys::new(&config.api_keys),
        body_limit: config.http.body_limit,
        batch_body_limit: config.http.batch_body_limit,
    });
    let engine = Engine::new(
        EngineConfig {
            time_scale: config.flow_runner.time_scale,
            concurrency: config.flow_runner.concurrency,
            default_retry: config.flow_runner.retry.clone(),
            default_timeout: config.flow_runner.timeout,
            lease_timeout: config.storage.lease_timeout,
        },
        store.clone(),
        writer.clone(),
        flows.clone(),
        publisher,
        sender,
        signals.wake.clone(),
    );
    if let Some(mut changed) = store.watch_runs() {
        // Runs committed by other daemons sharing the database.
        let wake = signals.wake.clone();
        tokio::spawn(async move {
            while changed.recv().await.is_some() {
                wake.notify_one();
            }
        });
    }
    let health = supervisor.health();
    let public_app = public_app(&config, intake, store.clone(), sources.clone(), &health).await?;
    let janitor_store = store.clone();
    let reloader = Reloader {
        store: store.clone(),
        catalog: catalog.clone(),
        flows: flows.clone(),
        sources: sources.clone(),
    };
    let scrape = crate::metrics::Scrape {
        handle: crate::metrics::install()?,
        store: store.clone(),
        catalog: catalog.clone(),
    };
    let admin_app = admin_app(
        AdminService::new(
            store,
            catalog,
            feed,
            crate::admin::service::DeliveryAdmin {
                control: control_tx,
                sender: admin_sender,
            },
            sources,
            FlowAdmin {
                catalog: flows,
                writer,
                feed: signals.feed,
            },
            supervisor.serving(),
        ),
        &admin_token,
        &health,
        config.http.request_timeout,
    )
    .await?
    .merge(crate::metrics::router(scrape.clone()));
    let admin_app = traced(admin_app);

    let limits = ConnectionLimits {
        header_timeout: config.http.header_timeout,
        idle_timeout: config.http.idle_timeout,
        max_connections: config.http.max_connections,
        max_per_ip: config.http.max_connections_per_ip,
        uncapped: config.http.trusted_proxies.clone(),
        tls: config.tls.as_ref().map(server::tls::acceptor).transpose()?,
    };
    // The Admin API listens apart (loopback by default) and is not capped per address.
    let admin_limits = ConnectionLimits {
        max_per_ip: 0,
        ..limits.clone()
    };
    let listen = listeners.public.local_addr()?;
    let admin_listen = listeners.admin.local_addr()?;
    let (work, serving) = (supervisor.work(), supervisor.serving());
    if let Some(sync) = catalog_sync {
        let work = work.clone();
        supervisor.spawn("catalog sync", async move {
            tokio::select! {
                _ = work.cancelled() => {}
                _ = sync => {}
            }
        });
    }
    if let Some(feed_bus) = feed_bus {
        supervisor.spawn("feed bus", feed_bus);
    }
    supervisor.spawn(
        "dispatcher",
        dispatcher.run(committed_rx, control_rx, work.clone()),
    );
    supervisor.spawn("flow engine", engine.run(work.clone()));
    tokio::spawn(crate::metrics::upkeep(scrape.handle, work.clone()));
    tokio::spawn(store::retention::janitor(
        janitor_store,
        retention(&config.retention),
        work,
    ));
    supervisor.spawn(
        "public server",
        server::serve(listeners.public, public_app, limits, serving.clone()),
    );
    supervisor.spawn(
        "admin server",
        server::serve(listeners.admin, admin_app, admin_limits, serving),
    );
    Ok(Running {
        listen,
        admin_listen,
        admin_token_created,
        reloader,
        supervisor,
    })
}

/// Reloads the endpoints, subscriptions, flows and sources in force when
/// another daemon sharing the database changed them (PostgreSQL). A reload
/// that fails is tried again each second until it succeeds.
async fn sync_catalog(
    mut changes: mpsc::Receiver<u64>,
    catalog: Arc<CatalogHandle>,
    flows: Arc<FlowCatalog>,
    sources: Arc<SourceRegistry>,
) {
    while let Some(version) = changes.recv().await {
        loop {
            let reloaded = async {
                catalog.reload().await?;
                flows.reload().await?;
                sources.reload().await
            };
            match reloaded.await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, version, "Could not reload the catalog after a change; trying again.");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// HTTP intake and gRPC Events (with health and reflection) on one router.
async fn public_app(
    config: &Config,
    intake: Arc<Intake>,
    store: Store,
    sources: Arc<SourceRegistry>,
    readiness: &Health,
) -> anyhow::Result<axum::Router> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<EventsServer<EventsService>>().await;
    tokio::spawn(readiness.clone().mirror_to(
        health,
        <EventsServer<EventsService> as tonic::server::NamedService>::NAME,
    ));
    let grpc = tonic::service::Routes::new(events_service(config, intake.clone()))
        .add_service(health_service)
        .add_service(reflection()?)
        .into_axum_router();
    let grpc = server::deadline::bound_grpc_calls(grpc, config.http.request_timeout);
    let webhooks = intake::sources::webhook::router(WebhookState {
        intake: intake.clone(),
        sources,
        trusted_proxies: config.http.trusted_proxies.clone().into(),
    });
    let http = intake::http::router(intake.clone(), store.clone(), readiness.clone())
        .merge(intake::reads::router(intake.clone(), store))
        .merge(webhooks)
        .merge(intake::flows::router(
            intake,
            config.flow_runner.webhook_rate_limit,
        ))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            config.http.request_timeout,
        ));
    Ok(traced(grpc.merge(http).fallback(intake::http::not_found)))
}

/// Every request gets an id (the caller's `x-request-id`, or a new UUID),
/// echoed in the response's `x-request-id` and carried by the request's
/// span. Requests are logged at DEBUG (`RUST_LOG=tower_http=debug`): a log
/// line per request at INFO would cost more than the request at full load.
fn traced(router: axum::Router) -> axum::Router {
    use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &axum::http::Request<_>| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        path = request.uri().path(),
                        request_id = id,
                    )
                },
            ),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// gRPC Events: the API key, then the message's size, are checked before
/// the message is read.
fn events_service(
    config: &Config,
    intake: Arc<Intake>,
) -> InterceptedService<MessageLimit<EventsServer<EventsService>>, ApiKeyGate> {
    let http = &config.http;
    let limits = MessageLimits {
        default: (http.body_limit, "http.body_limit"),
        methods: vec![(
            "PublishBatch",
            http.batch_body_limit,
            "http.batch_body_limit",
        )],
    };
    let server = EventsServer::new(EventsService::new(intake.clone()))
        .max_decoding_message_size(http.batch_body_limit);
    InterceptedService::new(MessageLimit::new(server, limits), ApiKeyGate::new(intake))
}

/// gRPC Admin, behind the admin token (health and reflection stay open).
/// Like the Events key, the token is checked by an interceptor, which tonic
/// runs on the headers before it reads the message.
async fn admin_app(
    service: AdminService,
    token: &str,
    readiness: &Health,
    request_timeout: std::time::Duration,
) -> anyhow::Result<axum::Router> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AdminServer<AdminService>>().await;
    tokio::spawn(readiness.clone().mirror_to(
        health,
        <AdminServer<AdminService> as tonic::server::NamedService>::NAME,
    ));
    let router = tonic::service::Routes::new(AdminServer::with_interceptor(
        service,
        AdminAuth::new(token),
    ))
    .add_service(health_service)
    .add_service(reflection()?)
    .into_axum_router();
    Ok(server::deadline::bound_grpc_calls(router, request_timeout))
}

/// The message a panic carried, for the record of what it broke.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

fn reflection() -> anyhow::Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hookyard::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?)
}

/// The data directory holds every payload and the admin token: created
/// 0700 (whatever the umask), so only the daemon's user can look inside. One
/// that already exists keeps its mode (it may be shared on purpose, and its
/// files are private anyway), with a warning when others can enter it.
fn create_data_dir(path: &std::path::Path) -> std::io::Result<()> {
    if path.is_dir() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = %format!("{mode:o}"), "The data directory is open to group or others; `chmod 700` it unless that is intended.");
            }
        }
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().mode(0o700).create(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    std::fs::create_dir(path)
}
