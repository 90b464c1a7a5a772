//! Runs: flow runs, newest first, kept current by `WatchRuns` (which
//! reconnects like Live's stream). `/` filters by flow, state and key; Enter
//! opens the run with its step timeline and log; `c` cancels after a
//! confirm. The detail itself is in `run_detail.rs`.

use crossterm::event::KeyEvent;
use hookyard::v1::{ListRunsResponse, Run, RunState, RunUpdate};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table, TableState},
    Frame,
};

use super::{move_selection, run_detail::RunView, Ctx, EventState};
use crate::{
    api::{ApiResult, Remote},
    app::Mode,
    net::{Command, ConnState},
    widgets::{self, clamp, dim_style, error_style, header_style, remote_body, selected_style},
};

/// Rows kept; the oldest scroll out as the stream adds new ones.
pub const KEPT: usize = 1000;
/// Updates that arrive before the list, applied once it is there.
const PENDING: usize = 1000;

/// What the Runs table shows: `flow:<id> state:<state> key:<key>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub flow_id: String,
    pub state: RunState,
    pub key: String,
}

impl RunFilter {
    pub fn matches(&self, run: &Run) -> bool {
        (self.flow_id.is_empty() || run.flow_id == self.flow_id)
            && (self.state == RunState::Unspecified || run.state() == self.state)
            && (self.key.is_empty() || run.correlation_key == self.key)
    }
}

/// `flow:noshow state:waiting key:ada@example.com`, any order, each part
/// optional; a bare word is a flow id.
pub fn parse_filter(text: &str) -> Result<RunFilter, String> {
    let mut filter = RunFilter::default();
    for word in text.split_whitespace() {
        match word.split_once(':') {
            Some(("flow", value)) => filter.flow_id = value.to_string(),
            Some(("key", value)) => filter.key = value.to_string(),
            Some(("state", value)) => {
                filter.state = match value.to_ascii_lowercase().as_str() {
                    "created" => RunState::Created,
                    "running" => RunState::Running,
                    "waiting" => RunState::Waiting,
                    "succeeded" | "ok" => RunState::Succeeded,
                    "failed" => RunState::Failed,
                    "cancelled" | "canceled" => RunState::Cancelled,
                    other => {
                        return Err(format!(
                            "unknown state `{other}`: created, running, waiting, succeeded, \
                             failed or cancelled"
                        ))
                    }
                }
            }
            Some((key, _)) => {
                return Err(format!(
                    "unknown filter `{key}:`; use flow:, state: or key:"
                ))
            }
            None if filter.flow_id.is_empty() => filter.flow_id = word.to_string(),
            None => return Err(format!("one flow only; `{word}` is a second")),
        }
    }
    Ok(filter)
}

#[derive(Debug)]
pub struct RunsScreen {
    pub list: Remote<Vec<Run>>,
    selected: usize,
    pub filter: RunFilter,
    pub filter_text: String,
    /// The runs stream, as the status line shows it.
    pub conn: ConnState,
    /// Whether the stream was started (it then runs for as long as the UI).
    pub watching: bool,
    /// Updates seen before the list came.
    pending: Vec<Run>,
    /// Updates the daemon said this watcher missed.
    pub missed: u64,
    /// Where the older runs start; empty when there are none.
    next_page: String,
    loading_more: bool,
}

impl Default for RunsScreen {
    fn default() -> RunsScreen {
        RunsScreen {
            list: Remote::Loading,
            selected: 0,
            filter: RunFilter::default(),
            filter_text: String::new(),
            conn: ConnState::Connecting,
            watching: false,
            pending: Vec::new(),
            missed: 0,
            next_page: String::new(),
            loading_more: false,
        }
    }
}

impl RunsScreen {
    /// What loads the table (and starts the stream the first time).
    pub fn load(&mut self) -> Vec<Command> {
        let mut commands = vec![Command::LoadRuns(self.filter.clone())];
        if !self.watching {
            self.watching = true;
            commands.push(Command::WatchRuns(self.filter.clone()));
        }
        commands
    }

    /// A new filter: the table starts again, and so does the stream (its
    /// flow filter is the server's).
    pub fn set_filter(&mut self, text: String, filter: RunFilter) -> Vec<Command> {
        self.filter_text = text;
        self.filter = filter;
        self.list = Remote::Loading;
        self.pending.clear();
        self.selected = 0;
        self.watching = false;
        self.load()
    }

    pub fn loaded(&mut self, result: ApiResult<ListRunsResponse>) {
        let filter = self.filter.clone();
        self.loading_more = false;
        self.next_page.clear();
        self.list = Remote::from_result(result.map(|page| {
            self.next_page = page.next_page_token;
            page.runs
                .into_iter()
                .filter(|r| filter.matches(r))
                .collect::<Vec<_>>()
        }));
        for run in std::mem::take(&mut self.pending) {
            self.upsert(run);
        }
        self.selected = clamp(self.selected, self.len());
    }

    /// Older runs go below those on screen.
    pub fn more_loaded(&mut self, result: ApiResult<ListRunsResponse>) -> ApiResult<()> {
        self.loading_more = false;
        let page = result?;
        self.next_page = page.next_page_token;
        let Some(runs) = self.list.loaded_mut() else {
            return Ok(());
        };
        for run in page.runs {
            if self.filter.matches(&run) && !runs.iter().any(|r| r.id == run.id) {
                runs.push(run);
            }
        }
        Ok(())
    }

    /// Past the last row: the next page, if there is one.
    fn more(&mut self) -> Option<Command> {
        if self.next_page.is_empty() || self.loading_more {
            return None;
        }
        self.loading_more = true;
        Some(Command::MoreRuns {
            filter: self.filter.clone(),
            page_token: self.next_page.clone(),
        })
    }

    pub fn apply(&mut self, update: RunUpdate) {
        self.missed += update.missed;
        let Some(run) = update.run else {
            return;
        };
        if self.list.loaded().is_some() {
            self.upsert(run);
        } else if self.pending.len() < PENDING {
            self.pending.push(run);
        }
    }

    /// Puts `run` in its place (newest first), or takes it off the table
    /// when it no longer matches the filter. The cursor stays on its run.
    pub fn upsert(&mut self, run: Run) {
        let selected_id = self.selected_run().map(|r| r.id.clone());
        let matches = self.filter.matches(&run);
        let Some(runs) = self.list.loaded_mut() else {
            return;
        };
        let existing = runs.iter().position(|r| r.id == run.id);
        match (existing, matches) {
            (Some(at), true) => runs[at] = run,
            (Some(at), false) => {
                runs.remove(at);
            }
            (None, true) => {
                runs.push(run);
                runs.sort_by_key(newest_first);
                // Bounded at KEPT, or at what the admin paged in.
                runs.truncate(KEPT.max(runs.len() - 1));
            }
            (None, false) => {}
        }
        if let Some(id) = selected_id {
            if let Some(at) = runs.iter().position(|r| r.id == id) {
                self.selected = at;
            }
        }
        self.selected = clamp(self.selected, self.len());
    }

    fn len(&self) -> usize {
        self.list.loaded().map_or(0, Vec::len)
    }

    pub fn selected_run(&self) -> Option<&Run> {
        self.list.loaded().and_then(|l| l.get(self.selected))
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        let len = self.len();
        let current = self.selected_run().map(|r| r.id.clone());
        if keys.filter.matches(key) {
            ctx.next_mode = Some(Mode::RunFilter {
                input: crate::widgets::input::TextInput::new(self.filter_text.clone()),
                error: None,
            });
        } else if keys.reload.matches(key) {
            self.list = Remote::Loading;
            ctx.commands.push(Command::LoadRuns(self.filter.clone()));
        } else if let Some(id) = current {
            if keys.open.matches(key) {
                ctx.next_mode = Some(Mode::RunDetail(Box::new(RunView::new(id.clone()))));
                ctx.commands.push(Command::LoadRun(id));
            } else if keys.cancel.matches(key) {
                ctx.confirm(cancel_question(&id), Command::CancelRun(id));
            } else if move_selection(keys, key, &mut self.selected, len) {
                let at_end = self.selected + 1 == len;
                let forward = keys.down.matches(key)
                    || keys.page_down.matches(key)
                    || keys.bottom.matches(key);
                if at_end && forward {
                    ctx.commands.extend(self.more());
                }
            } else {
                return EventState::NotConsumed;
            }
        } else {
            return EventState::NotConsumed;
        }
        EventState::Consumed
    }

    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64) {
        let [status, table] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
        frame.render_widget(Paragraph::new(self.status_line(tick)), status);
        let empty = if self.filter_text.is_empty() {
            "no runs yet: a flow subscription, its webhook or r on Flows starts one"
        } else {
            "no runs match the filter"
        };
        let Some(runs) = remote_body(frame, table, &self.list, tick, empty) else {
            return;
        };
        let rows = runs.iter().map(|r| {
            let state = r.state();
            let wakes = if state == RunState::Waiting {
                widgets::clock(r.wake_at.as_ref())
            } else {
                "-".to_string()
            };
            Row::new([
                Cell::from(widgets::clock(r.created_at.as_ref())),
                Cell::from(r.flow_id.clone()),
                Cell::from(state_name(state)).style(state_style(state)),
                Cell::from(or_dash(&r.correlation_key)),
                Cell::from(or_dash(&r.current_step)),
                Cell::from(wakes),
                Cell::from(r.trigger.clone()),
            ])
        });
        let header = Row::new(["time", "flow", "state", "key", "step", "wakes", "trigger"])
            .style(header_style());
        let table_widget = Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Fill(2),
                Constraint::Length(9),
                Constraint::Fill(2),
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Fill(1),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = TableState::default().with_selected(Some(self.selected));
        frame.render_stateful_widget(table_widget, table, &mut state);
    }

    fn status_line(&self, tick: u64) -> Line<'static> {
        let mut spans = vec![Span::styled("filter: ", dim_style())];
        if self.filter_text.is_empty() {
            spans.push(Span::styled("none (/ to filter)", dim_style()));
        } else {
            spans.push(Span::raw(self.filter_text.clone()));
        }
        spans.push(Span::raw("  "));
        spans.push(match &self.conn {
            ConnState::Connecting => Span::raw(format!("{} connecting", widgets::spinner(tick))),
            ConnState::Live => Span::styled("● live", Style::default().fg(Color::Green)),
            ConnState::Reconnecting { attempt, error } => Span::styled(
                format!(
                    "{} reconnecting… (try {attempt}): {error}",
                    widgets::spinner(tick)
                ),
                Style::default().fg(Color::Yellow),
            ),
            ConnState::Refused(error) => Span::styled(format!("✗ {error}"), error_style()),
        });
        if let Some(runs) = self.list.loaded() {
            spans.push(Span::styled(format!("  {} shown", runs.len()), dim_style()));
        }
        if self.loading_more {
            spans.push(Span::raw(format!(" {} older…", widgets::spinner(tick))));
        } else if !self.next_page.is_empty() {
            spans.push(Span::styled(", older ones: ↓ at the end", dim_style()));
        }
        if self.missed > 0 {
            spans.push(Span::styled(
                format!("  {} missed (R reloads)", self.missed),
                error_style(),
            ));
        }
        Line::from(spans)
    }
}

pub fn cancel_question(id: &str) -> String {
    format!(
        "Cancel run {}? Its remaining steps will not run.",
        short_id(id)
    )
}

/// Run ids are uuids; the first block tells them apart on one screen.
pub fn short_id(id: &str) -> &str {
    id.split('-').next().unwrap_or(id)
}

fn newest_first(run: &Run) -> (std::cmp::Reverse<(i64, i32)>, std::cmp::Reverse<String>) {
    let created = run
        .created_at
        .as_ref()
        .map_or((0, 0), |t| (t.seconds, t.nanos));
    (
        std::cmp::Reverse(created),
        std::cmp::Reverse(run.id.clone()),
    )
}

pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

pub fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Unspecified => "?",
        RunState::Created => "created",
        RunState::Running => "running",
        RunState::Waiting => "waiting",
        RunState::Succeeded => "succeeded",
        RunState::Failed => "failed",
        RunState::Cancelled => "cancelled",
    }
}

pub fn state_style(state: RunState) -> Style {
    let color = match state {
        RunState::Unspecified | RunState::Created => Color::Gray,
        RunState::Running => Color::Cyan,
        RunState::Waiting => Color::Blue,
        RunState::Succeeded => Color::Green,
        RunState::Failed => Color::Red,
        RunState::Cancelled => Color::Yellow,
    };
    Style::default().fg(color)
}
