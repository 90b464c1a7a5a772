//! Helpers over flow runs: starting them over HTTP, reading them over the
//! Admin API, and following `WatchRuns` until a run reaches a state.

use std::time::Duration;

use hookyard::v1::{GetRunRequest, Run, RunDetail, RunState, RunUpdate, WatchRunsRequest};
use serde_json::{json, Value};
use tonic::Streaming;

use crate::harness::{Admin, Daemon, API_KEY, WAIT};

/// `POST /v1/flows/{flow}/runs` with the API key.
pub async fn start_http(daemon: &Daemon, flow: &str, inputs: Value) -> (u16, Value) {
    let response = daemon
        .http
        .post(daemon.url(&format!("/v1/flows/{flow}/runs")))
        .bearer_auth(API_KEY)
        .json(&json!({ "inputs": inputs }))
        .send()
        .await
        .expect("POST /v1/flows/{flow}/runs");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON answer"))
}

/// Starts a run and insists on `201 CREATED`; returns its id.
pub async fn started(daemon: &Daemon, flow: &str, inputs: Value) -> String {
    let (status, answer) = start_http(daemon, flow, inputs).await;
    assert_eq!(status, 201, "starting {flow}: {answer}");
    assert_eq!(answer["state"], "CREATED", "{answer}");
    answer["id"].as_str().expect("a run id").to_string()
}

pub async fn run_detail(admin: &mut Admin, id: &str) -> RunDetail {
    admin
        .get_run(GetRunRequest { id: id.to_string() })
        .await
        .expect("GetRun")
        .into_inner()
}

/// Waits until run `id` is in `state`, asking GetRun: for a run that may
/// have changed before a WatchRuns stream could be opened (right after a
/// restart, say).
pub async fn poll_until(admin: &mut Admin, id: &str, state: RunState) -> RunDetail {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let detail = run_detail(admin, id).await;
        if detail.run.as_ref().is_some_and(|r| r.state() == state) {
            return detail;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {id} did not reach {state:?} within {WAIT:?}: {:?}",
            detail.run
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The log of a run as one string, for `contains` checks.
pub fn log_text(detail: &RunDetail) -> String {
    detail
        .log
        .iter()
        .map(|l| format!("[{}] {}", l.step_id, l.message))
        .collect::<Vec<_>>()
        .join("\n")
}

pub struct RunWatch {
    stream: Streaming<RunUpdate>,
    /// Every update seen so far, so waiting for one run does not lose
    /// another's.
    seen: Vec<Run>,
}

impl RunWatch {
    /// Open it before starting what it should see.
    pub async fn open(admin: &mut Admin) -> RunWatch {
        let stream = admin
            .watch_runs(WatchRunsRequest::default())
            .await
            .expect("WatchRuns")
            .into_inner();
        RunWatch {
            stream,
            seen: Vec::new(),
        }
    }

    /// Waits until run `id` is in `state`; panics if it finishes in another.
    pub async fn until(&mut self, id: &str, state: RunState) -> Run {
        self.until_within(id, state, WAIT).await
    }

    pub async fn until_within(&mut self, id: &str, state: RunState, limit: Duration) -> Run {
        if let Some(run) = self.seen.iter().find(|r| r.id == id && r.state() == state) {
            return run.clone();
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let update = match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Ok(Ok(Some(update))) => update,
                Ok(Ok(None)) => panic!("WatchRuns ended"),
                Ok(Err(status)) => panic!("WatchRuns failed: {status}"),
                Err(_) => panic!("run {id} did not reach {state:?} within {limit:?}"),
            };
            let Some(run) = update.run else { continue };
            self.seen.push(run.clone());
            if run.id != id {
                continue;
            }
            if run.state() == state {
                return run;
            }
            let finished = matches!(
                run.state(),
                RunState::Succeeded | RunState::Failed | RunState::Cancelled
            );
            assert!(
                !finished,
                "run {id} finished {:?} ({}) while waiting for {state:?}",
                run.state(),
                run.error
            );
        }
    }
}
