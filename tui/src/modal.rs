//! Keys for the modal on top of the screen (help, filter, detail, forms,
//! confirmations, one-time reveals). A modal consumes every key but Ctrl-C,
//! so typing in a form never switches tabs.

use std::collections::HashSet;

use crossterm::event::KeyEvent;
use hookyard::v1::JobState;

use crate::{
    app::{parse_filter, App, Flash, Mode},
    forms::FormAction,
    net::Command,
    screens::{flows::StartRunForm, jobs, runs, EventState},
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
                } else if keys.resend.matches(key) {
                    if let Some(id) = view.id() {
                        let question = resend_question(id, view.target());
                        let detail = std::mem::take(&mut self.mode);
                        self.mode = Mode::Confirm {
                            question,
                            command: Box::new(Command::Resend(id)),
                            after: Some(Box::new(detail)),
                        };
                    }
                } else {
                    view.handle_key(keys, key);
                }
            }
            Mode::Jobs => {
                if keys.back.matches(key) || keys.quit.matches(key) || keys.jobs.matches(key) {
                    self.mode = Mode::Browse;
                } else if keys.reload.matches(key) {
                    self.commands.push(Command::LoadJobs);
                } else if keys.cancel_job.matches(key) {
                    match self.jobs.selected() {
                        Some(job) if job.state() == JobState::Running => {
                            self.flash = Some(Flash::Info(format!(
                                "cancelling job {} after the page it is on…",
                                jobs::short_id(&job.id)
                            )));
                            self.commands.push(Command::CancelJob(job.id.clone()));
                        }
                        Some(job) => {
                            self.flash = Some(Flash::Error(format!(
                                "job {} has already ended ({})",
                                jobs::short_id(&job.id),
                                jobs::state_name(job.state())
                            )));
                        }
                        None => {}
                    }
                } else {
                    self.jobs.move_selection(keys, key);
                }
            }
            Mode::Replay(replay) => match replay.form.handle_key(keys, key) {
                FormAction::None | FormAction::Reload => {}
                FormAction::Cancel => self.mode = Mode::Browse,
                FormAction::Save => {
                    if let Some(command) = replay.save_command(self.now) {
                        self.commands.push(command);
                    }
                }
            },
            Mode::Recover(recover) => match recover.form.handle_key(keys, key) {
                FormAction::None | FormAction::Reload => {}
                FormAction::Cancel => self.mode = Mode::Browse,
                FormAction::Save => {
                    if let Some(command) = recover.save_command(self.now) {
                        self.commands.push(command);
                    }
                }
            },
            Mode::Confirm { command, after, .. } => {
                let yes = keys.yes.matches(key);
                if yes || keys.back.matches(key) || keys.quit.matches(key) || is_no(key) {
                    if yes {
                        self.commands.push((**command).clone());
                    }
                    self.mode = after.take().map_or(Mode::Browse, |mode| *mode);
                }
            }
            Mode::ListFilter { input } => {
                if keys.back.matches(key) {
                    self.mode = Mode::Browse;
                } else if keys.open.matches(key) {
                    let text = input.value().trim().to_string();
                    self.mode = Mode::Browse;
                    self.set_list_filter(&text);
                    self.flash = Some(Flash::Info(if text.is_empty() {
                        "showing every row".to_string()
                    } else {
                        format!("showing rows containing “{text}” (/ then Enter on empty to clear)")
                    }));
                } else {
                    input.handle_key(key);
                }
            }
            Mode::RunFilter { input, error } => {
                if keys.back.matches(key) {
                    self.mode = Mode::Browse;
                } else if keys.open.matches(key) {
                    let text = input.value().trim().to_string();
                    match runs::parse_filter(&text) {
                        Ok(filter) => {
                            let commands = self.runs.set_filter(text, filter);
                            self.commands.extend(commands);
                            self.mode = Mode::Browse;
                        }
                        Err(e) => *error = Some(e),
                    }
                } else {
                    input.handle_key(key);
                    *error = None;
                }
            }
            Mode::RunDetail(view) => {
                if keys.back.matches(key) || keys.quit.matches(key) {
                    self.mode = Mode::Browse;
                } else if keys.cancel.matches(key) {
                    let id = view.id.clone();
                    let detail = std::mem::take(&mut self.mode);
                    self.mode = Mode::Confirm {
                        question: runs::cancel_question(&id),
                        command: Box::new(Command::CancelRun(id)),
                        after: Some(Box::new(detail)),
                    };
                } else if keys.reload.matches(key) {
                    self.commands.push(Command::LoadRun(view.id.clone()));
                } else {
                    view.handle_key(keys, key);
                }
            }
            Mode::FlowYaml(view) => {
                if keys.back.matches(key) || keys.quit.matches(key) {
                    self.mode = Mode::Browse;
                } else if keys.start.matches(key) {
                    let form = StartRunForm::new(&view.flow.id);
                    self.mode = Mode::StartRun(Box::new(form));
                } else {
                    view.handle_key(keys, key);
                }
            }
            Mode::StartRun(start) => match start.form.handle_key(keys, key) {
                FormAction::None | FormAction::Reload => {}
                FormAction::Cancel => self.mode = Mode::Browse,
                FormAction::Save => {
                    if let Some(command) = start.save_command() {
                        self.commands.push(command);
                    }
                }
            },
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

/// Resending sends the event to the receiver once more, even after it
/// succeeded: worth a question.
pub(crate) fn resend_question(id: u64, target: Option<String>) -> String {
    match target {
        Some(target) => format!("Send the event of delivery #{id} to {target} again?"),
        None => format!("Send the event of delivery #{id} again?"),
    }
}

fn is_no(key: &KeyEvent) -> bool {
    key.code == crossterm::event::KeyCode::Char('n')
}
