//! Conversions between the daemon's model and the `hookyard.v1` wire types.
//! Secrets leave only as a hint.

use std::time::Duration;

use hookyard::v1 as pb;
use prost_types::Timestamp;

use crate::{
    delivery::signing,
    model::{
        Attempt, Delivery, DeliveryStatus, Endpoint, EndpointAuth, EndpointOptions, EndpointState,
        EndpointTls, FieldError, PayloadFormat, RateLimit, StoredEvent, Subscription, PARKED_MS,
    },
};

/// Any i64 converts: `div_euclid` keeps nanos in 0..1e9 and cannot overflow.
pub fn timestamp(ms: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

pub fn endpoint_to_pb(e: &Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        id: e.id.clone(),
        url: e.url.clone(),
        tenant_id: e.tenant_id.clone().unwrap_or_default(),
        secret: String::new(),
        secret_hint: signing::hint(&e.secret),
        headers: e.headers.clone().into_iter().collect(),
        timeout_ms: e
            .timeout
            .map(|d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
            .unwrap_or(0),
        retry_schedule_ms: e
            .retry_schedule
            .as_ref()
            .map(|s| {
                s.iter()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .collect()
            })
            .unwrap_or_default(),
        max_in_flight: e.max_in_flight.unwrap_or(0),
        state: endpoint_state_to_pb(e.state) as i32,
        description: e.description.clone(),
        version: e.version,
        created_at: timestamp(e.created_ms),
        updated_at: timestamp(e.updated_ms),
        format: format_to_pb(e.options.format) as i32,
        transform: e.options.transform.clone().unwrap_or_default(),
        rate_limit: e.options.rate_limit.map(|r| pb::EndpointRateLimit {
            per_second: r.per_second,
            burst: r.burst,
        }),
        disable_after_ms: e
            .options
            .disable_after_ms
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        basic_auth: match &e.options.auth {
            Some(EndpointAuth::Basic { username, .. }) => Some(pb::BasicAuth {
                username: username.clone(),
                password: String::new(),
            }),
            _ => None,
        },
        oauth2: match &e.options.auth {
            Some(EndpointAuth::Oauth2 {
                token_url,
                client_id,
                scope,
                audience,
                ..
            }) => Some(pb::OAuth2ClientCredentials {
                token_url: token_url.clone(),
                client_id: client_id.clone(),
                client_secret: String::new(),
                scope: scope.clone().unwrap_or_default(),
                audience: audience.clone().unwrap_or_default(),
            }),
            _ => None,
        },
        tls: e.options.tls.as_ref().map(|t| pb::EndpointTls {
            client_cert_file: t.client_cert_file.clone().unwrap_or_default(),
            client_key_file: t.client_key_file.clone().unwrap_or_default(),
            ca_file: t.ca_file.clone().unwrap_or_default(),
        }),
        disabled_reason: e.disabled_reason.clone().unwrap_or_default(),
        failing_since: e.failing_since_ms.and_then(timestamp),
        previous_secret_expires_at: e
            .previous_secret
            .as_ref()
            .and_then(|&(_, until)| timestamp(until)),
        ordering_key: e.options.ordering_key.clone().unwrap_or_default(),
    }
}

pub fn format_to_pb(format: PayloadFormat) -> pb::PayloadFormat {
    match format {
        PayloadFormat::Envelope => pb::PayloadFormat::Envelope,
        PayloadFormat::StandardWebhooks => pb::PayloadFormat::StandardWebhooks,
        PayloadFormat::Cloudevents => pb::PayloadFormat::Cloudevents,
        PayloadFormat::CloudeventsBinary => pb::PayloadFormat::CloudeventsBinary,
        PayloadFormat::Raw => pb::PayloadFormat::Raw,
    }
}

fn format_from_pb(format: i32) -> PayloadFormat {
    match pb::PayloadFormat::try_from(format) {
        Ok(pb::PayloadFormat::StandardWebhooks) => PayloadFormat::StandardWebhooks,
        Ok(pb::PayloadFormat::Cloudevents) => PayloadFormat::Cloudevents,
        Ok(pb::PayloadFormat::CloudeventsBinary) => PayloadFormat::CloudeventsBinary,
        Ok(pb::PayloadFormat::Raw) => PayloadFormat::Raw,
        _ => PayloadFormat::Envelope,
    }
}

/// The endpoint an admin described; the secret may still be empty. Refused
/// only when it cannot be represented (two kinds of authentication).
pub fn endpoint_from_pb(e: pb::Endpoint) -> Result<Endpoint, FieldError> {
    let state = match pb::EndpointState::try_from(e.state) {
        Ok(pb::EndpointState::Disabled) => EndpointState::Disabled,
        Ok(pb::EndpointState::Gone) => EndpointState::Gone,
        Ok(pb::EndpointState::Failing) => EndpointState::Failing,
        _ => EndpointState::Enabled,
    };
    let options = EndpointOptions {
        format: format_from_pb(e.format),
        transform: non_empty(e.transform),
        rate_limit: e.rate_limit.map(|r| RateLimit {
            per_second: r.per_second,
            burst: r.burst,
        }),
        disable_after_ms: e.disable_after_ms.map(Duration::from_millis),
        auth: match (e.basic_auth, e.oauth2) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    &["oauth2"],
                    "give basic_auth or oauth2, not both",
                ))
            }
            (Some(b), None) => Some(EndpointAuth::Basic {
                username: b.username,
                password: b.password,
            }),
            (None, Some(o)) => Some(EndpointAuth::Oauth2 {
                token_url: o.token_url,
                client_id: o.client_id,
                client_secret: o.client_secret,
                scope: non_empty(o.scope),
                audience: non_empty(o.audience),
            }),
            (None, None) => None,
        },
        tls: e
            .tls
            .map(|t| EndpointTls {
                client_cert_file: non_empty(t.client_cert_file),
                client_key_file: non_empty(t.client_key_file),
                ca_file: non_empty(t.ca_file),
            })
            .filter(|t| !t.is_empty()),
        ordering_key: non_empty(e.ordering_key),
    };
    Ok(Endpoint {
        id: e.id,
        url: e.url,
        tenant_id: non_empty(e.tenant_id),
        secret: e.secret,
        headers: e.headers.into_iter().collect(),
        timeout: (e.timeout_ms > 0).then(|| Duration::from_millis(u64::from(e.timeout_ms))),
        retry_schedule: (!e.retry_schedule_ms.is_empty()).then(|| {
            e.retry_schedule_ms
                .into_iter()
                .map(Duration::from_millis)
                .collect()
        }),
        max_in_flight: (e.max_in_flight > 0).then_some(e.max_in_flight),
        state,
        description: e.description,
        options,
        previous_secret: None,
        disabled_reason: None,
        failing_since_ms: None,
        version: e.version,
        created_ms: 0,
        updated_ms: 0,
    })
}

fn endpoint_state_to_pb(state: EndpointState) -> pb::EndpointState {
    match state {
        EndpointState::Enabled => pb::EndpointState::Enabled,
        EndpointState::Disabled => pb::EndpointState::Disabled,
        EndpointState::Gone => pb::EndpointState::Gone,
        EndpointState::Failing => pb::EndpointState::Failing,
    }
}

pub fn subscription_to_pb(s: &Subscription) -> pb::Subscription {
    pb::Subscription {
        id: s.id.clone(),
        name: s.name.clone(),
        patterns: s.patterns.clone(),
        exclude: s.exclude.clone(),
        tenant_id: s.tenant_id.clone().unwrap_or_default(),
        target: s.target.clone(),
        enabled: s.enabled,
        description: s.description.clone(),
        version: s.version,
        created_at: timestamp(s.created_ms),
        updated_at: timestamp(s.updated_ms),
        inputs: s.inputs.clone().into_iter().collect(),
        filter: s.filter.clone().unwrap_or_default(),
        ordering_key: s.ordering_key.clone().unwrap_or_default(),
    }
}

pub fn subscription_from_pb(s: pb::Subscription) -> Subscription {
    Subscription {
        id: s.id,
        name: s.name,
        patterns: s.patterns,
        exclude: s.exclude,
        tenant_id: non_empty(s.tenant_id),
        target: s.target,
        enabled: s.enabled,
        description: s.description,
        inputs: s.inputs.into_iter().collect(),
        filter: non_empty(s.filter),
        ordering_key: non_empty(s.ordering_key),
        version: s.version,
        created_ms: 0,
        updated_ms: 0,
    }
}

pub fn status_to_pb(status: DeliveryStatus) -> pb::DeliveryStatus {
    match status {
        DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
        DeliveryStatus::InFlight => pb::DeliveryStatus::InFlight,
        DeliveryStatus::Succeeded => pb::DeliveryStatus::Succeeded,
        DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
        DeliveryStatus::Dead => pb::DeliveryStatus::Dead,
    }
}

pub fn status_from_pb(status: i32) -> Option<DeliveryStatus> {
    match pb::DeliveryStatus::try_from(status).ok()? {
        pb::DeliveryStatus::Unspecified => None,
        pb::DeliveryStatus::Pending => Some(DeliveryStatus::Pending),
        pb::DeliveryStatus::InFlight => Some(DeliveryStatus::InFlight),
        pb::DeliveryStatus::Succeeded => Some(DeliveryStatus::Succeeded),
        pb::DeliveryStatus::Failed => Some(DeliveryStatus::Failed),
        pb::DeliveryStatus::Dead => Some(DeliveryStatus::Dead),
    }
}

pub fn delivery_to_pb(d: &Delivery) -> pb::Delivery {
    pb::Delivery {
        id: d.id,
        event_id: d.event_id.clone(),
        event_name: d.event_name.clone(),
        tenant_id: d.tenant_id.clone().unwrap_or_default(),
        subscription_id: d.subscription_id.clone(),
        subscription_name: d.subscription_name.clone(),
        target: format!("endpoint:{}", d.endpoint_id),
        status: status_to_pb(d.status) as i32,
        attempts: d.attempts,
        last_status_code: d.last_status_code.map(u32::from).unwrap_or(0),
        last_error: d.last_error.clone().unwrap_or_default(),
        last_duration_ms: d.last_duration_ms.unwrap_or(0),
        next_attempt_at: d
            .next_attempt_ms
            .filter(|&at| at != PARKED_MS)
            .and_then(timestamp),
        created_at: timestamp(d.created_ms),
        updated_at: timestamp(d.updated_ms),
        event_seq: d.event_seq,
        also_subscription_ids: d.also_subscriptions.clone(),
        ordering_key: d.ordering_key.clone().unwrap_or_default(),
        parked: d.next_attempt_ms == Some(PARKED_MS),
    }
}

pub fn event_to_pb(e: &StoredEvent) -> pb::Event {
    pb::Event {
        id: e.id.clone(),
        name: e.name.clone(),
        source: e.source.clone(),
        tenant_id: e.tenant_id.clone().unwrap_or_default(),
        time: timestamp(e.time_ms),
        payload: e.payload.clone().into_bytes(),
        attributes: e.attributes.clone().into_iter().collect(),
        seq: e.seq,
    }
}

pub fn attempt_to_pb(a: &Attempt) -> pb::Attempt {
    pb::Attempt {
        number: a.number,
        started_at: timestamp(a.started_ms),
        duration_ms: a.duration_ms,
        status_code: a.status_code.map(u32::from).unwrap_or(0),
        error: a.error.clone().unwrap_or_default(),
        response_body: a.response_body.clone(),
        request_headers: a.request_headers.clone().into_iter().collect(),
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_stored_times_convert() {
        for ms in [i64::MIN, -1, 0, i64::MAX] {
            let t = timestamp(ms).unwrap_or_default();
            assert!((0..1_000_000_000).contains(&t.nanos), "{ms}: {t:?}");
            assert_eq!(
                i128::from(t.seconds) * 1000 + i128::from(t.nanos / 1_000_000),
                i128::from(ms)
            );
        }
    }
}
