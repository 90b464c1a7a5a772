//! Everything that talks to the daemon, off the UI task. The app asks with a
//! [`Command`]; the [`Runner`] spawns it against the [`AdminApi`] and the
//! answer comes back as an [`Update`] on a bounded channel. The live stream is
//! one long-lived task that reconnects with backoff and reports the
//! connection's state, so the screen can say "reconnecting…".

use std::{sync::Arc, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use hookyard::v1::{
    Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, DeliveryUpdate, Endpoint, EventType,
    Flow, GetStatsResponse, Job, ListRunsRequest, ListRunsResponse, ReplayEventsRequest,
    RetryDeadLettersRequest, RotateEndpointSecretResponse, Run, RunDetail, RunUpdate,
    SendTestEventResponse, Source, SourceWithToken, StartRunResponse, Subscription,
    WatchRunsRequest,
};
use prost_types::Timestamp;
use tokio::{sync::mpsc, task::JoinHandle};
use tonic::Code;

use crate::{
    api::{AdminApi, ApiResult, Call},
    screens::runs::RunFilter,
};

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Dead letters loaded at once.
pub const DEAD_PAGE: u32 = 500;
/// Runs loaded at once (newest first); the stream keeps them current.
pub const RUNS_PAGE: u32 = 200;

/// A request from the app to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// (Re)starts the live stream with this filter.
    Watch(DeliveryFilter),
    LoadDetail(u64),
    Retry(Vec<u64>),
    /// A new delivery of the same event to the same endpoint.
    Resend(u64),
    LoadDead,
    LoadSubscriptions,
    SaveSubscription {
        subscription: Subscription,
        create: bool,
    },
    ReloadSubscription(String),
    DeleteSubscription(String),
    TestRoute {
        name: String,
        tenant_id: String,
        payload: Vec<u8>,
    },
    LoadEndpoints,
    SaveEndpoint {
        endpoint: Box<Endpoint>,
        create: bool,
    },
    ReloadEndpoint(String),
    DeleteEndpoint(String),
    /// A new signing secret, the old one signing beside it for the
    /// daemon's grace.
    RotateEndpointSecret(String),
    /// One attempt with the daemon's example event.
    SendTestEvent(String),
    /// Re-queues every failed and dead delivery of the endpoint created
    /// since `since` (unset: all of them).
    RecoverEndpoint {
        endpoint_id: String,
        since: Option<Timestamp>,
    },
    ReplayEvents(ReplayEventsRequest),
    RetryDeadLetters(RetryDeadLettersRequest),
    LoadJobs,
    CancelJob(String),
    /// Follows the job's progress until it ends.
    WatchJob(String),
    LoadStats,
    LoadSources,
    CreateSource(Source),
    RotateSource(String),
    SuspendSource(String),
    ResumeSource(String),
    DeleteSource(String),
    LoadFlows,
    StartRun {
        flow_id: String,
        inputs: Vec<u8>,
    },
    LoadRuns(RunFilter),
    /// The next page of runs, older than those on screen.
    MoreRuns {
        filter: RunFilter,
        page_token: String,
    },
    /// (Re)starts the runs stream for this filter.
    WatchRuns(RunFilter),
    LoadRun(String),
    CancelRun(String),
    LoadEventTypes,
    DeleteEventType(String),
}

/// The state of the live stream, as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnState {
    Connecting,
    Live,
    /// Lost or never reached; trying again.
    Reconnecting {
        attempt: u32,
        error: String,
    },
    /// The daemon refused the request itself (a bad filter or token); not
    /// retried.
    Refused(String),
}

/// An answer from the daemon.
/// Deliveries shown when the live view opens.
const RECENT: u32 = 50;

#[derive(Debug)]
pub enum Update {
    Conn(ConnState),
    Delivery(DeliveryUpdate),
    /// The latest deliveries, newest first, read when the live view opens.
    Recent(Vec<Delivery>),
    Detail(u64, ApiResult<DeliveryDetail>),
    /// How many retries were scheduled and what went wrong with the rest.
    Retried {
        ok: usize,
        errors: Vec<String>,
    },
    Resent(u64, ApiResult<Delivery>),
    Dead(ApiResult<Vec<Delivery>>),
    Subscriptions(ApiResult<Vec<Subscription>>),
    SubscriptionSaved(ApiResult<Subscription>),
    SubscriptionReloaded(ApiResult<Subscription>),
    SubscriptionDeleted(ApiResult<()>),
    Routed(ApiResult<Vec<Subscription>>),
    Endpoints(ApiResult<Vec<Endpoint>>),
    EndpointSaved(ApiResult<Endpoint>),
    EndpointReloaded(ApiResult<Endpoint>),
    EndpointDeleted(ApiResult<()>),
    EndpointSecretRotated(String, ApiResult<RotateEndpointSecretResponse>),
    TestEventSent(String, ApiResult<SendTestEventResponse>),
    /// How many deliveries were re-queued.
    EndpointRecovered(String, ApiResult<u64>),
    Stats(ApiResult<GetStatsResponse>),
    Sources(ApiResult<Vec<Source>>),
    SourceToken(ApiResult<SourceWithToken>),
    SourceChanged(ApiResult<()>),
    Flows(ApiResult<Vec<Flow>>),
    RunStarted(ApiResult<StartRunResponse>),
    Runs(ApiResult<ListRunsResponse>),
    MoreRuns(ApiResult<ListRunsResponse>),
    /// The runs stream's state, shown on the Runs screen.
    RunsConn(ConnState),
    Run(RunUpdate),
    RunDetail(String, ApiResult<RunDetail>),
    RunCancelled(String, ApiResult<Run>),
    /// A replay or bulk retry the daemon started.
    JobStarted(ApiResult<Job>),
    Jobs(ApiResult<Vec<Job>>),
    /// A job's progress, from its stream.
    Job(Job),
    JobCancelled(String, ApiResult<Job>),
    EventTypes(ApiResult<Vec<EventType>>),
    EventTypeDeleted(ApiResult<()>),
}

/// Runs one command to its answer. The watch command is the runner's
/// business and answers nothing here.
pub async fn execute(api: &dyn AdminApi, command: Command) -> Option<Update> {
    let update = match command {
        Command::Watch(_) | Command::WatchRuns(_) | Command::WatchJob(_) => return None,
        Command::LoadDetail(id) => Update::Detail(id, api.get_delivery(id).await),
        Command::Retry(ids) => {
            let mut ok = 0;
            let mut errors = Vec::new();
            for id in ids {
                match api.retry_delivery(id).await {
                    Ok(_) => ok += 1,
                    Err(e) => errors.push(format!("#{id}: {}", e.describe())),
                }
            }
            Update::Retried { ok, errors }
        }
        Command::Resend(id) => Update::Resent(id, api.resend_delivery(id).await),
        Command::LoadDead => {
            let filter = DeliveryFilter {
                status: DeliveryStatus::Dead.into(),
                ..DeliveryFilter::default()
            };
            Update::Dead(api.list_deliveries(filter, DEAD_PAGE).await)
        }
        Command::LoadSubscriptions => Update::Subscriptions(api.list_subscriptions().await),
        Command::SaveSubscription {
            subscription,
            create,
        } => Update::SubscriptionSaved(if create {
            api.create_subscription(subscription).await
        } else {
            api.update_subscription(subscription).await
        }),
        Command::ReloadSubscription(id) => {
            Update::SubscriptionReloaded(api.get_subscription(id).await)
        }
        Command::DeleteSubscription(id) => {
            Update::SubscriptionDeleted(api.delete_subscription(id).await)
        }
        Command::TestRoute {
            name,
            tenant_id,
            payload,
        } => Update::Routed(api.test_route(name, tenant_id, payload).await),
        Command::LoadEndpoints => Update::Endpoints(api.list_endpoints().await),
        Command::SaveEndpoint { endpoint, create } => Update::EndpointSaved(if create {
            api.create_endpoint(*endpoint).await
        } else {
            api.update_endpoint(*endpoint).await
        }),
        Command::ReloadEndpoint(id) => Update::EndpointReloaded(api.get_endpoint(id).await),
        Command::DeleteEndpoint(id) => Update::EndpointDeleted(api.delete_endpoint(id).await),
        Command::RotateEndpointSecret(id) => {
            let result = api.rotate_endpoint_secret(id.clone(), None).await;
            Update::EndpointSecretRotated(id, result)
        }
        Command::SendTestEvent(id) => {
            let result = api
                .send_test_event(id.clone(), String::new(), Vec::new())
                .await;
            Update::TestEventSent(id, result)
        }
        Command::RecoverEndpoint { endpoint_id, since } => {
            let result = api.recover_endpoint(endpoint_id.clone(), since).await;
            Update::EndpointRecovered(endpoint_id, result)
        }
        Command::ReplayEvents(request) => Update::JobStarted(api.replay_events(request).await),
        Command::RetryDeadLetters(request) => {
            Update::JobStarted(api.retry_dead_letters(request).await)
        }
        Command::LoadJobs => Update::Jobs(api.list_jobs().await),
        Command::CancelJob(id) => {
            let result = api.cancel_job(id.clone()).await;
            Update::JobCancelled(id, result)
        }
        Command::LoadStats => Update::Stats(api.get_stats().await),
        Command::LoadSources => Update::Sources(api.list_sources().await),
        Command::CreateSource(source) => Update::SourceToken(api.create_source(source).await),
        Command::RotateSource(id) => Update::SourceToken(api.rotate_source_token(id).await),
        Command::SuspendSource(id) => Update::SourceChanged(api.suspend_source(id).await.map(drop)),
        Command::ResumeSource(id) => Update::SourceChanged(api.resume_source(id).await.map(drop)),
        Command::DeleteSource(id) => Update::SourceChanged(api.delete_source(id).await),
        Command::LoadFlows => Update::Flows(api.list_flows().await),
        Command::StartRun { flow_id, inputs } => {
            Update::RunStarted(api.start_run(flow_id, inputs).await)
        }
        Command::LoadRuns(filter) => {
            Update::Runs(api.list_runs(runs_request(filter, String::new())).await)
        }
        Command::MoreRuns { filter, page_token } => {
            Update::MoreRuns(api.list_runs(runs_request(filter, page_token)).await)
        }
        Command::LoadRun(id) => {
            let result = api.get_run(id.clone()).await;
            Update::RunDetail(id, result)
        }
        Command::CancelRun(id) => {
            let result = api.cancel_run(id.clone()).await;
            Update::RunCancelled(id, result)
        }
        Command::LoadEventTypes => Update::EventTypes(api.list_event_types().await),
        Command::DeleteEventType(id) => Update::EventTypeDeleted(api.delete_event_type(id).await),
    };
    Some(update)
}

fn runs_request(filter: RunFilter, page_token: String) -> ListRunsRequest {
    ListRunsRequest {
        flow_id: filter.flow_id,
        state: filter.state.into(),
        correlation_key: filter.key,
        page_size: RUNS_PAGE,
        page_token,
    }
}

/// Spawns commands and owns the live stream's task.
pub struct Runner {
    api: Arc<dyn AdminApi>,
    tx: mpsc::Sender<Update>,
    watch: Option<JoinHandle<()>>,
    watch_runs: Option<JoinHandle<()>>,
    /// One per job followed; each ends with its job.
    watch_jobs: Vec<JoinHandle<()>>,
}

impl Runner {
    pub fn new(api: Arc<dyn AdminApi>, tx: mpsc::Sender<Update>) -> Runner {
        Runner {
            api,
            tx,
            watch: None,
            watch_runs: None,
            watch_jobs: Vec::new(),
        }
    }

    pub fn run(&mut self, commands: Vec<Command>) {
        for command in commands {
            match command {
                Command::Watch(filter) => {
                    if let Some(old) = self.watch.take() {
                        old.abort();
                    }
                    let api = Arc::clone(&self.api);
                    let tx = self.tx.clone();
                    self.watch = Some(tokio::spawn(async move {
                        // The latest first, so the view is not empty until
                        // something happens; then every change as it comes.
                        if let Ok(recent) = api.list_deliveries(filter.clone(), RECENT).await {
                            if tx.send(Update::Recent(recent)).await.is_err() {
                                return;
                            }
                        }
                        let open = move || api.watch_deliveries(filter.clone());
                        follow(open, Update::Delivery, Update::Conn, tx).await;
                    }));
                }
                Command::WatchRuns(filter) => {
                    if let Some(old) = self.watch_runs.take() {
                        old.abort();
                    }
                    let api = Arc::clone(&self.api);
                    let tx = self.tx.clone();
                    // The state filter stays on this side: a run leaving the
                    // state must still be seen, to take it off the table.
                    let request = WatchRunsRequest {
                        flow_id: filter.flow_id,
                        state: 0,
                    };
                    let open = move || api.watch_runs(request.clone());
                    self.watch_runs = Some(tokio::spawn(follow(
                        open,
                        Update::Run,
                        Update::RunsConn,
                        tx,
                    )));
                }
                Command::WatchJob(id) => {
                    self.watch_jobs.retain(|task| !task.is_finished());
                    let api = Arc::clone(&self.api);
                    let tx = self.tx.clone();
                    self.watch_jobs.push(tokio::spawn(follow_job(api, id, tx)));
                }
                command => {
                    let api = Arc::clone(&self.api);
                    let tx = self.tx.clone();
                    tokio::spawn(async move {
                        if let Some(update) = execute(api.as_ref(), command).await {
                            // The UI is gone when this fails; nothing to tell.
                            let _ = tx.send(update).await;
                        }
                    });
                }
            }
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        for watch in [self.watch.take(), self.watch_runs.take()]
            .into_iter()
            .flatten()
            .chain(self.watch_jobs.drain(..))
        {
            watch.abort();
        }
    }
}

/// Forwards a job's progress until it ends. A job is short-lived and its
/// stream ends with it, so there is no reconnecting: after a break the list
/// is read once instead, to show where the job got to.
async fn follow_job(api: Arc<dyn AdminApi>, id: String, tx: mpsc::Sender<Update>) {
    if let Ok(mut stream) = api.watch_job(id).await {
        loop {
            match stream.next().await {
                Some(Ok(job)) => {
                    if tx.send(Update::Job(job)).await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) => break,
                None => return,
            }
        }
    }
    let _ = tx.send(Update::Jobs(api.list_jobs().await)).await;
}

/// Follows a server stream (`WatchDeliveries`, `WatchRuns`) for as long as
/// the UI lives, reconnecting with exponential backoff whenever it breaks;
/// `item` wraps what it carries and `conn` its state.
async fn follow<T, Open>(
    open: Open,
    item: fn(T) -> Update,
    conn: fn(ConnState) -> Update,
    tx: mpsc::Sender<Update>,
) where
    T: Send + 'static,
    Open: Fn() -> Call<BoxStream<'static, ApiResult<T>>>,
{
    let mut attempt: u32 = 0;
    let mut backoff = BACKOFF_START;
    if tx.send(conn(ConnState::Connecting)).await.is_err() {
        return;
    }
    loop {
        let error = match open().await {
            Ok(mut stream) => {
                attempt = 0;
                backoff = BACKOFF_START;
                if tx.send(conn(ConnState::Live)).await.is_err() {
                    return;
                }
                loop {
                    match stream.next().await {
                        Some(Ok(update)) => {
                            if tx.send(item(update)).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => break e.describe(),
                        None => break "the daemon closed the stream".to_string(),
                    }
                }
            }
            // Asking again would get the same answer: a bad filter or token.
            Err(e)
                if matches!(
                    e.code,
                    Code::InvalidArgument | Code::Unauthenticated | Code::PermissionDenied
                ) =>
            {
                let _ = tx.send(conn(ConnState::Refused(e.describe()))).await;
                return;
            }
            Err(e) => e.describe(),
        };
        attempt += 1;
        let state = ConnState::Reconnecting { attempt, error };
        if tx.send(conn(state)).await.is_err() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
