//! `?`: every key that works on the current screen, generated from the
//! bindings, grouped so it fits an 80x24 terminal.

use ratatui::{
    layout::Rect,
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use crate::{
    app::Tab,
    keys::{Binding, KeyBindings},
    widgets::{header_style, popup},
};

type Group = (&'static str, Vec<(String, &'static str)>);

fn keys(bindings: &[Binding]) -> Vec<(String, &'static str)> {
    bindings
        .iter()
        .map(|b| (b.label.to_string(), b.action))
        .collect()
}

fn groups(k: &KeyBindings, tab: Tab) -> Vec<Group> {
    let everywhere = vec![
        (
            format!(
                "{}/{}/1-{}",
                k.next_tab.label,
                k.prev_tab.label,
                Tab::ALL.len()
            ),
            "switch screens",
        ),
        (
            format!("{} {}", k.help.label, k.back.label),
            "show every key / close, back",
        ),
        (k.quit.label.to_string(), "quit (Ctrl-C: from anywhere)"),
        (k.jobs.label.to_string(), k.jobs.action),
    ];
    let lists = ("↑↓ jk PgUp PgDn g G".to_string(), "move through the list");
    let detail: Group = (
        "Delivery detail",
        vec![
            (k.retry.label.to_string(), k.retry.action),
            (k.resend.label.to_string(), k.resend.action),
            ("↑↓ PgUp PgDn".to_string(), "scroll"),
        ],
    );
    let forms: Group = (
        "Forms",
        vec![
            (
                format!("{} {}", k.next_field.label, k.prev_field.label),
                "next / previous field",
            ),
            (k.save.label.to_string(), "save (Ctrl-S too)"),
            (
                k.toggle.label.to_string(),
                "flip a yes/no field, cycle a choice",
            ),
            ("Ctrl-R".to_string(), "reload after someone else's change"),
        ],
    );
    let mut out: Vec<Group> = vec![("Everywhere", everywhere)];
    let (title, mut screen) = match tab {
        Tab::Live => ("Live", keys(&[k.pause, k.filter, k.open, k.retry])),
        Tab::Subscriptions => {
            let mut subs = vec![new_edit_delete(k)];
            subs.extend(keys(&[k.toggle, k.test, k.live, k.replay, k.reload]));
            ("Subscriptions", subs)
        }
        Tab::Endpoints => {
            let mut endpoints = vec![new_edit_delete(k)];
            endpoints.extend(keys(&[
                k.toggle,
                k.rotate_secret,
                k.send_test,
                k.recover,
                k.replay,
                k.live,
                k.reload,
            ]));
            ("Endpoints", endpoints)
        }
        Tab::Dead => (
            "Dead letters",
            keys(&[
                k.select,
                k.select_all,
                k.retry,
                k.retry_dead,
                k.retry_dead_all,
                k.resend,
                k.open,
                k.reload,
            ]),
        ),
        Tab::Sources => (
            "Sources",
            keys(&[k.new, k.rotate, k.suspend, k.delete, k.reload]),
        ),
        Tab::Runs => {
            let mut runs = vec![(
                k.filter.label.to_string(),
                "filter: flow:X state:waiting key:K",
            )];
            runs.extend(keys(&[k.cancel, k.reload]));
            runs.push((k.open.label.to_string(), "open the run"));
            ("Runs", runs)
        }
        Tab::Flows => ("Flows", keys(&[k.view, k.start, k.reload])),
        Tab::EventTypes => ("Event types", keys(&[k.delete, k.reload])),
    };
    screen.push(lists);
    out.push((title, screen));
    match tab {
        Tab::Live | Tab::Dead => out.push(detail),
        Tab::Subscriptions | Tab::Endpoints | Tab::Sources => out.push(forms),
        Tab::Runs => out.push((
            "Run detail",
            vec![
                (k.cancel.label.to_string(), k.cancel.action),
                (k.reload.label.to_string(), k.reload.action),
                ("↑↓ PgUp PgDn".to_string(), "scroll"),
            ],
        )),
        Tab::Flows => out.push((
            "Definition and the start form",
            vec![
                ("↑↓ PgUp PgDn g G".to_string(), "scroll the YAML"),
                (k.next_field.label.to_string(), k.next_field.action),
                (k.save.label.to_string(), "start the run"),
            ],
        )),
        // Written in the config file or with `hookyard ctl event-types`.
        Tab::EventTypes => {}
    }
    out
}

/// One line for three keys every editable list has, so the help fits 80x24.
fn new_edit_delete(k: &KeyBindings) -> (String, &'static str) {
    (
        format!("{} {} {}", k.new.label, k.edit.label, k.delete.label),
        "new / edit / delete (asks first)",
    )
}

pub fn render(frame: &mut Frame, area: Rect, keys: &KeyBindings, tab: Tab) {
    let mut lines = Vec::new();
    for (title, entries) in groups(keys, tab) {
        lines.push(Line::styled(title, header_style()));
        for (label, action) in entries {
            lines.push(Line::from(vec![
                Span::raw(format!("  {label:<20}")),
                Span::raw(action),
            ]));
        }
    }
    let height = (lines.len() as u16 + 2).min(area.height);
    let inner = popup(frame, area, 70, height, "Keys (Esc closes)");
    frame.render_widget(Paragraph::new(lines), inner);
}
