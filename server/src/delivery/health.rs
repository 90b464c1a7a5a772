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
