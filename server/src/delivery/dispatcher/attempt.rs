//! One delivery attempt as a task of its own: send, decide what the answer
//! means, free the endpoint's slot, hand the result to the writer. Whatever
//! happens inside (a panic included) the slot is freed and the attempt is
//! recorded, so no input can leak a slot and jam an endpoint.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::FutureExt;
use tokio::sync::mpsc;

use crate::{
    delivery::{
        breaker,
        retry::{self, Outcome},
        sender::{Report, Sender},
    },
    model::{now_ms, Attempt, DeliveryStatus, DueDelivery, Endpoint},
    store::{Settled, Writer},
};

/// A request is over: the endpoint's slot is free.
pub(super) struct AttemptEnd {
    pub endpoint_id: Arc<str>,
    /// The endpoint answered (anything but 502/503/504).
    pub reached: bool,
    /// It answered 410 Gone.
    pub gone: bool,
}

/// Reports the end of the request when dropped, however the task ends.
struct Slot {
    ends: mpsc::UnboundedSender<AttemptEnd>,
    end: Option<AttemptEnd>,
}

impl Slot {
    fn new(ends: mpsc::UnboundedSender<AttemptEnd>, endpoint_id: Arc<str>) -> Slot {
        Slot {
            ends,
            end: Some(AttemptEnd {
                endpoint_id,
                reached: false,
                gone: false,
            }),
        }
    }

    fn free(mut self, reached: bool, gone: bool) {
        if let Some(end) = &mut self.end {
            end.reached = reached;
            end.gone = gone;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            // The dispatcher has stopped when this fails; nothing to free.
            let _ = self.ends.send(end);
        }
    }
}

pub(super) struct AttemptTask {
    pub sender: Arc<Sender>,
    pub writer: Writer,
    pub ends: mpsc::UnboundedSender<AttemptEnd>,
    /// The retry schedule of endpoints that set none.
    pub default_schedule: Arc<[Duration]>,
    /// The endpoint lease the attempt is made under (several daemons).
    pub lease: Option<i64>,
}

impl AttemptTask {
    pub fn spawn(self, delivery: DueDelivery, endpoint: Arc<Endpoint>) {
        tokio::spawn(self.run(delivery, endpoint));
    }

    async fn run(self, delivery: DueDelivery, endpoint: Arc<Endpoint>) {
        let slot = Slot::new(self.ends, delivery.endpoint_id.clone());
        // Boxed so the task, which may wait on the writer long after the
        // request is over, does not keep the request's state inline.
        let sent = AssertUnwindSafe(Box::pin(self.sender.attempt(&delivery, &endpoint)))
            .catch_unwind()
            .await;
        // A panic is ours, not the endpoint's: it must not trip the breaker.
        let crashed = sent.is_err();
        let report =
            sent.unwrap_or_else(|panic| panicked(&delivery, crate::panic_message(&*panic)));
        let schedule = endpoint
            .retry_schedule
            .as_deref()
            .unwrap_or(&self.default_schedule);
        let mut settled = settle(delivery, report, schedule, rand::random());
        settled.lease = self.lease;
        log_attempt(&settled, &endpoint.id);
        count_attempt(&settled, &endpoint.id);
        // The slot is free as soon as the request is over; the delivery stays
        // held until its result is committed.
        let status = settled.attempt.as_ref().and_then(|a| a.status_code);
        slot.free(crashed || breaker::reached(status), settled.endpoint_gone);
        if self.writer.settle(settled).await.is_err() {
            tracing::warn!(endpoint = %endpoint.id, "Writer stopped; the attempt result is lost and the delivery will be retried.");
        }
    }
}

/// An attempt that panicked is recorded as a failed attempt, retried on the
/// schedule like any other failure.
fn panicked(delivery: &DueDelivery, message: String) -> Report {
    tracing::error!(delivery = delivery.id, event_id = %delivery.event.id, %message, "An attempt panicked; it is recorded as failed.");
    Report {
        attempt: Attempt {
            number: delivery.attempts + 1,
            started_ms: now_ms(),
            duration_ms: 0,
            status_code: None,
            error: Some(format!("internal error while sending: {message}")),
            response_body: String::new(),
            request_headers: Default::default(),
        },
        outcome: Outcome::Retryable { retry_after: None },
    }
}

/// What an attempt means for the delivery: done, retry at a time, or dead.
pub fn settle(
    mut delivery: DueDelivery,
    report: Report,
    schedule: &[Duration],
    jitter: f64,
) -> Settled {
    delivery.attempts = delivery.attempts.saturating_add(1);
    let error = report.attempt.error.clone();
    let (status, next_attempt_ms, last_error, endpoint_gone) = match report.outcome {
        Outcome::Success => (DeliveryStatus::Succeeded, None, None, false),
        Outcome::Gone => (
            DeliveryStatus::Dead,
            None,
            Some("endpoint answered 410 Gone; the endpoint is now disabled".to_string()),
            true,
        ),
        Outcome::Aborted => (
            DeliveryStatus::Dead,
            None,
            Some(format!(
                "the receiver asked not to retry (webhook-delivery: abort); {}",
                error.unwrap_or_default()
            )),
            false,
        ),
        Outcome::Retryable { retry_after } => {
            match retry::next_delay(schedule, delivery.attempts, retry_after, jitter) {
                Some(delay) => (
                    DeliveryStatus::Failed,
                    Some(now_ms().saturating_add(delay.as_millis().min(i64::MAX as u128) as i64)),
                    error,
                    false,
                ),
                None => (
                    DeliveryStatus::Dead,
                    None,
                    Some(format!(
                        "retries exhausted after {} attempts; last: {}",
                        delivery.attempts,
                        error.unwrap_or_default()
                    )),
                    false,
                ),
            }
        }
    };
    Settled {
        delivery,
        attempt: Some(report.attempt),
        status,
        next_attempt_ms,
        last_error,
        endpoint_gone,
        lease: None,
    }
}

fn count_attempt(settled: &Settled, endpoint: &str) {
    let (outcome, finished) = match settled.status {
        DeliveryStatus::Succeeded => ("success", Some("succeeded")),
        DeliveryStatus::Dead if settled.endpoint_gone => ("gone", Some("dead")),
        DeliveryStatus::Dead => ("dead", Some("dead")),
        _ => ("retry", None),
    };
    let took = settled.attempt.as_ref().map_or(0, |a| a.duration_ms);
    crate::metrics::attempt(
        endpoint,
        outcome,
        Duration::from_millis(u64::from(took)),
        finished,
    );
}

fn log_attempt(settled: &Settled, endpoint: &str) {
    let event_id = &settled.delivery.event.id;
    let delivery = settled.delivery.id;
    let status = settled.attempt.as_ref().and_then(|a| a.status_code);
    match settled.status {
        DeliveryStatus::Succeeded => {
            tracing::debug!(%event_id, delivery, endpoint, ?status, "Delivered.")
        }
        DeliveryStatus::Dead => {
            tracing::warn!(%event_id, delivery, endpoint, ?status, error = ?settled.last_error, "Delivery is dead.")
        }
        _ => {
            tracing::info!(%event_id, delivery, endpoint, ?status, error = ?settled.last_error, "Attempt failed; will retry.")
        }
    }
}
