//! The flows in force, compiled, behind an `ArcSwap` like the routing
//! catalog: intake reads it on every event (for `cancel_on`, found through a
//! pattern index, and for starting runs) without locks; a change rebuilds it
//! from storage. Runs that started on an older version get that version,
//! compiled once and kept.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;

use super::{
    compiled::{self, CompiledFlow},
    definition::{self, DefinitionError},
    template::{self, Secrets},
};
use crate::{
    model::{run::RunCancel, NewEvent},
    routing::{RouteSpec, RouteTable},
    store::{self, Store},
};

pub struct FlowSet {
    flows: HashMap<String, Arc<CompiledFlow>>,
    webhook_keys: HashMap<String, Vec<u8>>,
    cancel_table: RouteTable,
    /// Parallel to the table's specs: which flow and which `cancel_on`.
    cancel_refs: Vec<(Arc<CompiledFlow>, usize)>,
}

impl FlowSet {
    pub(crate) fn build(flows: Vec<(Arc<CompiledFlow>, Option<Vec<u8>>)>) -> FlowSet {
        let mut specs = Vec::new();
        let mut cancel_refs = Vec::new();
        for (flow, _) in &flows {
            for (i, c) in flow.cancel_on.iter().enumerate() {
                specs.push(RouteSpec {
                    patterns: vec![c.pattern.clone()],
                    exclude: vec![],
                    // A tenant's flow is cancelled only by its tenant's events.
                    tenant_id: flow.def.tenant_id.clone(),
                });
                cancel_refs.push((flow.clone(), i));
            }
        }
        FlowSet {
            webhook_keys: flows
                .iter()
                .filter_map(|(f, h)| Some((f.def.id.clone(), h.clone()?)))
                .collect(),
            flows: flows
                .into_iter()
                .map(|(f, _)| (f.def.id.clone(), f))
                .collect(),
            cancel_table: RouteTable::build(&specs),
            cancel_refs,
        }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<CompiledFlow>> {
        self.flows.get(id)
    }

    pub fn webhook_key_hash(&self, id: &str) -> Option<&[u8]> {
        self.webhook_keys.get(id).map(Vec::as_slice)
    }

    /// The runs `event` cancels through `cancel_on`.
    pub fn cancels(&self, event: &NewEvent, out: &mut Vec<RunCancel>) {
        if self.cancel_refs.is_empty() {
            return;
        }
        let mut hits = Vec::new();
        self.cancel_table
            .route(&event.name, event.tenant_id.as_deref(), &mut hits);
        if hits.is_empty() {
            return;
        }
        let ctx = template::value(&serde_json::json!({ "event": super::start::event_json(event) }));
        for i in hits {
            let (flow, which) = &self.cancel_refs[i as usize];
            let cancel = &flow.cancel_on[*which];
            match flow.templates.render(cancel.key, &ctx) {
                Ok(key) if !key.trim().is_empty() => out.push(RunCancel {
                    flow_id: flow.def.id.clone(),
                    key: key.trim().to_string(),
                    reason: format!("cancelled by event {} ({})", event.id, event.name),
                }),
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    flow = %flow.def.id, event_id = %event.id, %error,
                    "A cancel_on key did not render; nothing cancelled."
                ),
            }
        }
    }
}

pub struct FlowCatalog {
    current: ArcSwap<FlowSet>,
    /// Versions older than the current one, compiled for runs that use them.
    older: Mutex<HashMap<(String, u64), Arc<CompiledFlow>>>,
    store: Store,
    secrets: Arc<Secrets>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl FlowCatalog {
    pub async fn load(store: Store, secrets: Arc<Secrets>) -> store::Result<FlowCatalog> {
        let set = read(&store, &secrets).await?;
        Ok(FlowCatalog {
            current: ArcSwap::from_pointee(set),
            older: Mutex::default(),
            store,
            secrets,
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn get(&self) -> arc_swap::Guard<Arc<FlowSet>> {
        self.current.load()
    }

    pub fn secrets(&self) -> &Arc<Secrets> {
        &self.secrets
    }

    pub async fn reload(&self) -> store::Result<()> {
        let _guard = self.reload_lock.lock().await;
        let set = read(&self.store, &self.secrets).await?;
        self.current.store(Arc::new(set));
        Ok(())
    }

    /// Parses and compiles a definition the way storage will hold it.
    pub fn compile(&self, yaml: &str, version: u64) -> Result<CompiledFlow, Vec<DefinitionError>> {
        let def = definition::parse_yaml(yaml).map_err(|e| vec![e])?;
        compiled::compile(def, yaml.to_string(), version, self.secrets.clone())
    }

    /// The flow at the version a run started with.
    pub async fn version(&self, id: &str, version: u64) -> store::Result<Arc<CompiledFlow>> {
        if let Some(flow) = self.get().get(id).filter(|f| f.version == version) {
            return Ok(flow.clone());
        }
        let key = (id.to_string(), version);
        if let Some(flow) = self.older.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(flow);
        }
        let yaml = self.store.flow_version(id, version).await?;
        let flow = Arc::new(self.compile(&yaml, version).map_err(|errors| {
            store::Error::FailedPrecondition(format!(
                "stored flow {id}@{version} no longer compiles: {}",
                summary(&errors)
            ))
        })?);
        if let Ok(mut older) = self.older.lock() {
            older.insert(key, flow.clone());
        }
        Ok(flow)
    }
}

async fn read(store: &Store, secrets: &Arc<Secrets>) -> store::Result<FlowSet> {
    let mut flows = Vec::new();
    for stored in store.list_flows().await? {
        let compiled = definition::parse_yaml(&stored.yaml)
            .map_err(|e| vec![e])
            .and_then(|def| {
                compiled::compile(def, stored.yaml.clone(), stored.version, secrets.clone())
            });
        match compiled {
            Ok(flow) => flows.push((Arc::new(flow), stored.webhook_key_hash)),
            Err(errors) => tracing::error!(
                flow = %stored.id, errors = %summary(&errors),
                "Stored flow does not compile; it is not loaded."
            ),
        }
    }
    Ok(FlowSet::build(flows))
}

pub fn summary(errors: &[DefinitionError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::intake::{auth::Principal, event::from_json};

    fn flow(yaml: &str) -> Arc<CompiledFlow> {
        let def = definition::parse_yaml(yaml).unwrap();
        Arc::new(compiled::compile(def, yaml.into(), 1, Arc::default()).unwrap())
    }

    fn cancels(set: &FlowSet, tenant: Option<&str>) -> Vec<String> {
        let event = from_json(
            br#"{"name":"lead.call_booked","payload":{"email":"ada@example.com"}}"#,
            &Principal::new("k", tenant),
        )
        .unwrap();
        let mut out = Vec::new();
        set.cancels(&event, &mut out);
        let mut flows: Vec<String> = out.into_iter().map(|c| c.flow_id).collect();
        flows.sort();
        flows
    }

    #[test]
    fn a_tenants_flow_is_cancelled_only_by_its_tenants_events() {
        let cancel_on = "inputs: {email: {type: email, required: true}}\n\
            correlate_by: '{{ inputs.email }}'\n\
            cancel_on: [{event: lead.call_booked, key: '{{ event.payload.email }}'}]\n\
            steps: [{id: a, delay: 1h}]\n";
        let set = FlowSet::build(vec![
            (
                flow(&format!("id: acme\ntenant_id: acme\n{cancel_on}")),
                None,
            ),
            (flow(&format!("id: anyone\n{cancel_on}")), None),
        ]);
        assert_eq!(cancels(&set, Some("acme")), ["acme", "anyone"]);
        assert_eq!(cancels(&set, Some("globex")), ["anyone"]);
        assert_eq!(cancels(&set, None), ["anyone"]);
    }
}
