//! Intake: the doors events come in by — HTTP `POST /v1/events` (also
//! CloudEvents), gRPC `hookyard.v1.Events`, and sources' webhooks on
//! `POST /webhook/v1/{token}` — sharing authentication and validation. An
//! accepted event goes to the `Publisher` (routing and commit); the caller
//! hears back only once it is committed.
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
pub mod publish_stream;
pub mod rate;
pub mod reads;
pub mod sources;

use std::sync::Arc;

pub use error::ApiError;

use crate::{flows::FlowCatalog, publish::Publisher, store::Writer};

/// Largest number of events in one PublishBatch.
pub const MAX_BATCH: usize = 1000;

/// What the doors share: the publish pipeline, flow starts (which go to the
/// writer directly: a run started by API is not an event), keys and limits.
pub struct Intake {
    pub publisher: Arc<Publisher>,
    pub flows: Arc<FlowCatalog>,
    pub writer: Writer,
    pub keys: auth::ApiKeys,
    pub body_limit: usize,
    /// For PublishBatch and CloudEvents batches.
    pub batch_body_limit: usize,
}
