//! The Admin API's endpoint operations beyond plain CRUD: secret rotation,
//! a test send, recovery of a failed window, and resending a delivery.

use std::time::Duration;

use hookyard::v1 as pb;
use tonic::{Request, Response, Status};

use super::{
    convert,
    service::{invalid, store_status, AdminService},
};
use crate::{
    delivery::{retry::Outcome, signing::SigningSecret, Control},
    intake::event::FieldError,
    model::{now_ms, Endpoint, EndpointState, EventEnvelope},
};

/// How long a rotated-out secret keeps signing when the request says nothing.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(24 * 3600);
/// The longest grace a rotation may give the old secret.
const MAX_ROTATION_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

impl AdminService {
    pub(super) async fn rotate_endpoint_secret(
        &self,
        request: Request<pb::RotateEndpointSecretRequest>,
    ) -> Result<Response<pb::RotateEndpointSecretResponse>, Status> {
        let request = request.into_inner();
        let grace = request
            .grace_ms
            .map_or(DEFAULT_ROTATION_GRACE, Duration::from_millis);
        if grace > MAX_ROTATION_GRACE {
            return Err(invalid(&[FieldError::new(
                &["grace_ms"],
                format!(
                    "must be at most {} days",
                    MAX_ROTATION_GRACE.as_secs() / 86_400
                ),
            )]));
        }
        let mut endpoint = self
            .store
            .get_endpoint(&request.id)
            .await
            .map_err(store_status)?;
        let (secret, _) = SigningSecret::generate();
        let until = now_ms().saturating_add(grace.as_millis().min(i64::MAX as u128) as i64);
        endpoint.previous_secret =
            (!grace.is_zero()).then(|| (std::mem::take(&mut endpoint.secret), until));
        endpoint.secret = secret.clone();
        let updated = self
            .store
            .update_endpoint(&endpoint)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        tracing::info!(endpoint = %updated.id, grace_secs = grace.as_secs(), "Endpoint secret rotated.");
        Ok(Response::new(pb::RotateEndpointSecretResponse {
            endpoint: Some(convert::endpoint_to_pb(&updated)),
            secret,
        }))
    }

    pub(super) async fn send_test_event(
        &self,
        request: Request<pb::SendTestEventRequest>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        let request = request.into_inner();
        let endpoint = self
            .store
            .get_endpoint(&request.endpoint_id)
            .await
            .map_err(store_status)?;
        let event = test_event(&request, &endpoint)?;
        let report = self.sender.attempt_event(&event, &endpoint).await;
        Ok(Response::new(pb::SendTestEventResponse {
            succeeded: matches!(report.outcome, Outcome::Success),
            attempt: Some(convert::attempt_to_pb(&report.attempt)),
        }))
    }

    pub(super) async fn recover_endpoint(
        &self,
        request: Request<pb::RecoverEndpointRequest>,
    ) -> Result<Response<pb::RecoverEndpointResponse>, Status> {
        let request = request.into_inner();
        // Exists, so a typo is NOT_FOUND rather than "0 re-queued".
        let endpoint = self
            .store
            .get_endpoint(&request.endpoint_id)
            .await
            .map_err(store_status)?;
        let since_ms = request.since.map_or(i64::MIN, |t| {
            t.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(t.nanos) / 1_000_000)
        });
        let requeued = self
            .store
            .recover_endpoint(&endpoint.id, since_ms)
            .await
            .map_err(store_status)?;
        if requeued > 0 {
            // Stored as due now: the dispatcher reads them in its claims.
            let _ = self.control.try_send(Control::Backlog(endpoint.id.clone()));
        }
        tracing::info!(endpoint = %endpoint.id, requeued, "Endpoint recovered: failed and dead deliveries re-queued.");
        Ok(Response::new(pb::RecoverEndpointResponse { requeued }))
    }

    pub(super) async fn resend_delivery(
        &self,
        request: Request<pb::ResendDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let (delivery, due) = self
            .store
            .resend_delivery(request.into_inner().id)
            .await
            .map_err(store_status)?;
        let _ = self.control.try_send(Control::RetryNow(due));
        Ok(Response::new(convert::delivery_to_pb(&delivery)))
    }
}

/// The event SendTestEvent sends: `hookyard.test` with a small example
/// payload unless the request gives its own.
fn test_event(
    request: &pb::SendTestEventRequest,
    endpoint: &Endpoint,
) -> Result<EventEnvelope, Status> {
    let name = if request.event_name.is_empty() {
        "hookyard.test".to_string()
    } else {
        request.event_name.clone()
    };
    if let Err(err) = crate::routing::validate_name(&name) {
        return Err(invalid(&[FieldError::new(
            &["event_name"],
            format!("`{name}` is not a valid event name: {err}"),
        )]));
    }
    let payload = if request.payload.is_empty() {
        serde_json::json!({
            "message": "A test event from Hookyard.",
            "endpoint_id": endpoint.id,
        })
        .to_string()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&request.payload) {
            Ok(value @ serde_json::Value::Object(_)) => value.to_string(),
            _ => {
                return Err(invalid(&[FieldError::new(
                    &["payload"],
                    "must be a JSON object",
                )]))
            }
        }
    };
    if endpoint.state != EndpointState::Enabled {
        tracing::info!(endpoint = %endpoint.id, state = endpoint.state.as_str(), "Test event sent to an endpoint that is not enabled.");
    }
    Ok(EventEnvelope {
        seq: 0,
        id: format!("test_{}", uuid::Uuid::now_v7().simple()),
        name,
        source: "test".into(),
        tenant_id: endpoint.tenant_id.clone(),
        time_ms: now_ms(),
        payload,
    })
}
