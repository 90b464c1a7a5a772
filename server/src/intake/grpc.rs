//! gRPC intake: `hookyard.v1.Events`. Publish answers one event;
//! PublishBatch validates each event on its own, commits the good ones in one
//! transaction, and answers one result per event in order.

use std::sync::Arc;

use hookyard::v1::{
    events_server::Events, publish_result, FieldViolation, PublishBatchRequest,
    PublishBatchResponse, PublishError, PublishRequest, PublishResponse, PublishResult,
    StartRunRequest, StartRunResponse,
};
use tonic::{Request, Response, Status};

use super::{auth::Principal, conflict, event, ApiError, Intake, MAX_BATCH};
use crate::model::Published;

pub struct EventsService {
    intake: Arc<Intake>,
}

impl EventsService {
    pub fn new(intake: Arc<Intake>) -> EventsService {
        EventsService { intake }
    }

    fn authenticate<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        self.intake
            .keys
            .authenticate(header)
            .map_err(|e| ApiError::from(e).into_status(""))
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let key = self.authenticate(&request)?;
        let event = request
            .into_inner()
            .event
            .ok_or_else(|| Status::invalid_argument("event is required"))?;
        let event = event::from_proto(event, &key)
            .map_err(|fields| ApiError::Validation(fields).into_status("event"))?;
        key.authorize(std::slice::from_ref(&event))
            .map_err(|e| e.into_status("event"))?;
        let (id, published) = self
            .intake
            .publish_one(event)
            .await
            .map_err(|e| e.into_status("event"))?;
        Ok(Response::new(response(id, published)))
    }

    async fn publish_batch(
        &self,
        request: Request<PublishBatchRequest>,
    ) -> Result<Response<PublishBatchResponse>, Status> {
        let key = self.authenticate(&request)?;
        let events = request.into_inner().events;
        if events.is_empty() || events.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "events must hold 1 to {MAX_BATCH} events, not {}",
                events.len()
            )));
        }
        let mut results: Vec<Option<PublishResult>> = Vec::with_capacity(events.len());
        let mut valid = Vec::with_capacity(events.len());
        let mut slots = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            match event::from_proto(event, &key) {
                Ok(event) => {
                    slots.push(index);
                    valid.push(event);
                    results.push(None);
                }
                Err(fields) => results.push(Some(invalid_result(&fields))),
            }
        }
        // One event for another tenant refuses the call: a question of
        // permission, answered for the request, not per event.
        key.authorize(&valid).map_err(|e| e.into_status(""))?;
        let ids: Vec<String> = valid.iter().map(|e| e.id.clone()).collect();
        if !valid.is_empty() {
            let outcomes = self
                .intake
                .publish(valid)
                .await
                .map_err(|e| e.into_status(""))?;
            for ((index, id), outcome) in slots.into_iter().zip(ids).zip(outcomes) {
                results[index] = Some(match outcome {
                    Ok(published) => ok_result(response(id, published)),
                    Err(rejection) => error_result(conflict(&id, rejection).into_status("")),
                });
            }
        }
        Ok(Response::new(PublishBatchResponse {
            results: results.into_iter().flatten().collect(),
        }))
    }

    async fn start_run(
        &self,
        request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunResponse>, Status> {
        let key = self.authenticate(&request)?;
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

fn response(id: String, published: Published) -> PublishResponse {
    PublishResponse {
        id,
        seq: published.seq,
        duplicate: published.duplicate,
        matched: published.matched,
    }
}

fn ok_result(response: PublishResponse) -> PublishResult {
    PublishResult {
        result: Some(publish_result::Result::Ok(response)),
    }
}

fn invalid_result(fields: &[event::FieldError]) -> PublishResult {
    PublishResult {
        result: Some(publish_result::Result::Error(PublishError {
            code: tonic::Code::InvalidArgument as i32,
            message: "the event is not valid".into(),
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

fn error_result(status: Status) -> PublishResult {
    PublishResult {
        result: Some(publish_result::Result::Error(PublishError {
            code: status.code() as i32,
            message: status.message().to_string(),
            field_violations: Vec::new(),
        })),
    }
}
