//! Every key binding, in one place, with the words `?` shows for it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy)]
pub struct Binding {
    pub code: KeyCode,
    /// A second key doing the same (arrows and vi keys).
    pub alt: Option<KeyCode>,
    pub label: &'static str,
    pub action: &'static str,
}

impl Binding {
    const fn new(code: KeyCode, label: &'static str, action: &'static str) -> Binding {
        Binding {
            code,
            alt: None,
            label,
            action,
        }
    }

    const fn or(mut self, alt: KeyCode) -> Binding {
        self.alt = Some(alt);
        self
    }

    /// Ctrl chords never match a plain binding, so Ctrl-C is not `c`.
    pub fn matches(&self, key: &KeyEvent) -> bool {
        if key.modifiers.contains(KeyModifiers::CONTROL)
            || key.modifiers.contains(KeyModifiers::ALT)
        {
            return false;
        }
        key.code == self.code || Some(key.code) == self.alt
    }
}

#[derive(Debug, Clone)]
pub struct KeyBindings {
    pub quit: Binding,
    pub help: Binding,
    pub next_tab: Binding,
    pub prev_tab: Binding,
    pub up: Binding,
    pub down: Binding,
    pub page_up: Binding,
    pub page_down: Binding,
    pub top: Binding,
    pub bottom: Binding,
    pub open: Binding,
    pub back: Binding,
    pub pause: Binding,
    pub filter: Binding,
    pub retry: Binding,
    pub new: Binding,
    pub edit: Binding,
    pub delete: Binding,
    pub toggle: Binding,
    pub select: Binding,
    pub test: Binding,
    pub reload: Binding,
    pub rotate: Binding,
    pub suspend: Binding,
    pub yes: Binding,
    pub live: Binding,
    pub select_all: Binding,
    pub next_field: Binding,
    pub prev_field: Binding,
    pub save: Binding,
    pub cancel: Binding,
    pub view: Binding,
    pub start: Binding,
    pub rotate_secret: Binding,
    pub send_test: Binding,
    pub recover: Binding,
    pub resend: Binding,
    pub retry_dead: Binding,
    pub retry_dead_all: Binding,
    pub replay: Binding,
    pub jobs: Binding,
    pub cancel_job: Binding,
}

impl Default for KeyBindings {
    fn default() -> KeyBindings {
        use KeyCode::{BackTab, Char, Down, End, Enter, Esc, Home, PageDown, PageUp, Tab, Up};
        KeyBindings {
            quit: Binding::new(Char('q'), "q", "quit"),
            help: Binding::new(Char('?'), "?", "show every key"),
            next_tab: Binding::new(Tab, "Tab", "next screen"),
            prev_tab: Binding::new(BackTab, "S-Tab", "previous screen"),
            up: Binding::new(Up, "↑/k", "move up").or(Char('k')),
            down: Binding::new(Down, "↓/j", "move down").or(Char('j')),
            page_up: Binding::new(PageUp, "PgUp", "page up"),
            page_down: Binding::new(PageDown, "PgDn", "page down"),
            top: Binding::new(Home, "Home/g", "first row").or(Char('g')),
            bottom: Binding::new(End, "End/G", "last row").or(Char('G')),
            open: Binding::new(Enter, "Enter", "open the delivery"),
            back: Binding::new(Esc, "Esc", "close / back"),
            pause: Binding::new(Char(' '), "space", "pause / resume the stream"),
            filter: Binding::new(
                Char('/'),
                "/",
                "filter: lead.* status:dead endpoint:X sub:name",
            ),
            retry: Binding::new(Char('r'), "r", "retry now"),
            new: Binding::new(Char('n'), "n", "new"),
            edit: Binding::new(Char('e'), "e", "edit"),
            delete: Binding::new(Char('d'), "d", "delete (asks first)"),
            toggle: Binding::new(Char(' '), "space", "enable / disable"),
            select: Binding::new(Char(' '), "space", "select / unselect"),
            test: Binding::new(Char('t'), "t", "test routing"),
            reload: Binding::new(Char('R'), "R", "reload"),
            rotate: Binding::new(Char('r'), "r", "rotate the token"),
            suspend: Binding::new(Char('s'), "s", "suspend / resume"),
            yes: Binding::new(Char('y'), "y", "confirm"),
            live: Binding::new(Char('l'), "l", "its deliveries on Live"),
            select_all: Binding::new(Char('a'), "a", "select all / none"),
            next_field: Binding::new(Tab, "Tab/↓", "next field").or(Down),
            prev_field: Binding::new(BackTab, "S-Tab/↑", "previous field").or(Up),
            save: Binding::new(Enter, "Enter", "save"),
            cancel: Binding::new(Char('c'), "c", "cancel the run (asks first)"),
            view: Binding::new(Char('v'), "Enter/v", "view the definition (YAML)"),
            start: Binding::new(Char('r'), "r", "start a run with JSON inputs"),
            rotate_secret: Binding::new(Char('r'), "r", "rotate the signing secret (asks first)"),
            send_test: Binding::new(Char('t'), "t", "send a test event, show the answer"),
            recover: Binding::new(Char('u'), "u", "re-queue failed/dead deliveries since…"),
            resend: Binding::new(Char('s'), "s", "resend: a new delivery (asks first)"),
            retry_dead: Binding::new(
                Char('b'),
                "b",
                "bulk retry: all dead of its endpoint (asks)",
            ),
            retry_dead_all: Binding::new(
                Char('B'),
                "B",
                "bulk retry: all dead of every endpoint (asks)",
            ),
            replay: Binding::new(Char('p'), "p", "replay events since… (a job)"),
            jobs: Binding::new(Char('J'), "J", "jobs: replays and bulk retries, progress"),
            cancel_job: Binding::new(Char('c'), "c", "cancel the selected job"),
        }
    }
}

/// Ctrl-C quits from anywhere, whatever the mode.
pub fn is_interrupt(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c')
}

/// Ctrl-R: reload inside a form.
pub fn is_ctrl(key: &KeyEvent, c: char) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
}
