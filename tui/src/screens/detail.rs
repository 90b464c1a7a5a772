//! Delivery detail: the event (pretty JSON payload, attributes), its route,
//! and every attempt with the request headers (secrets redacted), response
//! status, body excerpt, duration and error; its ordering key and whether it
//! is parked behind an earlier delivery with that key. Scrolls; `r` retries
//! now, `s` resends.

use crossterm::event::KeyEvent;
use hookyard::v1::{Attempt, DeliveryDetail, Endpoint};
use ratatui::{
    layout::Rect,
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Paragraph, Wrap},
    Frame,
};

use crate::{
    api::{ApiResult, Remote},
    keys::KeyBindings,
    widgets::{self, dim_style, error_style, header_style, status_name, status_style},
};

#[derive(Debug)]
pub struct DetailView {
    id: u64,
    pub data: Remote<DeliveryDetail>,
    scroll: u16,
}

impl DetailView {
    pub fn new(id: u64) -> DetailView {
        DetailView {
            id,
            data: Remote::Loading,
            scroll: 0,
        }
    }

    pub fn id(&self) -> Option<u64> {
        Some(self.id)
    }

    /// Where the delivery goes, once loaded.
    pub fn target(&self) -> Option<String> {
        self.data
            .loaded()
            .and_then(|d| d.delivery.as_ref())
            .map(|d| d.target.clone())
    }

    pub fn is_loading(&self) -> bool {
        matches!(self.data, Remote::Loading)
    }

    pub fn loaded(&mut self, id: u64, result: ApiResult<DeliveryDetail>) {
        if id == self.id {
            self.data = Remote::from_result(result);
        }
    }

    pub fn handle_key(&mut self, keys: &KeyBindings, key: &KeyEvent) {
        if keys.up.matches(key) {
            self.scroll = self.scroll.saturating_sub(1);
        } else if keys.down.matches(key) {
            self.scroll = self.scroll.saturating_add(1);
        } else if keys.page_up.matches(key) {
            self.scroll = self.scroll.saturating_sub(10);
        } else if keys.page_down.matches(key) {
            self.scroll = self.scroll.saturating_add(10);
        } else if keys.top.matches(key) {
            self.scroll = 0;
        }
    }

    /// `endpoints`, when loaded, tell where the target points.
    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64, endpoints: &[Endpoint]) {
        let lines = match &self.data {
            Remote::Loading => vec![Line::from(format!(
                "{} loading delivery #{}…",
                widgets::spinner(tick),
                self.id
            ))],
            Remote::Failed(e) => vec![Line::styled(
                format!("✗ delivery #{}: {e}", self.id),
                error_style(),
            )],
            Remote::Loaded(detail) => detail_lines(detail, endpoints),
        };
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .scroll((self.scroll, 0)),
            area,
        );
    }
}

fn section(title: &str) -> Line<'static> {
    Line::styled(title.to_string(), header_style())
}

fn field(name: &str, value: String) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<13}"), dim_style()),
        Span::raw(value),
    ])
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn detail_lines(detail: &DeliveryDetail, endpoints: &[Endpoint]) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let delivery = detail.delivery.clone().unwrap_or_default();
    let status = delivery.status();
    lines.push(Line::from(vec![
        Span::styled(
            format!("Delivery #{} ", delivery.id),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::styled(status_name(status), status_style(status)),
        Span::raw(format!("  after {} attempt(s)", delivery.attempts)),
    ]));
    if delivery.parked {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<13}", "parked"), dim_style()),
            Span::styled(
                "waits for an earlier delivery with the same key",
                Style::default().fg(ratatui::style::Color::Yellow),
            ),
        ]));
    } else if delivery.next_attempt_at.is_some() {
        lines.push(field(
            "next attempt",
            widgets::clock(delivery.next_attempt_at.as_ref()),
        ));
    }
    lines.push(field(
        "subscription",
        format!(
            "{} ({})",
            or_dash(&delivery.subscription_name),
            delivery.subscription_id
        ),
    ));
    if !delivery.also_subscription_ids.is_empty() {
        lines.push(field("also for", delivery.also_subscription_ids.join(", ")));
    }
    if !delivery.ordering_key.is_empty() {
        lines.push(field("ordering key", delivery.ordering_key.clone()));
    }
    let url = delivery
        .target
        .strip_prefix("endpoint:")
        .and_then(|id| endpoints.iter().find(|e| e.id == id))
        .map(|e| format!(" → {}", e.url))
        .unwrap_or_default();
    lines.push(field("target", format!("{}{url}", delivery.target)));
    if !delivery.last_error.is_empty() {
        lines.push(Line::from(vec![
            Span::styled(format!("{:<13}", "last error"), dim_style()),
            Span::styled(delivery.last_error.clone(), error_style()),
        ]));
    }
    lines.push(Line::default());
    lines.push(section("Event"));
    if let Some(event) = &detail.event {
        lines.push(field("name", event.name.clone()));
        lines.push(field("id", event.id.clone()));
        lines.push(field("seq", event.seq.to_string()));
        lines.push(field("tenant", or_dash(&event.tenant_id)));
        lines.push(field("source", or_dash(&event.source)));
        lines.push(field("time", widgets::clock(event.time.as_ref())));
        let mut attributes: Vec<_> = event.attributes.iter().collect();
        attributes.sort();
        for (k, v) in attributes {
            lines.push(field("attribute", format!("{k} = {v}")));
        }
        lines.push(Line::styled("payload", dim_style()));
        for line in pretty_json(&event.payload).lines() {
            lines.push(Line::raw(format!("  {line}")));
        }
    } else {
        lines.push(Line::styled(
            "  (the event is not stored any more)",
            dim_style(),
        ));
    }
    lines.push(Line::default());
    lines.push(section(&format!("Attempts ({})", detail.attempts.len())));
    if detail.attempts.is_empty() {
        lines.push(Line::styled("  none yet", dim_style()));
    }
    for attempt in &detail.attempts {
        attempt_lines(attempt, &mut lines);
    }
    lines
}

fn attempt_lines(attempt: &Attempt, lines: &mut Vec<Line<'static>>) {
    let outcome = if attempt.status_code == 0 {
        Span::styled("no answer", error_style())
    } else if (200..300).contains(&attempt.status_code) {
        Span::styled(
            attempt.status_code.to_string(),
            status_style(hookyard::v1::DeliveryStatus::Succeeded),
        )
    } else {
        Span::styled(attempt.status_code.to_string(), error_style())
    };
    lines.push(Line::from(vec![
        Span::styled(
            format!("#{} ", attempt.number),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("{}  ", widgets::clock(attempt.started_at.as_ref()))),
        outcome,
        Span::raw(format!("  {}ms", attempt.duration_ms)),
    ]));
    if !attempt.error.is_empty() {
        lines.push(Line::styled(
            format!("  error: {}", attempt.error),
            error_style(),
        ));
    }
    let mut headers: Vec<_> = attempt.request_headers.iter().collect();
    headers.sort();
    for (name, value) in headers {
        lines.push(Line::styled(
            format!("  > {name}: {}", redact(name, value)),
            dim_style(),
        ));
    }
    if !attempt.response_body.is_empty() {
        for line in attempt.response_body.lines().take(8) {
            lines.push(Line::raw(format!("  < {line}")));
        }
    }
}

/// Values of headers that carry credentials never reach the screen, even if
/// the daemon sent them.
pub fn redact(name: &str, value: &str) -> String {
    let name = name.to_ascii_lowercase();
    let secret = [
        "signature",
        "authorization",
        "secret",
        "token",
        "api-key",
        "cookie",
    ]
    .iter()
    .any(|s| name.contains(s));
    if secret {
        "…redacted".to_string()
    } else {
        value.to_string()
    }
}

/// Indented JSON, or the text as it is when it is not JSON.
pub fn pretty_json(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(value) => serde_json::to_string_pretty(&value)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned()),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
