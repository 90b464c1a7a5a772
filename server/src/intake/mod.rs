//! Intake: the doors events come in by — HTTP `POST /v1/events` (also
//! CloudEvents), gRPC `hookyard.v1.Events`, and sources' webhooks on
//! `POST /webhook/v1/{token}` — sharing validation and routing. An
//! accepted event is routed against the current catalog and handed to the
//! writer; the caller hears back only once it is committed.
//!
//! Intake does not store or deliver anything itself.

pub mod auth;
pub mod cloudevents;
pub mod error;
pub mod event;
pub mod flows;
pub mod grpc;
pub mod grpc_gate;
pub mod http;
pub mod payload;
pub mod rate;
pub mod sources;

use std::sync::Arc;

pub use error::ApiError;

use crate::{
    catalog::{CatalogHandle, FlowRoute},
    flows::{start, FlowCatalog},
    model::{NewEvent, Published},
    store::{PublishOutcome, Rejection, Writer},
};

/// Largest number of events in one PublishBatch.
pub const MAX_BATCH: usize = 1000;

pub struct Intake {
    pub catalog: Arc<CatalogHandle>,
    pub flows: Arc<FlowCatalog>,
    pub writer: Writer,
    pub keys: auth::ApiKeys,
    pub body_limit: usize,
    /// For PublishBatch and CloudEvents batches.
    pub batch_body_limit: usize,
}

impl Intake {
    /// Routes `events` and commits them; one outcome per event, in order.
    pub async fn publish(&self, mut events: Vec<NewEvent>) -> Result<PublishOutcome, ApiError> {
        let catalog = self.catalog.get();
        let flows = self.flows.get();
        let mut flow_routes = Vec::new();
        for event in &mut events {
            catalog.route(
                &event.name,
                event.tenant_id.as_deref(),
                &mut event.routes,
                &mut flow_routes,
            );
            for route in flow_routes.drain(..) {
                start_from_event(&flows, &route, event);
            }
            let mut cancels = std::mem::take(&mut event.cancels);
            flows.cancels(event, &mut cancels);
            event.cancels = cancels;
        }
        drop(catalog);
        drop(flows);
        Ok(self.writer.publish(events).await?)
    }

    /// Publishes a single event.
    pub async fn publish_one(&self, event: NewEvent) -> Result<(String, Published), ApiError> {
        let id = event.id.clone();
        let outcome = self
            .publish(vec![event])
            .await?
            .pop()
            .ok_or_else(|| ApiError::Unavailable("the writer returned no outcome".into()))?;
        match outcome {
            Ok(published) => Ok((id, published)),
            Err(rejection) => Err(conflict(&id, rejection)),
        }
    }
}

/// Adds the run a flow subscription starts for `event`.
fn start_from_event(
    flows: &crate::flows::catalog::FlowSet,
    route: &FlowRoute,
    event: &mut NewEvent,
) {
    match flows.get(&route.flow_id) {
        // A tenant's flow runs only for its tenant's events, whatever the
        // subscription says (as a tenant's endpoint receives only those).
        Some(flow) if !flow.def.takes_events_of(event.tenant_id.as_deref()) => {}
        Some(flow) => {
            let run = start::from_event(flow, &route.inputs, event);
            event.flow_starts.push(run);
        }
        None => tracing::warn!(
            flow = %route.flow_id, subscription = %route.subscription_id, event_id = %event.id,
            "A subscription targets a flow that does not exist; no run started."
        ),
    }
}

pub fn conflict(id: &str, rejection: Rejection) -> ApiError {
    match rejection {
        Rejection::Conflict { seq } => ApiError::Conflict(format!(
            "event id `{id}` is already taken by a different event (seq {seq}); \
             send the same body to retry it, or use a new id"
        )),
    }
}
