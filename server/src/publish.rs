//! The one publish pipeline. Every way an event comes in — the HTTP and gRPC
//! doors, CloudEvents, sources' webhooks and a flow's `emit` step — ends in
//! [`Publisher::publish`]: check its payload against the event types whose
//! patterns match its name (`event_types`; here, so no door can skip it),
//! route it against the catalog in force, add the flow runs it starts and
//! the waiting runs it cancels, and hand it to the writer, which answers
//! once it is committed. Errors here are the domain's;
//! each door turns them into its own wire form (`intake::ApiError` for HTTP
//! and gRPC, a step failure for flows).

use std::sync::Arc;

use crate::{
    catalog::{Catalog, CatalogHandle, FlowRoute},
    flows::{catalog::FlowSet, start, FlowCatalog},
    metrics::{self, Door},
    model::{FieldError, NewEvent, Published},
    store::{PublishOutcome, Rejection, SubmitError, Writer},
};

/// Why events were not published. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The writer's queue is full; retry shortly.
    #[error("the storage queue is full")]
    Overloaded,
    /// Storage could not commit (or has stopped).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The id is taken by a different event.
    #[error(
        "event id `{id}` is already taken by a different event (seq {seq}); \
         send the same body to retry it, or use a new id"
    )]
    Conflict { id: String, seq: u64 },
    /// The payload of the event at `index` does not match the schema of an
    /// event type its name matches. The fields' paths are inside the payload.
    #[error("the payload does not match its event type: {}", crate::event_types::summary(.fields))]
    Invalid {
        index: usize,
        fields: Vec<FieldError>,
    },
}

impl PublishError {
    /// What storage's refusal of one event of a batch means.
    pub fn rejected(id: &str, rejection: Rejection) -> PublishError {
        match rejection {
            Rejection::Conflict { seq } => PublishError::Conflict {
                id: id.to_string(),
                seq,
            },
        }
    }
}

impl From<SubmitError> for PublishError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Overloaded => PublishError::Overloaded,
            SubmitError::Unavailable(detail) => PublishError::Unavailable(detail),
            // A publish is never refused as a whole by storage.
            SubmitError::Refused(e) => PublishError::Unavailable(e.to_string()),
        }
    }
}

pub struct Publisher {
    catalog: Arc<CatalogHandle>,
    flows: Arc<FlowCatalog>,
    writer: Writer,
}

impl Publisher {
    pub fn new(catalog: Arc<CatalogHandle>, flows: Arc<FlowCatalog>, writer: Writer) -> Publisher {
        Publisher {
            catalog,
            flows,
            writer,
        }
    }

    /// Checks `events` against the event types, routes them and commits
    /// them; one outcome per event, in order. One event whose payload its
    /// event type refuses refuses them all, and nothing is stored (a door
    /// that answers per event checks each first with [`Publisher::check`]).
    /// Each outcome is counted for `/metrics`.
    pub async fn publish(
        &self,
        door: Door,
        events: Vec<NewEvent>,
    ) -> Result<PublishOutcome, PublishError> {
        self.publish_within(door, events, None).await
    }

    /// As [`Publisher::publish`]; with `patience`, a full writer queue is
    /// waited for that long before the events are refused as overloaded.
    pub async fn publish_within(
        &self,
        door: Door,
        mut events: Vec<NewEvent>,
        patience: Option<std::time::Duration>,
    ) -> Result<PublishOutcome, PublishError> {
        {
            let catalog = self.catalog.get();
            let types = catalog.event_types();
            // With no event types this is the whole cost: one empty check.
            if !types.is_empty() {
                for (index, event) in events.iter().enumerate() {
                    if let Err(fields) = types.check(event) {
                        metrics::events(door, "schema_invalid", events.len() as u64);
                        return Err(PublishError::Invalid { index, fields });
                    }
                }
            }
            self.route(&catalog, &mut events);
        }
        self.commit(door, events, patience).await
    }

    /// Whether the event types take this event; counted as refused when not.
    pub fn check(&self, door: Door, event: &NewEvent) -> Result<(), Vec<FieldError>> {
        let result = self.catalog.get().event_types().check(event);
        if result.is_err() {
            metrics::events(door, "schema_invalid", 1);
        }
        result
    }

    /// [`Publisher::publish`] for events that each passed [`Publisher::check`].
    pub async fn publish_checked(
        &self,
        door: Door,
        mut events: Vec<NewEvent>,
    ) -> Result<PublishOutcome, PublishError> {
        self.route(&self.catalog.get(), &mut events);
        self.commit(door, events, None).await
    }

    /// Hands routed events to the writer (waiting up to `patience` for room
    /// in its queue, when given) and counts what it answered.
    async fn commit(
        &self,
        door: Door,
        events: Vec<NewEvent>,
        patience: Option<std::time::Duration>,
    ) -> Result<PublishOutcome, PublishError> {
        let offered = events.len() as u64;
        let committed = match patience {
            None => self.writer.publish(events).await,
            Some(patience) => self.writer.publish_patiently(events, patience).await,
        };
        let outcomes = match committed {
            Ok(outcomes) => outcomes,
            Err(error) => {
                let error = PublishError::from(error);
                let outcome = match error {
                    PublishError::Overloaded => "overloaded",
                    _ => "unavailable",
                };
                metrics::events(door, outcome, offered);
                return Err(error);
            }
        };
        count_outcomes(door, &outcomes);
        Ok(outcomes)
    }

    /// Publishes a single event.
    pub async fn publish_one(
        &self,
        door: Door,
        event: NewEvent,
    ) -> Result<(String, Published), PublishError> {
        self.publish_one_within(door, event, None).await
    }

    /// Publishes a single event, waiting up to `patience` for room in the
    /// writer's queue.
    pub async fn publish_one_within(
        &self,
        door: Door,
        event: NewEvent,
        patience: Option<std::time::Duration>,
    ) -> Result<(String, Published), PublishError> {
        let id = event.id.clone();
        let outcome = self
            .publish_within(door, vec![event], patience)
            .await?
            .pop()
            .ok_or_else(|| PublishError::Unavailable("the writer returned no outcome".into()))?;
        match outcome {
            Ok(published) => Ok((id, published)),
            Err(rejection) => Err(PublishError::rejected(&id, rejection)),
        }
    }

    /// Decides, before the commit, what each event reaches: deliveries, the
    /// runs it starts and the runs it cancels, all stored in its transaction.
    fn route(&self, catalog: &Catalog, events: &mut [NewEvent]) {
        let flows = self.flows.get();
        let mut flow_routes = Vec::new();
        for event in events.iter_mut() {
            let mut routes = std::mem::take(&mut event.routes);
            catalog.route(event, &mut routes, &mut flow_routes);
            event.routes = routes;
            for route in flow_routes.drain(..) {
                start_from_event(&flows, &route, event);
            }
            let mut cancels = std::mem::take(&mut event.cancels);
            flows.cancels(event, &mut cancels);
            event.cancels = cancels;
        }
    }
}

/// Counts what storage answered for each event; routing is counted for the
/// events stored now (a duplicate routes nothing).
fn count_outcomes(door: Door, outcomes: &PublishOutcome) {
    let (mut accepted, mut duplicate, mut conflict, mut matched) = (0, 0, 0, 0);
    for outcome in outcomes {
        match outcome {
            Ok(p) if p.duplicate => duplicate += 1,
            Ok(p) => {
                accepted += 1;
                matched += u64::from(p.matched);
            }
            Err(Rejection::Conflict { .. }) => conflict += 1,
        }
    }
    metrics::events(door, "accepted", accepted);
    metrics::events(door, "duplicate", duplicate);
    metrics::events(door, "conflict", conflict);
    metrics::routed(matched);
}

/// Adds the run a flow subscription starts for `event`.
fn start_from_event(flows: &FlowSet, route: &FlowRoute, event: &mut NewEvent) {
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
