//! `sources:` in the config file: partners and forms declared with their
//! token (given in the file or read from an environment variable), upserted
//! by id on every start.

use ipnet::IpNet;
use serde::Deserialize;

use crate::intake::sources::{NameRule, RateLimit, Signature};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The URL token itself; or see `token_env`.
    #[serde(default)]
    pub token: Option<String>,
    /// The name of an environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// `active`, `inactive` or `suspended`.
    #[serde(default = "active")]
    pub status: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
    pub event_name: NameRule,
    /// A JSON Schema for the body.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// Shorthand for a schema that only requires these fields.
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub signature: Signature,
    /// The name of an environment variable holding the signature's secret
    /// (instead of `signature.secret` in the file).
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub allowed_cidrs: Vec<IpNet>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn active() -> String {
    "active".into()
}
