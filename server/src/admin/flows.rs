//! The Admin RPCs for flows and runs. Definitions are checked and compiled
//! before they are stored (INVALID_ARGUMENT names the line or field); every
//! change to a run goes through the writer like the engine's own.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use hookyard::v1 as pb;
use rand::RngCore;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{convert::timestamp, service::store_status, AdminService};
use crate::{
    flows::{
        catalog::summary,
        definition::{DefinitionError, FlowDef},
        start::{self, Trigger},
        webhook_key_hash, FlowCatalog, RunChange, RunFeed,
    },
    intake::ApiError,
    model::{
        flow::{RunFilter, StoredFlow},
        run::{Run, RunState, StartOutcome, StepRecords},
    },
    store::{FlowOp, SubmitError, Writer},
};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;
const WATCH_BUFFER: usize = 256;

/// What the Admin API needs for flows.
pub struct FlowAdmin {
    pub catalog: Arc<FlowCatalog>,
    pub writer: Writer,
    pub feed: RunFeed,
}

pub type RunStream = Pin<Box<dyn Stream<Item = Result<pb::RunUpdate, Status>> + Send>>;

impl AdminService {
    pub(super) async fn create_flow(
        &self,
        request: Request<pb::CreateFlowRequest>,
    ) -> Result<Response<pb::Flow>, Status> {
        let yaml = request.into_inner().definition_yaml;
        let flow = self
            .flows
            .catalog
            .compile(&yaml, 1)
            .map_err(|e| invalid_definition(&e))?;
        self.check_flow_tenant(&flow.def)?;
        let stored = self
            .store
            .save_flow(&flow.def.id, &yaml, None, true)
            .await
            .map_err(store_status)?;
        self.reload_flows().await?;
        Ok(Response::new(flow_to_pb(
            &stored,
            &flow.def.description,
            step_ids(&flow),
        )))
    }

    /// A flow may not move to a tenant that subscriptions to it contradict.
    fn check_flow_tenant(&self, def: &FlowDef) -> Result<(), Status> {
        match super::validate::target_tenant_conflicts(
            &format!("flow:{}", def.id),
            def.tenant_id.as_deref(),
            self.catalog.get().subscriptions().map(|s| &**s),
        ) {
            Some(conflict) => Err(Status::failed_precondition(conflict)),
            None => Ok(()),
        }
    }

    pub(super) async fn get_flow(
        &self,
        request: Request<pb::GetFlowRequest>,
    ) -> Result<Response<pb::Flow>, Status> {
        let stored = self
            .store
            .get_flow(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        Ok(Response::new(self.describe(&stored)))
    }

    pub(super) async fn list_flows(
        &self,
        _request: Request<pb::ListFlowsRequest>,
    ) -> Result<Response<pb::ListFlowsResponse>, Status> {
        let flows = self.store.list_flows().await.map_err(store_status)?;
        Ok(Response::new(pb::ListFlowsResponse {
            flows: flows.iter().map(|f| self.describe(f)).collect(),
        }))
    }

    pub(super) async fn update_flow(
        &self,
        request: Request<pb::UpdateFlowRequest>,
    ) -> Result<Response<pb::Flow>, Status> {
        let request = request.into_inner();
        let flow = self
            .flows
            .catalog
            .compile(&request.definition_yaml, request.version + 1)
            .map_err(|e| invalid_definition(&e))?;
        self.check_flow_tenant(&flow.def)?;
        let stored = self
            .store
            .save_flow(
                &flow.def.id,
                &request.definition_yaml,
                Some(request.version),
                false,
            )
            .await
            .map_err(store_status)?;
        self.reload_flows().await?;
        Ok(Response::new(flow_to_pb(
            &stored,
            &flow.def.description,
            step_ids(&flow),
        )))
    }

    pub(super) async fn delete_flow(
        &self,
        request: Request<pb::DeleteFlowRequest>,
    ) -> Result<Response<pb::DeleteFlowResponse>, Status> {
        self.store
            .delete_flow(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        self.reload_flows().await?;
        Ok(Response::new(pb::DeleteFlowResponse {}))
    }

    pub(super) async fn rotate_flow_webhook_key(
        &self,
        request: Request<pb::RotateFlowWebhookKeyRequest>,
    ) -> Result<Response<pb::RotateFlowWebhookKeyResponse>, Status> {
        let id = request.into_inner().id;
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let key = hex::encode(bytes);
        self.store
            .set_flow_webhook_key(&id, Some(&webhook_key_hash(&key)))
            .await
            .map_err(store_status)?;
        self.reload_flows().await?;
        Ok(Response::new(pb::RotateFlowWebhookKeyResponse {
            url_path: format!("/hooks/{id}/{key}"),
            key,
        }))
    }

    pub(super) async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let request = request.into_inner();
        let inputs =
            start::inputs_from_bytes(&request.inputs).map_err(|e| e.into_status("inputs"))?;
        let flow = self
            .flows
            .catalog
            .get()
            .get(&request.flow_id)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!("flow `{}` does not exist", request.flow_id))
            })?;
        let new = start::from_inputs(&flow, inputs, Trigger::Admin)
            .map_err(|e| ApiError::InvalidInputs(e).into_status("inputs"))?;
        let outcome = self
            .flows
            .writer
            .flow(|reply| FlowOp::Start(new, reply))
            .await
            .map_err(submit_status)?;
        match outcome {
            StartOutcome::Started(run) => Ok(Response::new(pb::StartRunResponse {
                id: run.id,
                state: run_state_to_pb(run.state) as i32,
            })),
            StartOutcome::Skipped { active } => Err(Status::already_exists(format!(
                "run `{active}` is already active for this key (on_conflict: skip)"
            ))),
        }
    }

    pub(super) async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let run_id = request.into_inner().id;
        let run = self
            .flows
            .writer
            .flow(|reply| FlowOp::Cancel {
                run_id,
                reason: "cancelled by an admin".into(),
                reply,
            })
            .await
            .map_err(submit_status)?;
        Ok(Response::new(run_to_pb(&self.flows.catalog, &run)))
    }

    pub(super) async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let request = request.into_inner();
        let filter = RunFilter {
            flow_id: (!request.flow_id.is_empty()).then_some(request.flow_id),
            state: run_state_from_pb(request.state),
            key: (!request.correlation_key.is_empty()).then_some(request.correlation_key),
        };
        let size = match request.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = match request.page_token.as_str() {
            "" => None,
            token => Some(parse_token(token)?),
        };
        let mut runs = self
            .store
            .list_runs(&filter, size + 1, before)
            .await
            .map_err(store_status)?;
        let next_page_token = if runs.len() > size {
            runs.truncate(size);
            runs.last()
                .map(|r| format!("{}:{}", r.created_ms, r.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs
                .iter()
                .map(|r| run_to_pb(&self.flows.catalog, r))
                .collect(),
            next_page_token,
        }))
    }

    pub(super) async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunDetail>, Status> {
        let (run, log) = self
            .store
            .get_run(&request.into_inner().id)
            .await
            .map_err(store_status)?;
        let records: StepRecords = serde_json::from_str(&run.steps).unwrap_or_default();
        let step_order = self
            .flows
            .catalog
            .version(&run.flow_id, run.flow_version)
            .await
            .map(|f| f.steps.iter().map(|s| s.id.clone()).collect::<Vec<_>>())
            .unwrap_or_else(|_| records.keys().cloned().collect());
        let steps = step_order
            .iter()
            .map(|id| {
                let r = records.get(id).cloned().unwrap_or_default();
                pb::RunStep {
                    id: id.clone(),
                    state: shown_state(&r.state, run.state),
                    attempts: r.attempts,
                    status_code: r.status.map(u32::from).unwrap_or(0),
                    output: r
                        .body
                        .map(|b| b.to_string().into_bytes())
                        .unwrap_or_default(),
                    error: r.error.unwrap_or_default(),
                    finished_at: r.finished_ms.and_then(timestamp),
                }
            })
            .collect();
        Ok(Response::new(pb::RunDetail {
            run: Some(run_to_pb(&self.flows.catalog, &run)),
            steps,
            log: log
                .into_iter()
                .map(|l| pb::RunLogLine {
                    time: timestamp(l.time_ms),
                    step_id: l.step_id,
                    message: l.message,
                })
                .collect(),
        }))
    }

    pub(super) async fn watch_runs(
        &self,
        request: Request<pb::WatchRunsRequest>,
    ) -> Result<Response<RunStream>, Status> {
        let request = request.into_inner();
        let flow_id = (!request.flow_id.is_empty()).then_some(request.flow_id);
        let state = run_state_from_pb(request.state);
        let changes = self.flows.feed.subscribe();
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let catalog = self.flows.catalog.clone();
        tokio::spawn(super::watch::forward(
            changes,
            self.shutdown.clone(),
            tx,
            move |change: &RunChange, missed| {
                let run = &change.run;
                let wanted = flow_id.as_deref().is_none_or(|f| f == run.flow_id)
                    && state.is_none_or(|s| s == run.state);
                wanted.then(|| pb::RunUpdate {
                    run: Some(run_to_pb(&catalog, run)),
                    time: timestamp(change.time_ms),
                    missed,
                })
            },
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn reload_flows(&self) -> Result<(), Status> {
        self.flows.catalog.reload().await.map_err(store_status)
    }

    fn describe(&self, stored: &StoredFlow) -> pb::Flow {
        let compiled = self.flows.catalog.get().get(&stored.id).cloned();
        let (description, steps) = compiled
            .map(|f| (f.def.description.clone(), step_ids(&f)))
            .unwrap_or_default();
        flow_to_pb(stored, &description, steps)
    }
}

/// A step record's state as an admin should read it: a step that was
/// waiting when its run was cancelled was cancelled, not still waiting.
fn shown_state(recorded: &str, run: RunState) -> String {
    match recorded {
        "" => "pending",
        "waiting" if run == RunState::Cancelled => "cancelled",
        other => other,
    }
    .to_string()
}

fn step_ids(flow: &crate::flows::compiled::CompiledFlow) -> Vec<String> {
    flow.steps.iter().map(|s| s.id.clone()).collect()
}

fn flow_to_pb(stored: &StoredFlow, description: &str, step_ids: Vec<String>) -> pb::Flow {
    pb::Flow {
        id: stored.id.clone(),
        version: stored.version,
        definition_yaml: stored.yaml.clone(),
        description: description.to_string(),
        step_ids,
        has_webhook_key: stored.webhook_key_hash.is_some(),
        created_at: timestamp(stored.created_ms),
        updated_at: timestamp(stored.updated_ms),
    }
}

/// INVALID_ARGUMENT with one field violation per problem.
fn invalid_definition(errors: &[DefinitionError]) -> Status {
    let mut details = ErrorDetails::new();
    for e in errors {
        details.add_bad_request_violation(e.field.clone(), e.message.clone());
    }
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("the flow definition is not valid: {}", summary(errors)),
        details,
    )
}

fn submit_status(e: SubmitError) -> Status {
    match e {
        SubmitError::Refused(e) => store_status(e),
        other => ApiError::from(other).into_status(""),
    }
}

fn parse_token(token: &str) -> Result<(i64, String), Status> {
    token
        .split_once(':')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_string())))
        .ok_or_else(|| {
            super::service::invalid(&[crate::intake::event::FieldError::new(
                &["page_token"],
                "is not one this API gave out",
            )])
        })
}

pub fn run_state_to_pb(state: RunState) -> pb::RunState {
    match state {
        RunState::Created => pb::RunState::Created,
        RunState::Running => pb::RunState::Running,
        RunState::Waiting => pb::RunState::Waiting,
        RunState::Succeeded => pb::RunState::Succeeded,
        RunState::Failed => pb::RunState::Failed,
        RunState::Cancelled => pb::RunState::Cancelled,
    }
}

fn run_state_from_pb(state: i32) -> Option<RunState> {
    Some(match pb::RunState::try_from(state).ok()? {
        pb::RunState::Unspecified => return None,
        pb::RunState::Created => RunState::Created,
        pb::RunState::Running => RunState::Running,
        pb::RunState::Waiting => RunState::Waiting,
        pb::RunState::Succeeded => RunState::Succeeded,
        pb::RunState::Failed => RunState::Failed,
        pb::RunState::Cancelled => RunState::Cancelled,
    })
}

pub fn run_to_pb(catalog: &FlowCatalog, run: &Run) -> pb::Run {
    pb::Run {
        id: run.id.clone(),
        flow_id: run.flow_id.clone(),
        flow_version: run.flow_version,
        state: run_state_to_pb(run.state) as i32,
        correlation_key: run.key.clone().unwrap_or_default(),
        current_step: if run.state.is_finished() {
            String::new()
        } else {
            current_step(catalog, run)
        },
        wake_at: run.wake_ms.and_then(timestamp),
        trigger: run.trigger.clone(),
        inputs: run.inputs.clone().into_bytes(),
        error: run.error.clone().unwrap_or_default(),
        created_at: timestamp(run.created_ms),
        updated_at: timestamp(run.updated_ms),
    }
}

/// The run's current step by id (by number when its version is no longer current).
fn current_step(catalog: &FlowCatalog, run: &Run) -> String {
    catalog
        .get()
        .get(&run.flow_id)
        .filter(|f| f.version == run.flow_version)
        .and_then(|f| f.steps.get(run.step_index as usize))
        .map(|s| s.id.clone())
        .unwrap_or_else(|| format!("#{}", run.step_index))
}
