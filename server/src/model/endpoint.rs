//! How an endpoint wants its deliveries: the body's format, an optional
//! transform, a rate limit, when the daemon gives up on it, and how requests
//! authenticate (basic, OAuth2 client credentials, a TLS client certificate
//! and a private CA). Stored as one JSON column (`options`) and written the
//! same way in the config file, so a new setting needs no schema change.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RateLimit;

/// Svix's default: an endpoint whose every attempt failed for five days is
/// disabled.
pub const DEFAULT_DISABLE_AFTER: Duration = Duration::from_secs(5 * 24 * 3600);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointOptions {
    #[serde(default, skip_serializing_if = "PayloadFormat::is_default")]
    pub format: PayloadFormat,
    /// A minijinja template over `event` producing the body (JSON), in place
    /// of the format's body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// Requests per second the dispatcher sends this endpoint at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Failing every attempt this long disables the endpoint; `None`: the
    /// default (5 days); zero: never.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "optional_ms")]
    pub disable_after_ms: Option<Duration>,
    /// How requests authenticate, beyond the signature and static headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<EndpointAuth>,
    /// A minijinja template over `event` (e.g.
    /// `{{ event.payload.customer_id }}`): deliveries with the same key go
    /// one at a time, in publish order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// A client certificate and extra roots for this endpoint only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EndpointTls>,
}

impl EndpointOptions {
    /// How long failing attempts are tolerated; `None`: forever.
    pub fn disable_after(&self) -> Option<Duration> {
        match self.disable_after_ms {
            None => Some(DEFAULT_DISABLE_AFTER),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        }
    }
}

/// The body of outbound requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// `{id, event_name, timestamp, tenant_id, payload}`.
    #[default]
    Envelope,
    /// `{type, timestamp, data}` (the Standard Webhooks payload shape).
    StandardWebhooks,
    /// A CloudEvents 1.0 JSON event (structured mode).
    Cloudevents,
    /// CloudEvents binary mode: `ce-*` headers, the payload as the body.
    CloudeventsBinary,
    /// The payload alone.
    Raw,
}

impl PayloadFormat {
    pub const ALL: [PayloadFormat; 5] = [
        PayloadFormat::Envelope,
        PayloadFormat::StandardWebhooks,
        PayloadFormat::Cloudevents,
        PayloadFormat::CloudeventsBinary,
        PayloadFormat::Raw,
    ];

    pub fn is_default(&self) -> bool {
        *self == PayloadFormat::Envelope
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Envelope => "envelope",
            PayloadFormat::StandardWebhooks => "standard_webhooks",
            PayloadFormat::Cloudevents => "cloudevents",
            PayloadFormat::CloudeventsBinary => "cloudevents_binary",
            PayloadFormat::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<PayloadFormat> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// Outbound authentication of an endpoint's requests. `Debug` hides the
/// secrets, so logging an endpoint never logs them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EndpointAuth {
    /// `Authorization: Basic …`. The password is never returned.
    Basic { username: String, password: String },
    /// OAuth2 client credentials grant (RFC 6749 §4.4): a token fetched from
    /// `token_url` (the client authenticating with HTTP Basic, §2.3.1) is
    /// sent as `Authorization: Bearer …`. The secret is never returned.
    Oauth2 {
        token_url: String,
        client_id: String,
        client_secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// Sent as `audience` (Auth0, Okta and others want it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audience: Option<String>,
    },
}

impl std::fmt::Debug for EndpointAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointAuth::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            EndpointAuth::Oauth2 {
                token_url,
                client_id,
                scope,
                audience,
                ..
            } => f
                .debug_struct("Oauth2")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("scope", scope)
                .field("audience", audience)
                .finish(),
        }
    }
}

/// TLS settings of one endpoint, as paths to PEM files the daemon reads (the
/// way `delivery.ca_file` is given): a private key stays a file on disk,
/// readable by the daemon only, and never travels through the Admin API.
/// Files are read when the endpoint is written and again when they change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTls {
    /// The client certificate (chain) presented to the endpoint (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// The private key of `client_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// Roots trusted for this endpoint only, besides the usual ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl EndpointTls {
    pub fn is_empty(&self) -> bool {
        self.client_cert_file.is_none() && self.client_key_file.is_none() && self.ca_file.is_none()
    }
}

mod optional_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_and_default_to_an_empty_object() {
        assert_eq!(
            serde_json::to_string(&EndpointOptions::default()).ok(),
            Some("{}".into())
        );
        let options = EndpointOptions {
            format: PayloadFormat::Cloudevents,
            transform: Some("{{ event.payload }}".into()),
            rate_limit: Some(RateLimit {
                per_second: 5,
                burst: 1,
            }),
            disable_after_ms: Some(Duration::ZERO),
            auth: Some(EndpointAuth::Basic {
                username: "u".into(),
                password: "p".into(),
            }),
            ordering_key: Some("{{ event.payload.customer }}".into()),
            tls: Some(EndpointTls {
                client_cert_file: Some("/etc/hookyard/client.pem".into()),
                client_key_file: Some("/etc/hookyard/client.key".into()),
                ca_file: None,
            }),
        };
        let text = serde_json::to_string(&options).unwrap_or_default();
        let back: EndpointOptions = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, options);
        assert_eq!(back.disable_after(), None);
        assert_eq!(
            EndpointOptions::default().disable_after(),
            Some(DEFAULT_DISABLE_AFTER)
        );
    }

    #[test]
    fn oauth2_is_written_as_oauth2_and_debug_hides_secrets() {
        let auth = EndpointAuth::Oauth2 {
            token_url: "https://auth.example/token".into(),
            client_id: "hookyard".into(),
            client_secret: "s3cret".into(),
            scope: Some("webhooks".into()),
            audience: None,
        };
        let text = serde_json::to_string(&auth).unwrap_or_default();
        assert!(text.starts_with(r#"{"oauth2":{"token_url""#), "{text}");
        assert_eq!(
            serde_json::from_str::<EndpointAuth>(&text).ok(),
            Some(auth.clone())
        );
        assert!(!format!("{auth:?}").contains("s3cret"));
        let basic = EndpointAuth::Basic {
            username: "u".into(),
            password: "pw-secret".into(),
        };
        assert!(!format!("{basic:?}").contains("pw-secret"));
    }
}
