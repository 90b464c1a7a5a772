//! Live: every delivery state change from `WatchDeliveries`, one row per
//! delivery (updated in place as it moves on), newest on top. The buffer is
//! bounded; while paused, changes wait in a bounded queue and a counter says
//! how many. `/` edits a server-side filter.

use std::collections::{HashMap, VecDeque};

use crossterm::event::KeyEvent;
use hookyard::v1::{Delivery, DeliveryFilter, DeliveryStatus, DeliveryUpdate};
use prost_types::Timestamp;
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Sparkline, Table, TableState},
    Frame,
};

use super::{Ctx, EventState};
use crate::{
    net::Command,
    stats::{Stats, Summary},
    widgets::{self, clamp, dim_style, header_style, selected_style, status_name, status_style},
};

/// Rows kept on screen; older ones scroll out.
pub const ROWS: usize = 1000;
/// Changes kept while paused; past that the oldest are dropped (and counted).
pub const WAITING: usize = 20_000;

#[derive(Debug, Clone)]
pub struct LiveRow {
    pub time: Option<Timestamp>,
    pub delivery: Delivery,
}

#[derive(Debug, Default)]
pub struct LiveScreen {
    /// Newest first.
    rows: VecDeque<LiveRow>,
    /// Delivery id → the serial number of its row; a row's index is
    /// `next_serial - 1 - serial`.
    index: HashMap<u64, u64>,
    next_serial: u64,
    selected: usize,
    paused: bool,
    waiting: VecDeque<DeliveryUpdate>,
    /// Changes dropped while paused, plus those the daemon said we missed.
    pub missed: u64,
    pub filter: DeliveryFilter,
    pub filter_text: String,
    pub stats: Stats,
}

impl LiveScreen {
    pub fn apply(&mut self, now: u64, update: DeliveryUpdate) {
        self.stats.record(now, &update);
        self.missed += update.missed;
        if self.paused {
            if self.waiting.len() == WAITING {
                self.waiting.pop_front();
                self.missed += 1;
            }
            self.waiting.push_back(update);
        } else {
            self.show(update);
        }
    }

    /// The latest deliveries (newest first), shown before any change comes;
    /// not counted in the rates, and never over a row a change already
    /// brought.
    pub fn recent(&mut self, deliveries: Vec<Delivery>) {
        for delivery in deliveries.into_iter().rev() {
            if !self.index.contains_key(&delivery.id) {
                self.show(DeliveryUpdate {
                    delivery: Some(delivery),
                    time: None,
                    missed: 0,
                });
            }
        }
    }

    fn show(&mut self, update: DeliveryUpdate) {
        let Some(delivery) = update.delivery else {
            return;
        };
        let row = LiveRow {
            time: update.time,
            delivery,
        };
        if let Some(serial) = self.index.get(&row.delivery.id) {
            let at = (self.next_serial - 1 - serial) as usize;
            if let Some(existing) = self.rows.get_mut(at) {
                *existing = row;
                return;
            }
        }
        self.index.insert(row.delivery.id, self.next_serial);
        self.next_serial += 1;
        self.rows.push_front(row);
        // Keep the selected row under the cursor unless it is the top one.
        if self.selected > 0 {
            self.selected += 1;
        }
        if self.rows.len() > ROWS {
            if let Some(old) = self.rows.pop_back() {
                self.index.remove(&old.delivery.id);
            }
        }
        self.selected = clamp(self.selected, self.rows.len());
    }

    pub fn rows(&self) -> impl Iterator<Item = &LiveRow> {
        self.rows.iter()
    }

    /// Deliveries on screen whose latest state is in flight, by target.
    pub fn in_flight_by_target(&self) -> HashMap<String, u64> {
        let mut counts = HashMap::new();
        for row in &self.rows {
            if row.delivery.status() == DeliveryStatus::InFlight {
                *counts.entry(row.delivery.target.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            for update in std::mem::take(&mut self.waiting) {
                self.show(update);
            }
        }
    }

    /// A new filter starts from an empty table.
    pub fn set_filter(&mut self, text: String, filter: DeliveryFilter) {
        self.filter_text = text;
        self.filter = filter;
        self.rows.clear();
        self.index.clear();
        self.waiting.clear();
        self.selected = 0;
    }

    pub fn selected(&self) -> Option<&Delivery> {
        self.rows.get(self.selected).map(|r| &r.delivery)
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        let len = self.rows.len();
        if keys.pause.matches(key) {
            self.toggle_pause();
        } else if keys.open.matches(key) {
            match self.selected() {
                Some(d) => ctx.open_detail(d.id),
                None => return EventState::NotConsumed,
            }
        } else if keys.filter.matches(key) {
            ctx.edit_filter(&self.filter_text);
        } else if keys.retry.matches(key) {
            if let Some(d) = self.selected() {
                ctx.commands.push(Command::Retry(vec![d.id]));
            }
        } else if !super::move_selection(keys, key, &mut self.selected, len) {
            return EventState::NotConsumed;
        }
        EventState::Consumed
    }

    pub fn render(&self, frame: &mut Frame, area: Rect, summary: &Summary) {
        let [header, filter_line, table] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Min(1),
        ])
        .areas(area);
        render_header(frame, header, summary);
        frame.render_widget(Paragraph::new(self.filter_line()), filter_line);
        self.render_table(frame, table);
    }

    fn filter_line(&self) -> Line<'static> {
        let mut spans = vec![Span::styled("filter: ", dim_style())];
        if self.filter_text.is_empty() {
            spans.push(Span::styled("none (/ to filter)", dim_style()));
        } else {
            spans.push(Span::raw(self.filter_text.clone()));
        }
        if self.paused {
            spans.push(Span::styled(
                format!("  ⏸ PAUSED, {} waiting (space resumes)", self.waiting.len()),
                Style::default().fg(Color::Black).bg(Color::Yellow),
            ));
        }
        if self.missed > 0 {
            spans.push(Span::styled(
                format!("  {} missed", self.missed),
                Style::default().fg(Color::Red),
            ));
        }
        Line::from(spans)
    }

    fn render_table(&self, frame: &mut Frame, area: Rect) {
        if self.rows.is_empty() {
            let text = if self.filter_text.is_empty() {
                "waiting for deliveries…"
            } else {
                "no deliveries match the filter yet"
            };
            frame.render_widget(Paragraph::new(Line::styled(text, dim_style())), area);
            return;
        }
        // Only the rows that fit are built, so a full buffer costs nothing.
        let visible = area.height.saturating_sub(1) as usize;
        let offset = self.selected.saturating_sub(visible.saturating_sub(1));
        let rows = self
            .rows
            .iter()
            .skip(offset)
            .take(visible)
            .map(|row| table_row(row));
        let header = Row::new([
            "time", "event", "tenant", "target", "status", "http", "ms", "try",
        ])
        .style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Length(8),
                Constraint::Fill(3),
                Constraint::Fill(1),
                Constraint::Fill(2),
                Constraint::Length(9),
                Constraint::Length(4),
                Constraint::Length(6),
                Constraint::Length(3),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = TableState::default().with_selected(Some(self.selected - offset));
        frame.render_stateful_widget(table, area, &mut state);
    }
}

fn table_row(row: &LiveRow) -> Row<'static> {
    let d = &row.delivery;
    let status = d.status();
    let code = if d.last_status_code == 0 {
        "-".to_string()
    } else {
        d.last_status_code.to_string()
    };
    let latency = if d.attempts == 0 && d.last_duration_ms == 0 {
        "-".to_string()
    } else {
        d.last_duration_ms.to_string()
    };
    let tenant = if d.tenant_id.is_empty() {
        "-"
    } else {
        &d.tenant_id
    };
    Row::new([
        Cell::from(widgets::clock(row.time.as_ref().or(d.updated_at.as_ref()))),
        Cell::from(d.event_name.clone()),
        Cell::from(tenant.to_string()),
        Cell::from(d.target.clone()),
        // Pending behind an earlier delivery with its ordering key.
        if d.parked {
            Cell::from("parked")
                .style(ratatui::style::Style::default().fg(ratatui::style::Color::Yellow))
        } else {
            Cell::from(status_name(status)).style(status_style(status))
        },
        Cell::from(code),
        Cell::from(latency),
        Cell::from(d.attempts.to_string()),
    ])
}

fn render_header(frame: &mut Frame, area: Rect, s: &Summary) {
    let rate = s
        .success_rate
        .map_or("-".to_string(), |r| format!("{:.1}%", r * 100.0));
    let p99 = s.p99_ms.map_or("-".to_string(), |ms| format!("{ms}ms"));
    let text = Line::from(vec![
        Span::styled("1m ", dim_style()),
        Span::raw(format!(
            "ev/s {:.1}  del/s {:.1}  ok {rate}  p99 {p99} ",
            s.events_per_sec, s.deliveries_per_sec
        )),
    ]);
    let width = text.width() as u16;
    let [left, right] =
        Layout::horizontal([Constraint::Length(width), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(text), left);
    let spark = &s.spark[s.spark.len().saturating_sub(right.width as usize)..];
    frame.render_widget(
        Sparkline::default()
            .data(spark)
            .style(Style::default().fg(Color::Green)),
        right,
    );
}

/// `lead.* status:dead endpoint:crm sub:<id>`: any order, each part optional.
pub fn parse_filter(text: &str) -> Result<DeliveryFilter, String> {
    let mut filter = DeliveryFilter::default();
    for word in text.split_whitespace() {
        match word.split_once(':') {
            Some(("status", value)) => {
                filter.status = match value.to_ascii_lowercase().as_str() {
                    "pending" => DeliveryStatus::Pending,
                    "in_flight" | "inflight" => DeliveryStatus::InFlight,
                    "ok" | "succeeded" => DeliveryStatus::Succeeded,
                    "failed" => DeliveryStatus::Failed,
                    "dead" => DeliveryStatus::Dead,
                    other => {
                        return Err(format!(
                            "unknown status `{other}`: pending, in_flight, ok, failed or dead"
                        ))
                    }
                }
                .into()
            }
            Some(("endpoint", value)) => filter.endpoint_id = value.to_string(),
            Some(("sub" | "subscription", value)) => filter.subscription_id = value.to_string(),
            Some((key, _)) => {
                return Err(format!(
                    "unknown filter `{key}:`; use status:, endpoint: or sub:"
                ))
            }
            None if filter.event_name.is_empty() => filter.event_name = word.to_string(),
            None => return Err(format!("one event pattern only; `{word}` is a second")),
        }
    }
    Ok(filter)
}
