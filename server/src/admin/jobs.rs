//! Replay and bulk retry as jobs: a task per job that works a page at a
//! time, throttled to a rate of deliveries per second so a replay of a
//! month does not flood the endpoints or the dispatcher, publishing its
//! progress on a watch channel (GetJob, WatchJob, the TUI) and stopping
//! between pages when cancelled. Jobs live in memory in the daemon that runs
//! them: what a job made is stored as it goes, so a restart loses only the
//! rest of the job, which can be asked for again.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use hookyard::v1 as pb;
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use tonic::{Request, Response, Status};

use super::{
    convert::timestamp,
    service::{invalid, AdminService},
};
use crate::{
    catalog::CatalogHandle,
    delivery::Control,
    intake::event::FieldError,
    model::{now_ms, NewEvent, Route, StoredEvent},
    routing::Pattern,
    store::Store,
};

/// Events read (replay) or dead deliveries made due (retry) per page.
const PAGE: usize = 200;
/// Deliveries per second when the request says 0.
pub const DEFAULT_RATE: u32 = 100;
pub const MAX_RATE: u32 = 10_000;
/// Events are received in about publish order; a replay reads this far past
/// its window's end before it stops.
const RECEIVED_SLACK_MS: i64 = 10_000;
/// Finished jobs kept for GetJob and ListJobs.
const KEEP_FINISHED: usize = 100;

/// The jobs this daemon runs and ran.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<HashMap<String, Handle>>,
}

struct Handle {
    progress: watch::Sender<pb::Job>,
    cancel: CancellationToken,
}

/// What a job needs to do its work.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub catalog: Arc<CatalogHandle>,
    pub control: tokio::sync::mpsc::Sender<Control>,
    pub shutdown: CancellationToken,
}

/// Which events a replay takes.
pub enum Selection {
    Pattern(Pattern),
    Subscription(String),
}

pub struct Replay {
    pub selection: Selection,
    pub from_ms: i64,
    pub to_ms: i64,
    pub endpoint_id: Option<String>,
    pub per_second: u32,
}

pub struct RetryDead {
    pub endpoint_id: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub per_second: u32,
    /// Failed deliveries waiting for a retry too (a recovery).
    pub include_failed: bool,
}

impl Jobs {
    pub fn list(&self) -> Vec<pb::Job> {
        let jobs = self.lock();
        let mut list: Vec<pb::Job> = jobs.values().map(|h| h.progress.borrow().clone()).collect();
        list.sort_by(|a, b| b.id.cmp(&a.id));
        list
    }

    pub fn get(&self, id: &str) -> Option<pb::Job> {
        self.lock().get(id).map(|h| h.progress.borrow().clone())
    }

    pub fn watch(&self, id: &str) -> Option<watch::Receiver<pb::Job>> {
        self.lock().get(id).map(|h| h.progress.subscribe())
    }

    pub fn cancel(&self, id: &str) -> Option<pb::Job> {
        let jobs = self.lock();
        let handle = jobs.get(id)?;
        handle.cancel.cancel();
        let job = handle.progress.borrow().clone();
        Some(job)
    }

    pub fn start_replay(
        self: &Arc<Self>,
        ctx: JobContext,
        replay: Replay,
        description: String,
    ) -> pb::Job {
        let (progress, cancel) = self.register("replay", description);
        let job = progress.borrow().clone();
        tokio::spawn(async move {
            let result = run_replay(&ctx, &replay, &progress, &cancel).await;
            finish(&progress, &cancel, result);
        });
        job
    }

    pub fn start_retry_dead(
        self: &Arc<Self>,
        ctx: JobContext,
        retry: RetryDead,
        description: String,
    ) -> pb::Job {
        let (progress, cancel) = self.register("retry_dead_letters", description);
        let job = progress.borrow().clone();
        tokio::spawn(async move {
            let result = run_retry_dead(&ctx, &retry, &progress, &cancel).await;
            finish(&progress, &cancel, result);
        });
        job
    }

    fn register(
        &self,
        kind: &str,
        description: String,
    ) -> (watch::Sender<pb::Job>, CancellationToken) {
        let job = pb::Job {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.to_string(),
            description,
            state: pb::JobState::Running as i32,
            started_at: timestamp(now_ms()),
            ..pb::Job::default()
        };
        let (progress, _) = watch::channel(job.clone());
        let cancel = CancellationToken::new();
        let mut jobs = self.lock();
        forget_oldest_finished(&mut jobs);
        jobs.insert(
            job.id.clone(),
            Handle {
                progress: progress.clone(),
                cancel: cancel.clone(),
            },
        );
        (progress, cancel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn forget_oldest_finished(jobs: &mut HashMap<String, Handle>) {
    let mut finished: Vec<String> = jobs
        .iter()
        .filter(|(_, h)| h.progress.borrow().state != pb::JobState::Running as i32)
        .map(|(id, _)| id.clone())
        .collect();
    if finished.len() < KEEP_FINISHED {
        return;
    }
    finished.sort();
    for id in finished.iter().take(finished.len() + 1 - KEEP_FINISHED) {
        jobs.remove(id);
    }
}

/// Why a job stopped before its end.
enum Stop {
    Cancelled,
    Failed(String),
}

fn finish(progress: &watch::Sender<pb::Job>, cancel: &CancellationToken, result: Result<(), Stop>) {
    progress.send_modify(|job| {
        job.finished_at = timestamp(now_ms());
        job.state = match &result {
            Ok(()) if !cancel.is_cancelled() => pb::JobState::Succeeded,
            Ok(()) | Err(Stop::Cancelled) => pb::JobState::Cancelled,
            Err(Stop::Failed(error)) => {
                job.error = error.clone();
                pb::JobState::Failed
            }
        } as i32;
    });
    let job = progress.borrow();
    tracing::info!(job = %job.id, kind = %job.kind, state = job.state, scanned = job.scanned, deliveries = job.deliveries, "Job ended.");
}

/// Keeps a job to its rate: waits until `done` deliveries are due by the
/// rate since `started`. Cancelling (or shutting down) ends the wait.
async fn throttle(
    ctx: &JobContext,
    cancel: &CancellationToken,
    started: Instant,
    done: u64,
    per_second: u32,
) -> Result<(), Stop> {
    let due = started + Duration::from_secs_f64(done as f64 / f64::from(per_second.max(1)));
    tokio::select! {
        _ = tokio::time::sleep_until(due) => {}
        _ = cancel.cancelled() => {}
        _ = ctx.shutdown.cancelled() => {}
    }
    if cancel.is_cancelled() || ctx.shutdown.is_cancelled() {
        return Err(Stop::Cancelled);
    }
    Ok(())
}

/// Tells the dispatcher these endpoints have deliveries due now in storage
/// (ids up to the largest made).
fn announce(ctx: &JobContext, made: Vec<(u64, Arc<str>)>) {
    let max_id = made.iter().map(|(id, _)| *id).max().unwrap_or(0);
    let endpoints: BTreeSet<Arc<str>> = made.into_iter().map(|(_, e)| e).collect();
    for endpoint in endpoints {
        let _ = ctx.control.try_send(Control::Stored {
            endpoint_id: endpoint.to_string(),
            max_id,
        });
    }
}

async fn run_replay(
    ctx: &JobContext,
    replay: &Replay,
    progress: &watch::Sender<pb::Job>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let started = Instant::now();
    let failed = |e: crate::store::Error| Stop::Failed(e.to_string());
    let mut after = ctx
        .store
        .events_received_since(replay.from_ms)
        .await
        .map_err(failed)?;
    let mut deliveries = 0u64;
    loop {
        throttle(ctx, cancel, started, deliveries, replay.per_second).await?;
        // A page no bigger than a second's worth, so the rate holds.
        let limit = PAGE.min(replay.per_second.max(1) as usize);
        let page = ctx.store.events_after(after, limit).await.map_err(failed)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = last.seq;
        let past_window = page.last().is_some_and(|(_, received)| {
            *received >= replay.to_ms.saturating_add(RECEIVED_SLACK_MS)
        });
        let (routes, scanned, matched) = replay_routes(ctx, replay, &page);
        let made = if routes.is_empty() {
            Vec::new()
        } else {
            ctx.store
                .insert_replayed(&routes, now_ms())
                .await
                .map_err(failed)?
        };
        deliveries += made.len() as u64;
        announce(ctx, made);
        progress.send_modify(|job| {
            job.scanned += scanned;
            job.matched += matched;
            job.deliveries += routes.len() as u64;
        });
        if past_window {
            return Ok(());
        }
    }
}

/// The deliveries a page of stored events makes, and how many events were
/// in the window and how many of those routed somewhere.
fn replay_routes(
    ctx: &JobContext,
    replay: &Replay,
    page: &[(StoredEvent, i64)],
) -> (Vec<(u64, Route)>, u64, u64) {
    let catalog = ctx.catalog.get();
    let mut routes = Vec::new();
    let (mut scanned, mut matched) = (0, 0);
    let mut out = Vec::new();
    let mut flows = Vec::new();
    for (event, received) in page {
        if *received < replay.from_ms || *received >= replay.to_ms {
            continue;
        }
        scanned += 1;
        if let Selection::Pattern(pattern) = &replay.selection {
            if !pattern.matches(&event.name) {
                continue;
            }
        }
        let event_routes = {
            out.clear();
            flows.clear();
            let new = as_new_event(event);
            catalog.route(&new, &mut out, &mut flows);
            out.drain(..).filter_map(|route| keep(replay, route))
        };
        let before = routes.len();
        routes.extend(event_routes.map(|route| (event.seq, route)));
        if routes.len() > before {
            matched += 1;
        }
    }
    (routes, scanned, matched)
}

/// The route a replay makes of one of the event's routes, if any: to the
/// asked endpoint only, for the asked subscription only. Replayed
/// deliveries are unordered: they are sent again out of their original
/// order anyway.
fn keep(replay: &Replay, mut route: Route) -> Option<Route> {
    if replay
        .endpoint_id
        .as_deref()
        .is_some_and(|e| e != &*route.endpoint_id)
    {
        return None;
    }
    route.ordering_key = None;
    match &replay.selection {
        Selection::Pattern(_) => Some(route),
        Selection::Subscription(id) => {
            let took = &*route.subscription_id == id || route.also.iter().any(|s| &**s == id);
            took.then(|| Route {
                subscription_id: Arc::from(id.as_str()),
                endpoint_id: route.endpoint_id,
                also: Vec::new(),
                ordering_key: None,
            })
        }
    }
}

fn as_new_event(event: &StoredEvent) -> NewEvent {
    NewEvent {
        id: event.id.clone(),
        name: event.name.clone(),
        source: event.source.clone(),
        tenant_id: event.tenant_id.clone(),
        time_ms: event.time_ms,
        payload: event.payload.clone(),
        attributes: event.attributes.clone(),
        body_hash: [0; 32],
        routes: Vec::new(),
        flow_starts: Vec::new(),
        cancels: Vec::new(),
    }
}

async fn run_retry_dead(
    ctx: &JobContext,
    retry: &RetryDead,
    progress: &watch::Sender<pb::Job>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let started = Instant::now();
    let mut after = 0u64;
    let mut done = 0u64;
    loop {
        throttle(ctx, cancel, started, done, retry.per_second).await?;
        // A page no bigger than a second's worth, so the rate holds.
        let limit = PAGE.min(retry.per_second.max(1) as usize);
        let made = ctx
            .store
            .retry_dead_page(
                &crate::store::RetryScope {
                    endpoint_id: retry.endpoint_id.as_deref(),
                    from_ms: retry.from_ms,
                    to_ms: retry.to_ms,
                    include_failed: retry.include_failed,
                },
                after,
                limit,
                now_ms(),
            )
            .await
            .map_err(|e| Stop::Failed(e.to_string()))?;
        let Some(last) = made.iter().map(|(id, _)| *id).max() else {
            return Ok(());
        };
        after = last;
        done += made.len() as u64;
        let count = made.len() as u64;
        announce(ctx, made);
        progress.send_modify(|job| {
            job.scanned += count;
            job.deliveries += count;
        });
    }
}

/// Milliseconds since the epoch of a request's timestamp.
fn ms_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

fn rate(per_second: u32, field: &'static str) -> Result<u32, FieldError> {
    match per_second {
        0 => Ok(DEFAULT_RATE),
        r if r > MAX_RATE => Err(FieldError::new(
            &[field],
            format!("must be at most {MAX_RATE}"),
        )),
        r => Ok(r),
    }
}

/// The window `[from, to)`; `to` unset is now.
fn window(from: Option<i64>, to: Option<i64>) -> Result<(i64, i64), FieldError> {
    let from = from.unwrap_or(i64::MIN);
    let to = to.unwrap_or_else(now_ms);
    if to <= from {
        return Err(FieldError::new(&["to"], "must be after `from`"));
    }
    Ok((from, to))
}

impl AdminService {
    fn job_context(&self) -> JobContext {
        JobContext {
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            control: self.control.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    pub(super) async fn replay_events(
        &self,
        request: Request<pb::ReplayEventsRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.into_inner();
        let mut errors = Vec::new();
        let selection = match (r.pattern.is_empty(), r.subscription_id.is_empty()) {
            (false, true) => match Pattern::parse(&r.pattern) {
                Ok(p) => Some(Selection::Pattern(p)),
                Err(e) => {
                    errors.push(FieldError::new(&["pattern"], e.to_string()));
                    None
                }
            },
            (true, false) => {
                if self
                    .catalog
                    .get()
                    .subscription(&r.subscription_id)
                    .is_none()
                {
                    return Err(Status::not_found(format!(
                        "subscription `{}` not found",
                        r.subscription_id
                    )));
                }
                Some(Selection::Subscription(r.subscription_id.clone()))
            }
            _ => {
                errors.push(FieldError::new(
                    &["pattern"],
                    "give either `pattern` or `subscription_id`",
                ));
                None
            }
        };
        if r.from.is_none() {
            errors.push(FieldError::new(
                &["from"],
                "is required: where the replay starts",
            ));
        }
        let window = window(r.from.as_ref().map(ms_of), r.to.as_ref().map(ms_of))
            .map_err(|e| errors.push(e))
            .ok();
        let per_second = rate(r.per_second, "per_second")
            .map_err(|e| errors.push(e))
            .ok();
        if !r.endpoint_id.is_empty() && self.catalog.get().endpoint(&r.endpoint_id).is_none() {
            return Err(Status::not_found(format!(
                "endpoint `{}` not found",
                r.endpoint_id
            )));
        }
        let (Some(selection), Some((from_ms, to_ms)), Some(per_second), true) =
            (selection, window, per_second, errors.is_empty())
        else {
            return Err(invalid(&errors));
        };
        let description = format!(
            "replay {} received {} – {}{} at {per_second}/s",
            match &selection {
                Selection::Pattern(p) => format!("`{}`", p.as_str()),
                Selection::Subscription(id) => format!("subscription {id}"),
            },
            crate::timestamp::format_rfc3339_millis(from_ms),
            crate::timestamp::format_rfc3339_millis(to_ms),
            if r.endpoint_id.is_empty() {
                String::new()
            } else {
                format!(" to endpoint {}", r.endpoint_id)
            },
        );
        let replay = Replay {
            selection,
            from_ms,
            to_ms,
            endpoint_id: (!r.endpoint_id.is_empty()).then_some(r.endpoint_id),
            per_second,
        };
        let job = self
            .jobs
            .start_replay(self.job_context(), replay, description);
        tracing::info!(job = %job.id, what = %job.description, "Replay started.");
        Ok(Response::new(job))
    }

    pub(super) async fn retry_dead_letters(
        &self,
        request: Request<pb::RetryDeadLettersRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let r = request.into_inner();
        let mut errors = Vec::new();
        let window = window(r.from.as_ref().map(ms_of), r.to.as_ref().map(ms_of))
            .map_err(|e| errors.push(e))
            .ok();
        let per_second = rate(r.per_second, "per_second")
            .map_err(|e| errors.push(e))
            .ok();
        if !r.endpoint_id.is_empty() && self.catalog.get().endpoint(&r.endpoint_id).is_none() {
            return Err(Status::not_found(format!(
                "endpoint `{}` not found",
                r.endpoint_id
            )));
        }
        let (Some((from_ms, to_ms)), Some(per_second), true) =
            (window, per_second, errors.is_empty())
        else {
            return Err(invalid(&errors));
        };
        let description = format!(
            "retry {} deliveries{} at {per_second}/s",
            if r.include_failed {
                "dead and failed"
            } else {
                "dead"
            },
            if r.endpoint_id.is_empty() {
                String::new()
            } else {
                format!(" of endpoint {}", r.endpoint_id)
            }
        );
        let retry = RetryDead {
            endpoint_id: (!r.endpoint_id.is_empty()).then_some(r.endpoint_id),
            from_ms,
            to_ms,
            per_second,
            include_failed: r.include_failed,
        };
        let job = self
            .jobs
            .start_retry_dead(self.job_context(), retry, description);
        tracing::info!(job = %job.id, what = %job.description, "Bulk retry started.");
        Ok(Response::new(job))
    }

    pub(super) fn job(&self, id: &str) -> Result<pb::Job, Status> {
        self.jobs
            .get(id)
            .ok_or_else(|| Status::not_found(format!("job `{id}` not found")))
    }

    pub(super) fn cancel_job(&self, id: &str) -> Result<pb::Job, Status> {
        self.jobs
            .cancel(id)
            .ok_or_else(|| Status::not_found(format!("job `{id}` not found")))
    }

    pub(super) fn list_jobs(&self) -> Vec<pb::Job> {
        self.jobs.list()
    }

    /// The job now, then after each change, until it ends.
    pub(super) fn watch_job(&self, id: &str) -> Result<JobStream, Status> {
        let changes = self
            .jobs
            .watch(id)
            .ok_or_else(|| Status::not_found(format!("job `{id}` not found")))?;
        let shutdown = self.shutdown.clone();
        // (changes, shutdown, first, ended): the first item is the job now;
        // each later one waits for a change; the one that ends it is last.
        let stream = futures::stream::unfold(
            (changes, shutdown, true, false),
            |(mut changes, shutdown, first, ended)| async move {
                if ended {
                    return None;
                }
                if !first {
                    tokio::select! {
                        changed = changes.changed() => changed.ok()?,
                        _ = shutdown.cancelled() => return None,
                    }
                }
                let job = changes.borrow_and_update().clone();
                let ended = job.state != pb::JobState::Running as i32;
                Some((Ok(job), (changes, shutdown, false, ended)))
            },
        );
        Ok(Box::pin(stream))
    }
}

pub type JobStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::Job, Status>> + Send>>;
