//! Routing cost with payload filters: 10 000 subscriptions, each with a
//! filter, against the same subscriptions without one. Filters run only for
//! subscriptions whose patterns matched, so an event that matches few of
//! them should cost about what it costs unfiltered; one that matches ten
//! filtered subscriptions pays for one context and ten evaluations.
//!
//! cargo bench -p hookyard-server --bench filters

use std::{hint::black_box, sync::Arc};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hookyard_server::{
    catalog::Catalog,
    model::{Endpoint, EndpointState, NewEvent, Subscription},
};

const SUBSCRIPTIONS: usize = 10_000;

fn endpoint(i: usize) -> Endpoint {
    Endpoint {
        id: format!("ep{i}"),
        url: format!("https://ep{i}.example.com/hook"),
        tenant_id: None,
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

/// Subscription `i`: its own `order{i}.*` pattern, and the first ten also
/// take `order.paid` (the event that matches them all).
fn subscription(i: usize, filtered: bool) -> Subscription {
    let mut patterns = vec![format!("order{i}.*")];
    if i < 10 {
        patterns.push("order.paid".to_string());
    }
    Subscription {
        id: format!("sub{i}"),
        name: format!("sub{i}"),
        patterns,
        exclude: vec![],
        tenant_id: None,
        target: format!("endpoint:ep{i}"),
        enabled: true,
        description: String::new(),
        inputs: Default::default(),
        filter: filtered
            .then(|| format!(r#"event.payload.amount > {i} and event.payload.currency == "EUR""#)),
        ordering_key: None,
        version: 1,
        created_ms: 0,
        updated_ms: 0,
    }
}

fn event(name: &str) -> NewEvent {
    NewEvent {
        id: "evt".into(),
        name: name.into(),
        source: "bench".into(),
        tenant_id: None,
        time_ms: 1_700_000_000_000,
        payload:
            r#"{"amount":250,"currency":"EUR","customer":{"id":"c_42","email":"ada@example.com"}}"#
                .into(),
        attributes: Default::default(),
        body_hash: [0; 32],
        routes: vec![],
        flow_starts: vec![],
        cancels: vec![],
    }
}

fn bench_filters(c: &mut Criterion) {
    let mut group = c.benchmark_group("filtered_routing");
    for filtered in [false, true] {
        let catalog = Catalog::build(
            (0..SUBSCRIPTIONS).map(endpoint).collect(),
            (0..SUBSCRIPTIONS)
                .map(|i| subscription(i, filtered))
                .collect(),
            &Arc::default(),
        );
        let label = if filtered { "filtered" } else { "unfiltered" };
        for (case, name) in [
            ("one_match", "order77.created"),
            ("ten_matches", "order.paid"),
        ] {
            let event = event(name);
            let (mut out, mut flows) = (Vec::new(), Vec::new());
            group.bench_with_input(BenchmarkId::new(label, case), &catalog, |b, catalog| {
                b.iter(|| {
                    out.clear();
                    catalog.route(black_box(&event), &mut out, &mut flows);
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_filters);
criterion_main!(benches);
