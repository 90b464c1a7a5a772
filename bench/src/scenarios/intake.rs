//! `intake-http`, `intake-grpc`, `intake-grpc-batch`: durable intake against
//! the ceiling, with the same load, one after the other. The daemon routes
//! every event (a subscription exists) but no pattern matches, so intake is
//! measured alone; delivery has its own scenarios.

use std::net::SocketAddr;

use serde_json::json;

use super::{run_prefix, Common};
use crate::{
    ceiling::Ceiling,
    daemon::{Daemon, DaemonSpec},
    load::{self, GrpcWorker, HttpWorker, Ids, Plan},
    report::{self, Latency, Table, LATENCY_HEADERS},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

#[derive(Debug, Clone)]
pub struct IntakeArgs {
    pub protocol: Protocol,
    /// TCP connections.
    pub connections: usize,
    /// Requests in flight (HTTP: one per connection).
    pub concurrency: usize,
    /// Events per request (gRPC PublishBatch when above 1).
    pub batch: usize,
    pub payload: usize,
    /// Requests per second (open loop); closed loop when `None`.
    pub rate: Option<f64>,
    pub ids: Ids,
}

struct Measured {
    events_per_s: f64,
    requests_per_s: f64,
    latency: Latency,
    errors: u64,
    first_error: Option<String>,
    requests: u64,
}

async fn measure(
    common: &Common,
    args: &IntakeArgs,
    addr: SocketAddr,
    label: &str,
) -> anyhow::Result<Measured> {
    let plan = Plan {
        workers: args.concurrency,
        warmup: common.warmup,
        duration: common.duration,
        rate: args.rate,
        limit: None,
    };
    let prefix = run_prefix(label);
    let outcome = match args.protocol {
        Protocol::Http => {
            let workers = (0..args.connections)
                .map(|_| {
                    HttpWorker::new(addr, "bench.intake", &prefix, args.payload).with_ids(args.ids)
                })
                .collect();
            let o = load::run(plan, workers).await;
            (
                o.latency,
                o.requests,
                o.events,
                o.errors,
                o.first_error,
                o.elapsed,
            )
        }
        Protocol::Grpc => {
            let channels = (0..args.connections.max(1))
                .map(|_| load::grpc_channel(addr))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let workers = (0..args.concurrency)
                .map(|k| {
                    GrpcWorker::new(
                        channels[k % channels.len()].clone(),
                        "bench.intake",
                        &prefix,
                        args.batch,
                        args.payload,
                    )
                    .with_ids(args.ids)
                })
                .collect();
            let o = load::run(plan, workers).await;
            (
                o.latency,
                o.requests,
                o.events,
                o.errors,
                o.first_error,
                o.elapsed,
            )
        }
    };
    let (latency, requests, events, errors, first_error, elapsed) = outcome;
    Ok(Measured {
        events_per_s: report::rate(events, elapsed),
        requests_per_s: report::rate(requests - errors, elapsed),
        latency: Latency::of(&latency),
        errors,
        first_error,
        requests,
    })
}

pub async fn run(name: &str, common: &Common, args: &IntakeArgs) -> anyhow::Result<()> {
    let args = IntakeArgs {
        concurrency: if args.protocol == Protocol::Http {
            args.connections
        } else {
            args.concurrency
        },
        ..args.clone()
    };
    let ceiling = Ceiling::spawn().await?;
    let ceiling_addr = match args.protocol {
        Protocol::Http => ceiling.http,
        Protocol::Grpc => ceiling.grpc,
    };
    let top = measure(common, &args, ceiling_addr, "ceiling").await?;
    drop(ceiling);

    let spec = DaemonSpec::default().route("nowhere", "http://127.0.0.1:9/", &["other.*"], &["0s"]);
    let daemon = Daemon::start(&common.hookyard, &spec).await?;
    let cpu_before = daemon.cpu_time();
    let got = measure(common, &args, daemon.listen, "daemon").await?;
    let cpu = daemon
        .cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let memory = daemon.memory_kib();
    daemon.stop().await;

    let mut headers = vec!["server", "req/s", "events/s", "ratio"];
    headers.extend(LATENCY_HEADERS);
    headers.push("errors");
    let mut table = Table::new(&headers);
    for (label, m) in [("ceiling", &top), ("hookyard", &got)] {
        let mut row = vec![
            label.to_string(),
            report::thousands(m.requests_per_s),
            report::thousands(m.events_per_s),
            format!("{:.2}", m.events_per_s / top.events_per_s.max(1.0)),
        ];
        row.extend(m.latency.cells());
        row.push(m.errors.to_string());
        table.row(row);
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".to_string(),
    };
    println!(
        "\n{name}: {} connections, {} in flight, batch {}, payload {} B, {mode}, {:?} after {:?} warm-up\n{}",
        args.connections,
        args.concurrency,
        args.batch,
        args.payload,
        common.duration,
        common.warmup,
        table.render()
    );
    for (label, m) in [("ceiling", &top), ("hookyard", &got)] {
        if let Some(error) = &m.first_error {
            println!("{label}: first error of {}: {error}", m.errors);
        }
    }
    let summary = |m: &Measured| {
        json!({
            "requests": m.requests,
            "requests_per_s": m.requests_per_s,
            "events_per_s": m.events_per_s,
            "errors": m.errors,
            "first_error": m.first_error,
            "latency": m.latency,
        })
    };
    let value = json!({
        "scenario": name,
        "connections": args.connections,
        "concurrency": args.concurrency,
        "batch": args.batch,
        "payload_bytes": args.payload,
        "rate": args.rate,
        "duration_s": common.duration.as_secs_f64(),
        "ceiling": summary(&top),
        "hookyard": summary(&got),
        "ratio": got.events_per_s / top.events_per_s.max(1.0),
        "daemon_cpu_s": cpu.map(|c| c.as_secs_f64()),
        "daemon_rss_kib": memory.map(|m| m.0),
    });
    report::write_json(&common.json, &value)?;
    println!("wrote {}", common.json.display());
    Ok(())
}
