//! The whole UI state: which screen (`Tab`), which modal (`Mode`), the
//! connection, and each screen's data. `handle_key` and `apply` are plain
//! state changes: they never await; calls to the daemon leave as
//! [`Command`]s that the event loop hands to the runner.

use crossterm::event::KeyEvent;

use crate::{
    keys::{self, KeyBindings},
    net::{Command, ConnState, Update},
    screens::{
        detail::DetailView,
        live::{self, LiveScreen},
        Ctx, EventState,
    },
    widgets::input::TextInput,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Live,
}

impl Tab {
    pub const ALL: [Tab; 1] = [Tab::Live];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Live => "Live",
        }
    }

    fn index(self) -> usize {
        Tab::ALL.iter().position(|t| *t == self).unwrap_or(0)
    }

    fn next(self) -> Tab {
        Tab::ALL[(self.index() + 1) % Tab::ALL.len()]
    }

    fn prev(self) -> Tab {
        Tab::ALL[(self.index() + Tab::ALL.len() - 1) % Tab::ALL.len()]
    }
}

/// The modal on top of the current tab, if any. Keys go to it first.
#[derive(Debug, Default)]
pub enum Mode {
    #[default]
    Browse,
    Help,
    /// Editing the live filter.
    Filter {
        input: TextInput,
        error: Option<String>,
    },
    Detail(Box<DetailView>),
}

/// A one-line message in the footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flash {
    Info(String),
    Error(String),
}

pub struct App {
    pub tab: Tab,
    pub mode: Mode,
    pub conn: ConnState,
    pub keys: KeyBindings,
    pub live: LiveScreen,
    pub flash: Option<Flash>,
    /// Where the daemon is, for the header.
    pub addr: String,
    /// Unix seconds, set by the event loop (tests set it by hand).
    pub now: u64,
    /// Render ticks, for spinners.
    pub tick: u64,
    quit: bool,
    commands: Vec<Command>,
}

impl App {
    pub fn new(addr: impl Into<String>) -> App {
        App {
            tab: Tab::Live,
            mode: Mode::Browse,
            conn: ConnState::Connecting,
            keys: KeyBindings::default(),
            live: LiveScreen::default(),
            flash: None,
            addr: addr.into(),
            now: 0,
            tick: 0,
            quit: false,
            commands: vec![Command::Watch(Default::default())],
        }
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// The calls to the daemon asked for since the last time.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Whether something on screen animates (a spinner), so the loop
    /// redraws even without news.
    pub fn animating(&self) -> bool {
        matches!(
            self.conn,
            ConnState::Connecting | ConnState::Reconnecting { .. }
        ) || matches!(&self.mode, Mode::Detail(d) if d.is_loading())
    }

    pub fn handle_key(&mut self, key: KeyEvent) {
        if keys::is_interrupt(&key) {
            self.quit = true;
            return;
        }
        if self.handle_mode_key(&key) == EventState::Consumed {
            return;
        }
        self.flash = None;
        let k = &self.keys;
        if k.quit.matches(&key) {
            self.quit = true;
        } else if k.help.matches(&key) {
            self.mode = Mode::Help;
        } else if k.next_tab.matches(&key) {
            self.switch(self.tab.next());
        } else if k.prev_tab.matches(&key) {
            self.switch(self.tab.prev());
        } else if let Some(tab) = digit_tab(&key) {
            self.switch(tab);
        } else {
            let keys = self.keys.clone();
            let mut ctx = Ctx {
                keys: &keys,
                commands: &mut self.commands,
                next_mode: None,
                flash: None,
            };
            match self.tab {
                Tab::Live => self.live.handle_key(&key, &mut ctx),
            };
            let (next_mode, flash) = (ctx.next_mode, ctx.flash);
            if let Some(mode) = next_mode {
                self.mode = mode;
            }
            if flash.is_some() {
                self.flash = flash;
            }
        }
    }

    fn switch(&mut self, tab: Tab) {
        self.tab = tab;
    }

    /// Keys for the modal; `NotConsumed` lets them reach the tab.
    fn handle_mode_key(&mut self, key: &KeyEvent) -> EventState {
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
                    match live::parse_filter(&text) {
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
        }
        EventState::Consumed
    }

    /// Applies one answer from the daemon.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Conn(state) => {
                if state == ConnState::Live && self.conn != ConnState::Live {
                    self.on_reconnect();
                }
                self.conn = state;
            }
            Update::Delivery(update) => self.live.apply(self.now, update),
            Update::Detail(id, result) => {
                if let Mode::Detail(view) = &mut self.mode {
                    view.loaded(id, result);
                }
            }
            Update::Retried { ok, errors } => {
                self.flash = Some(if errors.is_empty() {
                    Flash::Info(format!("{ok} delivery(ies) scheduled for a retry now"))
                } else {
                    Flash::Error(format!("retried {ok}; failed: {}", errors.join("; ")))
                });
            }
            _ => {}
        }
    }

    /// After the daemon came back, screens whose load failed try again.
    fn on_reconnect(&mut self) {}
}

fn digit_tab(key: &KeyEvent) -> Option<Tab> {
    match key.code {
        crossterm::event::KeyCode::Char(c @ '1'..='9') if key.modifiers.is_empty() => {
            Tab::ALL.get(c as usize - '1' as usize).copied()
        }
        _ => None,
    }
}
