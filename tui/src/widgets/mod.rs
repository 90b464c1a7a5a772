//! Small pieces shared by the screens: formatting, status colours, the
//! spinner, a one-line text input and the "loading / failed / empty" body.

pub mod input;

use hookyard::v1::DeliveryStatus;
use prost_types::Timestamp;
use ratatui::{
    layout::{Alignment, Constraint, Flex, Layout, Rect},
    style::{Color, Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Clear, Paragraph, Wrap},
    Frame,
};

use crate::api::Remote;

const SPINNER: [&str; 4] = ["|", "/", "-", "\\"];

/// A spinner frame for the given tick.
pub fn spinner(tick: u64) -> &'static str {
    SPINNER[(tick % SPINNER.len() as u64) as usize]
}

/// `HH:MM:SS` in UTC; the daemon's clock, so rows from one daemon line up.
pub fn clock(ts: Option<&Timestamp>) -> String {
    match ts {
        Some(ts) if ts.seconds > 0 => {
            let secs = ts.seconds.rem_euclid(86_400);
            format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
        }
        _ => "--:--:--".to_string(),
    }
}

pub fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Unspecified => "?",
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::InFlight => "in flight",
        DeliveryStatus::Succeeded => "ok",
        DeliveryStatus::Failed => "failed",
        DeliveryStatus::Dead => "dead",
    }
}

pub fn status_style(status: DeliveryStatus) -> Style {
    let color = match status {
        DeliveryStatus::Unspecified | DeliveryStatus::Pending => Color::Gray,
        DeliveryStatus::InFlight => Color::Cyan,
        DeliveryStatus::Succeeded => Color::Green,
        DeliveryStatus::Failed => Color::Yellow,
        DeliveryStatus::Dead => Color::Red,
    };
    Style::default().fg(color)
}

pub fn header_style() -> Style {
    Style::default()
        .fg(Color::Yellow)
        .add_modifier(Modifier::BOLD)
}

pub fn selected_style() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

pub fn error_style() -> Style {
    Style::default().fg(Color::Red)
}

pub fn dim_style() -> Style {
    Style::default().fg(Color::DarkGray)
}

/// Shows "loading…", the failure, or `empty` when the list has nothing;
/// returns the list to draw when there is one.
pub fn remote_body<'a, T>(
    frame: &mut Frame,
    area: Rect,
    remote: &'a Remote<Vec<T>>,
    tick: u64,
    empty: &str,
) -> Option<&'a Vec<T>> {
    let message = match remote {
        Remote::Loading => Line::from(format!("{} loading…", spinner(tick))),
        Remote::Failed(error) => Line::styled(format!("✗ {error}  (R reloads)"), error_style()),
        Remote::Loaded(items) if items.is_empty() => Line::styled(empty.to_string(), dim_style()),
        Remote::Loaded(items) => return Some(items),
    };
    frame.render_widget(
        Paragraph::new(message)
            .alignment(Alignment::Center)
            .wrap(Wrap { trim: true }),
        centered(area, area.width, 3),
    );
    None
}

/// A box in the middle of `area`, at most `width` x `height`.
pub fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

/// Clears a centred box and draws a titled border; returns its inside.
pub fn popup(frame: &mut Frame, area: Rect, width: u16, height: u16, title: &str) -> Rect {
    let outer = centered(area, width, height);
    frame.render_widget(Clear, outer);
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {title} "))
        .border_style(Style::default().fg(Color::Cyan));
    let inner = block.inner(outer);
    frame.render_widget(block, outer);
    inner
}

/// Cuts `s` to `width` characters, marking the cut with `…`.
pub fn ellipsize(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Keeps a selection inside `0..len` after the list changed.
pub fn clamp(selected: usize, len: usize) -> usize {
    selected.min(len.saturating_sub(1))
}
