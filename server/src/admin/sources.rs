//! The Admin RPCs for sources. Every write is validated with the same rules
//! as the config file, stored, and then the source registry is rebuilt so the
//! webhook intake sees the change on the next request. Tokens are generated
//! here and shown once, in the answer that made them.

use std::time::Duration;

use hookyard::v1 as pb;
use tonic::{Request, Response, Status};

use super::{
    service::{invalid, required, store_status},
    source_convert::{source_from_pb, source_to_pb},
    AdminService,
};
use crate::{
    intake::{
        event::FieldError,
        sources::{registry, token, url_path, Source, SourceStatus, DEFAULT_GRACE},
    },
    model::now_ms,
};

/// The longest grace period a rotation may give the old token.
const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// `None` for a negative or unnormalised duration. prost's own conversion
/// negates the seconds first, which overflows on `i64::MIN`.
fn grace_from_pb(d: prost_types::Duration) -> Option<Duration> {
    let seconds = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(Duration::new(seconds, nanos))
}

impl AdminService {
    pub(super) async fn create_source(
        &self,
        request: Request<pb::CreateSourceRequest>,
    ) -> Result<Response<pb::SourceWithToken>, Status> {
        let input = required(request.into_inner().source, "source")?;
        let mut source = source_from_pb(input).map_err(|e| invalid(&e))?;
        if source.id.is_empty() {
            source.id = uuid::Uuid::now_v7().to_string();
        }
        check(&source)?;
        let token = token::generate();
        source.token_hash = token::hash(&token);
        let created = self
            .store
            .create_source(&source)
            .await
            .map_err(store_status)?;
        self.reload_sources().await?;
        Ok(Response::new(self.with_token(&created, token)))
    }

    pub(super) async fn get_source(
        &self,
        request: Request<pb::GetSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let source = self
            .store
            .get_source(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(self.source_pb(&source)))
    }

    pub(super) async fn list_sources(
        &self,
        request: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesResponse>, Status> {
        let sources = self
            .store
            .list_sources(request.into_inner().include_deleted)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListSourcesResponse {
            sources: sources.iter().map(|s| self.source_pb(s)).collect(),
            unknown_token_rejections: self.sources.unknown_tokens(),
        }))
    }

    pub(super) async fn update_source(
        &self,
        request: Request<pb::UpdateSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        let input = required(request.into_inner().source, "source")?;
        let mut source = source_from_pb(input).map_err(|e| invalid(&e))?;
        if source.policy.signature.secret().is_empty() {
            // An empty secret keeps the stored one.
            let current = self
                .store
                .get_source(&source.id)
                .await
                .map_err(store_status)?;
            let secret = current.policy.signature.secret().to_string();
            source.policy.signature.set_secret(secret);
        }
        check(&source)?;
        let updated = self
            .store
            .update_source(&source)
            .await
            .map_err(store_status)?;
        self.reload_sources().await?;
        Ok(Response::new(self.source_pb(&updated)))
    }

    pub(super) async fn delete_source(
        &self,
        request: Request<pb::DeleteSourceRequest>,
    ) -> Result<Response<pb::DeleteSourceResponse>, Status> {
        self.store
            .delete_source(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        self.reload_sources().await?;
        Ok(Response::new(pb::DeleteSourceResponse {}))
    }

    pub(super) async fn rotate_source_token(
        &self,
        request: Request<pb::RotateSourceTokenRequest>,
    ) -> Result<Response<pb::SourceWithToken>, Status> {
        let request = request.into_inner();
        let grace = match request.grace_period {
            None => DEFAULT_GRACE,
            Some(d) => grace_from_pb(d)
                .filter(|g| *g <= MAX_GRACE)
                .ok_or_else(|| {
                    invalid(&[FieldError::new(
                        &["grace_period"],
                        format!("must be between 0 and {} days", MAX_GRACE.as_secs() / 86400),
                    )])
                })?,
        };
        let token = token::generate();
        let rotated = self
            .store
            .rotate_source_token(
                &request.id,
                &token::hash(&token),
                crate::timestamp::add(now_ms(), grace),
            )
            .await
            .map_err(store_status)?;
        self.reload_sources().await?;
        Ok(Response::new(self.with_token(&rotated, token)))
    }

    pub(super) async fn suspend_source(
        &self,
        request: Request<pb::SuspendSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        self.set_status(&request.into_inner().id, SourceStatus::Suspended)
            .await
    }

    pub(super) async fn resume_source(
        &self,
        request: Request<pb::ResumeSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        self.set_status(&request.into_inner().id, SourceStatus::Active)
            .await
    }

    async fn set_status(
        &self,
        id: &str,
        status: SourceStatus,
    ) -> Result<Response<pb::Source>, Status> {
        let source = self
            .store
            .set_source_status(id, status)
            .await
            .map_err(store_status)?;
        self.reload_sources().await?;
        Ok(Response::new(self.source_pb(&source)))
    }

    async fn reload_sources(&self) -> Result<(), Status> {
        self.sources.reload().await.map_err(store_status)
    }

    fn source_pb(&self, source: &Source) -> pb::Source {
        source_to_pb(source, self.sources.rejections(&source.id))
    }

    fn with_token(&self, source: &Source, token: String) -> pb::SourceWithToken {
        pb::SourceWithToken {
            source: Some(self.source_pb(source)),
            url_path: url_path(&token),
            token,
        }
    }
}

/// INVALID_ARGUMENT naming every field the source gets wrong.
fn check(source: &Source) -> Result<(), Status> {
    let errors: Vec<FieldError> = registry::validate(source)
        .into_iter()
        .map(|mut e| {
            if e.path.first().is_some_and(|p| p == "schema") {
                e.path[0] = "schema_json".into();
            }
            e
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid(&errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_grace_period_converts_without_overflow() {
        let d = |seconds, nanos| prost_types::Duration { seconds, nanos };
        assert_eq!(grace_from_pb(d(60, 5)), Some(Duration::new(60, 5)));
        assert_eq!(
            grace_from_pb(d(i64::MAX, 999_999_999)),
            Some(Duration::new(i64::MAX as u64, 999_999_999))
        );
        for (seconds, nanos) in [
            (i64::MIN, 0),
            (-1, 0),
            (0, -1),
            (0, 1_000_000_000),
            (i64::MIN, i32::MIN),
        ] {
            assert_eq!(grace_from_pb(d(seconds, nanos)), None, "{seconds} {nanos}");
        }
    }
}
