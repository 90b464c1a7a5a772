//! The whole UI state: which screen (`Tab`), which modal (`Mode`), the
//! connection, and each screen's data. `handle_key` and `apply` are plain
//! state changes: they never await; calls to the daemon leave as
//! [`Command`]s that the event loop hands to the runner. Modal keys live in
//! `modal.rs`, answers from the daemon in `update.rs`.

use crossterm::event::{KeyCode, KeyEvent};
use hookyard::v1::{DeliveryFilter, GetStatsResponse};

use crate::{
    forms::Form,
    keys::{self, KeyBindings},
    net::{Command, ConnState},
    screens::{
        dead::DeadScreen,
        detail::DetailView,
        endpoints::{EndpointForm, EndpointsScreen},
        event_types::EventTypesScreen,
        flows::{FlowYaml, FlowsScreen, StartRunForm},
        jobs::{JobsScreen, RecoverForm, ReplayForm},
        live::{self, LiveScreen},
        run_detail::RunView,
        runs::{self, RunsScreen},
        sources::{SourceForm, SourcesScreen},
        subscriptions::{SubscriptionForm, SubscriptionsScreen},
        Ctx, EventState,
    },
    widgets::input::TextInput,
};

/// At 20 ticks a second: every 5 s.
const STATS_EVERY_TICKS: u64 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Live,
    Subscriptions,
    Endpoints,
    Dead,
    Sources,
    Runs,
    Flows,
    EventTypes,
}

impl Tab {
    pub const ALL: [Tab; 8] = [
        Tab::Live,
        Tab::Subscriptions,
        Tab::Endpoints,
        Tab::Dead,
        Tab::Sources,
        Tab::Runs,
        Tab::Flows,
        Tab::EventTypes,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Live => "Live",
            Tab::Subscriptions => "Subscriptions",
            Tab::Endpoints => "Endpoints",
            Tab::Dead => "Dead letters",
            Tab::Sources => "Sources",
            Tab::Runs => "Runs",
            Tab::Flows => "Flows",
            Tab::EventTypes => "Event types",
        }
    }

    /// For terminals under 100 columns.
    pub fn short_title(self) -> &'static str {
        match self {
            Tab::Live => "Live",
            Tab::Subscriptions => "Subs",
            Tab::Endpoints => "Endpts",
            Tab::Dead => "Dead",
            Tab::Sources => "Sources",
            Tab::Runs => "Runs",
            Tab::Flows => "Flows",
            Tab::EventTypes => "Types",
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

    /// What loads this tab's data (Runs asks its screen, which knows the
    /// filter and whether its stream runs).
    fn load(self) -> Vec<Command> {
        match self {
            Tab::Live => vec![],
            Tab::Subscriptions => vec![Command::LoadSubscriptions, Command::LoadStats],
            Tab::Endpoints => vec![Command::LoadEndpoints, Command::LoadStats],
            Tab::Dead => vec![Command::LoadDead],
            Tab::Sources => vec![Command::LoadSources],
            Tab::Runs => vec![],
            Tab::Flows => vec![Command::LoadFlows],
            Tab::EventTypes => vec![Command::LoadEventTypes],
        }
    }

    /// Whether the tab shows numbers from `GetStats`.
    fn shows_stats(self) -> bool {
        matches!(self, Tab::Subscriptions | Tab::Endpoints)
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
    /// `y` runs the command; `after` is the mode to go back to (the run
    /// detail a cancel was asked from), drawn beneath the question.
    Confirm {
        question: String,
        command: Box<Command>,
        after: Option<Box<Mode>>,
    },
    /// Editing the `/` text filter of a list screen.
    ListFilter {
        input: TextInput,
    },
    /// Editing the Runs filter.
    RunFilter {
        input: TextInput,
        error: Option<String>,
    },
    RunDetail(Box<RunView>),
    FlowYaml(Box<FlowYaml>),
    StartRun(Box<StartRunForm>),
    SubscriptionForm(Box<SubscriptionForm>),
    TestRoute(Box<Form>),
    EndpointForm(Box<EndpointForm>),
    SourceForm(Box<SourceForm>),
    /// The jobs panel (`app.jobs`) over the screen.
    Jobs,
    Replay(Box<ReplayForm>),
    Recover(Box<RecoverForm>),
    /// Something shown once and never again: a new secret or token URL.
    Reveal {
        title: String,
        lines: Vec<String>,
    },
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
    pub subscriptions: SubscriptionsScreen,
    pub endpoints: EndpointsScreen,
    pub dead: DeadScreen,
    pub sources: SourcesScreen,
    pub runs: RunsScreen,
    pub flows: FlowsScreen,
    /// Replays and bulk retries, kept current while they run.
    pub jobs: JobsScreen,
    pub event_types: EventTypesScreen,
    /// `GetStats`, for the subscriptions' and endpoints' tables; a failure
    /// leaves those columns blank rather than hiding the table.
    pub stats: Option<GetStatsResponse>,
    pub flash: Option<Flash>,
    /// Where the daemon is, for the header.
    pub addr: String,
    /// Unix seconds, set by the event loop (tests set it by hand).
    pub now: u64,
    /// Render ticks, for spinners.
    pub tick: u64,
    pub(crate) quit: bool,
    pub(crate) commands: Vec<Command>,
}

impl App {
    pub fn new(addr: impl Into<String>) -> App {
        App {
            tab: Tab::Live,
            mode: Mode::Browse,
            conn: ConnState::Connecting,
            keys: KeyBindings::default(),
            live: LiveScreen::default(),
            subscriptions: SubscriptionsScreen::default(),
            endpoints: EndpointsScreen::default(),
            dead: DeadScreen::default(),
            sources: SourcesScreen::default(),
            runs: RunsScreen::default(),
            flows: FlowsScreen::default(),
            jobs: JobsScreen::default(),
            event_types: EventTypesScreen::default(),
            stats: None,
            flash: None,
            addr: addr.into(),
            now: 0,
            tick: 0,
            quit: false,
            // Subscriptions early, so `/ sub:<name>` resolves on Live;
            // endpoints, so the detail shows where a target points.
            commands: vec![
                Command::Watch(Default::default()),
                Command::LoadSubscriptions,
                Command::LoadEndpoints,
            ],
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
        let form_saving = match &self.mode {
            Mode::SubscriptionForm(f) => f.form.saving,
            Mode::EndpointForm(f) => f.form.saving,
            Mode::SourceForm(f) => f.form.saving,
            Mode::StartRun(f) => f.form.saving,
            Mode::Replay(f) => f.form.saving,
            Mode::Recover(f) => f.form.saving,
            Mode::Jobs => self.jobs.any_running(),
            Mode::Detail(d) => d.is_loading(),
            Mode::RunDetail(r) => r.is_loading(),
            _ => false,
        };
        let runs_waiting = self.tab == Tab::Runs
            && matches!(
                self.runs.conn,
                ConnState::Connecting | ConnState::Reconnecting { .. }
            );
        form_saving
            || runs_waiting
            || matches!(
                self.conn,
                ConnState::Connecting | ConnState::Reconnecting { .. }
            )
    }

    /// The `/` filter of the list on screen, when the tab is a list.
    pub(crate) fn list_filter(&self) -> Option<&str> {
        match self.tab {
            Tab::Endpoints => Some(&self.endpoints.list.filter),
            Tab::Subscriptions => Some(&self.subscriptions.list.filter),
            Tab::Sources => Some(&self.sources.list.filter),
            Tab::Flows => Some(&self.flows.list.filter),
            Tab::EventTypes => Some(&self.event_types.list.filter),
            Tab::Dead => Some(&self.dead.list.filter),
            Tab::Live | Tab::Runs => None,
        }
    }

    /// Sets the `/` filter of the list on screen.
    pub(crate) fn set_list_filter(&mut self, text: &str) {
        match self.tab {
            Tab::Endpoints => self.endpoints.list.set_filter(text),
            Tab::Subscriptions => self.subscriptions.list.set_filter(text),
            Tab::Sources => self.sources.list.set_filter(text),
            Tab::Flows => self.flows.list.set_filter(text),
            Tab::EventTypes => self.event_types.list.set_filter(text),
            Tab::Dead => self.dead.list.set_filter(text),
            Tab::Live | Tab::Runs => {}
        }
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
        } else if k.jobs.matches(&key) {
            self.open_jobs();
        } else if k.filter.matches(&key) && self.list_filter().is_some() {
            let current = self.list_filter().unwrap_or_default().to_string();
            self.mode = Mode::ListFilter {
                input: crate::widgets::input::TextInput::new(&current),
            };
        } else {
            let keys = self.keys.clone();
            let mut ctx = Ctx {
                keys: &keys,
                commands: &mut self.commands,
                next_mode: None,
                flash: None,
                live_filter: None,
            };
            match self.tab {
                Tab::Live => self.live.handle_key(&key, &mut ctx),
                Tab::Subscriptions => self.subscriptions.handle_key(&key, &mut ctx),
                Tab::Endpoints => self.endpoints.handle_key(&key, &mut ctx),
                Tab::Dead => self.dead.handle_key(&key, &mut ctx),
                Tab::Sources => self.sources.handle_key(&key, &mut ctx),
                Tab::Runs => self.runs.handle_key(&key, &mut ctx),
                Tab::Flows => self.flows.handle_key(&key, &mut ctx),
                Tab::EventTypes => self.event_types.handle_key(&key, &mut ctx),
            };
            let (next_mode, flash, live_filter) = (ctx.next_mode, ctx.flash, ctx.live_filter);
            if let Some(mode) = next_mode {
                self.mode = mode;
            }
            if flash.is_some() {
                self.flash = flash;
            }
            if let Some(text) = live_filter {
                self.watch(text);
            }
        }
    }

    /// Switching loads the tab's data afresh; what was there stays on screen
    /// until the answer comes.
    pub fn switch(&mut self, tab: Tab) {
        self.tab = tab;
        self.commands.extend(tab.load());
        if tab == Tab::Runs {
            self.commands.extend(self.runs.load());
        }
    }

    /// The jobs panel, read afresh.
    pub fn open_jobs(&mut self) {
        self.mode = Mode::Jobs;
        self.commands.push(Command::LoadJobs);
    }

    /// Shows Runs filtered by `text` (`flow:X state:waiting key:K`).
    pub fn filter_runs(&mut self, text: String) -> Result<(), String> {
        let filter = runs::parse_filter(&text)?;
        self.commands.extend(self.runs.set_filter(text, filter));
        Ok(())
    }

    /// Shows Live filtered by `text` (the `/` syntax).
    pub fn watch(&mut self, text: String) {
        match parse_filter(&self.subscriptions, &text) {
            Ok(filter) => {
                self.live.set_filter(text, filter.clone());
                self.commands.push(Command::Watch(filter));
                self.tab = Tab::Live;
            }
            Err(e) => self.flash = Some(Flash::Error(e)),
        }
    }

    /// Called on every render tick: time moves on, and the numbers on
    /// screen are refreshed every so often.
    pub fn on_tick(&mut self, now: u64) {
        self.now = now;
        self.tick += 1;
        if self.tick.rem_euclid(STATS_EVERY_TICKS) == 0
            && self.tab.shows_stats()
            && matches!(self.mode, Mode::Browse)
        {
            self.commands.push(Command::LoadStats);
        }
    }
}

/// The `/` syntax, with `sub:` taking a subscription's name as well as its
/// id (names are what people remember).
pub fn parse_filter(subs: &SubscriptionsScreen, text: &str) -> Result<DeliveryFilter, String> {
    let mut filter = live::parse_filter(text)?;
    if let Some(sub) = subs
        .list
        .loaded()
        .and_then(|subs| subs.iter().find(|s| s.name == filter.subscription_id))
    {
        filter.subscription_id = sub.id.clone();
    }
    Ok(filter)
}

fn digit_tab(key: &KeyEvent) -> Option<Tab> {
    match key.code {
        KeyCode::Char(c @ '1'..='9') if key.modifiers.is_empty() => {
            Tab::ALL.get(c as usize - '1' as usize).copied()
        }
        _ => None,
    }
}
