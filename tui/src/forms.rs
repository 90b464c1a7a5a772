//! A form: labelled fields edited one at a time, the server's validation
//! errors shown beside the field they name, and a banner for what belongs to
//! no field (a stale version, a failed call). What a form edits and how it
//! maps to a message lives with each screen; this module is only the
//! editing.

use crossterm::event::KeyEvent;
use ratatui::{
    layout::{Position, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::Paragraph,
    Frame,
};

use crate::{
    api::ApiError,
    keys::{self, KeyBindings},
    widgets::{self, dim_style, error_style, input::TextInput, popup},
};

const LABEL: usize = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    /// Edited like text, shown as dots (a password, a client secret).
    Secret,
    /// On/off, flipped with space.
    Toggle,
    /// Shown, not editable (an id after creation).
    Fixed,
    /// One of a few values, cycled with space; the value is the input's text.
    Choice(&'static [&'static str]),
}

#[derive(Debug, Clone)]
pub struct Field {
    /// The name the server uses for it in field violations.
    pub key: &'static str,
    pub label: &'static str,
    pub hint: &'static str,
    pub kind: FieldKind,
    pub input: TextInput,
    pub on: bool,
    pub error: Option<String>,
}

impl Field {
    pub fn text(key: &'static str, label: &'static str, value: impl Into<String>) -> Field {
        Field {
            key,
            label,
            hint: "",
            kind: FieldKind::Text,
            input: TextInput::new(value),
            on: false,
            error: None,
        }
    }

    /// Starts empty: a stored secret is never sent back to be shown.
    pub fn secret(key: &'static str, label: &'static str) -> Field {
        Field {
            kind: FieldKind::Secret,
            ..Field::text(key, label, "")
        }
    }

    pub fn toggle(key: &'static str, label: &'static str, on: bool) -> Field {
        Field {
            kind: FieldKind::Toggle,
            on,
            ..Field::text(key, label, "")
        }
    }

    pub fn fixed(key: &'static str, label: &'static str, value: impl Into<String>) -> Field {
        Field {
            kind: FieldKind::Fixed,
            ..Field::text(key, label, value)
        }
    }

    /// Starts on `value`, or on the first choice when it is not one of them.
    pub fn choice(
        key: &'static str,
        label: &'static str,
        choices: &'static [&'static str],
        value: &str,
    ) -> Field {
        let value = if choices.contains(&value) {
            value
        } else {
            choices.first().copied().unwrap_or_default()
        };
        Field {
            kind: FieldKind::Choice(choices),
            ..Field::text(key, label, value)
        }
    }

    pub fn hint(mut self, hint: &'static str) -> Field {
        self.hint = hint;
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Banner {
    /// The record changed on the server since the form read it.
    Stale,
    Error(String),
    Info(String),
}

/// What a key in a form asks the app to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormAction {
    None,
    Save,
    Cancel,
    Reload,
}

#[derive(Debug, Clone)]
pub struct Form {
    pub title: String,
    pub fields: Vec<Field>,
    pub focus: usize,
    pub banner: Option<Banner>,
    pub saving: bool,
    /// What Enter does, for the footer: "saves", "tests".
    pub enter: &'static str,
}

impl Form {
    pub fn new(title: impl Into<String>, fields: Vec<Field>) -> Form {
        let focus = fields
            .iter()
            .position(|f| f.kind != FieldKind::Fixed)
            .unwrap_or(0);
        Form {
            title: title.into(),
            fields,
            focus,
            banner: None,
            saving: false,
            enter: "saves",
        }
    }

    pub fn handle_key(&mut self, keys: &KeyBindings, key: &KeyEvent) -> FormAction {
        if keys::is_ctrl(key, 'r') {
            return FormAction::Reload;
        }
        if keys::is_ctrl(key, 's') || keys.save.matches(key) {
            return if self.saving {
                FormAction::None
            } else {
                FormAction::Save
            };
        }
        if keys.back.matches(key) {
            return FormAction::Cancel;
        }
        if keys.next_field.matches(key) {
            self.move_focus(1);
            return FormAction::None;
        }
        if keys.prev_field.matches(key) {
            self.move_focus(self.fields.len() - 1);
            return FormAction::None;
        }
        let Some(field) = self.fields.get_mut(self.focus) else {
            return FormAction::None;
        };
        let changed = match field.kind {
            FieldKind::Text | FieldKind::Secret => field.input.handle_key(key),
            FieldKind::Toggle if keys.toggle.matches(key) => {
                field.on = !field.on;
                true
            }
            FieldKind::Choice(choices) if keys.toggle.matches(key) => {
                let at = choices.iter().position(|c| *c == field.input.value());
                let next = at.map_or(0, |i| (i + 1) % choices.len());
                field.input.set(choices[next]);
                true
            }
            FieldKind::Toggle | FieldKind::Fixed | FieldKind::Choice(_) => false,
        };
        if changed {
            field.error = None;
        }
        FormAction::None
    }

    fn move_focus(&mut self, step: usize) {
        let n = self.fields.len();
        for _ in 0..n {
            self.focus = (self.focus + step) % n;
            if self.fields[self.focus].kind != FieldKind::Fixed {
                return;
            }
        }
    }

    pub fn focus_on(&mut self, key: &str) {
        if let Some(i) = self.fields.iter().position(|f| f.key == key) {
            self.focus = i;
        }
    }

    fn field(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }

    pub fn value(&self, key: &str) -> String {
        self.field(key)
            .map(|f| f.input.value().trim().to_string())
            .unwrap_or_default()
    }

    /// A comma-separated field as a list, blanks dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        split_list(&self.value(key))
    }

    pub fn is_on(&self, key: &str) -> bool {
        self.field(key).is_some_and(|f| f.on)
    }

    /// Shows a failed save: field errors beside their fields, the rest in
    /// the banner.
    pub fn show_error(&mut self, error: &ApiError) {
        self.saving = false;
        for f in &mut self.fields {
            f.error = None;
        }
        if error.is_stale_version() {
            self.banner = Some(Banner::Stale);
            return;
        }
        let mut unplaced = Vec::new();
        let mut first = None;
        for violation in &error.fields {
            let (key, detail) = field_key(&violation.field);
            match self.fields.iter_mut().find(|f| f.key == key) {
                Some(field) => {
                    let message = match detail {
                        Some(detail) => format!("{detail}: {}", violation.description),
                        None => violation.description.clone(),
                    };
                    field.error = Some(match field.error.take() {
                        Some(previous) => format!("{previous}; {message}"),
                        None => message,
                    });
                    first.get_or_insert(key);
                }
                None => unplaced.push(format!("{}: {}", violation.field, violation.description)),
            }
        }
        if let Some(key) = first {
            self.focus_on(key);
        }
        self.banner = if !unplaced.is_empty() {
            Some(Banner::Error(unplaced.join("; ")))
        } else if error.fields.is_empty() {
            Some(Banner::Error(error.describe()))
        } else {
            Some(Banner::Error("the daemon refused some fields".to_string()))
        };
    }

    /// A problem found before asking the daemon.
    pub fn set_error(&mut self, key: &str, error: String) {
        if let Some(field) = self.fields.iter_mut().find(|f| f.key == key) {
            field.error = Some(error);
        }
        self.focus_on(key);
    }

    pub fn error_of(&self, key: &str) -> Option<&str> {
        self.field(key).and_then(|f| f.error.as_deref())
    }

    pub fn render(&self, frame: &mut Frame, area: Rect, tick: u64) {
        let width = area.width.min(90);
        let inner_width = width.saturating_sub(2) as usize;
        let value_width = inner_width.saturating_sub(LABEL + 2);
        let mut lines = Vec::new();
        let mut cursor = None;
        let mut focus_line = 0;
        for (i, field) in self.fields.iter().enumerate() {
            let focused = i == self.focus;
            let label_style = if focused {
                Style::default()
                    .fg(Color::Cyan)
                    .add_modifier(Modifier::BOLD)
            } else {
                dim_style()
            };
            let marker = if focused { "›" } else { " " };
            let mut spans = vec![Span::styled(
                format!("{marker}{:<LABEL$} ", field.label),
                label_style,
            )];
            let value = match field.kind {
                FieldKind::Toggle => {
                    if field.on {
                        "[x] yes".to_string()
                    } else {
                        "[ ] no".to_string()
                    }
                }
                FieldKind::Choice(_) => format!("‹ {} ›", field.input.value()),
                FieldKind::Secret => "•".repeat(field.input.value().chars().count()),
                _ => field.input.value().to_string(),
            };
            if value.is_empty() && !field.hint.is_empty() {
                spans.push(Span::styled(field.hint, dim_style()));
            } else {
                spans.push(Span::raw(widgets::ellipsize(&value, value_width)));
            }
            if focused && matches!(field.kind, FieldKind::Choice(_)) {
                spans.push(Span::styled("  space: next", dim_style()));
            }
            if focused {
                focus_line = lines.len();
            }
            if focused && matches!(field.kind, FieldKind::Text | FieldKind::Secret) {
                let col = (LABEL + 2 + field.input.cursor()).min(inner_width.saturating_sub(1));
                cursor = Some((col as u16, lines.len() as u16));
            }
            let used: usize = spans.iter().map(|s| s.width()).sum();
            let error_line = field.error.as_ref().map(|e| format!("✗ {e}"));
            match error_line {
                Some(e) if used + 2 + e.chars().count() <= inner_width => {
                    spans.push(Span::styled(format!("  {e}"), error_style()));
                    lines.push(Line::from(spans));
                }
                Some(e) => {
                    lines.push(Line::from(spans));
                    lines.push(Line::styled(
                        format!("{:width$}{e}", "", width = LABEL + 2),
                        error_style(),
                    ));
                }
                None => lines.push(Line::from(spans)),
            }
        }
        let banner = match &self.banner {
            _ if self.saving => Line::from(format!("{} saving…", widgets::spinner(tick))),
            Some(Banner::Stale) => Line::styled(
                "✗ someone else changed it since you opened it. Reload? Ctrl-R reloads (your edits are lost), Esc cancels",
                Style::default().fg(Color::Yellow),
            ),
            Some(Banner::Error(e)) => Line::styled(format!("✗ {e}"), error_style()),
            Some(Banner::Info(i)) => Line::styled(i.clone(), Style::default().fg(Color::Green)),
            None => Line::styled(
                format!("Enter {} · Tab/↑↓ move · space toggles · Esc cancels", self.enter),
                dim_style(),
            ),
        };
        let banner_rows = banner.width().div_ceil(inner_width.max(1)).max(1);
        // The fields, a blank line, the banner (wrapped), two borders.
        let height = (lines.len() + 1 + banner_rows + 2) as u16;
        let inner = popup(frame, area, width, height.min(area.height), &self.title);
        // A form taller than the screen scrolls to keep the focused field in
        // view; the banner stays at the bottom.
        let footer = (1 + banner_rows as u16).min(inner.height);
        let fields_height = inner.height - footer;
        let scroll = (focus_line + 1).saturating_sub(fields_height as usize) as u16;
        let fields_area = Rect {
            height: fields_height,
            ..inner
        };
        let footer_area = Rect {
            y: inner.y + fields_height,
            height: footer,
            ..inner
        };
        frame.render_widget(
            Paragraph::new(lines)
                .wrap(ratatui::widgets::Wrap { trim: false })
                .scroll((scroll, 0)),
            fields_area,
        );
        frame.render_widget(
            Paragraph::new(vec![Line::default(), banner])
                .wrap(ratatui::widgets::Wrap { trim: false }),
            footer_area,
        );
        if let Some((x, y)) = cursor {
            let y = y.saturating_sub(scroll);
            if y < fields_height {
                frame.set_cursor_position(Position::new(inner.x + x, inner.y + y));
            }
        }
    }
}

/// `patterns[1]` → (`patterns`, `#2`); `headers.X-Env` → (`headers`, `X-Env`).
pub fn field_key(field: &str) -> (&str, Option<String>) {
    let end = field.find(['[', '.']).unwrap_or(field.len());
    let (key, rest) = field.split_at(end);
    let detail = if let Some(index) = rest.strip_prefix('[') {
        let index = index.split(']').next().unwrap_or_default();
        Some(match index.parse::<usize>() {
            Ok(i) => format!("#{}", i + 1),
            Err(_) => index.to_string(),
        })
    } else {
        rest.strip_prefix('.').map(str::to_string)
    };
    (key, detail)
}

pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}
