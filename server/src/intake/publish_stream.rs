//! `Events.PublishStream`: a high-rate publisher's one stream. Each event is
//! checked and published as it arrives, and its result goes back in the
//! order the events came, each only after its commit. At most [`WINDOW`]
//! events of a stream are between arrival and answer: past that the stream
//! is not read, so HTTP/2 flow control holds the publisher back instead of
//! an error. When the writer's queue is full the event waits for room (up to
//! [`OVERLOAD_PATIENCE`]), so a publisher that keeps to its window is slowed
//! down, never refused RESOURCE_EXHAUSTED.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::{stream::FuturesOrdered, Stream, StreamExt};
use hookyard::v1::{PublishRequest, PublishResult};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{auth::Principal, event, ApiError, Intake};
use crate::{metrics::Door, publish::PublishError};

/// Events of one stream published and not yet answered, at most.
pub const WINDOW: usize = 256;
/// How long an event waits for room in the writer's queue before it is
/// answered RESOURCE_EXHAUSTED after all.
const OVERLOAD_PATIENCE: Duration = Duration::from_secs(10);

pub type ResultStream = Pin<Box<dyn Stream<Item = Result<PublishResult, Status>> + Send>>;

/// Serves one stream: reads events while fewer than [`WINDOW`] wait for
/// their answer, answers in arrival order.
pub fn serve(
    intake: Arc<Intake>,
    key: Principal,
    mut events: Streaming<PublishRequest>,
) -> ResultStream {
    let (tx, rx) = mpsc::channel(WINDOW);
    tokio::spawn(async move {
        let mut pending = FuturesOrdered::new();
        let mut reading = true;
        loop {
            tokio::select! {
                // Answers first: a full window is emptied before more is read.
                biased;
                Some(result) = pending.next(), if !pending.is_empty() => {
                    if tx.send(Ok(result)).await.is_err() {
                        return;
                    }
                }
                next = events.next(), if reading && pending.len() < WINDOW => match next {
                    Some(Ok(request)) => pending.push_back(publish(intake.clone(), key.clone(), request)),
                    Some(Err(status)) => {
                        tracing::debug!(%status, "PublishStream ended by the client's error.");
                        reading = false;
                    }
                    None => reading = false,
                },
                else => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// One event of the stream: checked, charged to the key, published (waiting
/// while the writer's queue is full); its result.
async fn publish(intake: Arc<Intake>, key: Principal, request: PublishRequest) -> PublishResult {
    if let Err(e) = intake.keys.admit(&key.name, 1) {
        crate::metrics::events(Door::Grpc, "rate_limited", 1);
        return super::grpc::error_result(e.into_status("event"));
    }
    let Some(event) = request.event else {
        crate::metrics::events(Door::Grpc, "invalid", 1);
        return super::grpc::invalid_result(
            "the event is not valid",
            &[event::FieldError::new(&[], "is required")],
        );
    };
    let event = match event::from_proto(event, &key) {
        Ok(event) => event,
        Err(fields) => {
            crate::metrics::events(Door::Grpc, "invalid", 1);
            return super::grpc::invalid_result("the event is not valid", &fields);
        }
    };
    if let Err(e) = key.authorize(std::slice::from_ref(&event)) {
        return super::grpc::error_result(e.into_status("event"));
    }
    match intake
        .publisher
        .publish_one_within(Door::Grpc, event, Some(OVERLOAD_PATIENCE))
        .await
    {
        Ok((id, published)) => super::grpc::ok_result(super::grpc::response(id, published)),
        Err(PublishError::Invalid { fields, .. }) => {
            let fields: Vec<_> = fields
                .into_iter()
                .map(|mut f| {
                    f.path.insert(0, "payload".into());
                    f
                })
                .collect();
            super::grpc::invalid_result("the payload does not match its event type", &fields)
        }
        Err(e) => super::grpc::error_result(ApiError::from(e).into_status("event")),
    }
}
