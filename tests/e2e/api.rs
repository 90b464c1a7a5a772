//! Small helpers over the daemon's APIs: publishing over HTTP and gRPC,
//! reading error bodies, and following `WatchDeliveries`.

use std::collections::HashMap;

use hookyard::v1::{
    Delivery, DeliveryDetail, DeliveryFilter, DeliveryStatus, DeliveryUpdate, Event,
    GetDeliveryRequest, ListDeliveriesRequest, PublishRequest, PublishResponse,
    WatchDeliveriesRequest,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tonic::Streaming;

use crate::harness::{Admin, Daemon, Events, WAIT};

/// An HTTP intake body with a small payload.
pub fn http_event(name: &str) -> Value {
    json!({"name": name, "payload": {"email": "ada@example.com", "score": 87}})
}

/// A gRPC event with a small payload; the daemon picks the id.
pub fn grpc_event(name: &str) -> Event {
    Event {
        name: name.to_string(),
        source: "e2e".to_string(),
        payload: br#"{"email":"ada@example.com","score":87}"#.to_vec(),
        ..Event::default()
    }
}

/// What `202 Accepted` says.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    pub id: String,
    pub seq: u64,
    pub duplicate: bool,
    pub matched: u64,
}

/// Publishes over HTTP and insists on 202.
pub async fn publish_http(daemon: &Daemon, body: &Value) -> Accepted {
    let response = daemon
        .post_events()
        .json(body)
        .send()
        .await
        .expect("POST /v1/events");
    let status = response.status();
    let answer: Value = response.json().await.expect("a JSON answer");
    assert_eq!(status, StatusCode::ACCEPTED, "publishing {body}: {answer}");
    accepted(&answer)
}

pub fn accepted(answer: &Value) -> Accepted {
    Accepted {
        id: answer["id"].as_str().expect("an id").to_string(),
        seq: answer["seq"].as_u64().expect("a seq"),
        duplicate: answer["duplicate"].as_bool().expect("duplicate"),
        matched: answer["matched"].as_u64().expect("matched"),
    }
}

/// Publishes over gRPC and insists on OK.
pub async fn publish_grpc(events: &mut Events, event: Event) -> PublishResponse {
    events
        .publish(PublishRequest { event: Some(event) })
        .await
        .unwrap_or_else(|status| panic!("Publish failed: {status:?}"))
        .into_inner()
}

/// Asserts the status and the error code, and returns the `error` object.
pub async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(actual.as_u16(), status, "unexpected answer: {body}");
    let error = body["error"].clone();
    assert_eq!(error["code"], code, "unexpected error: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error needs a message: {body}"
    );
    error
}

/// The JSON pointers an `error` object names.
pub fn pointers(error: &Value) -> Vec<String> {
    error["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f["pointer"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn get_delivery(admin: &mut Admin, id: u64) -> DeliveryDetail {
    admin
        .get_delivery(GetDeliveryRequest { id })
        .await
        .unwrap_or_else(|status| panic!("GetDelivery {id}: {status:?}"))
        .into_inner()
}

/// A `WatchDeliveries` stream. Open it before publishing, so nothing is missed.
pub struct Watch(Streaming<DeliveryUpdate>);

impl Watch {
    pub async fn open(admin: &mut Admin, filter: DeliveryFilter) -> Watch {
        let stream = admin
            .watch_deliveries(WatchDeliveriesRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|status| panic!("WatchDeliveries: {status:?}"))
            .into_inner();
        Watch(stream)
    }

    pub async fn all(admin: &mut Admin) -> Watch {
        Watch::open(admin, DeliveryFilter::default()).await
    }

    /// The next update; panics when none comes within [`WAIT`].
    pub async fn next(&mut self) -> Delivery {
        let update = match tokio::time::timeout(WAIT, self.0.message()).await {
            Ok(Ok(Some(update))) => update,
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Err(status)) => panic!("the watch stream failed: {status:?}"),
            Err(_) => panic!("no delivery update within {WAIT:?}"),
        };
        assert_eq!(update.missed, 0, "the watcher missed updates");
        update.delivery.expect("an update carries its delivery")
    }

    /// The statuses of `event_id`'s delivery, in order, up to one of `last`.
    pub async fn statuses_until(
        &mut self,
        event_id: &str,
        last: &[DeliveryStatus],
    ) -> (Delivery, Vec<DeliveryStatus>) {
        let mut seen = Vec::new();
        loop {
            let delivery = self.next().await;
            if delivery.event_id != event_id {
                continue;
            }
            seen.push(delivery.status());
            if last.contains(&delivery.status()) {
                return (delivery, seen);
            }
        }
    }

    /// Waits for `event_id`'s delivery to reach one of `last`.
    pub async fn until(&mut self, event_id: &str, last: &[DeliveryStatus]) -> Delivery {
        self.statuses_until(event_id, last).await.0
    }

    /// Waits for every event's delivery to reach one of `last`; returns them
    /// in the order of `event_ids`.
    pub async fn until_all(
        &mut self,
        event_ids: &[&str],
        last: &[DeliveryStatus],
    ) -> Vec<Delivery> {
        let mut done: HashMap<String, Delivery> = HashMap::new();
        while done.len() < event_ids.len() {
            let delivery = self.next().await;
            if event_ids.contains(&delivery.event_id.as_str()) && last.contains(&delivery.status())
            {
                done.insert(delivery.event_id.clone(), delivery);
            }
        }
        event_ids
            .iter()
            .map(|id| done.remove(*id).expect("collected"))
            .collect()
    }
}

/// The ids of every event with a delivery the Admin API still lists.
pub async fn listed_event_ids(admin: &mut Admin) -> std::collections::HashSet<String> {
    let mut ids = std::collections::HashSet::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_deliveries(ListDeliveriesRequest {
                filter: Some(DeliveryFilter::default()),
                page_size: 500,
                page_token,
            })
            .await
            .expect("ListDeliveries")
            .into_inner();
        ids.extend(page.deliveries.into_iter().map(|d| d.event_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}
