//! The daemon's vocabulary: events, endpoints, subscriptions, deliveries and
//! attempts as plain data. Storage, intake, delivery and the Admin API all speak
//! these types; conversions to and from the wire live at the edges.

pub mod endpoint;
pub mod event_type;
mod field_error;
pub mod flow;
pub mod run;
pub mod source;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

pub use endpoint::{EndpointAuth, EndpointOptions, EndpointTls, PayloadFormat};
pub use event_type::EventType;
pub use field_error::FieldError;

/// An event that passed validation and waits to be committed.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub name: String,
    pub source: String,
    pub tenant_id: Option<String>,
    pub time_ms: i64,
    /// The payload as compact JSON (a JSON object).
    pub payload: String,
    pub attributes: BTreeMap<String, String>,
    /// SHA-256 of everything the publisher sent, to tell a retry of the same
    /// event (a duplicate) from a different event reusing an id (a conflict).
    pub body_hash: [u8; 32],
    /// The subscriptions it was routed to, decided before the commit so the
    /// deliveries are stored in the same transaction as the event.
    pub routes: Vec<Route>,
    /// Flow runs it starts (subscriptions with `flow:` targets), stored in
    /// the same transaction.
    pub flow_starts: Vec<run::NewRun>,
    /// Waiting runs it cancels (`cancel_on`), in the same transaction.
    pub cancels: Vec<run::RunCancel>,
}

impl NewEvent {
    /// Subscriptions that took it: every delivery's (with those merged into
    /// it) and every flow start's.
    pub fn matched(&self) -> u32 {
        let deliveries: usize = self.routes.iter().map(|r| 1 + r.also.len()).sum();
        (deliveries + self.flow_starts.len()) as u32
    }
}

/// One subscription an event goes to, and the endpoint it targets.
#[derive(Debug, Clone)]
pub struct Route {
    pub subscription_id: Arc<str>,
    pub endpoint_id: Arc<str>,
    /// Other subscriptions that matched the same endpoint; one delivery
    /// stands for them all.
    pub also: Vec<Arc<str>>,
    /// The delivery's ordering key (rendered from the subscription's or the
    /// endpoint's `ordering_key`): deliveries with the same key go to the
    /// endpoint one at a time, in publish order.
    pub ordering_key: Option<Box<str>>,
}

/// The due time of a delivery parked behind an earlier unfinished delivery
/// with the same ordering key; it is made due when that one finishes.
pub const PARKED_MS: i64 = i64::MAX;

/// A committed event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub source: String,
    pub tenant_id: Option<String>,
    pub time_ms: i64,
    pub payload: String,
    pub attributes: BTreeMap<String, String>,
}

/// What the publisher hears about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub duplicate: bool,
    pub matched: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    Enabled,
    /// Disabled by an admin.
    Disabled,
    /// Disabled by the daemon after the endpoint answered 410 Gone.
    Gone,
    /// Disabled by the daemon: every attempt failed for `disable_after`.
    Failing,
}

impl EndpointState {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Enabled => "enabled",
            EndpointState::Disabled => "disabled",
            EndpointState::Gone => "gone",
            EndpointState::Failing => "failing",
        }
    }

    pub fn parse(s: &str) -> Option<EndpointState> {
        match s {
            "enabled" => Some(EndpointState::Enabled),
            "disabled" => Some(EndpointState::Disabled),
            "gone" => Some(EndpointState::Gone),
            "failing" => Some(EndpointState::Failing),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub tenant_id: Option<String>,
    /// `whsec_…`; never leaves the daemon in full.
    pub secret: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    pub retry_schedule: Option<Vec<Duration>>,
    pub max_in_flight: Option<u32>,
    pub state: EndpointState,
    pub description: String,
    pub options: EndpointOptions,
    /// The secret rotated out and when it stops signing (ms): until then
    /// requests carry both signatures.
    pub previous_secret: Option<(String, i64)>,
    /// Why the daemon disabled it (410 Gone, failing since …).
    pub disabled_reason: Option<String>,
    /// The first failed attempt since its last success.
    pub failing_since_ms: Option<i64>,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub name: String,
    pub patterns: Vec<String>,
    pub exclude: Vec<String>,
    pub tenant_id: Option<String>,
    pub target: String,
    pub enabled: bool,
    pub description: String,
    /// For `flow:` targets: each flow input as a template over the event.
    pub inputs: BTreeMap<String, String>,
    /// A minijinja expression over `event`; only events it is true for are
    /// taken.
    pub filter: Option<String>,
    /// A minijinja template over `event` whose output orders this
    /// subscription's deliveries (over the endpoint's own).
    pub ordering_key: Option<String>,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Subscription {
    /// The endpoint id of an `endpoint:<id>` target.
    pub fn endpoint_id(&self) -> Option<&str> {
        self.target.strip_prefix("endpoint:")
    }

    /// The flow id of a `flow:<id>` target.
    pub fn flow_id(&self) -> Option<&str> {
        self.target.strip_prefix("flow:")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Pending,
    InFlight,
    Succeeded,
    Failed,
    Dead,
}

impl DeliveryStatus {
    /// Nothing more will be attempted (unless an admin asks).
    pub fn is_final(self) -> bool {
        matches!(self, DeliveryStatus::Succeeded | DeliveryStatus::Dead)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::InFlight => "in_flight",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "in_flight" => Some(DeliveryStatus::InFlight),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

/// A delivery (one event × one subscription) as the Admin API shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: u64,
    pub event_seq: u64,
    pub event_id: String,
    pub event_name: String,
    pub tenant_id: Option<String>,
    pub subscription_id: String,
    pub subscription_name: String,
    /// Other subscriptions that matched the same endpoint; the event went
    /// once, as this delivery.
    pub also_subscriptions: Vec<String>,
    pub endpoint_id: String,
    /// Deliveries with the same key go one at a time, in publish order.
    pub ordering_key: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_duration_ms: Option<u32>,
    pub next_attempt_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub number: u32,
    pub started_ms: i64,
    pub duration_ms: u32,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response_body: String,
    pub request_headers: BTreeMap<String, String>,
}

/// Filters shared by ListDeliveries and WatchDeliveries.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub endpoint_id: Option<String>,
    pub subscription_id: Option<String>,
    pub event_name: Option<crate::routing::Pattern>,
}

impl DeliveryFilter {
    pub fn matches(&self, d: &Delivery) -> bool {
        self.status.is_none_or(|s| s == d.status)
            && self
                .endpoint_id
                .as_deref()
                .is_none_or(|e| e == d.endpoint_id)
            && self
                .subscription_id
                .as_deref()
                .is_none_or(|s| s == d.subscription_id)
            && self
                .event_name
                .as_ref()
                .is_none_or(|p| p.matches(&d.event_name))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The part of an event a delivery needs to build its request; shared by every
/// delivery of the event.
#[derive(Debug)]
pub struct EventEnvelope {
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub source: String,
    pub tenant_id: Option<String>,
    pub time_ms: i64,
    pub payload: String,
}

/// A delivery the dispatcher holds in memory, waiting for its next attempt.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: u64,
    pub subscription_id: Arc<str>,
    pub endpoint_id: Arc<str>,
    /// Attempts made so far.
    pub attempts: u32,
    pub due_ms: i64,
    pub event: Arc<EventEnvelope>,
    /// It has an ordering key: when it finishes, the next delivery with the
    /// same key is made due in storage.
    pub ordered: bool,
}

impl DueDelivery {
    /// Where this delivery sits in due order, for paging through storage.
    pub fn cursor(&self) -> DueCursor {
        DueCursor {
            due_ms: self.due_ms,
            id: self.id,
        }
    }
}

/// A position in due order: (due time, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueCursor {
    pub due_ms: i64,
    pub id: u64,
}

/// GCRA: a steady `per_second` with bursts of up to `burst` (0: one second's
/// worth). Sources, API keys and flow webhooks are limited by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    #[serde(default)]
    pub burst: u32,
}
