//! Sources: the partners and forms posting to `/webhook/v1/{token}`. List,
//! create (the URL with its token is shown once), rotate the token (shown
//! once), suspend/resume, delete.

use crossterm::event::KeyEvent;
use hookyard::v1::{event_name_rule::Rule, EventNameRule, Source, SourceStatus};
use ratatui::{
    layout::{Constraint, Rect},
    style::{Color, Style},
    widgets::{Cell, Row, Table},
    Frame,
};

use super::{list::ListView, Ctx, EventState};
use crate::{
    api::ApiResult,
    app::Mode,
    forms::{Field, Form},
    net::Command,
    widgets::{header_style, remote_body, selected_style},
};

#[derive(Debug, Default)]
pub struct SourcesScreen {
    pub list: ListView<Source>,
}

impl SourcesScreen {
    pub fn loaded(&mut self, result: ApiResult<Vec<Source>>) {
        self.list.set_sorted(result, |a, b| a.name.cmp(&b.name));
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        let selected = self.list.selected().cloned();
        if keys.new.matches(key) {
            ctx.next_mode = Some(Mode::SourceForm(Box::default()));
        } else if keys.reload.matches(key) {
            self.list.reload();
            ctx.commands.push(Command::LoadSources);
        } else if let Some(source) = selected {
            if keys.rotate.matches(key) {
                ctx.confirm(
                    format!(
                        "Rotate the token of `{}`? The old one keeps working for 24 h.",
                        source.name
                    ),
                    Command::RotateSource(source.id),
                );
            } else if keys.suspend.matches(key) {
                if source.status() == SourceStatus::Suspended {
                    ctx.info(format!("resuming `{}`…", source.name));
                    ctx.commands.push(Command::ResumeSource(source.id));
                } else {
                    ctx.confirm(
                        format!(
                            "Suspend `{}`? Its requests get 403 until resumed.",
                            source.name
                        ),
                        Command::SuspendSource(source.id),
                    );
                }
            } else if keys.delete.matches(key) {
                ctx.confirm(
                    format!(
                        "Delete source `{}`? Its token stops working at once.",
                        source.name
                    ),
                    Command::DeleteSource(source.id),
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
        let empty = "no sources yet: n creates one";
        let Some(sources) = remote_body(frame, area, &self.list.items, tick, empty) else {
            return;
        };
        let rows = sources.iter().map(|s| {
            let status = s.status();
            let color = match status {
                SourceStatus::Active => Color::Green,
                SourceStatus::Inactive => Color::Yellow,
                SourceStatus::Suspended | SourceStatus::Unspecified => Color::Red,
            };
            let rejected: u64 = s.rejections.values().sum();
            Row::new([
                Cell::from(s.name.clone()),
                Cell::from(s.id.clone()),
                Cell::from(status_name(status)).style(Style::default().fg(color)),
                Cell::from(if s.tenant_id.is_empty() {
                    "-".to_string()
                } else {
                    s.tenant_id.clone()
                }),
                Cell::from(rule_text(s.event_name.as_ref())),
                Cell::from(rejected.to_string()),
            ])
        });
        let header = Row::new(["name", "id", "status", "tenant", "event name", "rejected"])
            .style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Fill(2),
                Constraint::Fill(2),
                Constraint::Length(9),
                Constraint::Fill(1),
                Constraint::Fill(3),
                Constraint::Length(8),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = self.list.table_state();
        frame.render_stateful_widget(table, area, &mut state);
    }
}

fn status_name(status: SourceStatus) -> &'static str {
    match status {
        SourceStatus::Active => "active",
        SourceStatus::Inactive => "inactive",
        SourceStatus::Suspended => "suspended",
        SourceStatus::Unspecified => "?",
    }
}

/// `lead.created`, `field:event_type` or `template:lead.{{ payload.kind }}`.
pub fn rule_text(rule: Option<&EventNameRule>) -> String {
    match rule.and_then(|r| r.rule.as_ref()) {
        Some(Rule::Fixed(name)) => name.clone(),
        Some(Rule::Field(field)) => format!("field:{field}"),
        Some(Rule::Template(t)) => format!("template:{t}"),
        None => "-".to_string(),
    }
}

pub fn parse_rule(text: &str) -> Option<EventNameRule> {
    let rule = if text.is_empty() {
        return None;
    } else if let Some(field) = text.strip_prefix("field:") {
        Rule::Field(field.trim().to_string())
    } else if let Some(template) = text.strip_prefix("template:") {
        Rule::Template(template.trim().to_string())
    } else {
        Rule::Fixed(text.to_string())
    };
    Some(EventNameRule { rule: Some(rule) })
}

#[derive(Debug, Clone)]
pub struct SourceForm {
    pub form: Form,
}

impl Default for SourceForm {
    fn default() -> SourceForm {
        SourceForm {
            form: Form::new(
                "New source (its URL is shown once)",
                vec![
                    Field::text("name", "name", "").hint("e.g. contact-form"),
                    Field::text("description", "description", ""),
                    Field::text("tenant_id", "tenant", "").hint("optional"),
                    Field::text("event_name", "event name", "")
                        .hint("e.g. lead.created | field:event_type | template:…"),
                    Field::text("allowed_origins", "origins", "")
                        .hint("optional, e.g. https://example.com (CORS)"),
                    Field::text("allowed_cidrs", "allowed CIDRs", "").hint("empty: any address"),
                ],
            ),
        }
    }
}

impl SourceForm {
    pub fn source(&self) -> Source {
        let f = &self.form;
        Source {
            name: f.value("name"),
            description: f.value("description"),
            tenant_id: f.value("tenant_id"),
            event_name: parse_rule(&f.value("event_name")),
            allowed_origins: f.list("allowed_origins"),
            allowed_cidrs: f.list("allowed_cidrs"),
            status: SourceStatus::Active.into(),
            ..Source::default()
        }
    }

    pub fn save_command(&mut self) -> Option<Command> {
        self.form.saving = true;
        Some(Command::CreateSource(self.source()))
    }
}
