//! `fanout`: every event goes to 10 endpoints (10 subscriptions of the same
//! pattern, each to its own endpoint on the sink). HTTP publishes at a fixed
//! rate; reports delivery throughput and the latency of each delivery from
//! the publisher's 202.
//!
//! With `--nodes 1,2,3` each count gets a fresh sink and a fresh cluster on
//! one database; the run starts once the endpoints' leases are spread over
//! the daemons (each sends for its share), and HTTP connection `w` posts to
//! daemon `w mod n`. CPU is all the daemons' together, per delivery.

use std::{collections::HashMap, time::Duration};

use serde_json::{json, Value};

use super::{cpu_per, run_prefix, Common};
use crate::{
    daemon::{CpuClock, DaemonSpec},
    load::{self, event_id, HttpWorker, Plan},
    nodes::{self, Nodes},
    report::{self, Latency, Table, LATENCY_HEADERS},
    sink::{Sink, SinkConfig},
};

const SETTLE: Duration = Duration::from_secs(120);

pub struct FanoutArgs {
    pub endpoints: usize,
    pub rate: f64,
    pub connections: usize,
    pub payload: usize,
}

pub async fn run(common: &Common, args: &FanoutArgs) -> anyhow::Result<()> {
    let mut headers = vec!["nodes", "events/s", "deliveries/s"];
    headers.extend(LATENCY_HEADERS);
    headers.extend([
        "deliveries",
        "missing",
        "cpu us/delivery",
        "pg cpu us/delivery",
    ]);
    let mut table = Table::new(&headers);
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for &n in &common.nodes {
        let (row, result, note) = run_nodes(common, args, n).await?;
        table.row(row);
        results.push(result);
        notes.extend(note);
    }
    println!(
        "\nfanout on {}: {} endpoints, HTTP open loop at {} events/s over {} connections for {:?}; latency 202 → each delivery\n{}",
        common.storage.label(),
        args.endpoints,
        args.rate,
        args.connections,
        common.duration,
        table.render()
    );
    for line in &notes {
        println!("{line}");
    }
    println!(
        "cpu us/delivery: CPU time from the first publish until every delivery arrived, per \
         delivery (intake and delivery, all the daemons together); pg: all PostgreSQL's server \
         processes (own cluster only)."
    );
    // With one node count the JSON is that run's, as before `--nodes`.
    let value = match <[Value; 1]>::try_from(results) {
        Ok([only]) => only,
        Err(results) => json!({
            "scenario": "fanout",
            "storage": common.storage.label(),
            "nodes": common.nodes,
            "runs": results,
        }),
    };
    report::write_json(&common.json, &value)?;
    println!("wrote {}", common.json.display());
    Ok(())
}

/// One cluster of `n` daemons: its table row, its JSON and what to say.
async fn run_nodes(
    common: &Common,
    args: &FanoutArgs,
    n: usize,
) -> anyhow::Result<(Vec<String>, Value, Vec<String>)> {
    let sink = Sink::start(SinkConfig::default()).await?;
    let mut spec = DaemonSpec::default();
    for k in 0..args.endpoints {
        spec = spec.route(
            &format!("ep{k}"),
            &sink.url(&format!("/hook/{k}")),
            &["fan.*"],
            &["0s", "1s", "1s"],
        );
    }
    let daemons = Nodes::start(&common.hookyard, &common.storage, &spec, n).await?;
    let leases = match daemons.wait_leases_spread(args.endpoints).await {
        Ok(leases) => leases,
        Err(error) => {
            daemons.stop().await;
            return Err(error);
        }
    };
    let prefix = run_prefix("fanout");
    let addrs = daemons.listens();
    let workers = (0..args.connections)
        .map(|w| {
            HttpWorker::new(addrs[w % addrs.len()], "fan.out", &prefix, args.payload).record_acks()
        })
        .collect();
    let plan = Plan {
        workers: args.connections,
        warmup: Duration::ZERO,
        duration: common.duration,
        rate: Some(args.rate),
        limit: None,
    };
    let cpu = daemons.cpu_clock();
    let pg_cpu = daemons.pg_cpu_clock();
    let cpu_before = cpu.read();
    let pg_cpu_before = pg_cpu.and_then(CpuClock::read);
    let started = std::time::Instant::now();
    let outcome = load::run(plan, workers).await;
    let mut acked: HashMap<String, std::time::Instant> = HashMap::new();
    for worker in &outcome.workers {
        for &(i, at) in worker.acks.iter().flatten() {
            acked.insert(event_id(&prefix, i, 0), at);
        }
    }
    let expected = acked.len() as u64 * args.endpoints as u64;
    let complete = sink.wait_delivered(expected, SETTLE).await;
    let drained = started.elapsed();
    // Intake and delivery together, per delivery made.
    let cpu_us = cpu_per(cpu_before, cpu.read(), sink.delivered());
    let pg_cpu_us = cpu_per(
        pg_cpu_before,
        pg_cpu.and_then(CpuClock::read),
        sink.delivered(),
    );
    let memory = daemons.memory_kib();
    daemons.stop().await;
    let delivered = sink.all_delivered();
    let mut latency = report::histogram();
    let mut last = started;
    let mut short = 0u64;
    for (id, ack) in &acked {
        let arrivals = delivered.get(id).map(Vec::as_slice).unwrap_or(&[]);
        let mut seen = arrivals.to_vec();
        seen.sort();
        seen.truncate(args.endpoints);
        short += (args.endpoints - seen.len()) as u64;
        for at in seen {
            last = last.max(at);
            report::record(&mut latency, at.saturating_duration_since(*ack));
        }
    }
    let throughput = report::rate(sink.delivered(), last.saturating_duration_since(started));
    let lat = Latency::of(&latency);
    let mut row = vec![
        n.to_string(),
        report::thousands(report::rate(outcome.events, outcome.elapsed)),
        report::thousands(throughput),
    ];
    row.extend(lat.cells());
    row.push(sink.delivered().to_string());
    row.push(short.to_string());
    row.push(cpu_us.map_or_else(|| "-".to_string(), |c| format!("{c:.1}")));
    row.push(pg_cpu_us.map_or_else(|| "-".to_string(), |c| format!("{c:.1}")));
    let mut notes = vec![format!(
        "{n} node(s): endpoint leases per daemon {}; all delivered after {:.1} s{}",
        nodes::leases_text(leases.as_deref()),
        drained.as_secs_f64(),
        if complete {
            ""
        } else {
            " (NOT all delivered in time)"
        }
    )];
    if let Some(error) = &outcome.first_error {
        notes.push(format!(
            "{n} node(s): first publish error of {}: {error}",
            outcome.errors
        ));
    }
    let value = json!({
        "scenario": "fanout",
        "nodes": n,
        "leases_per_node": leases,
        "endpoints": args.endpoints,
        "rate": args.rate,
        "acknowledged": acked.len(),
        "publish_errors": outcome.errors,
        "deliveries": sink.delivered(),
        "missing": short,
        "deliveries_per_s": throughput,
        "all_delivered_after_s": drained.as_secs_f64(),
        "latency_from_ack": lat,
        "daemon_rss_kib": memory.map(|m| m.0),
        "daemon_cpu_us_per_delivery": cpu_us,
        "pg_cpu_us_per_delivery": pg_cpu_us,
        "storage": common.storage.label(),
    });
    Ok((row, value, notes))
}
