//! Sources as stored: the partners, websites and forms that post webhooks
//! to `POST /webhook/v1/{token}`, each with the policy its requests are
//! checked against (see `intake::sources` for the checks).

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::RateLimit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    Active,
    Inactive,
    Suspended,
}

impl SourceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceStatus::Active => "ACTIVE",
            SourceStatus::Inactive => "INACTIVE",
            SourceStatus::Suspended => "SUSPENDED",
        }
    }

    pub fn parse(s: &str) -> Option<SourceStatus> {
        match s.to_ascii_uppercase().as_str() {
            "ACTIVE" => Some(SourceStatus::Active),
            "INACTIVE" => Some(SourceStatus::Inactive),
            "SUSPENDED" => Some(SourceStatus::Suspended),
            _ => None,
        }
    }
}

/// A source as stored. The token itself is never kept, only its SHA-256.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub name: String,
    pub description: String,
    pub status: SourceStatus,
    pub tenant_id: Option<String>,
    pub policy: Policy,
    pub token_hash: [u8; 32],
    /// The token that was rotated out and the time (ms) it stops working.
    pub previous_token: Option<([u8; 32], i64)>,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub deleted_ms: Option<i64>,
}

/// What a source's requests are checked against; stored as one JSON column
/// and written the same way in the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub event_name: NameRule,
    /// A JSON Schema the body must satisfy; `None` accepts any object.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    #[serde(default)]
    pub signature: Signature,
    /// Empty: any address.
    #[serde(default)]
    pub allowed_cidrs: Vec<IpNet>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Browser origins (`https://example.com`) allowed to post; empty: no
    /// browser restriction and no CORS headers.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// How an accepted request's event name is derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NameRule {
    /// Every event gets this name.
    Fixed(String),
    /// The value of this top-level (or dotted, `data.type`) body field.
    Field(String),
    /// A minijinja template over `payload`, e.g. `lead.{{ payload.kind }}`.
    Template(String),
}

impl Default for NameRule {
    fn default() -> Self {
        NameRule::Fixed(String::new())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signature {
    #[default]
    None,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`; secret `whsec_…`.
    StandardWebhooks {
        #[serde(default)]
        secret: String,
    },
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github {
        #[serde(default)]
        secret: String,
    },
    /// `Stripe-Signature: t=…,v1=…`.
    Stripe {
        #[serde(default)]
        secret: String,
    },
    /// HMAC-SHA256 of the body in a header of your choice.
    HmacSha256 {
        #[serde(default)]
        secret: String,
        header: String,
        #[serde(default)]
        encoding: Encoding,
    },
}

impl Signature {
    pub fn kind(&self) -> &'static str {
        match self {
            Signature::None => "none",
            Signature::StandardWebhooks { .. } => "standard_webhooks",
            Signature::Github { .. } => "github",
            Signature::Stripe { .. } => "stripe",
            Signature::HmacSha256 { .. } => "hmac_sha256",
        }
    }

    pub fn secret(&self) -> &str {
        match self {
            Signature::None => "",
            Signature::StandardWebhooks { secret }
            | Signature::Github { secret }
            | Signature::Stripe { secret }
            | Signature::HmacSha256 { secret, .. } => secret,
        }
    }

    pub fn set_secret(&mut self, value: String) {
        match self {
            Signature::None => {}
            Signature::StandardWebhooks { secret }
            | Signature::Github { secret }
            | Signature::Stripe { secret }
            | Signature::HmacSha256 { secret, .. } => *secret = value,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Hex,
    Base64,
}
