//! Flows: the definitions the daemon runs. The table, the definition's YAML
//! (Enter or `v`, scrollable), and `r` to start a run with JSON inputs, the
//! server's complaints about them shown beside the field.

use crossterm::event::KeyEvent;
use hookyard::v1::Flow;
use ratatui::{
    layout::{Constraint, Rect},
    style::Modifier,
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table},
    Frame,
};

use super::{list::ListView, Ctx, EventState};
use crate::{
    api::ApiResult,
    app::Mode,
    forms::{Field, Form},
    keys::KeyBindings,
    net::Command,
    widgets::{dim_style, header_style, remote_body, selected_style},
};

#[derive(Debug, Default)]
pub struct FlowsScreen {
    pub list: ListView<Flow>,
}

impl FlowsScreen {
    pub fn loaded(&mut self, result: ApiResult<Vec<Flow>>) {
        self.list.set_sorted(result, |a, b| a.id.cmp(&b.id));
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        let selected = self.list.selected().cloned();
        if keys.reload.matches(key) {
            self.list.reload();
            ctx.commands.push(Command::LoadFlows);
        } else if let Some(flow) = selected {
            if keys.open.matches(key) || keys.view.matches(key) {
                ctx.next_mode = Some(Mode::FlowYaml(Box::new(FlowYaml::new(flow))));
            } else if keys.start.matches(key) {
                ctx.next_mode = Some(Mode::StartRun(Box::new(StartRunForm::new(&flow.id))));
            } else if !self.list.move_selection(keys, key) {
                return EventState::NotConsumed;
            }
        } else {
            return EventState::NotConsumed;
        }
        EventState::Consumed
    }

    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64) {
        let empty = "no flows: declare them under `flows:` in the config or with CreateFlow";
        let Some(flows) = remote_body(frame, area, &self.list.items, tick, empty) else {
            return;
        };
        let rows = flows.iter().map(|f| {
            Row::new([
                Cell::from(f.id.clone()),
                Cell::from(format!("v{}", f.version)),
                Cell::from(f.description.clone()),
                Cell::from(format!("{}: {}", f.step_ids.len(), f.step_ids.join(" → "))),
                Cell::from(if f.has_webhook_key { "yes" } else { "no" }),
            ])
        });
        let header =
            Row::new(["id", "version", "description", "steps", "webhook"]).style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Fill(2),
                Constraint::Length(7),
                Constraint::Fill(3),
                Constraint::Fill(3),
                Constraint::Length(7),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = self.list.table_state();
        frame.render_stateful_widget(table, area, &mut state);
    }
}

/// A flow's definition as it was given, with line numbers (the daemon's
/// errors name lines).
#[derive(Debug)]
pub struct FlowYaml {
    pub flow: Flow,
    scroll: u16,
}

impl FlowYaml {
    pub fn new(flow: Flow) -> FlowYaml {
        FlowYaml { flow, scroll: 0 }
    }

    pub fn handle_key(&mut self, keys: &KeyBindings, key: &KeyEvent) {
        let last = self.flow.definition_yaml.lines().count().saturating_sub(1) as u16;
        if keys.up.matches(key) {
            self.scroll = self.scroll.saturating_sub(1);
        } else if keys.down.matches(key) {
            self.scroll = self.scroll.saturating_add(1).min(last);
        } else if keys.page_up.matches(key) {
            self.scroll = self.scroll.saturating_sub(10);
        } else if keys.page_down.matches(key) {
            self.scroll = self.scroll.saturating_add(10).min(last);
        } else if keys.top.matches(key) {
            self.scroll = 0;
        } else if keys.bottom.matches(key) {
            self.scroll = last;
        }
    }

    pub fn render(&self, frame: &mut Frame, area: Rect) {
        let f = &self.flow;
        let mut lines = vec![Line::from(vec![
            Span::styled(
                format!("Flow {} v{}", f.id, f.version),
                header_style().add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                "  definition (↑↓ scroll, r start a run, Esc back)",
                dim_style(),
            ),
        ])];
        let width = f.definition_yaml.lines().count().to_string().len();
        lines.extend(
            f.definition_yaml
                .lines()
                .enumerate()
                .skip(self.scroll as usize)
                .map(|(i, line)| {
                    Line::from(vec![
                        Span::styled(format!("{:>width$} ", i + 1), dim_style()),
                        Span::raw(line.to_string()),
                    ])
                }),
        );
        frame.render_widget(Paragraph::new(lines), area);
    }
}

/// Starts a run: the inputs as one JSON object. The daemon checks them and
/// names every bad one (`inputs.email`), which lands beside the field.
#[derive(Debug, Clone)]
pub struct StartRunForm {
    pub flow_id: String,
    pub form: Form,
}

impl StartRunForm {
    pub fn new(flow_id: &str) -> StartRunForm {
        let mut form = Form::new(
            format!("Start a run of `{flow_id}`"),
            vec![
                Field::fixed("flow", "flow", flow_id),
                Field::text("inputs", "inputs", "")
                    .hint(r#"JSON, e.g. {"email": "ada@example.com"}"#),
            ],
        );
        form.enter = "starts the run";
        StartRunForm {
            flow_id: flow_id.to_string(),
            form,
        }
    }

    /// The command, or the reason the inputs never left (beside the field).
    pub fn save_command(&mut self) -> Option<Command> {
        let text = self.form.value("inputs");
        let text = if text.trim().is_empty() {
            "{}".to_string()
        } else {
            text
        };
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Object(_)) => {
                self.form.saving = true;
                Some(Command::StartRun {
                    flow_id: self.flow_id.clone(),
                    inputs: text.into_bytes(),
                })
            }
            Ok(_) => {
                self.form
                    .set_error("inputs", "must be a JSON object".to_string());
                None
            }
            Err(e) => {
                self.form.set_error("inputs", format!("is not JSON: {e}"));
                None
            }
        }
    }
}
