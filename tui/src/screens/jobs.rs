//! Jobs: replays and bulk retries that the daemon runs in the background,
//! with their progress. The list lives on the app whatever is on screen, and
//! every job started from here is followed (`WatchJob`) until it ends, so
//! `J` shows it current over any screen. Also the two small forms that start
//! work by time window: replay (a pattern or a subscription, since a
//! duration) and recover (an endpoint's failed and dead deliveries since a
//! duration).

use crossterm::event::KeyEvent;
use hookyard::v1::{Endpoint, Job, JobState, ReplayEventsRequest, Subscription};
use prost_types::Timestamp;
use ratatui::{
    layout::{Constraint, Rect},
    style::{Color, Style},
    widgets::{Cell, Row, Table},
    Frame,
};

use super::{endpoints::parse_duration, move_selection};
use crate::{
    api::{ApiResult, Remote},
    forms::{Field, Form},
    keys::KeyBindings,
    net::Command,
    widgets::{self, error_style, header_style, popup, remote_body, selected_style},
};

/// The most rows the jobs panel shows before it scrolls.
const ROWS: u16 = 12;

#[derive(Debug, Default)]
pub struct JobsScreen {
    /// Newest first.
    pub items: Remote<Vec<Job>>,
    selected: usize,
}

impl JobsScreen {
    pub fn loaded(&mut self, result: ApiResult<Vec<Job>>) {
        self.items = Remote::from_result(result.map(|mut jobs| {
            jobs.sort_by_key(|j| std::cmp::Reverse(started(j)));
            jobs
        }));
        self.selected = widgets::clamp(self.selected, self.len());
    }

    /// A job's news: its row changes, or it is added on top.
    pub fn upsert(&mut self, job: Job) {
        match &mut self.items {
            Remote::Loaded(jobs) => match jobs.iter_mut().find(|j| j.id == job.id) {
                Some(row) => *row = job,
                None => {
                    jobs.insert(0, job);
                    jobs.sort_by_key(|j| std::cmp::Reverse(started(j)));
                }
            },
            // The list read next answers for the rest.
            Remote::Loading | Remote::Failed(_) => self.items = Remote::Loaded(vec![job]),
        }
    }

    pub fn len(&self) -> usize {
        self.items.loaded().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn selected(&self) -> Option<&Job> {
        self.items.loaded().and_then(|jobs| jobs.get(self.selected))
    }

    pub fn select(&mut self, id: &str) {
        if let Some(at) = self
            .items
            .loaded()
            .and_then(|jobs| jobs.iter().position(|j| j.id == id))
        {
            self.selected = at;
        }
    }

    pub fn any_running(&self) -> bool {
        self.items
            .loaded()
            .is_some_and(|jobs| jobs.iter().any(|j| j.state() == JobState::Running))
    }

    pub fn move_selection(&mut self, keys: &KeyBindings, key: &KeyEvent) -> bool {
        let len = self.len();
        move_selection(keys, key, &mut self.selected, len)
    }

    /// The panel over the screen.
    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64) {
        let rows = (self.len() as u16).clamp(1, ROWS);
        let inner = popup(
            frame,
            area,
            area.width.min(110),
            rows + 3,
            "Jobs (c cancels · R reloads · Esc closes)",
        );
        let empty = "no jobs: p on Subscriptions or Endpoints replays, b/B on Dead retries";
        let Some(jobs) = remote_body(frame, inner, &self.items, tick, empty) else {
            return;
        };
        let rows = jobs.iter().map(|j| {
            let state = j.state();
            let what = if j.error.is_empty() {
                Cell::from(j.description.clone())
            } else {
                Cell::from(j.error.clone()).style(error_style())
            };
            Row::new([
                Cell::from(short_id(&j.id)),
                Cell::from(kind_name(&j.kind)),
                Cell::from(state_label(state, tick)).style(state_style(state)),
                Cell::from(j.scanned.to_string()),
                Cell::from(j.matched.to_string()),
                Cell::from(j.deliveries.to_string()),
                Cell::from(widgets::clock(j.started_at.as_ref())),
                what,
            ])
        });
        let header = Row::new([
            "job", "kind", "state", "scanned", "matched", "made", "started", "what",
        ])
        .style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(10),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Fill(1),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = ratatui::widgets::TableState::default().with_selected(Some(self.selected));
        frame.render_stateful_widget(table, inner, &mut state);
    }
}

fn started(job: &Job) -> (i64, i32) {
    job.started_at.map_or((0, 0), |t| (t.seconds, t.nanos))
}

pub fn short_id(id: &str) -> String {
    id.chars().take(8).collect()
}

fn kind_name(kind: &str) -> String {
    match kind {
        "replay" => "replay".to_string(),
        "retry_dead_letters" => "retry".to_string(),
        other => widgets::ellipsize(other, 6),
    }
}

pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Running => "running",
        JobState::Succeeded => "done",
        JobState::Cancelled => "cancelled",
        JobState::Failed => "failed",
        JobState::Unspecified => "?",
    }
}

fn state_label(state: JobState, tick: u64) -> String {
    if state == JobState::Running {
        format!("{} running", widgets::spinner(tick))
    } else {
        state_name(state).to_string()
    }
}

fn state_style(state: JobState) -> Style {
    match state {
        JobState::Running => Style::default().fg(Color::Cyan),
        JobState::Succeeded => Style::default().fg(Color::Green),
        JobState::Cancelled => Style::default().fg(Color::Yellow),
        JobState::Failed | JobState::Unspecified => error_style(),
    }
}

/// `now` less a duration typed as `6h`, `30m`, `2d`.
pub fn since(now: u64, text: &str) -> Result<Timestamp, String> {
    let ms = parse_duration(text)?;
    let seconds = i64::try_from(now.saturating_sub(ms / 1000)).unwrap_or(i64::MAX);
    Ok(Timestamp { seconds, nanos: 0 })
}

/// Replays stored events received since a duration ago: those a pattern
/// matches (routed as the subscriptions are now) or those one subscription
/// takes. Field keys are the request's, so the daemon's errors land beside
/// them.
#[derive(Debug, Clone)]
pub struct ReplayForm {
    pub form: Form,
}

impl ReplayForm {
    fn new(title: String, pattern: &str, subscription_id: &str, endpoint_id: &str) -> ReplayForm {
        let mut form = Form::new(
            title,
            vec![
                Field::text("pattern", "pattern", pattern)
                    .hint("e.g. order.*; or a subscription instead"),
                Field::text("subscription_id", "subscription", subscription_id)
                    .hint("its id; instead of a pattern"),
                Field::text("from", "since", "").hint("required: e.g. 6h, 30m, 2d ago"),
                Field::text("endpoint_id", "endpoint", endpoint_id)
                    .hint("empty: every endpoint it routes to"),
                Field::text("per_second", "per second", "").hint("100 deliveries a second"),
            ],
        );
        form.enter = "starts the replay";
        ReplayForm { form }
    }

    pub fn for_subscription(sub: &Subscription) -> ReplayForm {
        let mut replay = ReplayForm::new(
            format!("Replay the events `{}` takes", sub.name),
            "",
            &sub.id,
            "",
        );
        replay.form.focus_on("from");
        replay
    }

    pub fn for_endpoint(endpoint: &Endpoint) -> ReplayForm {
        ReplayForm::new(
            format!("Replay events to `{}`", endpoint.id),
            "",
            "",
            &endpoint.id,
        )
    }

    /// The request the form describes at `now`, or what is wrong with it.
    pub fn request(&self, now: u64) -> Result<ReplayEventsRequest, Vec<(&'static str, String)>> {
        let f = &self.form;
        let mut errors = Vec::new();
        let (pattern, subscription_id) = (f.value("pattern"), f.value("subscription_id"));
        if pattern.is_empty() == subscription_id.is_empty() {
            errors.push(("pattern", "give a pattern or a subscription".to_string()));
        }
        let from = match f.value("from") {
            text if text.is_empty() => {
                errors.push(("from", "is required: e.g. 6h".to_string()));
                None
            }
            text => since(now, &text).map_err(|e| errors.push(("from", e))).ok(),
        };
        let per_second = match f.value("per_second") {
            text if text.is_empty() => 0,
            text => text.parse().unwrap_or_else(|_| {
                errors.push(("per_second", "must be a whole number".to_string()));
                0
            }),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ReplayEventsRequest {
            pattern,
            subscription_id,
            from,
            to: None,
            endpoint_id: f.value("endpoint_id"),
            per_second,
        })
    }

    /// Starts the replay, or shows what is wrong without asking the daemon.
    pub fn save_command(&mut self, now: u64) -> Option<Command> {
        match self.request(now) {
            Ok(request) => {
                self.form.saving = true;
                Some(Command::ReplayEvents(request))
            }
            Err(errors) => {
                show_errors(&mut self.form, &errors);
                None
            }
        }
    }
}

/// Re-queues an endpoint's failed and dead deliveries, all of them or those
/// made since a duration ago.
#[derive(Debug, Clone)]
pub struct RecoverForm {
    pub endpoint_id: String,
    pub form: Form,
}

impl RecoverForm {
    pub fn new(endpoint_id: &str) -> RecoverForm {
        let mut form = Form::new(
            format!("Re-queue failed and dead deliveries of `{endpoint_id}`"),
            vec![Field::text("since", "made since", "").hint("empty: all of them; e.g. 6h, 2d")],
        );
        form.enter = "re-queues";
        RecoverForm {
            endpoint_id: endpoint_id.to_string(),
            form,
        }
    }

    pub fn save_command(&mut self, now: u64) -> Option<Command> {
        let text = self.form.value("since");
        let since = if text.is_empty() {
            None
        } else {
            match since(now, &text) {
                Ok(at) => Some(at),
                Err(e) => {
                    self.form.set_error("since", e);
                    return None;
                }
            }
        };
        self.form.saving = true;
        Some(Command::RecoverEndpoint {
            endpoint_id: self.endpoint_id.clone(),
            since,
        })
    }
}

fn show_errors(form: &mut Form, errors: &[(&'static str, String)]) {
    for f in &mut form.fields {
        f.error = errors
            .iter()
            .find(|(key, _)| *key == f.key)
            .map(|(_, e)| e.clone());
    }
    if let Some((key, _)) = errors.first() {
        form.focus_on(key);
    }
}
