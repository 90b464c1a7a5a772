//! `flows`: runs started over HTTP (`POST /v1/flows/bench/runs`), closed loop
//! for the most runs per second, then open loop at fixed rates for latency.
//! The flow's one step calls the sink with the run's input as its
//! `webhook-id`, so two latencies are measured: start (intended send → 201,
//! the run committed) and first step (intended send → the step's request at
//! the sink). With `--waiting N`, N runs of a flow that sleeps for a day are
//! started first, to show that waiting runs cost nothing to the others.

use std::{collections::HashMap, time::Duration};

use serde_json::json;

use super::{run_prefix, Common};
use crate::{
    daemon::{Daemon, DaemonSpec},
    load::{self, event_id, HttpWorker, Plan},
    report::{self, Latency, Table, LATENCY_HEADERS},
    sink::{Sink, SinkConfig},
};

/// How long the sink may take to see every started run's first step.
const SETTLE: Duration = Duration::from_secs(60);

pub struct FlowsArgs {
    pub rates: Vec<f64>,
    pub connections: usize,
    pub waiting: u64,
}

fn spec(sink: &Sink) -> DaemonSpec {
    let flows = vec![
        json!({
            "id": "bench",
            "inputs": {"n": {"type": "string", "required": true}},
            "steps": [{"id": "call", "http": {
                "url": sink.url("/hook"),
                "headers": {"webhook-id": "{{ inputs.n }}"},
                "body": {"n": "{{ inputs.n }}"},
            }}]
        }),
        json!({
            "id": "sleeper",
            "inputs": {"n": {"type": "string", "required": true}},
            "steps": [{"id": "later", "delay": "24h", "log": "woke"}]
        }),
    ];
    DaemonSpec {
        flows,
        ..DaemonSpec::default()
    }
}

pub async fn run(common: &Common, args: &FlowsArgs) -> anyhow::Result<()> {
    let sink = Sink::start(SinkConfig::default()).await?;
    let daemon = Daemon::start(&common.hookyard, &common.storage, &spec(&sink)).await?;
    if args.waiting > 0 {
        let started = preload_waiting(&daemon, args).await;
        println!("started {started} runs that wait 24 h");
    }

    let mut headers = vec!["load", "measure"];
    headers.extend(LATENCY_HEADERS);
    headers.extend(["runs/s", "count", "errors"]);
    let mut table = Table::new(&headers);
    let mut results = Vec::new();

    let prefix = run_prefix("flows-closed");
    let workers = (0..args.connections)
        .map(|_| HttpWorker::flow_runs(daemon.listen, "bench", &prefix))
        .collect();
    let plan = Plan {
        workers: args.connections,
        warmup: common.warmup,
        duration: common.duration,
        rate: None,
        limit: None,
    };
    let closed = load::run(plan, workers).await;
    let runs_per_s = report::rate(closed.events, closed.elapsed);
    let mut row = vec![
        format!("closed, {} conns", args.connections),
        "start (send→201)".to_string(),
    ];
    row.extend(Latency::of(&closed.latency).cells());
    row.extend([
        report::thousands(runs_per_s),
        closed.events.to_string(),
        closed.errors.to_string(),
    ]);
    table.row(row);
    results.push(json!({
        "load": "closed", "connections": args.connections, "runs_per_s": runs_per_s,
        "started": closed.events, "errors": closed.errors, "start": Latency::of(&closed.latency),
    }));

    for &rate in &args.rates {
        let prefix = run_prefix("flows-open");
        let workers = (0..args.connections)
            .map(|_| HttpWorker::flow_runs(daemon.listen, "bench", &prefix).record_acks())
            .collect();
        let plan = Plan {
            workers: args.connections,
            warmup: common.warmup,
            duration: common.duration,
            rate: Some(rate),
            limit: None,
        };
        let outcome = load::run(plan, workers).await;
        let measure_from = outcome.start + common.warmup;
        let mut intended: HashMap<String, std::time::Instant> = HashMap::new();
        for worker in &outcome.workers {
            for &(i, _) in worker.acks.iter().flatten() {
                let at = outcome.start + Duration::from_secs_f64(i as f64 / rate);
                intended.insert(event_id(&prefix, i, 0), at);
            }
        }
        let before = sink.delivered();
        sink.wait_delivered(before + intended.len() as u64, SETTLE)
            .await;
        let arrived = sink.first_delivered();
        let mut first_step = report::histogram();
        let mut lost = 0u64;
        for (id, at) in &intended {
            match arrived.get(id) {
                Some(&seen) if *at >= measure_from => {
                    report::record(&mut first_step, seen.saturating_duration_since(*at))
                }
                Some(_) => {}
                None => lost += 1,
            }
        }
        let achieved = report::rate(outcome.events, outcome.elapsed);
        for (label, latency, bad) in [
            (
                "start (send→201)",
                Latency::of(&outcome.latency),
                outcome.errors,
            ),
            ("first step (send→sink)", Latency::of(&first_step), lost),
        ] {
            let mut row = vec![format!("{rate}/s"), label.to_string()];
            row.extend(latency.cells());
            row.extend([
                report::thousands(achieved),
                latency.count.to_string(),
                bad.to_string(),
            ]);
            table.row(row);
        }
        results.push(json!({
            "load": "open", "rate": rate, "runs_per_s": achieved, "errors": outcome.errors,
            "lost": lost, "start": Latency::of(&outcome.latency), "first_step": Latency::of(&first_step),
        }));
    }
    let memory = daemon.memory_kib();
    daemon.stop().await;
    println!(
        "\nflows: runs started over HTTP, {} connections, {:?} per phase after {:?} warm-up, {} runs waiting\n{}",
        args.connections,
        common.duration,
        common.warmup,
        args.waiting,
        table.render()
    );
    if let Some((rss, peak)) = memory {
        println!("daemon RSS {} MiB (peak {} MiB)", rss / 1024, peak / 1024);
    }
    report::write_json(
        &common.json,
        &json!({"scenario": "flows", "waiting": args.waiting, "phases": results,
                "rss_kib": memory.map(|m| m.0), "peak_rss_kib": memory.map(|m| m.1)}),
    )?;
    println!("wrote {}", common.json.display());
    Ok(())
}

/// Starts `args.waiting` runs of the sleeper flow, closed loop.
async fn preload_waiting(daemon: &Daemon, args: &FlowsArgs) -> u64 {
    let prefix = run_prefix("flows-waiting");
    let workers = (0..args.connections)
        .map(|_| HttpWorker::flow_runs(daemon.listen, "sleeper", &prefix))
        .collect();
    let plan = Plan {
        workers: args.connections,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(3600),
        rate: None,
        limit: Some(args.waiting),
    };
    load::run(plan, workers).await.events
}
