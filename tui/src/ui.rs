//! Draws the app: a tab bar with the connection state, the current screen
//! (or the delivery detail), modals on top, and a footer with the message of
//! the moment or the keys that matter here.

use ratatui::{
    layout::{Constraint, Layout, Position, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use crate::{
    app::{App, Flash, Mode, Tab},
    net::ConnState,
    screens::help,
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
        Mode::Detail(view) => view.render(frame, body, app.tick),
        _ => render_tab(app, frame, body),
    }
    render_footer(app, frame, footer);
    if let Mode::Help = app.mode {
        help::render(frame, body, &app.keys);
    }
}

fn render_tab(app: &App, frame: &mut Frame, area: Rect) {
    match app.tab {
        Tab::Live => app
            .live
            .render(frame, area, &app.live.stats.summary(app.now)),
    }
}

fn render_top(app: &App, frame: &mut Frame, area: Rect) {
    let mut spans = Vec::new();
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, tab.title());
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
    let tabs = Line::from(spans);
    let conn = conn_line(app);
    let width = conn.width() as u16;
    let [left, right] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(width)]).areas(area);
    frame.render_widget(Paragraph::new(tabs), left);
    frame.render_widget(Paragraph::new(conn), right);
}

fn conn_line(app: &App) -> Line<'static> {
    let spinner = widgets::spinner(app.tick);
    match &app.conn {
        ConnState::Connecting => Line::from(format!("{spinner} connecting to {}", app.addr)),
        ConnState::Live => Line::from(vec![
            Span::styled("● ", Style::default().fg(Color::Green)),
            Span::raw(format!("live {}", app.addr)),
        ]),
        ConnState::Reconnecting { attempt, error } => Line::styled(
            format!("{spinner} reconnecting… (try {attempt}: {error})"),
            Style::default().fg(Color::Yellow),
        ),
        ConnState::Refused(error) => Line::styled(format!("✗ {error}"), error_style()),
    }
}

fn render_footer(app: &App, frame: &mut Frame, area: Rect) {
    if let Mode::Filter { input, error } = &app.mode {
        let prompt = "filter / ";
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
        None => Line::styled(hints(app), dim_style()),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn hints(app: &App) -> String {
    let hints: &[&str] = match (&app.mode, app.tab) {
        (Mode::Detail(_), _) => &["r retry", "↑↓ scroll", "Esc back"],
        (Mode::Help, _) => &["Esc close"],
        (_, Tab::Live) => &[
            "space pause",
            "/ filter",
            "Enter detail",
            "? keys",
            "q quit",
        ],
    };
    hints.join("  ")
}
