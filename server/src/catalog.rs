//! The routing configuration in force: endpoints, subscriptions and the
//! compiled route table, as one immutable snapshot behind an `ArcSwap`.
//! Intake and the dispatcher read it without locks on every event; an admin
//! change builds a whole new snapshot from storage and swaps it in, so readers
//! never see half an update. The event types (`event_types`) are part of
//! the snapshot, so they change with it the same way.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use crate::{
    event_types::EventTypes,
    filter::{self, Filter},
    flows::{compiled::SubscriptionInputs, template::Secrets},
    model::{Endpoint, EndpointState, NewEvent, Route, Subscription},
    ordering::OrderingKey,
    routing::{Pattern, RouteSpec, RouteTable},
    store::{self, Store},
};

pub struct Catalog {
    endpoints: HashMap<String, Arc<Endpoint>>,
    subscriptions: HashMap<String, Arc<Subscription>>,
    table: RouteTable,
    /// Parallel to the table's specs: where each matching spec routes to.
    routes: Vec<Entry>,
    event_types: EventTypes,
}

/// One routable subscription: where it sends, its filter and the ordering
/// key of its deliveries, if it has them.
struct Entry {
    target: Target,
    subscription: Arc<Subscription>,
    filter: Option<Filter>,
    ordering: Option<Arc<OrderingKey>>,
}

/// What TestRoute reports: the subscriptions that take an event, and those
/// whose patterns matched but whose filter did not take it (and why).
#[derive(Default)]
pub struct Matches {
    pub taken: Vec<Arc<Subscription>>,
    pub filtered_out: Vec<(Arc<Subscription>, String)>,
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
    /// A subscription to a tenant's endpoint takes only that tenant's events.
    pub fn build(
        endpoints: Vec<Endpoint>,
        subscriptions: Vec<Subscription>,
        secrets: &Arc<Secrets>,
    ) -> Catalog {
        let endpoints: HashMap<String, Arc<Endpoint>> = endpoints
            .into_iter()
            .map(|e| (e.id.clone(), Arc::new(e)))
            .collect();
        let endpoint_keys = endpoint_ordering_keys(&endpoints);
        let mut specs = Vec::new();
        let mut routes = Vec::new();
        let mut by_id = HashMap::new();
        for sub in subscriptions {
            let sub = Arc::new(sub);
            by_id.insert(sub.id.clone(), sub.clone());
            let Some(route) = routable(&sub, &endpoints, secrets) else {
                continue;
            };
            let tenant = match effective_tenant(&sub, &endpoints) {
                Ok(tenant) => tenant,
                Err(endpoint_tenant) => {
                    tracing::error!(subscription = %sub.name, tenant = ?sub.tenant_id, %endpoint_tenant, "Stored subscription names another tenant than its endpoint; it routes nothing.");
                    continue;
                }
            };
            let filter = match sub.filter.as_deref().map(Filter::compile).transpose() {
                Ok(filter) => filter,
                Err(error) => {
                    tracing::error!(subscription = %sub.name, %error, "Stored subscription filter does not compile; it routes nothing.");
                    continue;
                }
            };
            let ordering = match ordering_of(&sub, &endpoint_keys) {
                Ok(ordering) => ordering,
                Err(error) => {
                    tracing::error!(subscription = %sub.name, %error, "Stored subscription ordering key does not compile; it routes nothing.");
                    continue;
                }
            };
            match compile_spec(&sub, tenant) {
                Ok(spec) => {
                    specs.push(spec);
                    routes.push(Entry {
                        target: route,
                        subscription: sub,
                        filter,
                        ordering,
                    });
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
            event_types: EventTypes::default(),
        }
    }

    /// The same catalog, checking payloads against these event types.
    pub fn with_event_types(mut self, event_types: EventTypes) -> Catalog {
        self.event_types = event_types;
        self
    }

    pub fn event_types(&self) -> &EventTypes {
        &self.event_types
    }

    /// Appends the routes of every subscription that takes this event: to
    /// endpoints in `out`, to flows in `flows`. Filters run only for
    /// subscriptions whose patterns and tenant matched, over a context built
    /// once per event. Several subscriptions to one endpoint make one route
    /// (one delivery) that lists the others.
    pub fn route(&self, event: &NewEvent, out: &mut Vec<Route>, flows: &mut Vec<FlowRoute>) {
        SCRATCH.with_borrow_mut(|indices| {
            self.table
                .route(&event.name, event.tenant_id.as_deref(), indices);
            let mut ctx = None;
            for &i in indices.iter() {
                let entry = &self.routes[i as usize];
                if let Some(filter) = &entry.filter {
                    let ctx = ctx.get_or_insert_with(|| filter::context(event));
                    match filter.accepts(ctx) {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(error) => {
                            tracing::debug!(subscription = %entry.subscription.name, event_id = %event.id, %error, "Filter could not decide; the event is not taken.");
                            continue;
                        }
                    }
                }
                match &entry.target {
                    Target::Endpoint(route) => {
                        if merge_route(out, route) {
                            if let (Some(key), Some(added)) = (&entry.ordering, out.last_mut()) {
                                let ctx = ctx.get_or_insert_with(|| filter::context(event));
                                added.ordering_key = key.render(ctx);
                            }
                        }
                    }
                    Target::Flow(route) => flows.push(route.clone()),
                }
            }
        });
    }

    /// Which subscriptions would take this event, and which matched by name
    /// but were filtered out.
    pub fn matching_subscriptions(&self, event: &NewEvent) -> Matches {
        let mut indices = Vec::new();
        self.table
            .route(&event.name, event.tenant_id.as_deref(), &mut indices);
        let ctx = filter::context(event);
        let mut matches = Matches::default();
        for &i in &indices {
            let entry = &self.routes[i as usize];
            let verdict = entry.filter.as_ref().map(|f| f.accepts(&ctx));
            match verdict {
                None | Some(Ok(true)) => matches.taken.push(entry.subscription.clone()),
                Some(Ok(false)) => matches
                    .filtered_out
                    .push((entry.subscription.clone(), "the filter is false".into())),
                Some(Err(error)) => matches.filtered_out.push((
                    entry.subscription.clone(),
                    format!("the filter failed: {error}"),
                )),
            }
        }
        matches
    }

    pub fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.endpoints.get(id)
    }

    /// Every stored endpoint's id, enabled or not.
    pub fn endpoint_ids(&self) -> impl Iterator<Item = &str> {
        self.endpoints.keys().map(String::as_str)
    }

    pub fn subscription(&self, id: &str) -> Option<&Arc<Subscription>> {
        self.subscriptions.get(id)
    }

    /// Every stored subscription, routable or not.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Arc<Subscription>> {
        self.subscriptions.values()
    }
}

/// Adds `route` to `out` (true), or to the route already there for its
/// endpoint: one event reaches one endpoint once. Events match few
/// subscriptions, so a scan beats a map here.
fn merge_route(out: &mut Vec<Route>, route: &Route) -> bool {
    match out.iter_mut().find(|r| r.endpoint_id == route.endpoint_id) {
        Some(existing) => {
            existing.also.push(route.subscription_id.clone());
            false
        }
        None => {
            out.push(route.clone());
            true
        }
    }
}

/// Each endpoint's ordering key, compiled once for all its subscriptions.
/// Storage holds only validated ones; one that does not compile is skipped
/// loudly (its deliveries go unordered).
fn endpoint_ordering_keys(
    endpoints: &HashMap<String, Arc<Endpoint>>,
) -> HashMap<&str, Arc<OrderingKey>> {
    endpoints
        .values()
        .filter_map(|e| {
            let template = e.options.ordering_key.as_deref()?;
            match OrderingKey::compile(template) {
                Ok(key) => Some((e.id.as_str(), Arc::new(key))),
                Err(error) => {
                    tracing::error!(endpoint = %e.id, %error, "Stored endpoint ordering key does not compile; its deliveries are unordered.");
                    None
                }
            }
        })
        .collect()
}

/// A subscription's own ordering key, else its endpoint's.
fn ordering_of(
    sub: &Subscription,
    endpoint_keys: &HashMap<&str, Arc<OrderingKey>>,
) -> Result<Option<Arc<OrderingKey>>, String> {
    if let Some(template) = &sub.ordering_key {
        return OrderingKey::compile(template).map(|k| Some(Arc::new(k)));
    }
    Ok(sub
        .endpoint_id()
        .and_then(|id| endpoint_keys.get(id).cloned()))
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
        ordering_key: None,
        subscription_id: Arc::from(sub.id.as_str()),
        endpoint_id: Arc::from(endpoint.id.as_str()),
        also: Vec::new(),
    }))
}

/// The tenant whose events a subscription takes: its own, else its
/// endpoint's. An endpoint that belongs to a tenant thus never receives
/// another tenant's events, nor events without a tenant, whatever its
/// subscriptions say. A subscription naming a tenant other than its
/// endpoint's is refused when written; should storage hold one anyway, the
/// `Err` (the endpoint's tenant) makes it route nothing rather than leak.
fn effective_tenant(
    sub: &Subscription,
    endpoints: &HashMap<String, Arc<Endpoint>>,
) -> Result<Option<String>, String> {
    let endpoint_tenant = sub
        .endpoint_id()
        .and_then(|id| endpoints.get(id))
        .and_then(|e| e.tenant_id.as_ref());
    match (&sub.tenant_id, endpoint_tenant) {
        (Some(own), Some(theirs)) if own != theirs => Err(theirs.clone()),
        (Some(own), _) => Ok(Some(own.clone())),
        (None, theirs) => Ok(theirs.cloned()),
    }
}

fn compile_spec(
    sub: &Subscription,
    tenant_id: Option<String>,
) -> Result<RouteSpec, crate::routing::PatternError> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(RouteSpec {
        patterns: parse(&sub.patterns)?,
        exclude: parse(&sub.exclude)?,
        tenant_id,
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
    let event_types = EventTypes::build(store.list_event_types().await?);
    Ok(Catalog::build(endpoints, subscriptions, secrets).with_event_types(event_types))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(id: &str, tenant: Option<&str>) -> Endpoint {
        Endpoint {
            id: id.into(),
            url: "http://127.0.0.1:1/".into(),
            tenant_id: tenant.map(String::from),
            secret: String::new(),
            headers: Default::default(),
            timeout: None,
            retry_schedule: None,
            max_in_flight: None,
            state: EndpointState::Enabled,
            description: String::new(),
            options: Default::default(),
            previous_secret: None,
            disabled_reason: None,
            failing_since_ms: None,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn subscription(name: &str, tenant: Option<&str>, endpoint: &str) -> Subscription {
        Subscription {
            id: name.into(),
            name: name.into(),
            patterns: vec!["lead.*".into()],
            exclude: vec![],
            tenant_id: tenant.map(String::from),
            target: format!("endpoint:{endpoint}"),
            enabled: true,
            description: String::new(),
            inputs: Default::default(),
            filter: None,
            ordering_key: None,
            version: 1,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn event(tenant: Option<&str>, payload: &str) -> NewEvent {
        NewEvent {
            id: "e".into(),
            name: "lead.created".into(),
            source: "test".into(),
            tenant_id: tenant.map(String::from),
            time_ms: 0,
            payload: payload.into(),
            attributes: Default::default(),
            body_hash: [0; 32],
            routes: vec![],
            flow_starts: vec![],
            cancels: vec![],
        }
    }

    fn endpoints_for(catalog: &Catalog, tenant: Option<&str>) -> Vec<String> {
        let (mut out, mut flows) = (Vec::new(), Vec::new());
        catalog.route(&event(tenant, "{}"), &mut out, &mut flows);
        let mut ids: Vec<String> = out.iter().map(|r| r.endpoint_id.to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_tenants_endpoint_takes_only_its_tenants_events_whatever_the_subscription_says() {
        let catalog = Catalog::build(
            vec![endpoint("acme-crm", Some("acme")), endpoint("shared", None)],
            vec![
                subscription("to-acme", None, "acme-crm"),
                subscription("to-shared", None, "shared"),
            ],
            &Arc::default(),
        );
        assert_eq!(
            endpoints_for(&catalog, Some("acme")),
            ["acme-crm", "shared"]
        );
        assert_eq!(endpoints_for(&catalog, Some("globex")), ["shared"]);
        assert_eq!(endpoints_for(&catalog, None), ["shared"]);
        let names: Vec<String> = catalog
            .matching_subscriptions(&event(Some("globex"), "{}"))
            .taken
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(names, ["to-shared"]);
    }

    #[test]
    fn a_subscription_naming_its_endpoints_tenant_routes_and_another_tenant_routes_nothing() {
        let catalog = Catalog::build(
            vec![endpoint("acme-crm", Some("acme"))],
            vec![
                subscription("same", Some("acme"), "acme-crm"),
                subscription("other", Some("globex"), "acme-crm"),
            ],
            &Arc::default(),
        );
        assert_eq!(endpoints_for(&catalog, Some("acme")), ["acme-crm"]);
        assert!(endpoints_for(&catalog, Some("globex")).is_empty());
        assert_eq!(catalog.subscriptions().count(), 2);
    }

    #[test]
    fn one_delivery_per_endpoint_and_filters_decide_after_the_name() {
        let mut big = subscription("big", None, "shared");
        big.filter = Some("event.payload.amount > 100".into());
        let catalog = Catalog::build(
            vec![endpoint("shared", None)],
            vec![subscription("all", None, "shared"), big],
            &Arc::default(),
        );
        let (mut out, mut flows) = (Vec::new(), Vec::new());
        catalog.route(&event(None, r#"{"amount": 500}"#), &mut out, &mut flows);
        assert_eq!(out.len(), 1, "one delivery for the endpoint");
        assert_eq!(out[0].also.len(), 1, "listing the other subscription");
        out.clear();
        catalog.route(&event(None, r#"{"amount": 5}"#), &mut out, &mut flows);
        assert_eq!((out.len(), out[0].also.len()), (1, 0));
        let matches = catalog.matching_subscriptions(&event(None, r#"{"amount": 5}"#));
        assert_eq!(matches.taken.len(), 1);
        assert_eq!(matches.filtered_out.len(), 1);
        assert_eq!(matches.filtered_out[0].0.name, "big");
    }
}
