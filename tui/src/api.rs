//! The Admin API as the screens see it: a trait with one method per call, so
//! the real gRPC client (`grpc.rs`) and an in-memory fake (tests) are
//! interchangeable. Calls return boxed `'static` futures, so the runner can
//! spawn them off the UI task. Errors are decoded once, here, into
//! [`ApiError`], which keeps the server's field violations.

use futures::{future::BoxFuture, stream::BoxStream};
use hookyard::v1::{
    Delivery, DeliveryDetail, DeliveryFilter, DeliveryUpdate, Endpoint, EventType, Flow,
    GetStatsResponse, Job, ListRunsRequest, ListRunsResponse, ReplayEventsRequest,
    RetryDeadLettersRequest, RotateEndpointSecretResponse, Run, RunDetail, RunUpdate,
    SendTestEventResponse, Source, SourceWithToken, StartRunResponse, Subscription,
    WatchRunsRequest,
};
use prost_types::Timestamp;
use tonic::Code;
use tonic_types::StatusExt;

pub type ApiResult<T> = Result<T, ApiError>;
pub type Call<T> = BoxFuture<'static, ApiResult<T>>;
pub type UpdateStream = BoxStream<'static, ApiResult<DeliveryUpdate>>;
pub type RunStream = BoxStream<'static, ApiResult<RunUpdate>>;
pub type JobStream = BoxStream<'static, ApiResult<Job>>;

/// Everything the TUI asks of the daemon.
pub trait AdminApi: Send + Sync + 'static {
    fn watch_deliveries(&self, filter: DeliveryFilter) -> Call<UpdateStream>;
    fn list_deliveries(&self, filter: DeliveryFilter, page_size: u32) -> Call<Vec<Delivery>>;
    fn get_delivery(&self, id: u64) -> Call<DeliveryDetail>;
    fn retry_delivery(&self, id: u64) -> Call<Delivery>;
    /// A new delivery of the same event to the same endpoint.
    fn resend_delivery(&self, id: u64) -> Call<Delivery>;

    fn list_subscriptions(&self) -> Call<Vec<Subscription>>;
    fn get_subscription(&self, id: String) -> Call<Subscription>;
    fn create_subscription(&self, subscription: Subscription) -> Call<Subscription>;
    fn update_subscription(&self, subscription: Subscription) -> Call<Subscription>;
    fn delete_subscription(&self, id: String) -> Call<()>;
    fn test_route(
        &self,
        name: String,
        tenant_id: String,
        payload: Vec<u8>,
    ) -> Call<Vec<Subscription>>;

    fn list_endpoints(&self) -> Call<Vec<Endpoint>>;
    fn get_endpoint(&self, id: String) -> Call<Endpoint>;
    fn create_endpoint(&self, endpoint: Endpoint) -> Call<Endpoint>;
    fn update_endpoint(&self, endpoint: Endpoint) -> Call<Endpoint>;
    fn delete_endpoint(&self, id: String) -> Call<()>;
    /// The new secret is in the answer and nowhere else; the old one keeps
    /// signing for `grace_ms` (unset: the daemon's 24 hours).
    fn rotate_endpoint_secret(
        &self,
        id: String,
        grace_ms: Option<u64>,
    ) -> Call<RotateEndpointSecretResponse>;
    /// One attempt now, outside the queue; `payload` empty: an example.
    fn send_test_event(
        &self,
        endpoint_id: String,
        event_name: String,
        payload: Vec<u8>,
    ) -> Call<SendTestEventResponse>;
    /// Re-queues the endpoint's failed and dead deliveries created since
    /// `since` (unset: all); how many.
    fn recover_endpoint(&self, endpoint_id: String, since: Option<Timestamp>) -> Call<u64>;

    /// Replay and bulk retry run as jobs in the daemon; the answer is the
    /// job just started.
    fn replay_events(&self, request: ReplayEventsRequest) -> Call<Job>;
    fn retry_dead_letters(&self, request: RetryDeadLettersRequest) -> Call<Job>;
    fn list_jobs(&self) -> Call<Vec<Job>>;
    fn cancel_job(&self, id: String) -> Call<Job>;
    /// The job now, then after every page, until it ends.
    fn watch_job(&self, id: String) -> Call<JobStream>;

    /// Per-subscription and per-endpoint numbers over the last hour.
    fn get_stats(&self) -> Call<GetStatsResponse>;

    fn list_sources(&self) -> Call<Vec<Source>>;
    fn create_source(&self, source: Source) -> Call<SourceWithToken>;
    fn rotate_source_token(&self, id: String) -> Call<SourceWithToken>;
    fn suspend_source(&self, id: String) -> Call<Source>;
    fn resume_source(&self, id: String) -> Call<Source>;
    fn delete_source(&self, id: String) -> Call<()>;

    fn list_flows(&self) -> Call<Vec<Flow>>;
    /// `inputs` is a JSON object; bad inputs are INVALID_ARGUMENT naming
    /// `inputs.<field>`.
    fn start_run(&self, flow_id: String, inputs: Vec<u8>) -> Call<StartRunResponse>;
    /// Newest first.
    fn list_runs(&self, request: ListRunsRequest) -> Call<ListRunsResponse>;
    fn get_run(&self, id: String) -> Call<RunDetail>;
    /// FAILED_PRECONDITION when the run already finished.
    fn cancel_run(&self, id: String) -> Call<Run>;
    fn watch_runs(&self, request: WatchRunsRequest) -> Call<RunStream>;

    fn list_event_types(&self) -> Call<Vec<EventType>>;
    fn delete_event_type(&self, id: String) -> Call<()>;
}

/// A failed call: the gRPC code, the server's message and, for
/// INVALID_ARGUMENT, every field it named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub fields: Vec<FieldViolation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// As the server names it: `name`, `patterns[1]`, `headers.X-Env`.
    pub field: String,
    pub description: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn invalid(fields: &[(&str, &str)]) -> ApiError {
        ApiError {
            code: Code::InvalidArgument,
            message: "invalid".to_string(),
            fields: fields
                .iter()
                .map(|(field, description)| FieldViolation {
                    field: field.to_string(),
                    description: description.to_string(),
                })
                .collect(),
        }
    }

    pub fn is_stale_version(&self) -> bool {
        self.code == Code::FailedPrecondition
    }

    /// One line a person can act on.
    pub fn describe(&self) -> String {
        match self.code {
            Code::Unavailable => format!("daemon unreachable: {}", self.message),
            Code::Unauthenticated => {
                "admin token refused: check --token, HOOKYARD_TOKEN or <data-dir>/admin.token"
                    .to_string()
            }
            Code::PermissionDenied => format!("permission denied: {}", self.message),
            Code::DeadlineExceeded => "the daemon did not answer in time".to_string(),
            _ => self.message.clone(),
        }
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        let fields = status
            .get_details_bad_request()
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|v| FieldViolation {
                        field: v.field,
                        description: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let message = if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_string()
        };
        ApiError {
            code: status.code(),
            message,
            fields,
        }
    }
}

/// Data that comes from the daemon.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Remote<T> {
    #[default]
    Loading,
    Loaded(T),
    Failed(String),
}

impl<T> Remote<T> {
    pub fn from_result(result: ApiResult<T>) -> Remote<T> {
        match result {
            Ok(value) => Remote::Loaded(value),
            Err(e) => Remote::Failed(e.describe()),
        }
    }

    pub fn loaded(&self) -> Option<&T> {
        match self {
            Remote::Loaded(value) => Some(value),
            _ => None,
        }
    }

    pub fn is_failed(&self) -> bool {
        matches!(self, Remote::Failed(_))
    }

    pub fn loaded_mut(&mut self) -> Option<&mut T> {
        match self {
            Remote::Loaded(value) => Some(value),
            _ => None,
        }
    }
}
