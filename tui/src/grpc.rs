//! [`AdminApi`] over the real tonic client. The channel is lazy, so the TUI
//! starts while the daemon is down and every call reconnects by itself once
//! it is back; each call clones the client (cheap: the channel is shared).

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use hookyard::v1::{
    admin_client::AdminClient, CancelRunRequest, CreateEndpointRequest, CreateSourceRequest,
    CreateSubscriptionRequest, DeleteEndpointRequest, DeleteEventTypeRequest, DeleteSourceRequest,
    DeleteSubscriptionRequest, Delivery, DeliveryDetail, DeliveryFilter, Endpoint, EventType, Flow,
    GetDeliveryRequest, GetEndpointRequest, GetJobRequest, GetRunRequest, GetStatsRequest,
    GetStatsResponse, GetSubscriptionRequest, Job, ListDeliveriesRequest, ListEndpointsRequest,
    ListEventTypesRequest, ListFlowsRequest, ListJobsRequest, ListRunsRequest, ListRunsResponse,
    ListSourcesRequest, ListSubscriptionsRequest, RecoverEndpointRequest, ReplayEventsRequest,
    ResendDeliveryRequest, ResumeSourceRequest, RetryDeadLettersRequest, RetryDeliveryRequest,
    RotateEndpointSecretRequest, RotateEndpointSecretResponse, RotateSourceTokenRequest, Run,
    RunDetail, SendTestEventRequest, SendTestEventResponse, Source, SourceWithToken,
    StartRunRequest, StartRunResponse, Subscription, SuspendSourceRequest, TestRouteRequest,
    UpdateEndpointRequest, UpdateSubscriptionRequest, WatchDeliveriesRequest, WatchRunsRequest,
};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Channel, Endpoint as TransportEndpoint},
    Code, Request, Status,
};

use crate::api::{AdminApi, ApiError, Call, JobStream, RunStream, UpdateStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Unary calls only; the watch stream lives as long as the daemon does.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Client = AdminClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
pub struct GrpcAdmin {
    client: Client,
}

impl GrpcAdmin {
    /// Over TLS for an `https://` address, trusting the system's roots and
    /// `ca_file`.
    pub fn new(
        addr: &str,
        token: &str,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<GrpcAdmin> {
        let mut endpoint = TransportEndpoint::from_shared(addr.to_string())
            .map_err(|e| anyhow::anyhow!("--addr {addr:?} is not a URI: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT);
        if addr.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
            if let Some(path) = ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("--ca-file: cannot read {}: {e}", path.display())
                })?;
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| anyhow::anyhow!("could not set up TLS: {e}"))?;
        }
        let channel = endpoint.connect_lazy();
        let header: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow::anyhow!("the admin token has characters a header cannot carry"))?;
        Ok(GrpcAdmin {
            client: AdminClient::with_interceptor(channel, Bearer(header)),
        })
    }
}

/// Runs one unary call with a deadline and maps its answer.
fn unary<Req, Resp, T, F, Fut>(
    client: &Client,
    request: Req,
    call: F,
    map: fn(Resp) -> T,
) -> Call<T>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    T: Send + 'static,
    F: FnOnce(Client, Request<Req>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>> + Send + 'static,
{
    let client = client.clone();
    async move {
        let mut request = Request::new(request);
        request.set_timeout(CALL_TIMEOUT);
        match tokio::time::timeout(CALL_TIMEOUT, call(client, request)).await {
            Ok(Ok(response)) => Ok(map(response.into_inner())),
            Ok(Err(status)) => Err(ApiError::from(status)),
            Err(_) => Err(ApiError::new(Code::DeadlineExceeded, "timed out")),
        }
    }
    .boxed()
}

fn unit<T>(_: T) {}

impl AdminApi for GrpcAdmin {
    fn watch_deliveries(&self, filter: DeliveryFilter) -> Call<UpdateStream> {
        let mut client = self.client.clone();
        async move {
            let request = WatchDeliveriesRequest {
                filter: Some(filter),
            };
            let stream = client
                .watch_deliveries(request)
                .await
                .map_err(ApiError::from)?
                .into_inner();
            Ok(stream.map(|item| item.map_err(ApiError::from)).boxed())
        }
        .boxed()
    }

    fn list_deliveries(&self, filter: DeliveryFilter, page_size: u32) -> Call<Vec<Delivery>> {
        let request = ListDeliveriesRequest {
            filter: Some(filter),
            page_size,
            page_token: String::new(),
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.list_deliveries(r).await },
            |r| r.deliveries,
        )
    }

    fn get_delivery(&self, id: u64) -> Call<DeliveryDetail> {
        unary(
            &self.client,
            GetDeliveryRequest { id },
            |mut c, r| async move { c.get_delivery(r).await },
            |r| r,
        )
    }

    fn retry_delivery(&self, id: u64) -> Call<Delivery> {
        unary(
            &self.client,
            RetryDeliveryRequest { id },
            |mut c, r| async move { c.retry_delivery(r).await },
            |r| r,
        )
    }

    fn resend_delivery(&self, id: u64) -> Call<Delivery> {
        unary(
            &self.client,
            ResendDeliveryRequest { id },
            |mut c, r| async move { c.resend_delivery(r).await },
            |r| r,
        )
    }

    fn list_subscriptions(&self) -> Call<Vec<Subscription>> {
        unary(
            &self.client,
            ListSubscriptionsRequest {},
            |mut c, r| async move { c.list_subscriptions(r).await },
            |r| r.subscriptions,
        )
    }

    fn get_subscription(&self, id: String) -> Call<Subscription> {
        unary(
            &self.client,
            GetSubscriptionRequest { id },
            |mut c, r| async move { c.get_subscription(r).await },
            |r| r,
        )
    }

    fn create_subscription(&self, subscription: Subscription) -> Call<Subscription> {
        let request = CreateSubscriptionRequest {
            subscription: Some(subscription),
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.create_subscription(r).await },
            |r| r,
        )
    }

    fn update_subscription(&self, subscription: Subscription) -> Call<Subscription> {
        let request = UpdateSubscriptionRequest {
            subscription: Some(subscription),
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.update_subscription(r).await },
            |r| r,
        )
    }

    fn delete_subscription(&self, id: String) -> Call<()> {
        unary(
            &self.client,
            DeleteSubscriptionRequest { id },
            |mut c, r| async move { c.delete_subscription(r).await },
            unit,
        )
    }

    fn test_route(
        &self,
        name: String,
        tenant_id: String,
        payload: Vec<u8>,
    ) -> Call<Vec<Subscription>> {
        let request = TestRouteRequest {
            name,
            tenant_id,
            payload,
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.test_route(r).await },
            |r| r.matched,
        )
    }

    fn list_endpoints(&self) -> Call<Vec<Endpoint>> {
        unary(
            &self.client,
            ListEndpointsRequest {},
            |mut c, r| async move { c.list_endpoints(r).await },
            |r| r.endpoints,
        )
    }

    fn get_endpoint(&self, id: String) -> Call<Endpoint> {
        unary(
            &self.client,
            GetEndpointRequest { id },
            |mut c, r| async move { c.get_endpoint(r).await },
            |r| r,
        )
    }

    fn create_endpoint(&self, endpoint: Endpoint) -> Call<Endpoint> {
        let request = CreateEndpointRequest {
            endpoint: Some(endpoint),
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.create_endpoint(r).await },
            |r| r,
        )
    }

    fn update_endpoint(&self, endpoint: Endpoint) -> Call<Endpoint> {
        let request = UpdateEndpointRequest {
            endpoint: Some(endpoint),
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.update_endpoint(r).await },
            |r| r,
        )
    }

    fn delete_endpoint(&self, id: String) -> Call<()> {
        unary(
            &self.client,
            DeleteEndpointRequest { id },
            |mut c, r| async move { c.delete_endpoint(r).await },
            unit,
        )
    }

    fn rotate_endpoint_secret(
        &self,
        id: String,
        grace_ms: Option<u64>,
    ) -> Call<RotateEndpointSecretResponse> {
        unary(
            &self.client,
            RotateEndpointSecretRequest { id, grace_ms },
            |mut c, r| async move { c.rotate_endpoint_secret(r).await },
            |r| r,
        )
    }

    fn send_test_event(
        &self,
        endpoint_id: String,
        event_name: String,
        payload: Vec<u8>,
    ) -> Call<SendTestEventResponse> {
        let request = SendTestEventRequest {
            endpoint_id,
            event_name,
            payload,
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.send_test_event(r).await },
            |r| r,
        )
    }

    fn recover_endpoint(
        &self,
        endpoint_id: String,
        since: Option<prost_types::Timestamp>,
    ) -> Call<u64> {
        let request = RecoverEndpointRequest { endpoint_id, since };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.recover_endpoint(r).await },
            |r| r.requeued,
        )
    }

    fn get_stats(&self) -> Call<GetStatsResponse> {
        unary(
            &self.client,
            GetStatsRequest {},
            |mut c, r| async move { c.get_stats(r).await },
            |r| r,
        )
    }

    fn list_sources(&self) -> Call<Vec<Source>> {
        let request = ListSourcesRequest {
            include_deleted: false,
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.list_sources(r).await },
            |r| r.sources,
        )
    }

    fn create_source(&self, source: Source) -> Call<SourceWithToken> {
        let request = CreateSourceRequest {
            source: Some(source),
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.create_source(r).await },
            |r| r,
        )
    }

    fn rotate_source_token(&self, id: String) -> Call<SourceWithToken> {
        let request = RotateSourceTokenRequest {
            id,
            grace_period: None,
        };
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.rotate_source_token(r).await },
            |r| r,
        )
    }

    fn suspend_source(&self, id: String) -> Call<Source> {
        unary(
            &self.client,
            SuspendSourceRequest { id },
            |mut c, r| async move { c.suspend_source(r).await },
            |r| r,
        )
    }

    fn resume_source(&self, id: String) -> Call<Source> {
        unary(
            &self.client,
            ResumeSourceRequest { id },
            |mut c, r| async move { c.resume_source(r).await },
            |r| r,
        )
    }

    fn delete_source(&self, id: String) -> Call<()> {
        unary(
            &self.client,
            DeleteSourceRequest { id },
            |mut c, r| async move { c.delete_source(r).await },
            unit,
        )
    }

    fn list_flows(&self) -> Call<Vec<Flow>> {
        unary(
            &self.client,
            ListFlowsRequest {},
            |mut c, r| async move { c.list_flows(r).await },
            |r| r.flows,
        )
    }

    fn start_run(&self, flow_id: String, inputs: Vec<u8>) -> Call<StartRunResponse> {
        unary(
            &self.client,
            StartRunRequest { flow_id, inputs },
            |mut c, r| async move { c.start_run(r).await },
            |r| r,
        )
    }

    fn list_runs(&self, request: ListRunsRequest) -> Call<ListRunsResponse> {
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.list_runs(r).await },
            |r| r,
        )
    }

    fn get_run(&self, id: String) -> Call<RunDetail> {
        unary(
            &self.client,
            GetRunRequest { id },
            |mut c, r| async move { c.get_run(r).await },
            |r| r,
        )
    }

    fn cancel_run(&self, id: String) -> Call<Run> {
        unary(
            &self.client,
            CancelRunRequest { id },
            |mut c, r| async move { c.cancel_run(r).await },
            |r| r,
        )
    }

    fn watch_runs(&self, request: WatchRunsRequest) -> Call<RunStream> {
        let mut client = self.client.clone();
        async move {
            let stream = client
                .watch_runs(request)
                .await
                .map_err(ApiError::from)?
                .into_inner();
            Ok(stream.map(|item| item.map_err(ApiError::from)).boxed())
        }
        .boxed()
    }

    fn replay_events(&self, request: ReplayEventsRequest) -> Call<Job> {
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.replay_events(r).await },
            |r| r,
        )
    }

    fn retry_dead_letters(&self, request: RetryDeadLettersRequest) -> Call<Job> {
        unary(
            &self.client,
            request,
            |mut c, r| async move { c.retry_dead_letters(r).await },
            |r| r,
        )
    }

    fn list_jobs(&self) -> Call<Vec<Job>> {
        unary(
            &self.client,
            ListJobsRequest {},
            |mut c, r| async move { c.list_jobs(r).await },
            |r| r.jobs,
        )
    }

    fn cancel_job(&self, id: String) -> Call<Job> {
        unary(
            &self.client,
            GetJobRequest { id },
            |mut c, r| async move { c.cancel_job(r).await },
            |r| r,
        )
    }

    fn watch_job(&self, id: String) -> Call<JobStream> {
        let mut client = self.client.clone();
        async move {
            let stream = client
                .watch_job(GetJobRequest { id })
                .await
                .map_err(ApiError::from)?
                .into_inner();
            Ok(stream.map(|item| item.map_err(ApiError::from)).boxed())
        }
        .boxed()
    }
    fn list_event_types(&self) -> Call<Vec<EventType>> {
        unary(
            &self.client,
            ListEventTypesRequest {},
            |mut c, r| async move { c.list_event_types(r).await },
            |r| r.event_types,
        )
    }

    fn delete_event_type(&self, id: String) -> Call<()> {
        unary(
            &self.client,
            DeleteEventTypeRequest { id },
            |mut c, r| async move { c.delete_event_type(r).await },
            unit,
        )
    }
}
