//! Subscriptions: the table, the form that edits every field, delete with a
//! confirmation, enable/disable, and the routing test that lights up the
//! subscriptions an event would reach.

use std::collections::{HashMap, HashSet};

use crossterm::event::KeyEvent;
use hookyard::v1::{GetStatsResponse, Subscription};
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Cell, Paragraph, Row, Table},
    Frame,
};

use super::{jobs::ReplayForm, list::ListView, Ctx, EventState};
use crate::{
    api::ApiResult,
    app::{App, Mode},
    forms::{Field, Form},
    net::Command,
    widgets::{dim_style, header_style, remote_body, selected_style},
};

#[derive(Debug, Default)]
pub struct SubscriptionsScreen {
    pub list: ListView<Subscription>,
    /// Ids the last routing test matched; `None` when no test is shown.
    pub matched: Option<HashSet<String>>,
}

impl SubscriptionsScreen {
    pub fn loaded(&mut self, result: ApiResult<Vec<Subscription>>) {
        self.list.set_sorted(result, |a, b| a.name.cmp(&b.name));
    }

    pub fn selected(&self) -> Option<&Subscription> {
        self.list.selected()
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        if keys.new.matches(key) {
            ctx.next_mode = Some(Mode::SubscriptionForm(Box::new(SubscriptionForm::new(
                None,
            ))));
        } else if keys.reload.matches(key) {
            self.list.reload();
            ctx.commands.push(Command::LoadSubscriptions);
            ctx.commands.push(Command::LoadStats);
        } else if keys.test.matches(key) {
            ctx.next_mode = Some(Mode::TestRoute(Box::new(route_form())));
        } else if let Some(sub) = self.selected().cloned() {
            if keys.edit.matches(key) || keys.open.matches(key) {
                ctx.next_mode = Some(Mode::SubscriptionForm(Box::new(SubscriptionForm::new(
                    Some(sub),
                ))));
            } else if keys.live.matches(key) {
                ctx.live_filter = Some(format!("sub:{}", sub.name));
            } else if keys.replay.matches(key) {
                ctx.next_mode = Some(Mode::Replay(Box::new(ReplayForm::for_subscription(&sub))));
            } else if keys.delete.matches(key) {
                ctx.confirm(
                    format!("Delete subscription `{}`?", sub.name),
                    Command::DeleteSubscription(sub.id),
                );
            } else if keys.toggle.matches(key) {
                let enabled = !sub.enabled;
                ctx.info(format!(
                    "{} `{}`…",
                    if enabled { "enabling" } else { "disabling" },
                    sub.name
                ));
                ctx.commands.push(Command::SaveSubscription {
                    subscription: Subscription { enabled, ..sub },
                    create: false,
                });
            } else if !self.list.move_selection(keys, key) {
                return EventState::NotConsumed;
            }
        } else {
            return EventState::NotConsumed;
        }
        EventState::Consumed
    }

    pub fn render(
        &self,
        frame: &mut Frame,
        area: Rect,
        tick: u64,
        stats: Option<&GetStatsResponse>,
    ) {
        let empty = "no subscriptions yet: n creates one";
        let matched = |id: &str| -> String {
            match stats {
                None => "-".to_string(),
                Some(stats) => stats
                    .subscriptions
                    .iter()
                    .find(|s| s.subscription_id == id)
                    .map_or(0, |s| s.matched)
                    .to_string(),
            }
        };
        let Some(subs) = remote_body(frame, area, &self.list.items, tick, empty) else {
            return;
        };
        let rows = subs.iter().map(|s| {
            let lit = self.matched.as_ref().is_some_and(|m| m.contains(&s.id));
            let enabled = if s.enabled { "yes" } else { "no" };
            let row = Row::new([
                Cell::from(s.name.clone()),
                Cell::from(s.patterns.join(", ")),
                Cell::from(s.exclude.join(", ")),
                Cell::from(or_any(&s.tenant_id)),
                Cell::from(s.target.clone()),
                Cell::from(key_summary(&s.ordering_key)),
                Cell::from(enabled),
                Cell::from(matched(&s.id)),
            ]);
            if lit {
                row.style(Style::default().fg(Color::Black).bg(Color::Green))
            } else if !s.enabled {
                row.style(dim_style())
            } else {
                row
            }
        });
        let header = Row::new([
            "name", "patterns", "exclude", "tenant", "target", "order by", "on", "1h",
        ])
        .style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Fill(2),
                Constraint::Fill(2),
                Constraint::Fill(1),
                Constraint::Fill(1),
                Constraint::Fill(2),
                Constraint::Fill(1),
                Constraint::Length(3),
                Constraint::Length(6),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style().add_modifier(Modifier::BOLD));
        let mut state = self.list.table_state();
        frame.render_stateful_widget(table, area, &mut state);
    }
}

/// An ordering key template as the table has room for it: the one
/// expression of `{{ event.payload.customer_id }}` is `payload.customer_id`;
/// anything more elaborate shows as written.
pub fn key_summary(template: &str) -> String {
    let inner = template
        .trim()
        .strip_prefix("{{")
        .and_then(|t| t.strip_suffix("}}"))
        .map(str::trim)
        .filter(|t| !t.contains("{{") && !t.contains("}}"));
    match inner {
        Some(expr) => expr.strip_prefix("event.").unwrap_or(expr).to_string(),
        None => template.to_string(),
    }
}

fn or_any(tenant: &str) -> String {
    if tenant.is_empty() {
        "any".to_string()
    } else {
        tenant.to_string()
    }
}

/// The form for one subscription; `original` is `None` for a new one.
#[derive(Debug, Clone)]
pub struct SubscriptionForm {
    pub original: Option<Subscription>,
    pub form: Form,
}

impl SubscriptionForm {
    pub fn new(original: Option<Subscription>) -> SubscriptionForm {
        let s = original.clone().unwrap_or(Subscription {
            enabled: true,
            ..Subscription::default()
        });
        let title = match &original {
            Some(s) => format!("Edit subscription {} (v{})", s.name, s.version),
            None => "New subscription".to_string(),
        };
        let form = Form::new(
            title,
            vec![
                Field::text("name", "name", s.name).hint("e.g. leads-to-crm"),
                Field::text("patterns", "patterns", s.patterns.join(", "))
                    .hint("e.g. lead.*, billing.**"),
                Field::text("exclude", "exclude", s.exclude.join(", "))
                    .hint("optional, e.g. lead.test"),
                Field::text("tenant_id", "tenant", s.tenant_id).hint("empty: every tenant"),
                Field::text("target", "target", s.target)
                    .hint("e.g. endpoint:crm or flow:onboarding"),
                Field::text("inputs", "flow inputs", inputs_text(&s.inputs))
                    .hint("flow: targets; e.g. email={{ event.payload.email }}; kind=lead"),
                Field::text("filter", "filter", s.filter)
                    .hint("optional, e.g. event.payload.amount > 100"),
                Field::text("ordering_key", "ordering key", s.ordering_key)
                    .hint("optional, e.g. {{ event.payload.customer_id }}"),
                Field::toggle("enabled", "enabled", s.enabled),
                Field::text("description", "description", s.description),
            ],
        );
        SubscriptionForm { original, form }
    }

    pub fn is_new(&self) -> bool {
        self.original.is_none()
    }

    /// The subscription as the form says it should be, with the version
    /// that was read.
    pub fn subscription(&self) -> Result<Subscription, String> {
        let base = self.original.clone().unwrap_or_default();
        let f = &self.form;
        Ok(Subscription {
            name: f.value("name"),
            patterns: f.list("patterns"),
            exclude: f.list("exclude"),
            tenant_id: f.value("tenant_id"),
            target: f.value("target"),
            enabled: f.is_on("enabled"),
            description: f.value("description"),
            inputs: parse_inputs(&f.value("inputs"))?,
            filter: f.value("filter"),
            ordering_key: f.value("ordering_key"),
            ..base
        })
    }

    /// Saves, or shows what cannot be parsed without asking the daemon.
    pub fn save_command(&mut self) -> Option<Command> {
        match self.subscription() {
            Ok(subscription) => {
                self.form.saving = true;
                Some(Command::SaveSubscription {
                    subscription,
                    create: self.is_new(),
                })
            }
            Err(e) => {
                self.form.set_error("inputs", e);
                None
            }
        }
    }
}

/// `name=template; name=template`: templates often hold commas, rarely `;`.
fn inputs_text(inputs: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = inputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join("; ")
}

fn parse_inputs(text: &str) -> Result<HashMap<String, String>, String> {
    let mut inputs = HashMap::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, template) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not name=template"))?;
        inputs.insert(name.trim().to_string(), template.trim().to_string());
    }
    Ok(inputs)
}

/// The routing test: an event name, optionally a tenant and a payload.
pub fn route_form() -> Form {
    let mut form = Form::new(
        "Test routing: which subscriptions would this event reach?",
        vec![
            Field::text("name", "event name", "").hint("e.g. lead.created"),
            Field::text("tenant_id", "tenant", "").hint("optional"),
            Field::text("payload", "payload", "").hint(r#"optional JSON: {"score": 90}"#),
        ],
    );
    form.enter = "tests";
    form
}

/// The routing test's panel under the table.
pub fn render_route_test(frame: &mut Frame, area: Rect, form: &Form, app: &App) {
    let (screen, tick) = (&app.subscriptions, app.tick);
    let [table, panel] = Layout::vertical([Constraint::Min(3), Constraint::Length(8)]).areas(area);
    screen.render(frame, table, tick, app.stats.as_ref());
    form.render(frame, panel, tick);
    if let Some(matched) = &screen.matched {
        let line = if matched.is_empty() {
            Line::styled("no subscription matches", dim_style())
        } else {
            Line::styled(
                format!("{} subscription(s) match, lit in the table", matched.len()),
                Style::default().fg(Color::Green),
            )
        };
        let at = Rect {
            y: panel.y.saturating_sub(1),
            height: 1,
            ..panel
        };
        frame.render_widget(Paragraph::new(line), at);
    }
}
