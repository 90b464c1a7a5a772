//! gRPC intake: `hookyard.v1.Events`. Publish answers one event;
//! PublishBatch validates each event on its own, commits the good ones in one
//! transaction, and answers one result per event in order. The API key and
//! the message size were checked before the message was read (`grpc_gate`);
//! here each call is charged to the key's rate limit, one cell per event.

use crate::metrics::Door;
use std::sync::Arc;

use hookyard::v1::{
    events_server::Events, publish_result, FieldViolation, PublishBatchRequest,
    PublishBatchResponse, PublishError, PublishRequest, PublishResponse, PublishResult,
    StartRunRequest, StartRunResponse,
};
use tonic::{Request, Response, Status};

use super::{auth::Principal, event, grpc_gate::Caller, ApiError, Intake, MAX_BATCH};
use crate::{model::Published, publish};

pub struct EventsService {
    intake: Arc<Intake>,
}

impl EventsService {
    pub fn new(intake: Arc<Intake>) -> EventsService {
        EventsService { intake }
    }

    /// The caller's key, checked by the [`ApiKeyGate`] in front of this
    /// service, charged for `events`.
    fn admit<T>(&self, request: &Request<T>, events: usize) -> Result<Principal, Status> {
        let Caller(principal) = request
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("the API key was not checked"))?;
        self.intake
            .keys
            .admit(&principal.name, events)
            .map_err(|e| {
                crate::metrics::events(Door::Grpc, "rate_limited", events as u64);
                e.into_status("")
            })?;
        Ok(principal)
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let key = self.admit(&request, 1)?;
        let event = request.into_inner().event.ok_or_else(|| {
            crate::metrics::events(Door::Grpc, "invalid", 1);
            ApiError::Validation(vec![event::FieldError::new(&[], "is required")])
                .into_status("event")
        })?;
        let event = event::from_proto(event, &key).map_err(|fields| {
            crate::metrics::events(Door::Grpc, "invalid", 1);
            ApiError::Validation(fields).into_status("event")
        })?;
        key.authorize(std::slice::from_ref(&event))
            .map_err(|e| e.into_status("event"))?;
        let (id, published) = self
            .intake
            .publisher
            .publish_one(Door::Grpc, event)
            .await
            .map_err(|e| ApiError::from(e).into_status("event"))?;
        Ok(Response::new(response(id, published)))
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let count = request.get_ref().events.len();
        if count == 0 || count > MAX_BATCH {
            let message = format!("must hold 1 to {MAX_BATCH} events, not {count}");
            return Err(
                ApiError::Validation(vec![event::FieldError::new(&[], message)])
                    .into_status("events"),
            );
        }
        let key = self.admit(&request, count)?;
        let events = request.into_inner().events;
        let mut results: Vec<Option<PublishResult>> = Vec::with_capacity(events.len());
        let mut valid = Vec::with_capacity(events.len());
        let mut slots = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            match event::from_proto(event, &key) {
                Ok(event) => match self.intake.publisher.check(Door::Grpc, &event) {
                    Ok(()) => {
                        slots.push(index);
                        valid.push(event);
                        results.push(None);
                    }
                    Err(fields) => {
                        let fields: Vec<_> = fields
                            .into_iter()
                            .map(|mut f| {
                                f.path.insert(0, "payload".into());
                                f
                            })
                            .collect();
                        results.push(Some(invalid_result(
                            "the payload does not match its event type",
                            &fields,
                        )));
                    }
                },
                Err(fields) => {
                    crate::metrics::events(Door::Grpc, "invalid", 1);
                    results.push(Some(invalid_result("the event is not valid", &fields)));
                }
            }
        }
        // One event for another tenant refuses the call: a question of
        // permission, answered for the request, not per event.
        key.authorize(&valid).map_err(|e| e.into_status(""))?;
        let ids: Vec<String> = valid.iter().map(|e| e.id.clone()).collect();
        if !valid.is_empty() {
            let outcomes = self
                .intake
                .publisher
                .publish_checked(Door::Grpc, valid)
                .await
                .map_err(|e| ApiError::from(e).into_status(""))?;
            for ((index, id), outcome) in slots.into_iter().zip(ids).zip(outcomes) {
                results[index] = Some(match outcome {
                    Ok(published) => ok_result(response(id, published)),
                    Err(rejection) => error_result(
                        ApiError::from(publish::PublishError::rejected(&id, rejection))
                            .into_status(""),
                    ),
                });
            }
        }
        Ok(Response::new(PublishBatchResponse {
            results: results.into_iter().flatten().collect(),
        }))
    }

    type PublishStreamStream = super::publish_stream::ResultStream;

    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        // The key is checked once, for the stream; each event is charged to
        // its rate limit as it arrives.
        let key = self.admit(&request, 0)?;
        Ok(Response::new(super::publish_stream::serve(
            self.intake.clone(),
            key,
            request.into_inner(),
        )))
    }

    async fn start_run(
        &self,
        request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunResponse>, Status> {
        let key = self.admit(&request, 1)?;
        let request = request.into_inner();
        let inputs = crate::flows::start::inputs_from_bytes(&request.inputs)
            .map_err(|e| e.into_status("inputs"))?;
        let run = self
            .intake
            .start_run(
                &request.flow_id,
                inputs,
                crate::flows::start::Trigger::Api,
                Some(&key),
            )
            .await
            .map_err(|e| e.into_status("inputs"))?;
        Ok(Response::new(StartRunResponse {
            id: run.id,
            state: crate::admin::flows::run_state_to_pb(run.state) as i32,
        }))
    }
}

pub(super) fn response(id: String, published: Published) -> PublishResponse {
    PublishResponse {
        id,
        seq: published.seq,
        duplicate: published.duplicate,
        matched: published.matched,
    }
}

pub(super) fn ok_result(response: PublishResponse) -> PublishResult {
    PublishResult {
        result: Some(publish_result::Result::Ok(response)),
    }
}

pub(super) fn invalid_result(message: &str, fields: &[event::FieldError]) -> PublishResult {
    PublishResult {
        result: Some(publish_result::Result::Error(PublishError {
            code: tonic::Code::InvalidArgument as i32,
            message: format!("{message}: {}", crate::event_types::summary(fields)),
            field_violations: fields
                .iter()
                .map(|f| FieldViolation {
                    field: f.dotted(""),
                    description: f.message.clone(),
                })
                .collect(),
        })),
    }
}

pub(super) fn error_result(status: Status) -> PublishResult {
    PublishResult {
        result: Some(publish_result::Result::Error(PublishError {
            code: status.code() as i32,
            message: status.message().to_string(),
            field_violations: Vec::new(),
        })),
    }
}
