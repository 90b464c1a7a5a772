//! Answers from the daemon, applied to the app. A save answers the form that
//! asked (closing it, or showing field errors or the stale-version banner);
//! every successful change reloads the list it changed.

use hookyard::v1::{Job, JobState};
use tonic::Code;

use crate::{
    api::{ApiError, ApiResult},
    app::{App, Flash, Mode, Tab},
    forms::Banner,
    net::{Command, ConnState, Update},
    screens::{
        endpoints::{self, EndpointForm},
        jobs,
        run_detail::RunView,
        runs,
        subscriptions::SubscriptionForm,
    },
};

impl App {
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Conn(state) => {
                let back = state == ConnState::Live && self.conn != ConnState::Live;
                self.conn = state;
                if back {
                    self.on_reconnect();
                }
            }
            Update::Delivery(update) => self.live.apply(self.now, update),
            Update::Recent(deliveries) => self.live.recent(deliveries),
            Update::Detail(id, result) => {
                if let Mode::Detail(view) = &mut self.mode {
                    view.loaded(id, result);
                }
            }
            Update::Retried { ok, errors } => {
                self.flash = Some(if errors.is_empty() {
                    Flash::Info(format!("{ok} scheduled for a retry now"))
                } else {
                    Flash::Error(format!("retried {ok}; failed: {}", errors.join("; ")))
                });
                self.dead.marked.clear();
                if self.tab == Tab::Dead {
                    self.commands.push(Command::LoadDead);
                }
            }
            Update::Resent(id, result) => match result {
                Ok(made) => {
                    self.flash = Some(Flash::Info(format!(
                        "resent delivery #{id} as #{}",
                        made.id
                    )))
                }
                Err(e) => self.flash = Some(Flash::Error(format!("resend: {}", e.describe()))),
            },
            Update::Dead(result) => self.dead.loaded(result),
            Update::Subscriptions(result) => self.subscriptions.loaded(result),
            Update::SubscriptionSaved(result) => self.subscription_saved(result),
            Update::SubscriptionReloaded(result) => {
                if let Mode::SubscriptionForm(form) = &mut self.mode {
                    match result {
                        Ok(sub) => {
                            let version = sub.version;
                            **form = SubscriptionForm::new(Some(sub));
                            form.form.banner = Some(Banner::Info(format!(
                                "reloaded version {version}; make your change again"
                            )));
                        }
                        Err(e) => form.form.show_error(&e),
                    }
                }
            }
            Update::SubscriptionDeleted(result) => {
                self.done(result, "subscription deleted", Command::LoadSubscriptions)
            }
            Update::Routed(result) => match result {
                Ok(matched) => self.show_routed(matched.into_iter().map(|s| s.id).collect()),
                Err(e) => {
                    if let Mode::TestRoute(form) = &mut self.mode {
                        form.show_error(&e);
                    }
                }
            },
            Update::Endpoints(result) => self.endpoints.loaded(result),
            Update::EndpointSaved(result) => self.endpoint_saved(result),
            Update::EndpointReloaded(result) => {
                if let Mode::EndpointForm(form) = &mut self.mode {
                    match result {
                        Ok(endpoint) => {
                            let version = endpoint.version;
                            **form = EndpointForm::new(Some(endpoint));
                            form.form.banner = Some(Banner::Info(format!(
                                "reloaded version {version}; make your change again"
                            )));
                        }
                        Err(e) => form.form.show_error(&e),
                    }
                }
            }
            Update::EndpointDeleted(result) => {
                self.done(result, "endpoint deleted", Command::LoadEndpoints)
            }
            Update::EndpointSecretRotated(id, result) => match result {
                Ok(answer) => {
                    self.flash = Some(Flash::Info(format!("rotated the secret of `{id}`")));
                    self.mode = Mode::Reveal {
                        title: format!("New signing secret of `{id}`"),
                        lines: endpoints::rotated_lines(&answer),
                    };
                    self.commands.push(Command::LoadEndpoints);
                }
                Err(e) => self.flash = Some(Flash::Error(change_failed(&e))),
            },
            Update::TestEventSent(id, result) => match result {
                Ok(answer) => {
                    self.flash = None;
                    self.mode = Mode::Reveal {
                        title: format!("Test event to `{id}`"),
                        lines: endpoints::test_event_lines(&answer),
                    };
                    self.commands.push(Command::LoadStats);
                }
                Err(e) => self.flash = Some(Flash::Error(format!("test event: {}", e.describe()))),
            },
            Update::EndpointRecovered(id, result) => match (result, &mut self.mode) {
                (Ok(n), _) => {
                    self.flash = Some(Flash::Info(format!(
                        "re-queued {n} failed or dead deliveries of `{id}`"
                    )));
                    if matches!(self.mode, Mode::Recover(_)) {
                        self.mode = Mode::Browse;
                    }
                    self.commands.push(Command::LoadEndpoints);
                    self.commands.push(Command::LoadStats);
                }
                (Err(e), Mode::Recover(form)) => form.form.show_error(&e),
                (Err(e), _) => self.flash = Some(Flash::Error(change_failed(&e))),
            },
            Update::JobStarted(result) => self.job_started(result),
            Update::Jobs(result) => self.jobs.loaded(result),
            Update::Job(job) => self.job_progress(job),
            Update::JobCancelled(id, result) => match result {
                Ok(job) => {
                    self.flash = Some(Flash::Info(format!(
                        "job {} cancelled; what it made stays",
                        jobs::short_id(&id)
                    )));
                    self.jobs.upsert(job);
                }
                Err(e) => {
                    self.flash = Some(Flash::Error(format!(
                        "job {} not cancelled: {}",
                        jobs::short_id(&id),
                        e.describe()
                    )));
                    self.commands.push(Command::LoadJobs);
                }
            },
            Update::Stats(result) => {
                if let Ok(stats) = result {
                    self.stats = Some(stats);
                }
            }
            Update::Sources(result) => self.sources.loaded(result),
            Update::SourceToken(result) => self.source_token(result),
            Update::SourceChanged(result) => {
                self.done(result, "source updated", Command::LoadSources)
            }
            Update::Flows(result) => self.flows.loaded(result),
            Update::EventTypes(result) => self.event_types.loaded(result),
            Update::EventTypeDeleted(result) => {
                self.done(result, "event type deleted", Command::LoadEventTypes)
            }
            Update::RunStarted(result) => self.run_started(result),
            Update::Runs(result) => self.runs.loaded(result),
            Update::MoreRuns(result) => {
                if let Err(e) = self.runs.more_loaded(result) {
                    self.flash = Some(Flash::Error(format!(
                        "loading older runs: {}",
                        e.describe()
                    )));
                }
            }
            Update::RunsConn(state) => {
                // Back after a break: what changed meanwhile was not streamed.
                let back = state == ConnState::Live
                    && matches!(self.runs.conn, ConnState::Reconnecting { .. });
                self.runs.conn = state;
                if back {
                    self.commands
                        .push(Command::LoadRuns(self.runs.filter.clone()));
                }
            }
            Update::Run(update) => {
                let id = update.run.as_ref().map(|r| r.id.clone());
                self.runs.apply(update);
                if let (Some(id), Some(view)) = (id, self.run_view()) {
                    if view.id == id {
                        self.commands.push(Command::LoadRun(id));
                    }
                }
            }
            Update::RunDetail(id, result) => {
                if let Some(view) = self.run_view() {
                    if let Some(error) = view.loaded(&id, result) {
                        self.flash = Some(Flash::Error(format!("reloading the run: {error}")));
                    }
                }
            }
            Update::RunCancelled(id, result) => match result {
                Ok(run) => {
                    self.flash = Some(Flash::Info(format!(
                        "run {} cancelled",
                        runs::short_id(&id)
                    )));
                    self.runs.upsert(run);
                    if self.run_view().is_some() {
                        self.commands.push(Command::LoadRun(id));
                    }
                }
                Err(e) => {
                    // The daemon's message repeats the whole id; the state
                    // the table had is enough.
                    let why = if e.code == Code::FailedPrecondition {
                        let state = self
                            .runs
                            .list
                            .loaded()
                            .and_then(|runs| runs.iter().find(|r| r.id == id))
                            .map(|r| format!(" ({})", runs::state_name(r.state())))
                            .unwrap_or_default();
                        // What was on screen was stale.
                        self.commands
                            .push(Command::LoadRuns(self.runs.filter.clone()));
                        format!("it has already finished{state}")
                    } else {
                        e.describe()
                    };
                    self.flash = Some(Flash::Error(format!(
                        "run {} not cancelled: {why}",
                        runs::short_id(&id)
                    )));
                }
            },
        }
    }

    /// The open run detail, also while a cancel is being confirmed over it.
    fn run_view(&mut self) -> Option<&mut RunView> {
        match &mut self.mode {
            Mode::RunDetail(view) => Some(view),
            Mode::Confirm {
                after: Some(after), ..
            } => match after.as_mut() {
                Mode::RunDetail(view) => Some(view),
                _ => None,
            },
            _ => None,
        }
    }

    fn run_started(&mut self, result: ApiResult<hookyard::v1::StartRunResponse>) {
        match (result, &mut self.mode) {
            (Ok(started), _) => {
                let state = runs::state_name(started.state());
                self.flash = Some(Flash::Info(format!(
                    "started run {} ({state}); 6 shows it on Runs",
                    runs::short_id(&started.id)
                )));
                if matches!(self.mode, Mode::StartRun(_)) {
                    self.mode = Mode::Browse;
                }
            }
            (Err(e), Mode::StartRun(form)) => form.form.show_error(&e),
            (Err(e), _) => self.flash = Some(Flash::Error(e.describe())),
        }
    }

    /// A job the daemon started: followed from now on, and shown.
    fn job_started(&mut self, result: ApiResult<Job>) {
        match (result, &mut self.mode) {
            (Ok(job), _) => {
                self.flash = Some(Flash::Info(format!(
                    "started job {}: {}",
                    jobs::short_id(&job.id),
                    job.description
                )));
                let id = job.id.clone();
                self.commands.push(Command::WatchJob(id.clone()));
                self.jobs.upsert(job);
                if matches!(self.mode, Mode::Browse | Mode::Replay(_)) {
                    self.open_jobs();
                }
                self.jobs.select(&id);
            }
            (Err(e), Mode::Replay(form)) => form.form.show_error(&e),
            (Err(e), _) => self.flash = Some(Flash::Error(format!("job: {}", e.describe()))),
        }
    }

    /// A followed job moved on; when it ends, say so and show its work.
    fn job_progress(&mut self, job: Job) {
        let was_running = self
            .jobs
            .items
            .loaded()
            .and_then(|jobs| jobs.iter().find(|j| j.id == job.id))
            .is_none_or(|j| j.state() == JobState::Running);
        let state = job.state();
        if was_running && state != JobState::Running {
            let outcome = if job.error.is_empty() {
                format!("{} deliveries", job.deliveries)
            } else {
                job.error.clone()
            };
            let text = format!(
                "job {} {}: {outcome}",
                jobs::short_id(&job.id),
                jobs::state_name(state)
            );
            self.flash = Some(if state == JobState::Failed {
                Flash::Error(text)
            } else {
                Flash::Info(text)
            });
            if self.tab == Tab::Dead {
                self.commands.push(Command::LoadDead);
            }
        }
        self.jobs.upsert(job);
    }

    /// After the daemon came back, lists that failed to load try again.
    fn on_reconnect(&mut self) {
        let failed = match self.tab {
            Tab::Live => false,
            Tab::Subscriptions => self.subscriptions.list.is_failed(),
            Tab::Endpoints => self.endpoints.list.is_failed(),
            Tab::Dead => self.dead.list.is_failed(),
            Tab::Sources => self.sources.list.is_failed(),
            Tab::Runs => self.runs.list.is_failed(),
            Tab::Flows => self.flows.list.is_failed(),
            Tab::EventTypes => self.event_types.list.is_failed(),
        };
        if failed {
            self.switch(self.tab);
        }
    }

    /// A change outside any form: say how it went, reload on success.
    fn done<T>(&mut self, result: ApiResult<T>, what: &str, reload: Command) {
        match result {
            Ok(_) => {
                self.flash = Some(Flash::Info(what.to_string()));
                self.commands.push(reload);
            }
            Err(e) => self.flash = Some(Flash::Error(change_failed(&e))),
        }
    }

    fn subscription_saved(&mut self, result: ApiResult<hookyard::v1::Subscription>) {
        if let Mode::SubscriptionForm(form) = &mut self.mode {
            match result {
                Ok(sub) => {
                    self.flash = Some(Flash::Info(format!(
                        "saved subscription `{}` (v{})",
                        sub.name, sub.version
                    )));
                    self.mode = Mode::Browse;
                    self.commands.push(Command::LoadSubscriptions);
                }
                Err(e) => form.form.show_error(&e),
            }
        } else {
            // A toggle from the table.
            self.done(result, "subscription saved", Command::LoadSubscriptions);
        }
    }

    fn endpoint_saved(&mut self, result: ApiResult<hookyard::v1::Endpoint>) {
        if let Mode::EndpointForm(form) = &mut self.mode {
            match result {
                Ok(endpoint) => {
                    self.flash = Some(Flash::Info(format!("saved endpoint `{}`", endpoint.id)));
                    self.mode = match form.generated_secret.take() {
                        Some(secret) => Mode::Reveal {
                            title: format!("Signing secret of `{}`", endpoint.id),
                            lines: vec![
                                secret,
                                String::new(),
                                "Shown once: copy it to the receiver now.".to_string(),
                                "Afterwards only its last characters are shown.".to_string(),
                            ],
                        },
                        None => Mode::Browse,
                    };
                    self.commands.push(Command::LoadEndpoints);
                }
                Err(e) => form.form.show_error(&e),
            }
        } else {
            self.done(result, "endpoint saved", Command::LoadEndpoints);
        }
    }

    fn source_token(&mut self, result: ApiResult<hookyard::v1::SourceWithToken>) {
        match result {
            Ok(made) => {
                let name = made.source.map(|s| s.name).unwrap_or_default();
                self.mode = Mode::Reveal {
                    title: format!("Webhook URL of `{name}`"),
                    lines: vec![
                        format!("POST <daemon's public address>{}", made.url_path),
                        String::new(),
                        format!("token: {}", made.token),
                        String::new(),
                        "Shown once: the daemon keeps only its hash.".to_string(),
                    ],
                };
                self.commands.push(Command::LoadSources);
            }
            Err(e) => match &mut self.mode {
                Mode::SourceForm(form) => form.form.show_error(&e),
                _ => self.flash = Some(Flash::Error(change_failed(&e))),
            },
        }
    }
}

fn change_failed(e: &ApiError) -> String {
    if e.is_stale_version() {
        "someone else changed it meanwhile; R reloads the list".to_string()
    } else {
        e.describe()
    }
}
