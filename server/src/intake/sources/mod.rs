//! Sources: the partners, websites and forms that post webhooks to
//! `POST /webhook/v1/{token}`. A source is identified by the secret token in
//! its URL and carries the policy its requests are checked against: status,
//! allowed addresses and origins, a rate limit, a signature scheme, a JSON
//! Schema, and how the event name is derived from what it posts.
//!
//! The model lives in `model::source`; `registry` keeps the compiled policies in
//! memory for the hot path, `webhook` runs the checks in order, and the other
//! files each own one check. Storage lives in `store::sources`, the Admin RPCs
//! in `admin::sources`.

pub mod body;
pub mod client_ip;
pub mod cors;
pub mod declared;
pub mod naming;
pub mod registry;
pub use crate::schema;
pub mod signature;
pub mod token;
pub mod webhook;

pub use registry::SourceRegistry;

pub use crate::model::{
    source::{Encoding, NameRule, Policy, Signature, Source, SourceStatus},
    RateLimit,
};

/// How long a rotated-out token keeps working when the rotation names no
/// grace period.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The path a source's token is posted to.
pub fn url_path(token: &str) -> String {
    format!("/webhook/v1/{token}")
}
