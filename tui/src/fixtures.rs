//! Sample records for the screen tests, with fixed times and ids.

use hookyard::v1::{
    Attempt, Delivery, DeliveryDetail, DeliveryStatus, DeliveryUpdate, Endpoint, EndpointState,
    Event, Subscription,
};
use prost_types::Timestamp;

/// 2026-11-30 12:34:56 UTC.
pub const T0: i64 = 1_796_128_496;

pub fn ts(offset: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: T0 + offset,
        nanos: 0,
    })
}

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
