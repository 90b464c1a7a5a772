//! The routing configuration in force: endpoints, subscriptions and the
//! compiled route table, as one immutable snapshot behind an `ArcSwap`.
//! Intake and the dispatcher read it without locks on every event; an admin
//! change builds a whole new snapshot from storage and swaps it in, so readers
//! never see half an update.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use crate::{
    flows::{compiled::SubscriptionInputs, template::Secrets},
    model::{Endpoint, EndpointState, Route, Subscription},
    routing::{Pattern, RouteSpec, RouteTable},
    store::{self, Store},
};

pub struct Catalog {
    endpoints: HashMap<String, Arc<Endpoint>>,
    subscriptions: HashMap<String, Arc<Subscription>>,
    table: RouteTable,
    /// Parallel to the table's specs: where each matching spec routes to.
    routes: Vec<(Target, Arc<Subscription>)>,
}

/// Where a subscription sends what it matches.
#[derive(Clone)]
enum Target {
    Endpoint(Route),
    Flow(FlowRoute),
}

/// A subscription that starts runs of a flow.
#[derive(Clone)]
pub struct FlowRoute {
    pub flow_id: Arc<str>,
    pub subscription_id: Arc<str>,
    pub inputs: Arc<SubscriptionInputs>,
}

impl Catalog {
    /// Compiles the subscriptions that can receive events: enabled, targeting
    /// an enabled endpoint, with patterns that parse (storage only holds
    /// validated ones; a bad one is skipped loudly rather than stopping routing).
    pub fn build(
        endpoints: Vec<Endpoint>,
        subscriptions: Vec<Subscription>,
        secrets: &Arc<Secrets>,
    ) -> Catalog {
        let endpoints: HashMap<String, Arc<Endpoint>> = endpoints
            .into_iter()
            .map(|e| (e.id.clone(), Arc::new(e)))
            .collect();
        let mut specs = Vec::new();
        let mut routes = Vec::new();
        let mut by_id = HashMap::new();
        for sub in subscriptions {
            let sub = Arc::new(sub);
            by_id.insert(sub.id.clone(), sub.clone());
            let Some(route) = routable(&sub, &endpoints, secrets) else {
                continue;
            };
            match compile_spec(&sub) {
                Ok(spec) => {
                    specs.push(spec);
                    routes.push((route, sub));
                }
                Err(error) => {
                    tracing::error!(subscription = %sub.name, %error, "Stored subscription does not compile; it routes nothing.");
                }
            }
        }
        Catalog {
            endpoints,
            subscriptions: by_id,
            table: RouteTable::build(&specs),
            routes,
        }
    }

    /// Appends the routes of every subscription that takes this event: to
    /// endpoints in `out`, to flows in `flows`.
    pub fn route(
        &self,
        name: &str,
        tenant: Option<&str>,
        out: &mut Vec<Route>,
        flows: &mut Vec<FlowRoute>,
    ) {
        SCRATCH.with_borrow_mut(|indices| {
            self.table.route(name, tenant, indices);
            for &i in indices.iter() {
                match &self.routes[i as usize].0 {
                    Target::Endpoint(route) => out.push(route.clone()),
                    Target::Flow(route) => flows.push(route.clone()),
                }
            }
        });
    }

    /// The subscriptions that would take this event.
    pub fn matching_subscriptions(
        &self,
        name: &str,
        tenant: Option<&str>,
    ) -> Vec<Arc<Subscription>> {
        let mut indices = Vec::new();
        self.table.route(name, tenant, &mut indices);
        indices
            .iter()
            .map(|&i| self.routes[i as usize].1.clone())
            .collect()
    }

    pub fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(id)
    }

    pub fn subscription(&self, id: &str) -> Option<&Arc<Subscription>> {
        self.subscriptions.get(id)
    }
}

thread_local! {
    /// Route indices for one lookup; reused so routing allocates nothing.
    static SCRATCH: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn routable(
    sub: &Subscription,
    endpoints: &HashMap<String, Arc<Endpoint>>,
    secrets: &Arc<Secrets>,
) -> Option<Target> {
    if !sub.enabled {
        return None;
    }
    if let Some(flow_id) = sub.flow_id() {
        return match SubscriptionInputs::compile(&sub.inputs, secrets.clone()) {
            Ok(inputs) => Some(Target::Flow(FlowRoute {
                flow_id: Arc::from(flow_id),
                subscription_id: Arc::from(sub.id.as_str()),
                inputs: Arc::new(inputs),
            })),
            Err(errors) => {
                tracing::error!(subscription = %sub.name, errors = %crate::flows::catalog::summary(&errors), "Stored subscription inputs do not compile; it routes nothing.");
                None
            }
        };
    }
    let endpoint = endpoints.get(sub.endpoint_id()?)?;
    if endpoint.state != EndpointState::Enabled {
        return None;
    }
    Some(Target::Endpoint(Route {
        subscription_id: Arc::from(sub.id.as_str()),
        endpoint_id: Arc::from(endpoint.id.as_str()),
    }))
}

fn compile_spec(sub: &Subscription) -> Result<RouteSpec, crate::routing::PatternError> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(RouteSpec {
        patterns: parse(&sub.patterns)?,
        exclude: parse(&sub.exclude)?,
        tenant_id: sub.tenant_id.clone(),
    })
}

/// The shared, swappable catalog.
pub struct CatalogHandle {
    current: ArcSwap<Catalog>,
    store: Store,
    secrets: Arc<Secrets>,
    /// Serialises reloads so an older snapshot never replaces a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    /// Counts swaps, so the dispatcher learns that endpoints changed.
    changes: tokio::sync::watch::Sender<u64>,
}

impl CatalogHandle {
    pub async fn load(store: Store, secrets: Arc<Secrets>) -> store::Result<CatalogHandle> {
        let catalog = read(&store, &secrets).await?;
        Ok(CatalogHandle {
            current: ArcSwap::from_pointee(catalog),
            store,
            secrets,
            reload_lock: tokio::sync::Mutex::new(()),
            changes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn get(&self) -> arc_swap::Guard<Arc<Catalog>> {
        self.current.load()
    }

    /// Rebuilds the snapshot from storage after a change.
    pub async fn reload(&self) -> store::Result<()> {
        let _guard = self.reload_lock.lock().await;
        let catalog = read(&self.store, &self.secrets).await?;
        self.current.store(Arc::new(catalog));
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Marked changed after every swap.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

async fn read(store: &Store, secrets: &Arc<Secrets>) -> store::Result<Catalog> {
    let endpoints = store.list_endpoints().await?;
    let subscriptions = store.list_subscriptions().await?;
    Ok(Catalog::build(endpoints, subscriptions, secrets))
}
