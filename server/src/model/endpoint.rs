//! How an endpoint wants its deliveries: the body's format, an optional
//! transform, a rate limit, when the daemon gives up on it, and how requests
//! authenticate. Stored as one JSON column (`options`) and written the same
//! way in the config file, so a new setting needs no schema change.

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

/// Outbound authentication of an endpoint's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EndpointAuth {
    /// `Authorization: Basic …`. The password is never returned.
    Basic { username: String, password: String },
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
}
