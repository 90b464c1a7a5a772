//! Keys for the modal on top of the screen (help, filter, detail, forms,
//! confirmations, one-time reveals). A modal consumes every key but Ctrl-C,
//! so typing in a form never switches tabs.

use std::collections::HashSet;

use crossterm::event::KeyEvent;

use crate::{
    app::{parse_filter, App, Flash, Mode},
    forms::FormAction,
    net::Command,
    screens::EventState,
};

impl App {
    pub(crate) fn handle_mode_key(&mut self, key: &KeyEvent) -> EventState {
        let keys = &self.keys;
        match &mut self.mode {
            Mode::Browse => return EventState::NotConsumed,
            Mode::Help => {
                if keys.back.matches(key) || keys.help.matches(key) || keys.quit.matches(key) {
                    self.mode = Mode::Browse;
                }
            }
            Mode::Filter { input, error } => {
                if keys.back.matches(key) {
                    self.mode = Mode::Browse;
                } else if keys.open.matches(key) {
                    let text = input.value().trim().to_string();
                    match parse_filter(&self.subscriptions, &text) {
                        Ok(filter) => {
                            self.live.set_filter(text, filter.clone());
                            self.commands.push(Command::Watch(filter));
                            self.mode = Mode::Browse;
                        }
                        Err(e) => *error = Some(e),
                    }
                } else {
                    input.handle_key(key);
                    *error = None;
                }
            }
            Mode::Detail(view) => {
                if keys.back.matches(key) || keys.quit.matches(key) {
                    self.mode = Mode::Browse;
                } else if keys.retry.matches(key) {
                    if let Some(id) = view.id() {
                        self.commands.push(Command::Retry(vec![id]));
                        self.flash = Some(Flash::Info(format!("retrying delivery #{id}…")));
                    }
                } else {
                    view.handle_key(keys, key);
                }
            }
            Mode::Confirm { command, .. } => {
                if keys.yes.matches(key) {
                    let command = (**command).clone();
                    self.commands.push(command);
                    self.mode = Mode::Browse;
                } else if keys.back.matches(key) || keys.quit.matches(key) || is_no(key) {
                    self.mode = Mode::Browse;
                }
            }
            Mode::Reveal { .. } => {
                if keys.back.matches(key) || keys.open.matches(key) || keys.quit.matches(key) {
                    self.mode = Mode::Browse;
                }
            }
            Mode::SubscriptionForm(sub) => match sub.form.handle_key(keys, key) {
                FormAction::None => {}
                FormAction::Cancel => self.mode = Mode::Browse,
                FormAction::Save => {
                    if let Some(command) = sub.save_command() {
                        self.commands.push(command);
                    }
                }
                FormAction::Reload => {
                    if let Some(original) = &sub.original {
                        self.commands
                            .push(Command::ReloadSubscription(original.id.clone()));
                    }
                }
            },
            Mode::EndpointForm(endpoint) => match endpoint.form.handle_key(keys, key) {
                FormAction::None => {}
                FormAction::Cancel => self.mode = Mode::Browse,
                FormAction::Save => {
                    if let Some(command) = endpoint.save_command() {
                        self.commands.push(command);
                    }
                }
                FormAction::Reload => {
                    if let Some(original) = &endpoint.original {
                        self.commands
                            .push(Command::ReloadEndpoint(original.id.clone()));
                    }
                }
            },
            Mode::SourceForm(source) => match source.form.handle_key(keys, key) {
                FormAction::None | FormAction::Reload => {}
                FormAction::Cancel => self.mode = Mode::Browse,
                FormAction::Save => {
                    if let Some(command) = source.save_command() {
                        self.commands.push(command);
                    }
                }
            },
            Mode::TestRoute(form) => match form.handle_key(keys, key) {
                FormAction::None | FormAction::Reload => {}
                FormAction::Cancel => {
                    self.subscriptions.matched = None;
                    self.mode = Mode::Browse;
                }
                FormAction::Save => {
                    let payload = form.value("payload");
                    if !payload.is_empty()
                        && serde_json::from_str::<serde_json::Value>(&payload).is_err()
                    {
                        if let Some(f) = form.fields.iter_mut().find(|f| f.key == "payload") {
                            f.error = Some("is not JSON".to_string());
                        }
                    } else {
                        self.commands.push(Command::TestRoute {
                            name: form.value("name"),
                            tenant_id: form.value("tenant_id"),
                            payload: payload.into_bytes(),
                        });
                    }
                }
            },
        }
        EventState::Consumed
    }

    /// The routing test's answer lights up what matched.
    pub(crate) fn show_routed(&mut self, matched: HashSet<String>) {
        self.subscriptions.matched = Some(matched);
    }
}

fn is_no(key: &KeyEvent) -> bool {
    key.code == crossterm::event::KeyCode::Char('n')
}
