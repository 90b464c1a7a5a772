//! Draws the app: a tab bar with the connection state, the current screen
//! (or the delivery detail), modals on top, and a footer with the message of
//! the moment or the keys that matter here.

use ratatui::{
    layout::{Constraint, Layout, Position, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Paragraph, Wrap},
    Frame,
};

use crate::{
    app::{App, Flash, Mode, Tab},
    net::ConnState,
    screens::{help, subscriptions},
    widgets::{self, dim_style, error_style},
};

pub fn render(app: &App, frame: &mut Frame) {
    let [top, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    render_top(app, frame, top);
    match &app.mode {
        Mode::Detail(view) => {
            let endpoints = app.endpoints.list.loaded().map_or(&[][..], Vec::as_slice);
            view.render(frame, body, app.tick, endpoints)
        }
        Mode::TestRoute(form) => subscriptions::render_route_test(frame, body, form, app),
        Mode::RunDetail(view) => view.render(frame, body, app.tick),
        Mode::Confirm {
            after: Some(after), ..
        } if matches!(**after, Mode::RunDetail(_) | Mode::Detail(_)) => match &**after {
            Mode::RunDetail(view) => view.render(frame, body, app.tick),
            Mode::Detail(view) => {
                let endpoints = app.endpoints.list.loaded().map_or(&[][..], Vec::as_slice);
                view.render(frame, body, app.tick, endpoints)
            }
            _ => {}
        },
        Mode::FlowYaml(view) => view.render(frame, body),
        _ => render_tab(app, frame, body),
    }
    render_footer(app, frame, footer);
    match &app.mode {
        Mode::Help => help::render(frame, body, &app.keys, app.tab),
        Mode::SubscriptionForm(f) => f.form.render(frame, body, app.tick),
        Mode::EndpointForm(f) => f.form.render(frame, body, app.tick),
        Mode::SourceForm(f) => f.form.render(frame, body, app.tick),
        Mode::StartRun(f) => f.form.render(frame, body, app.tick),
        Mode::Replay(f) => f.form.render(frame, body, app.tick),
        Mode::Recover(f) => f.form.render(frame, body, app.tick),
        Mode::Jobs => app.jobs.render(frame, body, app.tick),
        Mode::Confirm { question, .. } => {
            let lines = vec![
                Line::from(question.clone()),
                Line::default(),
                Line::styled("y confirms · n or Esc cancels", dim_style()),
            ];
            let width = (question.chars().count() as u16 + 4).max(34);
            let inner = widgets::popup(frame, body, width, 5, "Confirm");
            frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
        }
        Mode::Reveal { title, lines } => {
            let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u16 + 4;
            let mut text: Vec<Line> = lines.iter().map(|l| Line::from(l.clone())).collect();
            text.push(Line::styled("Enter or Esc closes", dim_style()));
            let height = text.len() as u16 + 2;
            let inner = widgets::popup(frame, body, width.max(40), height, title);
            frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), inner);
        }
        _ => {}
    }
}

fn render_tab(app: &App, frame: &mut Frame, area: Rect) {
    match app.tab {
        Tab::Live => app
            .live
            .render(frame, area, &app.live.stats.summary(app.now)),
        Tab::Subscriptions => app
            .subscriptions
            .render(frame, area, app.tick, app.stats.as_ref()),
        Tab::Endpoints => app.endpoints.render(
            frame,
            area,
            app.tick,
            app.stats.as_ref(),
            &app.live.in_flight_by_target(),
        ),
        Tab::Dead => app.dead.render(frame, area, app.tick),
        Tab::Sources => app.sources.render(frame, area, app.tick),
        Tab::Runs => app.runs.render(frame, area, app.tick),
        Tab::Flows => app.flows.render(frame, area, app.tick),
        Tab::EventTypes => app.event_types.render(frame, area, app.tick),
    }
}

fn render_top(app: &App, frame: &mut Frame, area: Rect) {
    // Full titles and the address when both fit, then short titles, then
    // short titles without the address.
    let full = tab_line(app, false);
    let with_addr = conn_line(app, false);
    let (tabs, conn) = if full.width() + with_addr.width() <= area.width as usize {
        (full, with_addr)
    } else {
        let short = tab_line(app, true);
        if short.width() + with_addr.width() <= area.width as usize {
            (short, with_addr)
        } else {
            (short, conn_line(app, true))
        }
    };
    let width = conn.width() as u16;
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(width)]).areas(area);
    frame.render_widget(Paragraph::new(tabs), left);
    frame.render_widget(Paragraph::new(conn), right);
}

fn tab_line(app: &App, short: bool) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let title = if short {
            tab.short_title()
        } else {
            tab.title()
        };
        let label = format!(" {} {} ", i + 1, title);
        let style = if *tab == app.tab {
            Style::default()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        spans.push(Span::styled(label, style));
    }
    Line::from(spans)
}

fn conn_line(app: &App, narrow: bool) -> Line<'static> {
    let spinner = widgets::spinner(app.tick);
    let addr = if narrow { "" } else { app.addr.as_str() };
    match &app.conn {
        ConnState::Connecting => Line::from(format!("{spinner} connecting {addr}")),
        ConnState::Live => Line::from(vec![
            Span::styled("● ", Style::default().fg(Color::Green)),
            Span::raw(format!("live {addr}")),
        ]),
        // The reason goes in the footer, where there is room for it.
        ConnState::Reconnecting { attempt, .. } => Line::styled(
            format!("{spinner} reconnecting… (try {attempt})"),
            Style::default().fg(Color::Yellow),
        ),
        // The reason goes in the footer.
        ConnState::Refused(_) => Line::styled("✗ not watching", error_style()),
    }
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    let filtering = match &app.mode {
        Mode::Filter { input, error } => Some(("filter / ", input, error)),
        Mode::ListFilter { input } => Some(("find / ", input, &None)),
        Mode::RunFilter { input, error } => Some(("runs / ", input, error)),
        _ => None,
    };
    if let Some((prompt, input, error)) = filtering {
        let mut spans = vec![
            Span::styled(prompt, Style::default().fg(Color::Cyan)),
            Span::raw(input.value().to_string()),
        ];
        if let Some(error) = error {
            spans.push(Span::styled(format!("  ✗ {error}"), error_style()));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
        let x = area.x + (prompt.len() + input.cursor()) as u16;
        frame.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
        return;
    }
    let line = match &app.flash {
        Some(Flash::Info(text)) => Line::styled(text.clone(), Style::default().fg(Color::Green)),
        Some(Flash::Error(text)) => Line::styled(format!("✗ {text}"), error_style()),
        None => match &app.conn {
            ConnState::Reconnecting { error, .. } => Line::styled(
                format!("✗ {error}; retrying with backoff"),
                Style::default().fg(Color::Yellow),
            ),
            ConnState::Refused(error) => Line::styled(format!("✗ {error}"), error_style()),
            _ => Line::styled(hints(app), dim_style()),
        },
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn hints(app: &App) -> String {
    let hints: &[&str] = match (&app.mode, app.tab) {
        (Mode::Detail(_), _) => &["r retry", "s resend", "↑↓ scroll", "Esc back"],
        (Mode::Jobs, _) => &["c cancel job", "R reload", "↑↓ move", "Esc close"],
        (Mode::Help, _) => &["Esc close"],
        (Mode::TestRoute(_), _) => &["Enter test", "Tab next field", "Esc close"],
        (Mode::Browse, Tab::Live) => &[
            "space pause",
            "/ filter",
            "Enter detail",
            "? keys",
            "q quit",
        ],
        (Mode::Browse, Tab::Subscriptions) => &[
            "n new",
            "e edit",
            "d delete",
            "space on/off",
            "t test",
            "l live",
            "p replay",
            "? keys",
        ],
        (Mode::Browse, Tab::Endpoints) => &[
            "n new",
            "e edit",
            "d delete",
            "space on/off",
            "r rotate",
            "t test",
            "u recover",
            "? keys",
        ],
        (Mode::Browse, Tab::Dead) => &[
            "space mark",
            "a all",
            "r retry",
            "b/B retry all",
            "s resend",
            "Enter detail",
            "? keys",
        ],
        (Mode::Browse, Tab::Sources) => &["n new", "r rotate", "s suspend", "d delete", "? keys"],
        (Mode::RunDetail(_), _) => &["c cancel", "R reload", "↑↓ scroll", "Esc back"],
        (Mode::FlowYaml(_), _) => &["r start a run", "↑↓ scroll", "Esc back"],
        (Mode::RunFilter { .. }, _) => &["Enter apply", "Esc close"],
        (Mode::Browse, Tab::Runs) => {
            &["/ filter", "Enter detail", "c cancel", "R reload", "? keys"]
        }
        (Mode::Browse, Tab::Flows) => &["Enter/v YAML", "r start a run", "R reload", "? keys"],
        (Mode::Browse, Tab::EventTypes) => &["/ filter", "d delete", "R reload", "? keys"],
        _ => &[],
    };
    hints.join("  ")
}

/// Whether colours are off: `NO_COLOR` set to anything but empty
/// (<https://no-color.org>).
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// Removes every colour from a drawn frame, for `NO_COLOR`. What a
/// background colour marked (the selected row, the tab in use) is shown
/// reversed instead, so it stays visible without colour.
pub fn strip_colors(buffer: &mut ratatui::buffer::Buffer) {
    for cell in buffer.content.iter_mut() {
        if cell.bg != Color::Reset {
            cell.modifier.insert(ratatui::style::Modifier::REVERSED);
        }
        cell.fg = Color::Reset;
        cell.bg = Color::Reset;
    }
}
