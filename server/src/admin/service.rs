//! The `hookyard.v1.Admin` gRPC service. Writes go to storage, then the
//! catalog is rebuilt so routing sees the change on the next event.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use hookyard::v1::{self as pb, admin_server::Admin};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{convert, feed::LiveFeed, validate};
use crate::{
    catalog::CatalogHandle,
    delivery::{signing::SigningSecret, Control, Sender},
    intake::{event::FieldError, sources::SourceRegistry},
    model::{DeliveryFilter, Endpoint, EndpointAuth, EndpointState, NewEvent, Subscription},
    routing::Pattern,
    store::{self, Store},
};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
/// Updates buffered per watcher before older ones are dropped.
const WATCH_BUFFER: usize = 256;

/// What the Admin API asks of delivery: the dispatcher's control channel
/// (retries, recoveries) and its sender (test sends).
pub struct DeliveryAdmin {
    pub control: mpsc::Sender<Control>,
    pub sender: Arc<Sender>,
}

pub struct AdminService {
    pub(super) store: Store,
    pub(super) catalog: Arc<CatalogHandle>,
    feed: LiveFeed,
    pub(super) control: mpsc::Sender<Control>,
    /// For SendTestEvent: the dispatcher's own client and request builder.
    pub(super) sender: Arc<Sender>,
    pub(super) sources: Arc<SourceRegistry>,
    pub(super) flows: super::flows::FlowAdmin,
    /// Ends the watch streams, so a watcher does not hold up shutdown.
    pub(super) shutdown: CancellationToken,
    /// Replays and bulk retries, running and finished.
    pub(super) jobs: Arc<super::jobs::Jobs>,
}

impl AdminService {
    pub fn new(
        store: Store,
        catalog: Arc<CatalogHandle>,
        feed: LiveFeed,
        delivery: DeliveryAdmin,
        sources: Arc<SourceRegistry>,
        flows: super::flows::FlowAdmin,
        shutdown: CancellationToken,
    ) -> AdminService {
        AdminService {
            store,
            catalog,
            feed,
            control: delivery.control,
            sender: delivery.sender,
            sources,
            flows,
            shutdown,
            jobs: Arc::default(),
        }
    }

    pub(super) async fn reload(&self) -> Result<(), Status> {
        self.catalog.reload().await.map_err(store_status)
    }

    fn check_endpoint(&self, endpoint: &mut Endpoint) -> Result<(), Status> {
        let mut errors = validate::endpoint(endpoint);
        errors.extend(validate::endpoint_tenant(endpoint));
        if !errors.is_empty() {
            return Err(invalid(&errors));
        }
        let target = format!("endpoint:{}", endpoint.id);
        let catalog = self.catalog.get();
        if let Some(conflict) = validate::target_tenant_conflicts(
            &target,
            endpoint.tenant_id.as_deref(),
            catalog.subscriptions().map(|s| &**s),
        ) {
            return Err(Status::failed_precondition(conflict));
        }
        if endpoint.secret.is_empty() {
            endpoint.secret = SigningSecret::generate().0;
        }
        Ok(())
    }

    fn check_subscription(&self, sub: &Subscription) -> Result<(), Status> {
        let catalog = self.catalog.get();
        let flows = self.flows.catalog.get();
        let mut errors =
            validate::subscription(sub, &catalog, &flows, self.flows.catalog.secrets());
        errors.extend(validate::subscription_tenant(sub, &catalog, &flows));
        if errors.is_empty() {
            Ok(())
        } else {
            Err(invalid(&errors))
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::DeliveryUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_endpoint(
        &self,
        request: Request<pb::CreateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let input = required(request.into_inner().endpoint, "endpoint")?;
        let mut endpoint = convert::endpoint_from_pb(input).map_err(|e| invalid(&[e]))?;
        self.check_endpoint(&mut endpoint)?;
        let created = self
            .store
            .create_endpoint(&endpoint)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(convert::endpoint_to_pb(&created)))
    }

    async fn get_endpoint(
        &self,
        request: Request<pb::GetEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let endpoint = self
            .store
            .get_endpoint(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::endpoint_to_pb(&endpoint)))
    }

    async fn list_endpoints(
        &self,
        _request: Request<pb::ListEndpointsRequest>,
    ) -> Result<Response<pb::ListEndpointsResponse>, Status> {
        let endpoints = self.store.list_endpoints().await.map_err(store_status)?;
        Ok(Response::new(pb::ListEndpointsResponse {
            endpoints: endpoints.iter().map(convert::endpoint_to_pb).collect(),
        }))
    }

    async fn update_endpoint(
        &self,
        request: Request<pb::UpdateEndpointRequest>,
    ) -> Result<Response<pb::Endpoint>, Status> {
        let input = required(request.into_inner().endpoint, "endpoint")?;
        let mut endpoint = convert::endpoint_from_pb(input).map_err(|e| invalid(&[e]))?;
        let current = self
            .store
            .get_endpoint(&endpoint.id)
            .await
            .map_err(store_status)?;
        keep_stored(&mut endpoint, current);
        self.check_endpoint(&mut endpoint)?;
        let updated = self
            .store
            .update_endpoint(&endpoint)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(convert::endpoint_to_pb(&updated)))
    }

    async fn delete_endpoint(
        &self,
        request: Request<pb::DeleteEndpointRequest>,
    ) -> Result<Response<pb::DeleteEndpointResponse>, Status> {
        self.store
            .delete_endpoint(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(pb::DeleteEndpointResponse {}))
    }

    async fn create_subscription(
        &self,
        request: Request<pb::CreateSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let input = required(request.into_inner().subscription, "subscription")?;
        let mut sub = convert::subscription_from_pb(input);
        sub.id = uuid::Uuid::now_v7().to_string();
        self.check_subscription(&sub)?;
        let created = self
            .store
            .create_subscription(&sub)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(convert::subscription_to_pb(&created)))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let sub = self
            .store
            .get_subscription(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::subscription_to_pb(&sub)))
    }

    async fn list_subscriptions(
        &self,
        _request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let subs = self
            .store
            .list_subscriptions()
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: subs.iter().map(convert::subscription_to_pb).collect(),
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<pb::UpdateSubscriptionRequest>,
    ) -> Result<Response<pb::Subscription>, Status> {
        let input = required(request.into_inner().subscription, "subscription")?;
        let sub = convert::subscription_from_pb(input);
        self.check_subscription(&sub)?;
        let updated = self
            .store
            .update_subscription(&sub)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(convert::subscription_to_pb(&updated)))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        self.store
            .delete_subscription(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        self.reload().await?;
        Ok(Response::new(pb::DeleteSubscriptionResponse {}))
    }

    async fn test_route(
        &self,
        request: Request<pb::TestRouteRequest>,
    ) -> Result<Response<pb::TestRouteResponse>, Status> {
        let request = request.into_inner();
        if let Err(err) = crate::routing::validate_name(&request.name) {
            return Err(invalid(&[FieldError::new(
                &["name"],
                format!("`{}` is not a valid event name: {err}", request.name),
            )]));
        }
        if !request.payload.is_empty()
            && !matches!(
                serde_json::from_slice::<serde_json::Value>(&request.payload),
                Ok(serde_json::Value::Object(_))
            )
        {
            return Err(invalid(&[FieldError::new(
                &["payload"],
                "must be a JSON object",
            )]));
        }
        let tenant = (!request.tenant_id.is_empty()).then_some(request.tenant_id.as_str());
        let payload = if request.payload.is_empty() {
            "{}".to_string()
        } else {
            String::from_utf8_lossy(&request.payload).into_owned()
        };
        let event = NewEvent {
            id: "test-route".into(),
            name: request.name.clone(),
            source: "test-route".into(),
            tenant_id: tenant.map(str::to_string),
            time_ms: crate::model::now_ms(),
            payload,
            attributes: Default::default(),
            body_hash: [0; 32],
            routes: Vec::new(),
            flow_starts: Vec::new(),
            cancels: Vec::new(),
        };
        let catalog = self.catalog.get();
        let matches = catalog.matching_subscriptions(&event);
        let schema_violations = match catalog.event_types().check(&event) {
            Ok(()) => Vec::new(),
            Err(fields) => fields
                .iter()
                .map(|f| pb::FieldViolation {
                    field: f.dotted("payload"),
                    description: f.message.clone(),
                })
                .collect(),
        };
        let flows = self.flows.catalog.get();
        // As intake does: a tenant's flow starts runs only for its tenant.
        let starts = |s: &Subscription| {
            s.flow_id()
                .and_then(|id| flows.get(id))
                .is_none_or(|f| f.def.takes_events_of(tenant))
        };
        Ok(Response::new(pb::TestRouteResponse {
            matched: matches
                .taken
                .iter()
                .filter(|s| starts(s))
                .map(|s| convert::subscription_to_pb(s))
                .collect(),
            filtered_out: matches
                .filtered_out
                .iter()
                .map(|(s, reason)| pb::FilteredOut {
                    subscription: Some(convert::subscription_to_pb(s)),
                    reason: reason.clone(),
                })
                .collect(),
            schema_violations,
        }))
    }

    async fn list_deliveries(
        &self,
        request: Request<pb::ListDeliveriesRequest>,
    ) -> Result<Response<pb::ListDeliveriesResponse>, Status> {
        let request = request.into_inner();
        let filter = delivery_filter(request.filter)?;
        let page_size = match request.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<u64>().map_err(|_| {
                invalid(&[FieldError::new(
                    &["page_token"],
                    "is not a token this API returned",
                )])
            })?),
        };
        let page = self
            .store
            .list_deliveries(&filter, page_size, before)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::ListDeliveriesResponse {
            deliveries: page
                .deliveries
                .iter()
                .map(convert::delivery_to_pb)
                .collect(),
            next_page_token: page.next_before.map(|b| b.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::DeliveryDetail>, Status> {
        let (delivery, event, attempts) = self
            .store
            .get_delivery(request.into_inner().id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::DeliveryDetail {
            delivery: Some(convert::delivery_to_pb(&delivery)),
            event: Some(convert::event_to_pb(&event)),
            attempts: attempts.iter().map(convert::attempt_to_pb).collect(),
        }))
    }

    async fn retry_delivery(
        &self,
        request: Request<pb::RetryDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        let (delivery, due) = self
            .store
            .schedule_retry(request.into_inner().id)
            .await
            .map_err(store_status)?;
        // Stored as due now: if the dispatcher cannot take it, a reload will.
        let _ = self.control.try_send(Control::RetryNow(due));
        Ok(Response::new(convert::delivery_to_pb(&delivery)))
    }

    type WatchDeliveriesStream = WatchStream;

    async fn watch_deliveries(
        &self,
        request: Request<pb::WatchDeliveriesRequest>,
    ) -> Result<Response<Self::WatchDeliveriesStream>, Status> {
        let filter = delivery_filter(request.into_inner().filter)?;
        let changes = self.feed.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(super::watch::forward(
            changes,
            self.shutdown.clone(),
            tx,
            move |change: &super::feed::DeliveryChange, missed| {
                filter
                    .matches(&change.delivery)
                    .then(|| pb::DeliveryUpdate {
                        delivery: Some(convert::delivery_to_pb(&change.delivery)),
                        time: convert::timestamp(change.time_ms),
                        missed,
                    })
            },
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn replay_events(
        &self,
        request: Request<pb::ReplayEventsRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.replay_events(request).await
    }

    async fn retry_dead_letters(
        &self,
        request: Request<pb::RetryDeadLettersRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.retry_dead_letters(request).await
    }

    async fn list_jobs(
        &self,
        _request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Ok(Response::new(pb::ListJobsResponse {
            jobs: self.list_jobs(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.job(&request.into_inner().id).map(Response::new)
    }

    async fn cancel_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        self.cancel_job(&request.into_inner().id).map(Response::new)
    }

    type WatchJobStream = super::jobs::JobStream;

    async fn watch_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.watch_job(&request.into_inner().id).map(Response::new)
    }

    async fn resend_delivery(
        &self,
        r: Request<pb::ResendDeliveryRequest>,
    ) -> Result<Response<pb::Delivery>, Status> {
        self.resend_delivery(r).await
    }

    // ---- endpoint operations (admin/endpoints.rs) ----

    async fn rotate_endpoint_secret(
        &self,
        r: Request<pb::RotateEndpointSecretRequest>,
    ) -> Result<Response<pb::RotateEndpointSecretResponse>, Status> {
        self.rotate_endpoint_secret(r).await
    }

    async fn send_test_event(
        &self,
        r: Request<pb::SendTestEventRequest>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        self.send_test_event(r).await
    }

    async fn recover_endpoint(
        &self,
        r: Request<pb::RecoverEndpointRequest>,
    ) -> Result<Response<pb::RecoverEndpointResponse>, Status> {
        self.recover_endpoint(r).await
    }

    // ---- sources (admin/sources.rs) ----

    async fn create_source(
        &self,
        r: Request<pb::CreateSourceRequest>,
    ) -> Result<Response<pb::SourceWithToken>, Status> {
        self.create_source(r).await
    }

    async fn get_source(
        &self,
        r: Request<pb::GetSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        self.get_source(r).await
    }

    async fn list_sources(
        &self,
        r: Request<pb::ListSourcesRequest>,
    ) -> Result<Response<pb::ListSourcesResponse>, Status> {
        self.list_sources(r).await
    }

    async fn update_source(
        &self,
        r: Request<pb::UpdateSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        self.update_source(r).await
    }

    async fn delete_source(
        &self,
        r: Request<pb::DeleteSourceRequest>,
    ) -> Result<Response<pb::DeleteSourceResponse>, Status> {
        self.delete_source(r).await
    }

    async fn rotate_source_token(
        &self,
        r: Request<pb::RotateSourceTokenRequest>,
    ) -> Result<Response<pb::SourceWithToken>, Status> {
        self.rotate_source_token(r).await
    }

    async fn suspend_source(
        &self,
        r: Request<pb::SuspendSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        self.suspend_source(r).await
    }

    async fn resume_source(
        &self,
        r: Request<pb::ResumeSourceRequest>,
    ) -> Result<Response<pb::Source>, Status> {
        self.resume_source(r).await
    }

    // ---- flows (admin/flows.rs) ----

    async fn create_flow(
        &self,
        r: Request<pb::CreateFlowRequest>,
    ) -> Result<Response<pb::Flow>, Status> {
        self.create_flow(r).await
    }

    async fn get_flow(&self, r: Request<pb::GetFlowRequest>) -> Result<Response<pb::Flow>, Status> {
        self.get_flow(r).await
    }

    async fn list_flows(
        &self,
        r: Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::ListFlowsResponse>, Status> {
        self.list_flows(r).await
    }

    async fn update_flow(
        &self,
        r: Request<pb::UpdateFlowRequest>,
    ) -> Result<Response<pb::Flow>, Status> {
        self.update_flow(r).await
    }

    async fn delete_flow(
        &self,
        r: Request<pb::DeleteFlowRequest>,
    ) -> Result<Response<pb::DeleteFlowResponse>, Status> {
        self.delete_flow(r).await
    }

    async fn rotate_flow_webhook_key(
        &self,
        r: Request<pb::RotateFlowWebhookKeyRequest>,
    ) -> Result<Response<pb::RotateFlowWebhookKeyResponse>, Status> {
        self.rotate_flow_webhook_key(r).await
    }

    async fn start_run(
        &self,
        r: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        self.start_run(r).await
    }

    async fn cancel_run(
        &self,
        r: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        self.cancel_run(r).await
    }

    async fn list_runs(
        &self,
        r: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        self.list_runs(r).await
    }

    async fn get_run(
        &self,
        r: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunDetail>, Status> {
        self.get_run(r).await
    }

    type WatchRunsStream = super::flows::RunStream;

    async fn watch_runs(
        &self,
        r: Request<pb::WatchRunsRequest>,
    ) -> Result<Response<Self::WatchRunsStream>, Status> {
        self.watch_runs(r).await
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        self.stats().await
    }

    async fn create_event_type(
        &self,
        r: Request<pb::CreateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        self.create_event_type(r).await
    }

    async fn get_event_type(
        &self,
        r: Request<pb::GetEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        self.get_event_type(r).await
    }

    async fn list_event_types(
        &self,
        r: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        self.list_event_types(r).await
    }

    async fn update_event_type(
        &self,
        r: Request<pb::UpdateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        self.update_event_type(r).await
    }

    async fn delete_event_type(
        &self,
        r: Request<pb::DeleteEventTypeRequest>,
    ) -> Result<Response<pb::DeleteEventTypeResponse>, Status> {
        self.delete_event_type(r).await
    }
}

fn delivery_filter(filter: Option<pb::DeliveryFilter>) -> Result<DeliveryFilter, Status> {
    let Some(filter) = filter else {
        return Ok(DeliveryFilter::default());
    };
    let event_name = match filter.event_name.as_str() {
        "" => None,
        pattern => Some(Pattern::parse(pattern).map_err(|e| {
            invalid(&[FieldError::new(
                &["filter", "event_name"],
                format!("`{pattern}` {e}"),
            )])
        })?),
    };
    Ok(DeliveryFilter {
        status: convert::status_from_pb(filter.status),
        endpoint_id: (!filter.endpoint_id.is_empty()).then_some(filter.endpoint_id),
        subscription_id: (!filter.subscription_id.is_empty()).then_some(filter.subscription_id),
        event_name,
    })
}

/// What an update leaves as stored: an empty secret, password or OAuth2
/// client secret keeps the stored one; the rotation's grace and the daemon's view of the endpoint's
/// health stay, except that enabling it again starts its health afresh.
fn keep_stored(endpoint: &mut Endpoint, current: Endpoint) {
    if endpoint.secret.is_empty() || endpoint.secret == current.secret {
        endpoint.secret = current.secret;
        endpoint.previous_secret = current.previous_secret;
    }
    if let (
        Some(EndpointAuth::Basic { password, .. }),
        Some(EndpointAuth::Basic {
            password: stored, ..
        }),
    ) = (&mut endpoint.options.auth, &current.options.auth)
    {
        if password.is_empty() {
            password.clone_from(stored);
        }
    }
    if let (
        Some(EndpointAuth::Oauth2 { client_secret, .. }),
        Some(EndpointAuth::Oauth2 {
            client_secret: stored,
            ..
        }),
    ) = (&mut endpoint.options.auth, &current.options.auth)
    {
        if client_secret.is_empty() {
            client_secret.clone_from(stored);
        }
    }
    let enabled_again =
        endpoint.state == EndpointState::Enabled && current.state != EndpointState::Enabled;
    if !enabled_again && endpoint.state == current.state {
        endpoint.disabled_reason = current.disabled_reason;
    }
    if !enabled_again {
        endpoint.failing_since_ms = current.failing_since_ms;
    }
}

pub(super) fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| invalid(&[FieldError::new(&[field], "is required")]))
}

/// INVALID_ARGUMENT naming every field, with `google.rpc.BadRequest` details.
pub(super) fn invalid(errors: &[FieldError]) -> Status {
    let mut details = ErrorDetails::new();
    for e in errors {
        details.add_bad_request_violation(e.dotted(""), e.message.clone());
    }
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        validate::summary(errors),
        details,
    )
}

/// Storage errors on the Admin API, translated once.
pub(super) fn store_status(error: store::Error) -> Status {
    match error {
        store::Error::NotFound { .. } => Status::not_found(error.to_string()),
        store::Error::AlreadyExists(m) => Status::already_exists(m),
        store::Error::StaleVersion { .. } => Status::failed_precondition(error.to_string()),
        store::Error::FailedPrecondition(m) => Status::failed_precondition(m),
        store::Error::Unavailable(detail) | store::Error::Fatal(detail) => {
            tracing::warn!(%detail, "Admin call failed: storage unavailable.");
            Status::unavailable("storage is unavailable; retry shortly")
        }
    }
}
