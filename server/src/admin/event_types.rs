//! The Admin RPCs for event types. A write is checked with the same rules
//! as the config file (`event_types::validate`: the pattern parses, the
//! schema compiles), stored, and then the catalog is rebuilt, so the next
//! event published is checked against the change. A write that fails a
//! check stores nothing.

use hookyard::v1 as pb;
use tonic::{Request, Response, Status};

use super::{
    convert::timestamp,
    service::{invalid, required, store_status},
    AdminService,
};
use crate::{event_types, model::EventType};

impl AdminService {
    pub(super) async fn create_event_type(
        &self,
        request: Request<pb::CreateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let event_type = from_pb(required(request.into_inner().event_type, "event_type")?);
        check(&event_type)?;
        let created = self
            .store
            .create_event_type(&event_type)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(to_pb(&created)))
    }

    pub(super) async fn get_event_type(
        &self,
        request: Request<pb::GetEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let event_type = self
            .store
            .get_event_type(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(to_pb(&event_type)))
    }

    pub(super) async fn list_event_types(
        &self,
        _request: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        let event_types = self.store.list_event_types().await.map_err(store_status)?;
        Ok(Response::new(pb::ListEventTypesResponse {
            event_types: event_types.iter().map(to_pb).collect(),
        }))
    }

    pub(super) async fn update_event_type(
        &self,
        request: Request<pb::UpdateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let event_type = from_pb(required(request.into_inner().event_type, "event_type")?);
        check(&event_type)?;
        let updated = self
            .store
            .update_event_type(&event_type)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(to_pb(&updated)))
    }

    pub(super) async fn delete_event_type(
        &self,
        request: Request<pb::DeleteEventTypeRequest>,
    ) -> Result<Response<pb::DeleteEventTypeResponse>, Status> {
        self.store
            .delete_event_type(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(pb::DeleteEventTypeResponse {}))
    }
}

fn check(event_type: &EventType) -> Result<(), Status> {
    let errors = event_types::validate(event_type);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(&errors))
    }
}

fn from_pb(t: pb::EventType) -> EventType {
    EventType {
        id: t.id,
        pattern: t.pattern,
        description: t.description,
        schema: t.schema,
        version: t.version,
        created_ms: 0,
        updated_ms: 0,
    }
}

pub fn to_pb(t: &EventType) -> pb::EventType {
    pb::EventType {
        id: t.id.clone(),
        pattern: t.pattern.clone(),
        description: t.description.clone(),
        schema: t.schema.clone(),
        version: t.version,
        created_at: timestamp(t.created_ms),
        updated_at: timestamp(t.updated_ms),
    }
}
