//! One module per screen. Each keeps its own state, draws itself and handles
//! the keys it knows, reporting whether it consumed them; what it needs from
//! the app (a call to the daemon, a modal, a message) goes through [`Ctx`].

pub mod dead;
pub mod detail;
pub mod endpoints;
pub mod event_types;
pub mod flows;
pub mod help;
pub mod jobs;
pub mod list;
pub mod live;
pub mod run_detail;
pub mod runs;
pub mod sources;
pub mod subscriptions;

use crossterm::event::KeyEvent;

use self::detail::DetailView;
use crate::{
    app::{Flash, Mode},
    keys::KeyBindings,
    net::Command,
    widgets::input::TextInput,
};

/// Whether a component used a key (gitui's `EventState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventState {
    Consumed,
    NotConsumed,
}

/// What a screen may ask of the app while it handles a key.
pub struct Ctx<'a> {
    pub keys: &'a KeyBindings,
    pub commands: &'a mut Vec<Command>,
    pub next_mode: Option<Mode>,
    pub flash: Option<Flash>,
    /// Switch to Live with this filter (the `/` syntax).
    pub live_filter: Option<String>,
}

impl Ctx<'_> {
    pub fn open_detail(&mut self, id: u64) {
        self.next_mode = Some(Mode::Detail(Box::new(DetailView::new(id))));
        self.commands.push(Command::LoadDetail(id));
    }

    /// Asks `question`; `y` runs `command`.
    pub fn confirm(&mut self, question: String, command: Command) {
        self.next_mode = Some(Mode::Confirm {
            question,
            command: Box::new(command),
            after: None,
        });
    }

    pub fn info(&mut self, text: String) {
        self.flash = Some(Flash::Info(text));
    }

    pub fn edit_filter(&mut self, current: &str) {
        self.next_mode = Some(Mode::Filter {
            input: TextInput::new(current),
            error: None,
        });
    }
}

/// Up/down/page/home/end over a list of `len` rows.
pub fn move_selection(
    keys: &KeyBindings,
    key: &KeyEvent,
    selected: &mut usize,
    len: usize,
) -> bool {
    const PAGE: usize = 10;
    let last = len.saturating_sub(1);
    if keys.up.matches(key) {
        *selected = selected.saturating_sub(1);
    } else if keys.down.matches(key) {
        *selected = (*selected + 1).min(last);
    } else if keys.page_up.matches(key) {
        *selected = selected.saturating_sub(PAGE);
    } else if keys.page_down.matches(key) {
        *selected = (*selected + PAGE).min(last);
    } else if keys.top.matches(key) {
        *selected = 0;
    } else if keys.bottom.matches(key) {
        *selected = last;
    } else {
        return false;
    }
    true
}
