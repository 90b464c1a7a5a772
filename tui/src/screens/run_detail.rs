//! One run: its state, trigger and inputs, a timeline of its steps (state,
//! attempts, HTTP status, when it finished, the error) and its log. Scrolls;
//! `c` cancels after a confirm; the stream's news about it reloads it.

use crossterm::event::KeyEvent;
use hookyard::v1::{RunDetail, RunState, RunStep};
use ratatui::{
    layout::Rect,
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Paragraph, Wrap},
    Frame,
};

use super::{
    detail::pretty_json,
    runs::{or_dash, short_id, state_name, state_style},
};
use crate::{
    api::{ApiResult, Remote},
    keys::KeyBindings,
    widgets::{self, dim_style, error_style, header_style},
};

#[derive(Debug)]
pub struct RunView {
    pub id: String,
    pub data: Remote<RunDetail>,
    scroll: u16,
}

impl RunView {
    pub fn new(id: String) -> RunView {
        RunView {
            id,
            data: Remote::Loading,
            scroll: 0,
        }
    }

    pub fn is_loading(&self) -> bool {
        matches!(self.data, Remote::Loading)
    }

    /// A failed refresh keeps what was on screen; the footer says why.
    pub fn loaded(&mut self, id: &str, result: ApiResult<RunDetail>) -> Option<String> {
        if id != self.id {
            return None;
        }
        match result {
            Ok(detail) => {
                self.data = Remote::Loaded(detail);
                None
            }
            Err(e) if self.data.loaded().is_some() => Some(e.describe()),
            Err(e) => {
                self.data = Remote::Failed(e.describe());
                None
            }
        }
    }

    pub fn handle_key(&mut self, keys: &KeyBindings, key: &KeyEvent) {
        if keys.up.matches(key) {
            self.scroll = self.scroll.saturating_sub(1);
        } else if keys.down.matches(key) {
            self.scroll = self.scroll.saturating_add(1);
        } else if keys.page_up.matches(key) {
            self.scroll = self.scroll.saturating_sub(10);
        } else if keys.page_down.matches(key) {
            self.scroll = self.scroll.saturating_add(10);
        } else if keys.top.matches(key) {
            self.scroll = 0;
        }
    }

    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64) {
        let lines = match &self.data {
            Remote::Loading => vec![Line::from(format!(
                "{} loading run {}…",
                widgets::spinner(tick),
                self.id
            ))],
            Remote::Failed(e) => vec![
                Line::styled(format!("✗ run {}: {e}", self.id), error_style()),
                Line::styled("R tries again · Esc goes back", dim_style()),
            ],
            Remote::Loaded(detail) => detail_lines(detail),
        };
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .scroll((self.scroll, 0)),
            area,
        );
    }
}

fn field(name: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<13}"), dim_style()),
        Span::raw(value),
    ])
}

fn detail_lines(detail: &RunDetail) -> Vec<Line<'static>> {
    let run = detail.run.clone().unwrap_or_default();
    let state = run.state();
    let mut lines = vec![Line::from(vec![
        Span::styled(
            format!("Run {} ", short_id(&run.id)),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(state_name(state), state_style(state)),
        Span::raw(format!("  flow {} v{}", run.flow_id, run.flow_version)),
    ])];
    lines.push(field("id", run.id.clone()));
    lines.push(field("key", or_dash(&run.correlation_key)));
    lines.push(field("trigger", or_dash(&run.trigger)));
    lines.push(field(
        "started",
        widgets::clock(run.created_at.as_ref()).to_string(),
    ));
    if !run.current_step.is_empty() {
        lines.push(field("current step", run.current_step.clone()));
    }
    if state == RunState::Waiting {
        lines.push(field("wakes at", widgets::clock(run.wake_at.as_ref())));
    }
    if !run.error.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<13}", "error"), dim_style()),
            Span::styled(run.error.clone(), error_style()),
        ]));
    }
    if !run.inputs.is_empty() {
        lines.push(Line::styled("inputs", dim_style()));
        for line in pretty_json(&run.inputs).lines() {
            lines.push(Line::raw(format!("  {line}")));
        }
    }
    lines.push(Line::default());
    lines.push(Line::styled(
        format!("Steps ({})", detail.steps.len()),
        header_style(),
    ));
    let width = detail
        .steps
        .iter()
        .map(|s| s.id.chars().count())
        .max()
        .unwrap_or(0);
    for step in &detail.steps {
        step_lines(step, &run.current_step, width, &mut lines);
    }
    lines.push(Line::default());
    lines.push(Line::styled(
        format!("Log ({})", detail.log.len()),
        header_style(),
    ));
    if detail.log.is_empty() {
        lines.push(Line::styled("  nothing yet", dim_style()));
    }
    for line in &detail.log {
        let step = if line.step_id.is_empty() {
            String::new()
        } else {
            format!("[{}] ", line.step_id)
        };
        lines.push(Line::from(vec![
            Span::styled(
                format!("{} ", widgets::clock(line.time.as_ref())),
                dim_style(),
            ),
            Span::styled(step, Style::default().fg(Color::Cyan)),
            Span::raw(line.message.clone()),
        ]));
    }
    lines
}

/// `✓ email1   succeeded  1 try  200  12:35:01`, the error beneath.
fn step_lines(step: &RunStep, current: &str, width: usize, lines: &mut Vec<Line<'static>>) {
    let (mark, style) = match step.state.as_str() {
        "succeeded" => ("✓", state_style(RunState::Succeeded)),
        "failed" => ("✗", state_style(RunState::Failed)),
        "skipped" => ("↷", dim_style()),
        "waiting" => ("◷", state_style(RunState::Waiting)),
        "cancelled" => ("⊘", state_style(RunState::Cancelled)),
        _ if step.id == current => ("▶", state_style(RunState::Running)),
        _ => ("·", dim_style()),
    };
    let tries = match step.attempts {
        0 => String::new(),
        1 => "1 try".to_string(),
        n => format!("{n} tries"),
    };
    let code = if step.status_code == 0 {
        String::new()
    } else {
        step.status_code.to_string()
    };
    let finished = if step.finished_at.is_some() {
        widgets::clock(step.finished_at.as_ref())
    } else {
        String::new()
    };
    let code_style = if (200..300).contains(&step.status_code) {
        state_style(RunState::Succeeded)
    } else {
        error_style()
    };
    lines.push(Line::from(vec![
        Span::styled(format!("  {mark} "), style),
        Span::raw(format!("{:<width$}  ", step.id)),
        Span::styled(format!("{:<9}", step.state), style),
        Span::raw(format!(" {tries:<9}")),
        Span::styled(format!("{code:>3}"), code_style),
        Span::styled(format!("  {finished}"), dim_style()),
    ]));
    if !step.error.is_empty() {
        lines.push(Line::styled(format!("      {}", step.error), error_style()));
    }
}
