//! Route lookup cost with 10, 1 000 and 100 000 subscriptions of realistic,
//! mixed patterns (`*`, `**`, literals, excludes, tenant-scoped routes). The
//! cost per event should stay flat as subscriptions grow.
//!
//! cargo bench -p hookyard-server --bench routing

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hookyard_server::routing::{Pattern, RouteSpec, RouteTable};

fn pattern(s: &str) -> Pattern {
    Pattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Subscription `i` of a mixed population.
fn spec(i: usize) -> RouteSpec {
    let (patterns, exclude, tenant) = match i % 6 {
        0 => (
            vec![format!("tenant{i}.lead.*")],
            vec![format!("tenant{i}.lead.test")],
            None,
        ),
        1 => (vec![format!("billing{i}.**")], vec![], None),
        2 => (vec![format!("svc{i}.**.failed")], vec![], None),
        3 => (
            vec![format!("order{i}.created"), format!("order{i}.updated")],
            vec![],
            None,
        ),
        4 => (
            vec![format!("lead{i}.*")],
            vec![],
            Some(format!("t{}", i % 50)),
        ),
        _ => (vec![format!("*.sync{i}.done")], vec![], None),
    };
    RouteSpec {
        patterns: patterns.iter().map(|p| pattern(p)).collect(),
        exclude: exclude.iter().map(|p| pattern(p)).collect(),
        tenant_id: tenant,
    }
}

/// A few routes every table has, so every size does matching work.
fn common() -> Vec<RouteSpec> {
    ["lead.*", "billing.**", "**.failed"]
        .iter()
        .map(|p| RouteSpec {
            patterns: vec![pattern(p)],
            exclude: vec![pattern("lead.test")],
            tenant_id: None,
        })
        .collect()
}

const NAMES: &[&str] = &[
    "lead.created",
    "lead.test",
    "billing.invoice.paid",
    "svc7.worker.job.failed",
    "order3.created",
    "tenant6.lead.opted_in",
    "unrelated.event.name",
    "a.sync5.done",
];

fn bench_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for size in [10usize, 1_000, 100_000] {
        let mut specs = common();
        specs.extend((0..size.saturating_sub(3)).map(spec));
        let table = RouteTable::build(&specs);
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::from_parameter(size), &table, |b, table| {
            b.iter(|| {
                for name in NAMES {
                    table.route(black_box(name), Some("t3"), &mut out);
                    black_box(&out);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
