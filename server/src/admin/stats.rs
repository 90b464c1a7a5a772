//! `Admin.GetStats`: per-subscription and per-endpoint numbers over the last
//! hour, for the TUI's tables. Read from storage on demand; nothing is kept
//! in memory for it.

use std::time::Duration;

use hookyard::v1 as pb;
use tonic::{Response, Status};

use super::{convert::timestamp, service::store_status, AdminService};
use crate::model::now_ms;

const WINDOW: Duration = Duration::from_secs(3600);

impl AdminService {
    pub(super) async fn stats(&self) -> Result<Response<pb::GetStatsResponse>, Status> {
        let since_ms = now_ms() - WINDOW.as_millis() as i64;
        let stats = self
            .store
            .delivery_stats(since_ms)
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::GetStatsResponse {
            since: timestamp(since_ms),
            subscriptions: stats
                .matched
                .into_iter()
                .map(|(subscription_id, matched)| pb::SubscriptionStats {
                    subscription_id,
                    matched,
                })
                .collect(),
            endpoints: stats
                .endpoints
                .into_iter()
                .map(|(endpoint_id, e)| {
                    let (last_error, at) = e.last_error.unzip();
                    pb::EndpointStats {
                        endpoint_id,
                        succeeded: e.succeeded,
                        failed: e.failed,
                        backlog: e.backlog,
                        last_error: last_error.unwrap_or_default(),
                        last_error_at: at.and_then(timestamp),
                    }
                })
                .collect(),
        }))
    }
}
