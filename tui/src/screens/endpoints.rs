//! Endpoints: the table, create/edit in a form, enable/disable, delete with a
//! confirmation. Secrets appear only as the daemon's hint (`whsec_…abcd`);
//! a secret the TUI generates for a new endpoint is shown once, after the
//! save, and never again.

use std::collections::HashMap;

use base64::Engine;
use crossterm::event::KeyEvent;
use hookyard::v1::{
    Endpoint, EndpointRateLimit, EndpointState, EndpointTls, GetStatsResponse,
    OAuth2ClientCredentials, PayloadFormat, RotateEndpointSecretResponse, SendTestEventResponse,
};
use rand::RngCore;
use ratatui::{
    layout::{Constraint, Rect},
    style::{Color, Style},
    widgets::{Cell, Row, Table},
    Frame,
};

use super::{
    jobs::{RecoverForm, ReplayForm},
    list::ListView,
    Ctx, EventState,
};
use crate::{
    api::ApiResult,
    app::Mode,
    forms::{Field, Form},
    net::Command,
    widgets::{self, error_style, header_style, remote_body, selected_style},
};

#[derive(Debug, Default)]
pub struct EndpointsScreen {
    pub list: ListView<Endpoint>,
}

impl EndpointsScreen {
    pub fn loaded(&mut self, result: ApiResult<Vec<Endpoint>>) {
        self.list.set_sorted(result, |a, b| a.id.cmp(&b.id));
    }

    pub fn handle_key(&mut self, key: &KeyEvent, ctx: &mut Ctx) -> EventState {
        let keys = ctx.keys;
        let selected = self.list.selected().cloned();
        if keys.new.matches(key) {
            ctx.next_mode = Some(Mode::EndpointForm(Box::new(EndpointForm::new(None))));
        } else if keys.reload.matches(key) {
            self.list.reload();
            ctx.commands.push(Command::LoadEndpoints);
            ctx.commands.push(Command::LoadStats);
        } else if let Some(endpoint) = selected {
            if keys.edit.matches(key) || keys.open.matches(key) {
                ctx.next_mode = Some(Mode::EndpointForm(Box::new(EndpointForm::new(Some(
                    endpoint,
                )))));
            } else if keys.live.matches(key) {
                ctx.live_filter = Some(format!("endpoint:{}", endpoint.id));
            } else if keys.rotate_secret.matches(key) {
                ctx.confirm(
                    format!(
                        "Rotate the signing secret of `{}`? The old one keeps signing for a day.",
                        endpoint.id
                    ),
                    Command::RotateEndpointSecret(endpoint.id),
                );
            } else if keys.send_test.matches(key) {
                ctx.info(format!("sending a test event to `{}`…", endpoint.id));
                ctx.commands.push(Command::SendTestEvent(endpoint.id));
            } else if keys.recover.matches(key) {
                ctx.next_mode = Some(Mode::Recover(Box::new(RecoverForm::new(&endpoint.id))));
            } else if keys.replay.matches(key) {
                ctx.next_mode = Some(Mode::Replay(Box::new(ReplayForm::for_endpoint(&endpoint))));
            } else if keys.delete.matches(key) {
                ctx.confirm(
                    format!("Delete endpoint `{}`?", endpoint.id),
                    Command::DeleteEndpoint(endpoint.id),
                );
            } else if keys.toggle.matches(key) {
                let state = if endpoint.state() == EndpointState::Enabled {
                    EndpointState::Disabled
                } else {
                    EndpointState::Enabled
                };
                ctx.info(format!("{} `{}`…", state_name(state), endpoint.id));
                ctx.commands.push(Command::SaveEndpoint {
                    endpoint: Box::new(Endpoint {
                        state: state.into(),
                        // Empty keeps the stored secret.
                        secret: String::new(),
                        ..endpoint
                    }),
                    create: false,
                });
            } else if !self.list.move_selection(keys, key) {
                return EventState::NotConsumed;
            }
        } else {
            return EventState::NotConsumed;
        }
        EventState::Consumed
    }

    /// `in_flight` counts what the live stream shows in flight, by target.
    pub fn render(
        &self,
        frame: &mut Frame,
        area: Rect,
        tick: u64,
        stats: Option<&GetStatsResponse>,
        in_flight: &HashMap<String, u64>,
    ) {
        let empty = "no endpoints yet: n creates one";
        let Some(endpoints) = remote_body(frame, area, &self.list.items, tick, empty) else {
            return;
        };
        let numbers =
            |id: &str| stats.and_then(|s| s.endpoints.iter().find(|e| e.endpoint_id == id));
        let rows = endpoints.iter().map(|e| {
            let state = e.state();
            let color = match state {
                EndpointState::Enabled => Color::Green,
                EndpointState::Disabled => Color::Yellow,
                EndpointState::Gone | EndpointState::Failing | EndpointState::Unspecified => {
                    Color::Red
                }
            };
            let n = numbers(&e.id);
            let flying = in_flight
                .get(&format!("endpoint:{}", e.id))
                .copied()
                .unwrap_or(0);
            let rate = match n {
                Some(n) if n.succeeded + n.failed > 0 => {
                    let rate = n.succeeded as f64 * 100.0 / (n.succeeded + n.failed) as f64;
                    format!("{rate:.0}%")
                }
                _ => "-".to_string(),
            };
            let last_error = if !e.disabled_reason.is_empty() {
                format!("disabled: {}", e.disabled_reason)
            } else {
                n.filter(|n| !n.last_error.is_empty())
                    .map_or("-".to_string(), |n| {
                        format!(
                            "{} {}",
                            widgets::clock(n.last_error_at.as_ref()),
                            n.last_error
                        )
                    })
            };
            Row::new([
                Cell::from(e.id.clone()),
                Cell::from(e.url.clone()),
                Cell::from(if e.tenant_id.is_empty() {
                    "-".to_string()
                } else {
                    e.tenant_id.clone()
                }),
                Cell::from(state_name(state)).style(Style::default().fg(color)),
                Cell::from(flying.to_string()),
                Cell::from(rate),
                Cell::from(n.map_or("-".to_string(), |n| n.backlog.to_string())),
                Cell::from(last_error).style(error_style()),
            ])
        });
        let header = Row::new([
            "id",
            "url",
            "tenant",
            "state",
            "flying",
            "ok 1h",
            "queue",
            "last error",
        ])
        .style(header_style());
        let table = Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Fill(2),
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(5),
                Constraint::Length(5),
                Constraint::Fill(3),
            ],
        )
        .header(header)
        .row_highlight_style(selected_style());
        let mut state = self.list.table_state();
        frame.render_stateful_widget(table, area, &mut state);
    }
}

pub fn state_name(state: EndpointState) -> &'static str {
    match state {
        EndpointState::Enabled => "enabled",
        EndpointState::Disabled => "disabled",
        EndpointState::Gone => "gone",
        EndpointState::Failing => "failing",
        EndpointState::Unspecified => "?",
    }
}

#[derive(Debug, Clone)]
pub struct EndpointForm {
    pub original: Option<Endpoint>,
    pub form: Form,
    /// The secret this form made for a new endpoint, to show once saved.
    pub generated_secret: Option<String>,
}

impl EndpointForm {
    pub fn new(original: Option<Endpoint>) -> EndpointForm {
        let e = original.clone().unwrap_or(Endpoint {
            state: EndpointState::Enabled.into(),
            ..Endpoint::default()
        });
        let (title, id, secret_hint) = match &original {
            Some(e) => (
                format!(
                    "Edit endpoint {} (v{}, secret {})",
                    e.id, e.version, e.secret_hint
                ),
                Field::fixed("id", "id", e.id.clone()),
                "empty keeps the current one",
            ),
            None => (
                "New endpoint".to_string(),
                Field::text("id", "id", "").hint("e.g. crm"),
                "empty: one is generated and shown once",
            ),
        };
        let mut headers: Vec<_> = e.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
        headers.sort();
        let number = |n: u32| if n == 0 { String::new() } else { n.to_string() };
        let schedule: Vec<String> = e.retry_schedule_ms.iter().map(u64::to_string).collect();
        let oauth2 = e.oauth2.clone().unwrap_or_default();
        // The daemon never returns the client secret: empty keeps it.
        let oauth2_secret_hint = if e.oauth2.is_some() {
            "empty keeps the current one"
        } else {
            "required with oauth2"
        };
        let tls = e.tls.clone().unwrap_or_default();
        let mut form = Form::new(
            title,
            vec![
                id,
                Field::text("url", "url", e.url.clone()).hint("e.g. https://example.com/hook"),
                Field::text("tenant_id", "tenant", e.tenant_id.clone()),
                Field::text("headers", "headers", headers.join(", "))
                    .hint("optional, e.g. X-Env=prod, X-Team=crm"),
                Field::text("timeout_ms", "timeout ms", number(e.timeout_ms)).hint("default"),
                Field::text("retry_schedule_ms", "retries ms", schedule.join(", "))
                    .hint("default; e.g. 0, 5000, 300000"),
                Field::text("max_in_flight", "max in flight", number(e.max_in_flight))
                    .hint("default"),
                Field::choice("format", "format", FORMATS, format_name(e.format())),
                Field::text("rate_limit", "rate limit", rate_limit_text(e.rate_limit))
                    .hint("none; per second[/burst], e.g. 10/20"),
                Field::text(
                    "disable_after_ms",
                    "disable after",
                    e.disable_after_ms.map(duration_text).unwrap_or_default(),
                )
                .hint("5d of failures; e.g. 12h, 0s never"),
                Field::text("transform", "transform", e.transform.clone())
                    .hint(r#"optional, e.g. {"text": "{{ event.name }}"}"#),
                Field::toggle("state", "enabled", e.state() == EndpointState::Enabled),
                Field::text("secret", "new secret", "").hint(secret_hint),
                Field::text("description", "description", e.description.clone()),
                Field::text("oauth2", "oauth2 token", oauth2.token_url.clone())
                    .hint("none; token URL, e.g. https://auth.example/token"),
                Field::text("oauth2_client", "oauth2 client", oauth2.client_id.clone()),
                Field::secret("oauth2_secret", "oauth2 secret").hint(oauth2_secret_hint),
                Field::text("oauth2_scope", "oauth2 scope", oauth2.scope.clone()).hint("optional"),
                Field::text("tls", "client cert", tls.client_cert_file.clone())
                    .hint("none; PEM file on the daemon's host"),
                Field::text("tls_key", "client key", tls.client_key_file.clone())
                    .hint("the certificate's key file"),
                Field::text("tls_ca", "ca file", tls.ca_file.clone())
                    .hint("none; PEM roots for this endpoint only"),
            ],
        );
        if !e.disabled_reason.is_empty() {
            form.fields.push(Field::fixed(
                "disabled_reason",
                "disabled why",
                e.disabled_reason.clone(),
            ));
        }
        form.fields.push(
            Field::text("ordering_key", "ordering key", e.ordering_key.clone())
                .hint("optional, e.g. {{ event.payload.customer_id }}"),
        );
        EndpointForm {
            original,
            form,
            generated_secret: None,
        }
    }

    /// The endpoint the form describes, or the fields it cannot parse.
    pub fn endpoint(&self) -> Result<Endpoint, Vec<(&'static str, String)>> {
        let f = &self.form;
        let mut errors = Vec::new();
        let mut number = |key: &'static str| -> u64 {
            let text = f.value(key);
            if text.is_empty() {
                return 0;
            }
            text.parse().unwrap_or_else(|_| {
                errors.push((key, "must be a whole number".to_string()));
                0
            })
        };
        let timeout_ms = number("timeout_ms");
        let max_in_flight = number("max_in_flight");
        let mut retry_schedule_ms = Vec::new();
        for item in f.list("retry_schedule_ms") {
            match item.parse() {
                Ok(ms) => retry_schedule_ms.push(ms),
                Err(_) => errors.push(("retry_schedule_ms", format!("`{item}` is not a number"))),
            }
        }
        let mut headers = std::collections::HashMap::new();
        for item in f.list("headers") {
            match item.split_once('=') {
                Some((k, v)) => {
                    headers.insert(k.trim().to_string(), v.trim().to_string());
                }
                None => errors.push(("headers", format!("`{item}` is not Name=value"))),
            }
        }
        let rate_limit = parse_rate_limit(&f.value("rate_limit")).unwrap_or_else(|e| {
            errors.push(("rate_limit", e));
            None
        });
        let disable_after = f.value("disable_after_ms");
        let disable_after_ms = if disable_after.is_empty() {
            None
        } else {
            parse_duration(&disable_after).map_or_else(
                |e| {
                    errors.push(("disable_after_ms", e));
                    None
                },
                Some,
            )
        };
        let too_big = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let base = self.original.clone().unwrap_or_default();
        let endpoint = Endpoint {
            id: f.value("id"),
            url: f.value("url"),
            tenant_id: f.value("tenant_id"),
            secret: f.value("secret"),
            headers,
            timeout_ms: too_big(timeout_ms),
            retry_schedule_ms,
            max_in_flight: too_big(max_in_flight),
            state: if f.is_on("state") {
                EndpointState::Enabled
            } else if base.state() == EndpointState::Failing {
                // Left off: still the daemon's doing, not an admin's.
                EndpointState::Failing
            } else {
                EndpointState::Disabled
            }
            .into(),
            description: f.value("description"),
            format: format_of(&f.value("format")).into(),
            rate_limit,
            disable_after_ms,
            transform: f.value("transform"),
            oauth2: self.oauth2(&base),
            tls: self.tls(),
            ordering_key: f.value("ordering_key"),
            basic_auth: None,
            ..base.clone()
        };
        // Basic auth has no fields here: kept as stored (the password stays
        // on the daemon), unless OAuth2 replaces it.
        let endpoint = Endpoint {
            basic_auth: if endpoint.oauth2.is_none() {
                base.basic_auth
            } else {
                None
            },
            ..endpoint
        };
        if errors.is_empty() {
            Ok(endpoint)
        } else {
            Err(errors)
        }
    }

    /// OAuth2 as the form has it; no token URL: none.
    fn oauth2(&self, base: &Endpoint) -> Option<OAuth2ClientCredentials> {
        let f = &self.form;
        let token_url = f.value("oauth2");
        if token_url.is_empty() {
            return None;
        }
        Some(OAuth2ClientCredentials {
            token_url,
            client_id: f.value("oauth2_client"),
            // Empty keeps the stored one.
            client_secret: f.value("oauth2_secret"),
            scope: f.value("oauth2_scope"),
            audience: base
                .oauth2
                .as_ref()
                .map(|o| o.audience.clone())
                .unwrap_or_default(),
        })
    }

    fn tls(&self) -> Option<EndpointTls> {
        let f = &self.form;
        let tls = EndpointTls {
            client_cert_file: f.value("tls"),
            client_key_file: f.value("tls_key"),
            ca_file: f.value("tls_ca"),
        };
        (tls != EndpointTls::default()).then_some(tls)
    }

    /// Saves, or shows what cannot be parsed without asking the daemon.
    pub fn save_command(&mut self) -> Option<Command> {
        match self.endpoint() {
            Ok(mut endpoint) => {
                let create = self.original.is_none();
                if create && endpoint.secret.is_empty() {
                    let secret = generate_secret();
                    endpoint.secret = secret.clone();
                    self.generated_secret = Some(secret);
                }
                self.form.saving = true;
                Some(Command::SaveEndpoint {
                    endpoint: Box::new(endpoint),
                    create,
                })
            }
            Err(errors) => {
                for f in &mut self.form.fields {
                    f.error = errors
                        .iter()
                        .find(|(key, _)| *key == f.key)
                        .map(|(_, e)| e.clone());
                }
                if let Some((key, _)) = errors.first() {
                    self.form.focus_on(key);
                }
                None
            }
        }
    }
}

/// The secret once, as the rotation answered it.
pub fn rotated_lines(answer: &RotateEndpointSecretResponse) -> Vec<String> {
    let mut lines = vec![
        answer.secret.clone(),
        String::new(),
        "Shown once: copy it to the receiver now.".to_string(),
    ];
    let until = answer
        .endpoint
        .as_ref()
        .and_then(|e| e.previous_secret_expires_at.as_ref());
    if let Some(until) = until {
        lines.push(format!(
            "The previous secret signs beside it until {} UTC.",
            widgets::clock(Some(until))
        ));
    }
    lines
}

/// What the test attempt got back: the status or the error, the time it
/// took and the start of the response.
pub fn test_event_lines(answer: &SendTestEventResponse) -> Vec<String> {
    let attempt = answer.attempt.clone().unwrap_or_default();
    let verdict = if answer.succeeded {
        "delivered"
    } else {
        "failed"
    };
    let status = if attempt.status_code == 0 {
        "no HTTP answer".to_string()
    } else {
        format!("HTTP {}", attempt.status_code)
    };
    let mut lines = vec![format!("{verdict}: {status} in {} ms", attempt.duration_ms)];
    if !attempt.error.is_empty() {
        lines.push(format!("error: {}", widgets::ellipsize(&attempt.error, 70)));
    }
    if !attempt.response_body.is_empty() {
        lines.push(String::new());
        lines.push("response:".to_string());
        let body: Vec<_> = attempt.response_body.lines().collect();
        for line in body.iter().take(TEST_BODY_LINES) {
            lines.push(format!("  {}", widgets::ellipsize(line, 70)));
        }
        if body.len() > TEST_BODY_LINES {
            lines.push(format!("  … {} more lines", body.len() - TEST_BODY_LINES));
        }
    }
    lines
}

/// Response lines the test modal shows.
const TEST_BODY_LINES: usize = 8;

/// The formats as the form cycles through them.
pub const FORMATS: &[&str] = &[
    "envelope",
    "standard-webhooks",
    "cloudevents",
    "cloudevents-binary",
    "raw",
];

pub fn format_name(format: PayloadFormat) -> &'static str {
    match format {
        PayloadFormat::Unspecified | PayloadFormat::Envelope => "envelope",
        PayloadFormat::StandardWebhooks => "standard-webhooks",
        PayloadFormat::Cloudevents => "cloudevents",
        PayloadFormat::CloudeventsBinary => "cloudevents-binary",
        PayloadFormat::Raw => "raw",
    }
}

fn format_of(name: &str) -> PayloadFormat {
    match name {
        "standard-webhooks" => PayloadFormat::StandardWebhooks,
        "cloudevents" => PayloadFormat::Cloudevents,
        "cloudevents-binary" => PayloadFormat::CloudeventsBinary,
        "raw" => PayloadFormat::Raw,
        _ => PayloadFormat::Envelope,
    }
}

/// `10` or `10/20` (per second / burst); unset shows empty.
fn rate_limit_text(limit: Option<EndpointRateLimit>) -> String {
    match limit {
        None => String::new(),
        Some(l) if l.burst == 0 => l.per_second.to_string(),
        Some(l) => format!("{}/{}", l.per_second, l.burst),
    }
}

pub fn parse_rate_limit(text: &str) -> Result<Option<EndpointRateLimit>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let (rate, burst) = text.split_once('/').unwrap_or((text, ""));
    let number = |n: &str| -> Result<u32, String> {
        n.trim()
            .parse()
            .map_err(|_| format!("`{text}` is not per second[/burst]"))
    };
    let per_second = number(rate)?;
    let burst = if burst.trim().is_empty() {
        0
    } else {
        number(burst)?
    };
    Ok(Some(EndpointRateLimit { per_second, burst }))
}

const UNITS: &[(&str, u64)] = &[
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// `5d`, `12h`, `30m`, `45s`, `250ms`; a bare `0` is never.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    if text == "0" {
        return Ok(0);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = UNITS
        .iter()
        .find(|(u, _)| *u == unit.trim())
        .map(|(_, s)| *s);
    match (number.parse::<u64>(), scale) {
        (Ok(n), Some(scale)) => n
            .checked_mul(scale)
            .ok_or_else(|| format!("`{text}` is too long")),
        _ => Err(format!("`{text}` is not a duration like 5d, 12h, 30m, 0s")),
    }
}

/// The largest unit that divides it: 432000000 → `5d`.
pub fn duration_text(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let (unit, scale) = UNITS
        .iter()
        .find(|(_, scale)| ms.is_multiple_of(*scale))
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{unit}", ms / scale)
}

/// `whsec_` + base64 of 32 random bytes, as the daemon makes them.
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}
