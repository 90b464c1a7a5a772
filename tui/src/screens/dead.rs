//! Dead letters: deliveries whose retries ran out (or whose endpoint is
//! gone). Retry the one under the cursor, or mark several with space and
//! retry them together; retry all of an endpoint's (or every one) as a job
//! in the daemon; resend; Enter opens the detail.

use std::collections::BTreeSet;

use crossterm::event::KeyEvent;
use hookyard::v1::{Delivery, RetryDeadLettersRequest};
use ratatui::{
    layout::{Constraint, Rect},
    widgets::{Cell, Row, Table},
    Frame,
};

use super::{list::ListView, Ctx, EventState};
use crate::{
    api::ApiResult,
    app::Flash,
    modal::resend_question,
    net::Command,
    widgets::{self, error_style, header_style, remote_body, selected_style},
};

#[derive(Debug, Default)]
pub struct DeadScreen {
    pub list: ListView<Delivery>,
    /// Marked for a retry together.
    pub marked: BTreeSet<u64>,
}

impl DeadScreen {
    pub fn loaded(&mut self, result: ApiResult<Vec<Delivery>>) {
        self.list.set(result);
        let ids: BTreeSet<u64> = self
            .list
            .loaded()
            .map(|l| l.iter().map(|d| d.id).collect())
            .unwrap_or_default();
        self.marked.retain(|id| ids.contains(id));
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        let len = self.list.len();
        let current = self.list.selected().map(|d| d.id);
        if keys.reload.matches(key) {
            self.list.reload();
            ctx.commands.push(Command::LoadDead);
        } else if keys.retry_dead_all.matches(key) {
            ctx.confirm(
                "Retry every dead letter of every endpoint now? (a job: J shows it)".to_string(),
                Command::RetryDeadLetters(RetryDeadLettersRequest::default()),
            );
        } else if let Some(id) = current {
            if keys.select_all.matches(key) {
                if self.marked.len() == len {
                    self.marked.clear();
                } else if let Some(list) = self.list.loaded() {
                    self.marked = list.iter().map(|d| d.id).collect();
                }
            } else if keys.select.matches(key) {
                if !self.marked.remove(&id) {
                    self.marked.insert(id);
                }
                self.list.select_next();
            } else if keys.retry.matches(key) {
                let ids: Vec<u64> = if self.marked.is_empty() {
                    vec![id]
                } else {
                    self.marked.iter().copied().collect()
                };
                ctx.info(format!("retrying {} delivery(ies)…", ids.len()));
                ctx.commands.push(Command::Retry(ids));
            } else if keys.resend.matches(key) {
                let target = self.list.selected().map(|d| d.target.clone());
                ctx.confirm(resend_question(id, target), Command::Resend(id));
            } else if keys.retry_dead.matches(key) {
                let target = self.list.selected().map(|d| d.target.clone());
                match target.as_deref().and_then(|t| t.strip_prefix("endpoint:")) {
                    Some(endpoint_id) => ctx.confirm(
                        format!(
                            "Retry every dead letter of `{endpoint_id}` now? (a job: J shows it)"
                        ),
                        Command::RetryDeadLetters(RetryDeadLettersRequest {
                            endpoint_id: endpoint_id.to_string(),
                            ..RetryDeadLettersRequest::default()
                        }),
                    ),
                    None => {
                        ctx.flash = Some(Flash::Error(
                            "its target is no endpoint; B retries every endpoint's".to_string(),
                        ))
                    }
                }
            } else if keys.open.matches(key) {
                ctx.open_detail(id);
            } else if !self.list.move_selection(keys, key) {
                return EventState::NotConsumed;
            }
        } else {
            return EventState::NotConsumed;
        }
        EventState::Consumed
    }

    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64) {
        let empty = "no dead letters: every delivery succeeded or is still trying";
        let Some(deliveries) = remote_body(frame, area, &self.list.items, tick, empty) else {
            return;
        };
        let rows = deliveries.iter().map(|d| {
            let mark = if self.marked.contains(&d.id) {
                "●"
            } else {
                " "
            };
            Row::new([
                Cell::from(mark),
                Cell::from(widgets::clock(d.updated_at.as_ref())),
                Cell::from(d.event_name.clone()),
                Cell::from(d.target.clone()),
                Cell::from(d.attempts.to_string()),
                Cell::from(d.last_error.clone()).style(error_style()),
            ])
        });
        let header =
            Row::new(["", "time", "event", "target", "try", "last error"]).style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Length(1),
                Constraint::Length(8),
                Constraint::Fill(2),
                Constraint::Fill(2),
                Constraint::Length(3),
                Constraint::Fill(3),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = self.list.table_state();
        frame.render_stateful_widget(table, area, &mut state);
    }
}
