//! Endpoint health: since when an endpoint's attempts have all failed, and
//! disabling it once that has lasted its `disable_after` (5 days unless set;
//! Svix's rule). The dispatcher tells [`EndpointHealth`] about every settled attempt;
//! it keeps the state in memory and sends only the changes (first failure,
//! recovery, disable) to [`run`], which records them and publishes the
//! operational event `hookyard.endpoint.disabled`, routable like any other
//! (to an email flow, a chat endpoint).

use std::{collections::HashMap, sync::Arc};

use tokio::sync::mpsc;

use crate::{
    catalog::CatalogHandle,
    intake::event::{self, Draft},
    metrics::Door,
    model::{DeliveryStatus, Endpoint},
    publish::Publisher,
    store::{Settled, Store},
    timestamp::format_rfc3339_millis,
};

/// The event published when the daemon disables a failing endpoint.
pub const DISABLED_EVENT: &str = "hookyard.endpoint.disabled";

/// A change in an endpoint's health, for [`run`].
#[derive(Debug)]
pub enum HealthNote {
    /// Attempts started failing at this time (`None`: one succeeded).
    FailingSince {
        endpoint_id: Arc<str>,
        since_ms: Option<i64>,
    },
    /// Every attempt has failed since `since_ms`, for longer than allowed.
    Disable {
        endpoint_id: Arc<str>,
        since_ms: i64,
        reason: String,
    },
}

/// A failure streak is written to storage once it has lasted this long:
/// an endpoint that fails now and then flips between failing and healthy
/// many times a second, and each flip must not be a write.
const PERSIST_AFTER_MS: i64 = 60_000;

/// One endpoint's failure streak.
struct Streak {
    /// The endpoint's version when read; an admin edit or re-enable changes
    /// it, and then what storage says counts again.
    version: u64,
    /// The first failed attempt since the last success.
    since: Option<i64>,
    /// `since` is in storage.
    persisted: bool,
}

/// What the dispatcher knows of each endpoint's failures.
pub struct EndpointHealth {
    streaks: HashMap<Arc<str>, Streak>,
    notes: mpsc::UnboundedSender<HealthNote>,
}

impl EndpointHealth {
    pub fn new(notes: mpsc::UnboundedSender<HealthNote>) -> EndpointHealth {
        EndpointHealth {
            streaks: HashMap::new(),
            notes,
        }
    }

    /// Takes note of one settled attempt of `endpoint`.
    pub fn record(&mut self, endpoint: &Endpoint, settled: &Settled, now_ms: i64) {
        let Some(attempt) = &settled.attempt else {
            return;
        };
        if settled.endpoint_gone {
            return;
        }
        let id = &settled.delivery.endpoint_id;
        let stored = || Streak {
            version: endpoint.version,
            since: endpoint.failing_since_ms,
            persisted: endpoint.failing_since_ms.is_some(),
        };
        let streak = self.streaks.entry(id.clone()).or_insert_with(stored);
        if streak.version != endpoint.version {
            *streak = stored();
        }
        if settled.status == DeliveryStatus::Succeeded {
            streak.since = None;
            if std::mem::take(&mut streak.persisted) {
                let _ = self.notes.send(HealthNote::FailingSince {
                    endpoint_id: id.clone(),
                    since_ms: None,
                });
            }
            return;
        }
        let since = *streak.since.get_or_insert(attempt.started_ms);
        let failing_for = now_ms.saturating_sub(since);
        if !streak.persisted && failing_for >= PERSIST_AFTER_MS {
            streak.persisted = true;
            let _ = self.notes.send(HealthNote::FailingSince {
                endpoint_id: id.clone(),
                since_ms: Some(since),
            });
        }
        let Some(limit) = endpoint.options.disable_after() else {
            return;
        };
        if failing_for >= limit.as_millis().min(i64::MAX as u128) as i64 {
            // Said once: a version no endpoint has makes the next attempt
            // (should one still be in flight) read storage again, where the
            // disable will have bumped the version.
            streak.version = u64::MAX;
            let _ = self.notes.send(HealthNote::Disable {
                endpoint_id: id.clone(),
                since_ms: since,
                reason: format!(
                    "every attempt failed since {} (over {}); last: {}",
                    format_rfc3339_millis(since),
                    humantime::format_duration(limit),
                    settled.last_error.as_deref().unwrap_or("no answer"),
                ),
            });
        }
    }
}

/// Records health changes and disables endpoints, publishing
/// `hookyard.endpoint.disabled` for each. Ends when the dispatcher does.
pub async fn run(
    mut notes: mpsc::UnboundedReceiver<HealthNote>,
    store: Store,
    catalog: Arc<CatalogHandle>,
    publisher: Arc<Publisher>,
) {
    while let Some(note) = notes.recv().await {
        match note {
            HealthNote::FailingSince {
                endpoint_id,
                since_ms,
            } => {
                if let Err(error) = store
                    .set_endpoint_failing_since(&endpoint_id, since_ms)
                    .await
                {
                    tracing::warn!(endpoint = %endpoint_id, %error, "Could not record the endpoint's failing time.");
                }
            }
            HealthNote::Disable {
                endpoint_id,
                since_ms,
                reason,
            } => {
                disable(
                    &store,
                    &catalog,
                    &publisher,
                    &endpoint_id,
                    since_ms,
                    &reason,
                )
                .await
            }
        }
    }
}

async fn disable(
    store: &Store,
    catalog: &CatalogHandle,
    publisher: &Publisher,
    endpoint_id: &str,
    since_ms: i64,
    reason: &str,
) {
    match store
        .disable_failing_endpoint(endpoint_id, reason, since_ms)
        .await
    {
        Ok(true) => {}
        // An admin disabled or deleted it first.
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(endpoint = %endpoint_id, %error, "Could not disable the failing endpoint; it will be tried at its next failure.");
            return;
        }
    }
    tracing::warn!(endpoint = %endpoint_id, %reason, "Endpoint disabled: its attempts kept failing.");
    if let Err(error) = catalog.reload().await {
        tracing::warn!(%error, "Could not reload the catalog after disabling an endpoint.");
    }
    let endpoint = catalog.get().endpoint(endpoint_id).cloned();
    let payload = serde_json::json!({
        "endpoint_id": endpoint_id,
        "url": endpoint.as_ref().map(|e| e.url.as_str()),
        "reason": reason,
        "failing_since": format_rfc3339_millis(since_ms),
        "disabled_at": format_rfc3339_millis(crate::model::now_ms()),
    });
    let draft = Draft {
        id: None,
        name: DISABLED_EVENT.to_string(),
        source: Some("hookyard".to_string()),
        tenant_id: endpoint.as_ref().and_then(|e| e.tenant_id.clone()),
        time_ms: None,
        payload: payload.to_string(),
        attributes: Default::default(),
    };
    let published = match event::finish(draft, "", Vec::new()) {
        Ok(event) => publisher.publish_one(Door::Daemon, event).await.map(|_| ()),
        Err(fields) => {
            tracing::error!(?fields, "The endpoint-disabled event is not valid.");
            return;
        }
    };
    if let Err(error) = published {
        tracing::warn!(endpoint = %endpoint_id, %error, "Could not publish hookyard.endpoint.disabled.");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Attempt, DueDelivery, EndpointState, EventEnvelope};

    fn endpoint(disable_after: Duration) -> Endpoint {
        Endpoint {
            id: "crm".into(),
            url: "http://127.0.0.1:1/".into(),
            tenant_id: None,
            secret: String::new(),
            headers: Default::default(),
            timeout: None,
            retry_schedule: None,
            max_in_flight: None,
            state: EndpointState::Enabled,
            description: String::new(),
            options: crate::model::EndpointOptions {
                disable_after_ms: Some(disable_after),
                ..Default::default()
            },
            previous_secret: None,
            disabled_reason: None,
            failing_since_ms: None,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn settled(ok: bool, at_ms: i64) -> Settled {
        Settled {
            delivery: DueDelivery {
                id: 1,
                subscription_id: "s".into(),
                endpoint_id: "crm".into(),
                attempts: 1,
                due_ms: 0,
                ordered: false,
                event: Arc::new(EventEnvelope {
                    seq: 1,
                    id: "e".into(),
                    name: "lead.created".into(),
                    source: "test".into(),
                    tenant_id: None,
                    time_ms: 0,
                    payload: "{}".into(),
                }),
            },
            attempt: Some(Attempt {
                number: 1,
                started_ms: at_ms,
                duration_ms: 1,
                status_code: Some(if ok { 200 } else { 500 }),
                error: None,
                response_body: String::new(),
                request_headers: Default::default(),
            }),
            status: if ok {
                DeliveryStatus::Succeeded
            } else {
                DeliveryStatus::Failed
            },
            next_attempt_ms: None,
            last_error: Some("endpoint answered HTTP 500".into()),
            endpoint_gone: false,
            lease: None,
        }
    }

    fn notes(rx: &mut mpsc::UnboundedReceiver<HealthNote>) -> Vec<HealthNote> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn a_flapping_endpoint_writes_nothing_and_a_long_streak_disables_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut health = EndpointHealth::new(tx);
        let e = endpoint(Duration::from_secs(600));
        for i in 0..100 {
            health.record(&e, &settled(i % 2 == 1, i * 10), i * 10);
        }
        assert!(notes(&mut rx).is_empty(), "short streaks stay in memory");

        health.record(&e, &settled(false, 1_000), 1_000);
        health.record(&e, &settled(false, 61_000), 61_000);
        let written = notes(&mut rx);
        assert!(matches!(
            written.as_slice(),
            [HealthNote::FailingSince {
                since_ms: Some(1_000),
                ..
            }]
        ));
        health.record(&e, &settled(false, 601_000), 601_000);
        health.record(&e, &settled(false, 601_500), 601_500);
        let disabled = notes(&mut rx);
        assert_eq!(
            disabled
                .iter()
                .filter(|n| matches!(
                    n,
                    HealthNote::Disable {
                        since_ms: 1_000,
                        ..
                    }
                ))
                .count(),
            1,
            "{disabled:?}"
        );
    }

    #[test]
    fn a_success_after_a_written_streak_clears_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut health = EndpointHealth::new(tx);
        let e = endpoint(Duration::ZERO);
        health.record(&e, &settled(false, 0), 0);
        health.record(&e, &settled(false, 70_000), 70_000);
        health.record(&e, &settled(true, 80_000), 80_000);
        let written = notes(&mut rx);
        assert!(
            matches!(
                written.as_slice(),
                [
                    HealthNote::FailingSince {
                        since_ms: Some(0),
                        ..
                    },
                    HealthNote::FailingSince { since_ms: None, .. }
                ]
            ),
            "never disabled with disable_after 0: {written:?}"
        );
    }
}
