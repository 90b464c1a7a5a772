//! Test support: an in-memory [`AdminApi`] that behaves like the daemon where
//! the screens care (versions, validation, not found), helpers to run the
//! app's commands against it, and rendering to a `TestBackend`.

#![allow(dead_code)] // Some helpers serve only some screens' tests.

use std::{collections::BTreeMap, sync::Mutex};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use futures::{FutureExt, StreamExt};
use hookyard::v1::{
    Attempt, Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, DeliveryUpdate, Endpoint,
    EndpointState, Event, GetStatsResponse, Source, SourceStatus, SourceWithToken, Subscription,
};
use prost_types::Timestamp;
use ratatui::{backend::TestBackend, Terminal};
use tonic::Code;

use crate::{
    api::{AdminApi, ApiError, ApiResult, Call, UpdateStream},
    app::App,
    net::{execute, Command},
    ui,
};

/// 2026-11-30 12:34:56 UTC.
pub const T0: i64 = 1_796_128_496;

pub fn ts(offset: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: T0 + offset,
        nanos: 0,
    })
}

#[derive(Default)]
pub struct FakeState {
    pub subscriptions: BTreeMap<String, Subscription>,
    pub endpoints: BTreeMap<String, Endpoint>,
    pub sources: BTreeMap<String, Source>,
    pub deliveries: Vec<Delivery>,
    pub details: BTreeMap<u64, DeliveryDetail>,
    /// Every call fails with this (daemon down, bad token).
    pub fail_all: Option<ApiError>,
    /// The next write fails with this.
    pub fail_next: Option<ApiError>,
    pub retried: Vec<u64>,
    pub stats: GetStatsResponse,
    pub watch_failures: u32,
    pub watch_updates: Vec<DeliveryUpdate>,
    next_id: u64,
}

#[derive(Default)]
pub struct FakeAdmin {
    pub state: Mutex<FakeState>,
}

fn ready<T: Send + 'static>(result: ApiResult<T>) -> Call<T> {
    futures::future::ready(result).boxed()
}

impl FakeAdmin {
    pub fn with(f: impl FnOnce(&mut FakeState)) -> FakeAdmin {
        let fake = FakeAdmin::default();
        f(&mut fake.state.lock().unwrap());
        fake
    }

    fn read<T: Send + 'static>(&self, f: impl FnOnce(&mut FakeState) -> ApiResult<T>) -> Call<T> {
        let mut state = self.state.lock().unwrap();
        if let Some(e) = &state.fail_all {
            return ready(Err(e.clone()));
        }
        ready(f(&mut state))
    }

    fn write<T: Send + 'static>(&self, f: impl FnOnce(&mut FakeState) -> ApiResult<T>) -> Call<T> {
        let mut state = self.state.lock().unwrap();
        if let Some(e) = state.fail_all.clone().or_else(|| state.fail_next.take()) {
            return ready(Err(e));
        }
        ready(f(&mut state))
    }
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(Code::NotFound, format!("{what} `{id}` not found"))
}

fn stale() -> ApiError {
    ApiError::new(Code::FailedPrecondition, "version mismatch")
}

impl AdminApi for FakeAdmin {
    /// Fails while `watch_failures` lasts, then streams `watch_updates`
    /// and ends, as a daemon that stops would.
    fn watch_deliveries(&self, _filter: DeliveryFilter) -> Call<UpdateStream> {
        self.read(|s| {
            if s.watch_failures > 0 {
                s.watch_failures -= 1;
                return Err(ApiError::new(Code::Unavailable, "connection refused"));
            }
            let updates: Vec<_> = std::mem::take(&mut s.watch_updates)
                .into_iter()
                .map(Ok)
                .collect();
            Ok(futures::stream::iter(updates).boxed())
        })
    }

    fn list_deliveries(&self, filter: DeliveryFilter, _page_size: u32) -> Call<Vec<Delivery>> {
        self.read(|s| {
            Ok(s.deliveries
                .iter()
                .filter(|d| filter.status == 0 || d.status == filter.status)
                .cloned()
                .collect())
        })
    }

    fn get_delivery(&self, id: u64) -> Call<DeliveryDetail> {
        self.read(|s| {
            s.details
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("delivery", &id.to_string()))
        })
    }

    fn retry_delivery(&self, id: u64) -> Call<Delivery> {
        self.write(|s| {
            s.retried.push(id);
            let d = s.deliveries.iter_mut().find(|d| d.id == id);
            let d = d.ok_or_else(|| not_found("delivery", &id.to_string()))?;
            d.status = DeliveryStatus::Pending.into();
            Ok(d.clone())
        })
    }

    fn list_subscriptions(&self) -> Call<Vec<Subscription>> {
        self.read(|s| Ok(s.subscriptions.values().cloned().collect()))
    }

    fn get_subscription(&self, id: String) -> Call<Subscription> {
        self.read(|s| {
            s.subscriptions
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("subscription", &id))
        })
    }

    fn create_subscription(&self, mut sub: Subscription) -> Call<Subscription> {
        self.write(|s| {
            s.next_id += 1;
            sub.id = format!("sub-new-{}", s.next_id);
            sub.version = 1;
            s.subscriptions.insert(sub.id.clone(), sub.clone());
            Ok(sub)
        })
    }

    fn update_subscription(&self, mut sub: Subscription) -> Call<Subscription> {
        self.write(|s| {
            let stored = s
                .subscriptions
                .get_mut(&sub.id)
                .ok_or_else(|| not_found("subscription", &sub.id))?;
            if stored.version != sub.version {
                return Err(stale());
            }
            sub.version += 1;
            *stored = sub.clone();
            Ok(sub)
        })
    }

    fn delete_subscription(&self, id: String) -> Call<()> {
        self.write(|s| {
            s.subscriptions
                .remove(&id)
                .map(drop)
                .ok_or_else(|| not_found("subscription", &id))
        })
    }

    fn test_route(
        &self,
        name: String,
        _tenant: String,
        _payload: Vec<u8>,
    ) -> Call<Vec<Subscription>> {
        self.read(|s| {
            let prefix = name.split('.').next().unwrap_or_default().to_string();
            Ok(s.subscriptions
                .values()
                .filter(|sub| sub.patterns.iter().any(|p| p.starts_with(&prefix)))
                .cloned()
                .collect())
        })
    }

    fn list_endpoints(&self) -> Call<Vec<Endpoint>> {
        self.read(|s| Ok(s.endpoints.values().cloned().collect()))
    }

    fn get_endpoint(&self, id: String) -> Call<Endpoint> {
        self.read(|s| {
            s.endpoints
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found("endpoint", &id))
        })
    }

    fn create_endpoint(&self, mut endpoint: Endpoint) -> Call<Endpoint> {
        self.write(|s| {
            endpoint.version = 1;
            endpoint.secret_hint = "whsec_…abcd".to_string();
            endpoint.secret.clear();
            s.endpoints.insert(endpoint.id.clone(), endpoint.clone());
            Ok(endpoint)
        })
    }

    fn update_endpoint(&self, mut endpoint: Endpoint) -> Call<Endpoint> {
        self.write(|s| {
            let stored = s
                .endpoints
                .get_mut(&endpoint.id)
                .ok_or_else(|| not_found("endpoint", &endpoint.id))?;
            if stored.version != endpoint.version {
                return Err(stale());
            }
            endpoint.version += 1;
            endpoint.secret.clear();
            *stored = endpoint.clone();
            Ok(endpoint)
        })
    }

    fn delete_endpoint(&self, id: String) -> Call<()> {
        self.write(|s| {
            s.endpoints
                .remove(&id)
                .map(drop)
                .ok_or_else(|| not_found("endpoint", &id))
        })
    }

    fn get_stats(&self) -> Call<GetStatsResponse> {
        self.read(|s| Ok(s.stats.clone()))
    }

    fn list_sources(&self) -> Call<Vec<Source>> {
        self.read(|s| Ok(s.sources.values().cloned().collect()))
    }

    fn create_source(&self, mut source: Source) -> Call<SourceWithToken> {
        self.write(|s| {
            s.next_id += 1;
            source.id = format!("src-new-{}", s.next_id);
            source.status = SourceStatus::Active.into();
            source.version = 1;
            s.sources.insert(source.id.clone(), source.clone());
            Ok(SourceWithToken {
                source: Some(source),
                token: "tok_secret".to_string(),
                url_path: "/webhook/v1/tok_secret".to_string(),
            })
        })
    }

    fn rotate_source_token(&self, id: String) -> Call<SourceWithToken> {
        self.write(|s| {
            let source = s.sources.get(&id).ok_or_else(|| not_found("source", &id))?;
            Ok(SourceWithToken {
                source: Some(source.clone()),
                token: "tok_rotated".to_string(),
                url_path: "/webhook/v1/tok_rotated".to_string(),
            })
        })
    }

    fn suspend_source(&self, id: String) -> Call<Source> {
        self.write(|s| set_source_status(s, &id, SourceStatus::Suspended))
    }

    fn resume_source(&self, id: String) -> Call<Source> {
        self.write(|s| set_source_status(s, &id, SourceStatus::Active))
    }

    fn delete_source(&self, id: String) -> Call<()> {
        self.write(|s| {
            s.sources
                .remove(&id)
                .map(drop)
                .ok_or_else(|| not_found("source", &id))
        })
    }
}

fn set_source_status(s: &mut FakeState, id: &str, status: SourceStatus) -> ApiResult<Source> {
    let source = s
        .sources
        .get_mut(id)
        .ok_or_else(|| not_found("source", id))?;
    source.status = status.into();
    Ok(source.clone())
}

/// Runs every command the app queued against `api` and applies the answers,
/// until the app asks for nothing more.
pub async fn settle(app: &mut App, api: &dyn AdminApi) {
    loop {
        let commands = app.take_commands();
        if commands.is_empty() {
            return;
        }
        for command in commands {
            if let Some(update) = execute(api, command).await {
                app.apply(update);
            }
        }
    }
}

/// The commands queued, without running them.
pub fn queued(app: &mut App) -> Vec<Command> {
    app.take_commands()
        .into_iter()
        .filter(|c| !matches!(c, Command::Watch(_)))
        .collect()
}

pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

pub fn press(app: &mut App, code: KeyCode) {
    app.handle_key(key(code));
}

pub fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        app.handle_key(key(KeyCode::Char(c)));
    }
}

/// The screen as text, as insta stores it.
pub fn draw(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| ui::render(app, frame)).unwrap();
    terminal.backend().to_string()
}

/// Snapshots the screen with clock times and uuids filtered out.
#[macro_export]
macro_rules! assert_screen {
    ($name:expr, $app:expr, $w:expr, $h:expr) => {
        insta::with_settings!({
            filters => vec![
                (r"\d\d:\d\d:\d\d", "[time]"),
                (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "[uuid]"),
            ],
            omit_expression => true,
        }, {
            insta::assert_snapshot!($name, $crate::testing::draw(&$app, $w, $h));
        })
    };
}

// ---- sample data ----

pub fn delivery(id: u64, name: &str, status: DeliveryStatus) -> Delivery {
    let (code, ms) = match status {
        DeliveryStatus::Succeeded => (200, 12 + id as u32),
        DeliveryStatus::Failed | DeliveryStatus::Dead => (500, 40 + id as u32),
        _ => (0, 0),
    };
    let attempts = match status {
        DeliveryStatus::Pending | DeliveryStatus::InFlight => 0,
        DeliveryStatus::Dead => 8,
        _ => 1,
    };
    Delivery {
        id,
        event_id: format!("0193a5f0-0000-7000-8000-{id:012x}"),
        event_name: name.to_string(),
        tenant_id: if id & 1 == 0 {
            "acme".to_string()
        } else {
            String::new()
        },
        subscription_id: "sub-1".to_string(),
        subscription_name: "leads-to-crm".to_string(),
        target: "endpoint:crm".to_string(),
        status: status.into(),
        attempts,
        last_status_code: code,
        last_error: if code == 500 {
            "HTTP 500".to_string()
        } else {
            String::new()
        },
        last_duration_ms: ms,
        created_at: ts(id as i64),
        updated_at: ts(id as i64),
        event_seq: id,
        next_attempt_at: None,
    }
}

pub fn update(delivery: Delivery) -> crate::net::Update {
    crate::net::Update::Delivery(DeliveryUpdate {
        time: delivery.updated_at,
        delivery: Some(delivery),
        missed: 0,
    })
}

pub fn subscription(id: &str, name: &str, patterns: &[&str], target: &str) -> Subscription {
    Subscription {
        id: id.to_string(),
        name: name.to_string(),
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        exclude: Vec::new(),
        tenant_id: String::new(),
        target: target.to_string(),
        enabled: true,
        description: String::new(),
        version: 3,
        created_at: ts(0),
        updated_at: ts(0),
        inputs: Default::default(),
    }
}

pub fn endpoint(id: &str, url: &str, state: EndpointState) -> Endpoint {
    Endpoint {
        id: id.to_string(),
        url: url.to_string(),
        secret_hint: "whsec_…Lasw".to_string(),
        state: state.into(),
        version: 2,
        ..Endpoint::default()
    }
}

pub fn detail(id: u64) -> DeliveryDetail {
    let mut d = delivery(id, "lead.created", DeliveryStatus::Failed);
    d.attempts = 2;
    DeliveryDetail {
        event: Some(Event {
            id: d.event_id.clone(),
            name: d.event_name.clone(),
            source: "crm-service".to_string(),
            tenant_id: "acme".to_string(),
            time: ts(0),
            payload: br#"{"email":"ada@example.com","score":87}"#.to_vec(),
            attributes: [("region".to_string(), "eu".to_string())].into(),
            seq: id,
        }),
        attempts: vec![
            Attempt {
                number: 1,
                started_at: ts(1),
                duration_ms: 31,
                status_code: 503,
                error: "HTTP 503".to_string(),
                response_body: "upstream busy".to_string(),
                request_headers: [
                    ("webhook-id".to_string(), d.event_id.clone()),
                    ("webhook-signature".to_string(), "v1,abc=".to_string()),
                    ("x-env".to_string(), "test".to_string()),
                ]
                .into(),
            },
            Attempt {
                number: 2,
                started_at: ts(6),
                duration_ms: 10_000,
                status_code: 0,
                error: "timed out after 10s".to_string(),
                response_body: String::new(),
                request_headers: Default::default(),
            },
        ],
        delivery: Some(d),
    }
}

impl FakeAdmin {
    /// `get_delivery` without the future, for tests that apply by hand.
    pub fn get_delivery_now(&self, id: u64) -> ApiResult<DeliveryDetail> {
        self.get_delivery(id)
            .now_or_never()
            .expect("the fake answers at once")
    }
}
