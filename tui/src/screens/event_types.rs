//! Event types: the optional catalog of JSON Schemas that published payloads
//! must satisfy, one per event name pattern. The table, with the selected
//! type's schema (pretty-printed) beneath it; `d` deletes. Types are written
//! in the config file or with `hookyard ctl event-types` (`--schema-file`):
//! a schema is a document, and a one-line text field is no place to edit it.

use crossterm::event::KeyEvent;
use hookyard::v1::EventType;
use ratatui::{
    layout::{Constraint, Layout, Rect},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap},
    Frame,
};

use super::{list::ListView, Ctx, EventState};
use crate::{
    api::ApiResult,
    net::Command,
    widgets::{header_style, remote_body, selected_style},
};

#[derive(Debug, Default)]
pub struct EventTypesScreen {
    pub list: ListView<EventType>,
}

impl EventTypesScreen {
    pub fn loaded(&mut self, result: ApiResult<Vec<EventType>>) {
        self.list
            .set_sorted(result, |a, b| a.pattern.cmp(&b.pattern));
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        let selected = self.list.selected().cloned();
        if keys.reload.matches(key) {
            self.list.reload();
            ctx.commands.push(Command::LoadEventTypes);
        } else if let Some(event_type) = selected {
            if keys.delete.matches(key) {
                ctx.confirm(
                    format!(
                        "Delete event type `{}`? `{}` events are no longer checked.",
                        event_type.id, event_type.pattern
                    ),
                    Command::DeleteEventType(event_type.id),
                );
            } else if !self.list.move_selection(keys, key) {
                return EventState::NotConsumed;
            }
        } else {
            return EventState::NotConsumed;
        }
        EventState::Consumed
    }

    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64) {
        let empty = "no event types: declare them under `event_types:` in the config \
                     or with `hookyard ctl event-types create`";
        let Some(types) = remote_body(frame, area, &self.list.items, tick, empty) else {
            return;
        };
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Fill(1)]).areas(area);
        let rows = types.iter().map(|t| {
            Row::new([
                Cell::from(t.pattern.clone()),
                Cell::from(t.id.clone()),
                Cell::from(format!("v{}", t.version)),
                Cell::from(t.description.clone()),
            ])
        });
        let header = Row::new(["pattern", "id", "version", "description"]).style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Fill(2),
                Constraint::Fill(2),
                Constraint::Length(7),
                Constraint::Fill(4),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = self.list.table_state();
        frame.render_stateful_widget(table, top, &mut state);
        if let Some(selected) = self.list.selected() {
            let lines: Vec<Line> = pretty(&selected.schema)
                .lines()
                .map(|l| Line::from(l.to_string()))
                .collect();
            let block = Block::default()
                .borders(Borders::TOP)
                .title(format!(" schema of {} ", selected.id));
            frame.render_widget(
                Paragraph::new(lines)
                    .block(block)
                    .wrap(Wrap { trim: false }),
                bottom,
            );
        }
    }
}

/// The schema indented, or as stored when it is not JSON.
fn pretty(schema: &str) -> String {
    serde_json::from_str::<serde_json::Value>(schema)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| schema.to_string())
}
