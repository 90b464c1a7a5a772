//! Test support: an in-memory [`AdminApi`] that behaves like the daemon where
//! the screens care (versions, validation, not found), helpers to run the
//! app's commands against it, and rendering to a `TestBackend`.

use std::{collections::BTreeMap, sync::Mutex};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use futures::{FutureExt, StreamExt};
use hookyard::v1::{
    Attempt, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, DeliveryUpdate, Endpoint,
    EventType, Flow, GetStatsResponse, Job, JobState, ListRunsRequest, ListRunsResponse,
    ReplayEventsRequest, RetryDeadLettersRequest, RotateEndpointSecretResponse, Run, RunDetail,
    RunState, RunUpdate, SendTestEventResponse, Source, SourceStatus, SourceWithToken,
    StartRunResponse, Subscription, WatchRunsRequest,
};
use ratatui::{backend::TestBackend, Terminal};
use tonic::Code;

pub use crate::fixtures::*;
use crate::{
    api::{AdminApi, ApiError, ApiResult, Call, JobStream, RunStream, UpdateStream},
    app::App,
    net::{execute, Command},
    ui,
};

#[derive(Default)]
pub struct FakeState {
    pub subscriptions: BTreeMap<String, Subscription>,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub sources: BTreeMap<String, Source>,
    pub deliveries: Vec<Delivery>,
    pub details: BTreeMap<u64, DeliveryDetail>,
    /// Every call fails with this (daemon down, bad token).
    pub fail_all: Option<ApiError>,
    /// The next write fails with this.
    pub fail_next: Option<ApiError>,
    pub retried: Vec<u64>,
    pub stats: GetStatsResponse,
    pub watch_failures: u32,
    pub watch_updates: Vec<DeliveryUpdate>,
    pub flows: BTreeMap<String, Flow>,
    pub event_types: BTreeMap<String, EventType>,
    /// Any order; `list_runs` sorts newest first.
    pub runs: Vec<Run>,
    pub run_details: BTreeMap<String, RunDetail>,
    pub run_updates: Vec<RunUpdate>,
    /// Inputs of the runs started, as JSON.
    pub started: Vec<(String, serde_json::Value)>,
    /// What `send_test_event` answers; unset: a 200 with `ok`.
    pub test_event: Option<SendTestEventResponse>,
    /// Endpoints `send_test_event` was called for.
    pub tested: Vec<String>,
    /// Deliveries `resend_delivery` was called for.
    pub resent: Vec<u64>,
    /// `since` of every `recover_endpoint`.
    pub recovered_since: Vec<Option<prost_types::Timestamp>>,
    pub replays: Vec<ReplayEventsRequest>,
    pub dead_retries: Vec<RetryDeadLettersRequest>,
    /// Jobs started or put here; `list_jobs` answers them.
    pub jobs: Vec<Job>,
    /// What `watch_job` streams before it ends.
    pub job_updates: Vec<Job>,
    next_id: u64,
}

#[derive(Default)]
pub struct FakeAdmin {
    pub state: Mutex<FakeState>,
}

fn ready<T: Send + 'static>(result: ApiResult<T>) -> Call<T> {
    futures::future::ready(result).boxed()
}

impl FakeAdmin {
    pub fn with(f: impl FnOnce(&mut FakeState)) -> FakeAdmin {
        let fake = FakeAdmin::default();
        f(&mut fake.state.lock().unwrap());
        fake
    }

    fn read<T: Send + 'static>(&self, f: impl FnOnce(&mut FakeState) -> ApiResult<T>) -> Call<T> {
        let mut state = self.state.lock().unwrap();
        if let Some(e) = &state.fail_all {
            return ready(Err(e.clone()));
        }
        ready(f(&mut state))
    }

    fn write<T: Send + 'static>(&self, f: impl FnOnce(&mut FakeState) -> ApiResult<T>) -> Call<T> {
        let mut state = self.state.lock().unwrap();
        if let Some(e) = state.fail_all.clone().or_else(|| state.fail_next.take()) {
            return ready(Err(e));
        }
        ready(f(&mut state))
    }
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("{what} `{id}` not found"))
}

fn stale() -> ApiError {
    ApiError::new(Code::FailedPrecondition, "version mismatch")
}

impl AdminApi for FakeAdmin {
    /// Fails while `watch_failures` lasts, then streams `watch_updates`
    /// and ends, as a daemon that stops would.
    fn watch_deliveries(&self, _filter: DeliveryFilter) -> Call<UpdateStream> {
        self.read(|s| {
            if s.watch_failures > 0 {
                s.watch_failures -= 1;
                return Err(ApiError::new(Code::Unavailable, "connection refused"));
            }
            let updates: Vec<_> = std::mem::take(&mut s.watch_updates)
                .into_iter()
                .map(Ok)
                .collect();
            Ok(futures::stream::iter(updates).boxed())
        })
    }

    fn list_deliveries(&self, filter: DeliveryFilter, _page_size: u32) -> Call<Vec<Delivery>> {
        self.read(|s| {
            Ok(s.deliveries
                .iter()
                .filter(|d| filter.status == 0 || d.status == filter.status)
                .cloned()
                .collect())
        })
    }

    fn get_delivery(&self, id: u64) -> Call<DeliveryDetail> {
        self.read(|s| {
            s.details
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("delivery", &id.to_string()))
        })
    }

    fn retry_delivery(&self, id: u64) -> Call<Delivery> {
        self.write(|s| {
            s.retried.push(id);
            let d = s.deliveries.iter_mut().find(|d| d.id == id);
            let d = d.ok_or_else(|| not_found("delivery", &id.to_string()))?;
            d.status = DeliveryStatus::Pending.into();
            Ok(d.clone())
        })
    }

    /// A new delivery with the next id, pending.
    fn resend_delivery(&self, id: u64) -> Call<Delivery> {
        self.write(|s| {
            let d = s.deliveries.iter().find(|d| d.id == id);
            let mut d = d
                .ok_or_else(|| not_found("delivery", &id.to_string()))?
                .clone();
            s.resent.push(id);
            d.id = s.deliveries.iter().map(|d| d.id).max().unwrap_or(0) + 1;
            d.status = DeliveryStatus::Pending.into();
            d.attempts = 0;
            s.deliveries.push(d.clone());
            Ok(d)
        })
    }

    fn list_subscriptions(&self) -> Call<Vec<Subscription>> {
        self.read(|s| Ok(s.subscriptions.values().cloned().collect()))
    }

    fn get_subscription(&self, id: String) -> Call<Subscription> {
        self.read(|s| {
            s.subscriptions
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("subscription", &id))
        })
    }

    fn create_subscription(&self, mut sub: Subscription) -> Call<Subscription> {
        self.write(|s| {
            s.next_id += 1;
            sub.id = format!("sub-new-{}", s.next_id);
            sub.version = 1;
            s.subscriptions.insert(sub.id.clone(), sub.clone());
            Ok(sub)
        })
    }

    fn update_subscription(&self, mut sub: Subscription) -> Call<Subscription> {
        self.write(|s| {
            let stored = s
                .subscriptions
                .get_mut(&sub.id)
                .ok_or_else(|| not_found("subscription", &sub.id))?;
            if stored.version != sub.version {
                return Err(stale());
            }
            sub.version += 1;
            *stored = sub.clone();
            Ok(sub)
        })
    }

    fn delete_subscription(&self, id: String) -> Call<()> {
        self.write(|s| {
            s.subscriptions
                .remove(&id)
                .map(drop)
                .ok_or_else(|| not_found("subscription", &id))
        })
    }

    fn test_route(
        &self,
        name: String,
        _tenant: String,
        _payload: Vec<u8>,
    ) -> Call<Vec<Subscription>> {
        self.read(|s| {
            let prefix = name.split('.').next().unwrap_or_default().to_string();
            Ok(s.subscriptions
                .values()
                .filter(|sub| sub.patterns.iter().any(|p| p.starts_with(&prefix)))
                .cloned()
                .collect())
        })
    }

    fn list_endpoints(&self) -> Call<Vec<Endpoint>> {
        self.read(|s| Ok(s.endpoints.values().cloned().collect()))
    }

    fn get_endpoint(&self, id: String) -> Call<Endpoint> {
        self.read(|s| {
            s.endpoints
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("endpoint", &id))
        })
    }

    fn create_endpoint(&self, mut endpoint: Endpoint) -> Call<Endpoint> {
        self.write(|s| {
            endpoint.version = 1;
            endpoint.secret_hint = "whsec_…abcd".to_string();
            endpoint.secret.clear();
            s.endpoints.insert(endpoint.id.clone(), endpoint.clone());
            Ok(endpoint)
        })
    }

    fn update_endpoint(&self, mut endpoint: Endpoint) -> Call<Endpoint> {
        self.write(|s| {
            let stored = s
                .endpoints
                .get_mut(&endpoint.id)
                .ok_or_else(|| not_found("endpoint", &endpoint.id))?;
            if stored.version != endpoint.version {
                return Err(stale());
            }
            endpoint.version += 1;
            endpoint.secret.clear();
            *stored = endpoint.clone();
            Ok(endpoint)
        })
    }

    fn delete_endpoint(&self, id: String) -> Call<()> {
        self.write(|s| {
            s.endpoints
                .remove(&id)
                .map(drop)
                .ok_or_else(|| not_found("endpoint", &id))
        })
    }

    /// The new secret is `whsec_rotated<n>`; the old one signs for a day.
    fn rotate_endpoint_secret(
        &self,
        id: String,
        _grace_ms: Option<u64>,
    ) -> Call<RotateEndpointSecretResponse> {
        self.write(|s| {
            s.next_id += 1;
            let secret = format!("whsec_rotated{}", s.next_id);
            let endpoint = s
                .endpoints
                .get_mut(&id)
                .ok_or_else(|| not_found("endpoint", &id))?;
            endpoint.version += 1;
            endpoint.secret_hint = format!("whsec_…{}", &secret[secret.len() - 4..]);
            endpoint.previous_secret_expires_at = ts(86_400);
            Ok(RotateEndpointSecretResponse {
                endpoint: Some(endpoint.clone()),
                secret,
            })
        })
    }

    fn send_test_event(
        &self,
        endpoint_id: String,
        _event_name: String,
        _payload: Vec<u8>,
    ) -> Call<SendTestEventResponse> {
        self.write(|s| {
            if !s.endpoints.contains_key(&endpoint_id) {
                return Err(not_found("endpoint", &endpoint_id));
            }
            s.tested.push(endpoint_id);
            Ok(s.test_event.clone().unwrap_or(SendTestEventResponse {
                attempt: Some(Attempt {
                    number: 1,
                    started_at: ts(0),
                    duration_ms: 42,
                    status_code: 200,
                    response_body: "ok".to_string(),
                    ..Attempt::default()
                }),
                succeeded: true,
            }))
        })
    }

    /// Failed and dead deliveries of the endpoint become pending.
    fn recover_endpoint(
        &self,
        endpoint_id: String,
        since: Option<prost_types::Timestamp>,
    ) -> Call<u64> {
        self.write(|s| {
            if !s.endpoints.contains_key(&endpoint_id) {
                return Err(not_found("endpoint", &endpoint_id));
            }
            s.recovered_since.push(since);
            let mut requeued = 0;
            for d in &mut s.deliveries {
                if d.target == format!("endpoint:{endpoint_id}")
                    && matches!(d.status(), DeliveryStatus::Failed | DeliveryStatus::Dead)
                {
                    d.status = DeliveryStatus::Pending.into();
                    requeued += 1;
                }
            }
            Ok(requeued)
        })
    }

    /// Needs a pattern or a subscription and a start, as the daemon does.
    fn replay_events(&self, request: ReplayEventsRequest) -> Call<Job> {
        self.write(|s| {
            let mut violations = Vec::new();
            if request.pattern.is_empty() == request.subscription_id.is_empty() {
                violations.push(("pattern", "give either `pattern` or `subscription_id`"));
            }
            if request.from.is_none() {
                violations.push(("from", "is required: where the replay starts"));
            }
            if !violations.is_empty() {
                return Err(ApiError::invalid(&violations));
            }
            let what = if request.pattern.is_empty() {
                format!("subscription {}", request.subscription_id)
            } else {
                request.pattern.clone()
            };
            s.replays.push(request);
            Ok(start_job(s, "replay", format!("replay {what}")))
        })
    }

    fn retry_dead_letters(&self, request: RetryDeadLettersRequest) -> Call<Job> {
        self.write(|s| {
            let whose = if request.endpoint_id.is_empty() {
                "every endpoint".to_string()
            } else {
                format!("endpoint {}", request.endpoint_id)
            };
            s.dead_retries.push(request);
            Ok(start_job(
                s,
                "retry_dead_letters",
                format!("retry the dead letters of {whose}"),
            ))
        })
    }

    fn list_jobs(&self) -> Call<Vec<Job>> {
        self.read(|s| Ok(s.jobs.clone()))
    }

    fn cancel_job(&self, id: String) -> Call<Job> {
        self.write(|s| {
            let job = s.jobs.iter_mut().find(|j| j.id == id);
            let job = job.ok_or_else(|| not_found("job", &id))?;
            if job.state() != JobState::Running {
                return Err(ApiError::new(
                    Code::FailedPrecondition,
                    format!("job `{id}` has already ended"),
                ));
            }
            job.state = JobState::Cancelled.into();
            job.finished_at = ts(60);
            Ok(job.clone())
        })
    }

    /// Streams `job_updates` and ends.
    fn watch_job(&self, _id: String) -> Call<JobStream> {
        self.read(|s| {
            let updates: Vec<_> = std::mem::take(&mut s.job_updates)
                .into_iter()
                .map(Ok)
                .collect();
            Ok(futures::stream::iter(updates).boxed())
        })
    }

    fn get_stats(&self) -> Call<GetStatsResponse> {
        self.read(|s| Ok(s.stats.clone()))
    }

    fn list_sources(&self) -> Call<Vec<Source>> {
        self.read(|s| Ok(s.sources.values().cloned().collect()))
    }

    fn create_source(&self, mut source: Source) -> Call<SourceWithToken> {
        self.write(|s| {
            s.next_id += 1;
            source.id = format!("src-new-{}", s.next_id);
            source.status = SourceStatus::Active.into();
            source.version = 1;
            s.sources.insert(source.id.clone(), source.clone());
            Ok(SourceWithToken {
                source: Some(source),
                token: "tok_secret".to_string(),
                url_path: "/webhook/v1/tok_secret".to_string(),
            })
        })
    }

    fn rotate_source_token(&self, id: String) -> Call<SourceWithToken> {
        self.write(|s| {
            let source = s.sources.get(&id).ok_or_else(|| not_found("source", &id))?;
            Ok(SourceWithToken {
                source: Some(source.clone()),
                token: "tok_rotated".to_string(),
                url_path: "/webhook/v1/tok_rotated".to_string(),
            })
        })
    }

    fn suspend_source(&self, id: String) -> Call<Source> {
        self.write(|s| set_source_status(s, &id, SourceStatus::Suspended))
    }

    fn resume_source(&self, id: String) -> Call<Source> {
        self.write(|s| set_source_status(s, &id, SourceStatus::Active))
    }

    fn delete_source(&self, id: String) -> Call<()> {
        self.write(|s| {
            s.sources
                .remove(&id)
                .map(drop)
                .ok_or_else(|| not_found("source", &id))
        })
    }

    fn list_flows(&self) -> Call<Vec<Flow>> {
        self.read(|s| Ok(s.flows.values().cloned().collect()))
    }

    fn list_event_types(&self) -> Call<Vec<EventType>> {
        self.read(|s| Ok(s.event_types.values().cloned().collect()))
    }

    fn delete_event_type(&self, id: String) -> Call<()> {
        self.write(|s| {
            s.event_types
                .remove(&id)
                .map(drop)
                .ok_or_else(|| not_found("event type", &id))
        })
    }

    fn start_run(&self, flow_id: String, inputs: Vec<u8>) -> Call<StartRunResponse> {
        self.write(|s| start_run(s, flow_id, &inputs))
    }

    /// Pages of `page_size`; the token is the offset.
    fn list_runs(&self, r: ListRunsRequest) -> Call<ListRunsResponse> {
        self.read(|s| {
            let mut runs: Vec<Run> = s
                .runs
                .iter()
                .filter(|run| r.flow_id.is_empty() || run.flow_id == r.flow_id)
                .filter(|run| r.state == 0 || run.state == r.state)
                .filter(|run| {
                    r.correlation_key.is_empty() || run.correlation_key == r.correlation_key
                })
                .cloned()
                .collect();
            runs.sort_by_key(|run| std::cmp::Reverse(run.created_at.map(|t| t.seconds)));
            let from: usize = r.page_token.parse().unwrap_or(0);
            let size = if r.page_size == 0 {
                50
            } else {
                r.page_size as usize
            };
            let next = from + size;
            Ok(ListRunsResponse {
                next_page_token: if next < runs.len() {
                    next.to_string()
                } else {
                    String::new()
                },
                runs: runs.into_iter().skip(from).take(size).collect(),
            })
        })
    }

    fn get_run(&self, id: String) -> Call<RunDetail> {
        self.read(|s| {
            s.run_details
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("run", &id))
        })
    }

    fn cancel_run(&self, id: String) -> Call<Run> {
        self.write(|s| cancel_run(s, &id))
    }

    /// Streams `run_updates` and ends.
    fn watch_runs(&self, _request: WatchRunsRequest) -> Call<RunStream> {
        self.read(|s| {
            let updates: Vec<_> = std::mem::take(&mut s.run_updates)
                .into_iter()
                .map(Ok)
                .collect();
            Ok(futures::stream::iter(updates).boxed())
        })
    }
}

/// The fake's flows all require an `email` input.
fn start_run(s: &mut FakeState, flow_id: String, inputs: &[u8]) -> ApiResult<StartRunResponse> {
    if !s.flows.contains_key(&flow_id) {
        return Err(not_found("flow", &flow_id));
    }
    let inputs: serde_json::Value = serde_json::from_slice(inputs)
        .map_err(|e| ApiError::new(Code::InvalidArgument, e.to_string()))?;
    match inputs.get("email").and_then(|e| e.as_str()) {
        None => return Err(ApiError::invalid(&[("inputs.email", "is required")])),
        Some(email) if !email.contains('@') => {
            return Err(ApiError::invalid(&[("inputs.email", "is not an email")]))
        }
        Some(_) => {}
    }
    s.next_id += 1;
    let id = format!("run-new-{}", s.next_id);
    s.started.push((flow_id.clone(), inputs));
    s.runs.push(Run {
        id: id.clone(),
        flow_id,
        state: RunState::Created.into(),
        trigger: "admin".to_string(),
        ..Run::default()
    });
    Ok(StartRunResponse {
        id,
        state: RunState::Created.into(),
    })
}

fn cancel_run(s: &mut FakeState, id: &str) -> ApiResult<Run> {
    let run = s
        .runs
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| not_found("run", id))?;
    if matches!(
        run.state(),
        RunState::Succeeded | RunState::Failed | RunState::Cancelled
    ) {
        return Err(ApiError::new(
            Code::FailedPrecondition,
            format!(
                "run `{id}` has already finished ({})",
                run.state().as_str_name()
            ),
        ));
    }
    run.state = RunState::Cancelled.into();
    run.current_step.clear();
    run.error = "cancelled by an admin".to_string();
    let run = run.clone();
    if let Some(detail) = s.run_details.get_mut(id) {
        detail.run = Some(run.clone());
    }
    Ok(run)
}

fn start_job(s: &mut FakeState, kind: &str, description: String) -> Job {
    s.next_id += 1;
    let job = Job {
        id: format!("job-{}", s.next_id),
        kind: kind.to_string(),
        description,
        state: JobState::Running.into(),
        started_at: ts(0),
        ..Job::default()
    };
    s.jobs.push(job.clone());
    job
}

fn set_source_status(s: &mut FakeState, id: &str, status: SourceStatus) -> ApiResult<Source> {
    let source = s
        .sources
        .get_mut(id)
        .ok_or_else(|| not_found("source", id))?;
    source.status = status.into();
    Ok(source.clone())
}

/// Runs every command the app queued against `api` and applies the answers,
/// until the app asks for nothing more.
pub async fn settle(app: &mut App, api: &dyn AdminApi) {
    loop {
        let commands = app.take_commands();
        if commands.is_empty() {
            return;
        }
        for command in commands {
            if let Some(update) = execute(api, command).await {
                app.apply(update);
            }
        }
    }
}

/// The commands queued, without running them.
pub fn queued(app: &mut App) -> Vec<Command> {
    app.take_commands()
        .into_iter()
        .filter(|c| !matches!(c, Command::Watch(_) | Command::WatchRuns(_)))
        .collect()
}

pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

pub fn press(app: &mut App, code: KeyCode) {
    app.handle_key(key(code));
}

pub fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
}

/// The screen as text, as insta stores it.
pub fn draw(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| ui::render(app, frame)).unwrap();
    terminal.backend().to_string()
}

/// Snapshots the screen with clock times and uuids filtered out.
#[macro_export]
macro_rules! assert_screen {
    ($name:expr, $app:expr, $w:expr, $h:expr) => {
        insta::with_settings!({
            filters => vec![
                (r"\d\d:\d\d:\d\d", "[time]"),
                (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]"),
            ],
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $crate::testing::draw(&$app, $w, $h));
        })
    };
}

impl FakeAdmin {
    /// `get_delivery` without the future, for tests that apply by hand.
    pub fn get_delivery_now(&self, id: u64) -> ApiResult<DeliveryDetail> {
        self.get_delivery(id)
            .now_or_never()
            .expect("the fake answers at once")
    }
}
