//! `intake-http`, `intake-grpc`, `intake-grpc-batch`: durable intake against
//! the ceiling, with the same load, one after the other. The daemon routes
//! every event (a subscription exists) but no pattern matches, so intake is
//! measured alone; delivery has its own scenarios.

use std::{net::SocketAddr, time::Duration};

use serde_json::json;

use super::{run_prefix, Common};
use crate::{
    ceiling::Ceiling,
    daemon::{CpuClock, Daemon, DaemonSpec},
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
    /// Requests in flight, one run per level (HTTP: one per connection).
    pub in_flight: Vec<usize>,
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
    elapsed: Duration,
    /// The server's CPU time (user + system) over the measured window.
    cpu: Option<Duration>,
}

impl Measured {
    fn cpu_per_event_us(&self) -> Option<f64> {
        let events = self.events_per_s * self.elapsed.as_secs_f64();
        self.cpu
            .filter(|_| events >= 1.0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / events)
    }
}

async fn measure(
    common: &Common,
    args: &IntakeArgs,
    in_flight: usize,
    addr: SocketAddr,
    label: &str,
) -> anyhow::Result<Measured> {
    let plan = Plan {
        workers: in_flight,
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
            let workers = (0..in_flight)
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
        elapsed,
        cpu: None,
    })
}

pub async fn run(name: &str, common: &Common, args: &IntakeArgs) -> anyhow::Result<()> {
    let mut levels = Vec::with_capacity(args.in_flight.len());
    for &in_flight in &args.in_flight {
        levels.push(measure_level(common, args, in_flight).await?);
    }

    let mut headers = vec!["in flight", "server", "req/s", "events/s", "ratio"];
    headers.extend(LATENCY_HEADERS);
    headers.extend(["errors", "cpu us/ev"]);
    let mut table = Table::new(&headers);
    for level in &levels {
        for (label, m) in [("ceiling", &level.ceiling), ("hookyard", &level.hookyard)] {
            let cpu = m.cpu_per_event_us();
            let mut row = vec![
                level.in_flight.to_string(),
                label.to_string(),
                report::thousands(m.requests_per_s),
                report::thousands(m.events_per_s),
                format!("{:.2}", level.ratio_of(m)),
            ];
            row.extend(m.latency.cells());
            row.push(m.errors.to_string());
            row.push(cpu.map_or_else(|| "-".to_string(), |us| format!("{us:.2}")));
            table.row(row);
        }
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".to_string(),
    };
    println!(
        "\n{name}: {} connections, batch {}, payload {} B, {mode}, {:?} after {:?} warm-up\n{}",
        args.connections,
        args.batch,
        args.payload,
        common.duration,
        common.warmup,
        table.render()
    );
    println!(
        "cpu us/ev: the server's CPU time (user + system) over the measured window, per event."
    );
    for level in &levels {
        for (label, m) in [("ceiling", &level.ceiling), ("hookyard", &level.hookyard)] {
            if let Some(error) = &m.first_error {
                println!(
                    "{label} at {} in flight: first error of {}: {error}",
                    level.in_flight, m.errors
                );
            }
        }
    }
    let value = json!({
        "scenario": name,
        "connections": args.connections,
        "batch": args.batch,
        "payload_bytes": args.payload,
        "rate": args.rate,
        "duration_s": common.duration.as_secs_f64(),
        "levels": levels.iter().map(Level::to_json).collect::<Vec<_>>(),
    });
    report::write_json(&common.json, &value)?;
    println!("wrote {}", common.json.display());
    Ok(())
}

/// One load level: the ceiling and the daemon with the same requests in
/// flight.
struct Level {
    in_flight: usize,
    ceiling: Measured,
    hookyard: Measured,
    daemon_rss_kib: Option<u64>,
}

impl Level {
    fn ratio_of(&self, m: &Measured) -> f64 {
        m.events_per_s / self.ceiling.events_per_s.max(1.0)
    }

    fn to_json(&self) -> serde_json::Value {
        let summary = |m: &Measured| {
            json!({
                "requests": m.requests,
                "requests_per_s": m.requests_per_s,
                "events_per_s": m.events_per_s,
                "errors": m.errors,
                "first_error": m.first_error,
                "latency": m.latency,
                "cpu_s": m.cpu.map(|c| c.as_secs_f64()),
                "cpu_us_per_event": m.cpu_per_event_us(),
            })
        };
        json!({
            "in_flight": self.in_flight,
            "ceiling": summary(&self.ceiling),
            "hookyard": summary(&self.hookyard),
            "ratio": self.ratio_of(&self.hookyard),
            "daemon_rss_kib": self.daemon_rss_kib,
        })
    }
}

/// The ceiling, then a fresh daemon, under the same load.
async fn measure_level(
    common: &Common,
    args: &IntakeArgs,
    in_flight: usize,
) -> anyhow::Result<Level> {
    let ceiling = Ceiling::spawn().await?;
    let ceiling_addr = match args.protocol {
        Protocol::Http => ceiling.http,
        Protocol::Grpc => ceiling.grpc,
    };
    let top = measure_with_cpu(
        common,
        args,
        in_flight,
        ceiling_addr,
        "ceiling",
        ceiling.cpu_clock(),
    )
    .await?;
    drop(ceiling);

    let spec = DaemonSpec::default().route("nowhere", "http://127.0.0.1:9/", &["other.*"], &["0s"]);
    let daemon = Daemon::start(&common.hookyard, &spec).await?;
    let got = measure_with_cpu(
        common,
        args,
        in_flight,
        daemon.listen,
        "daemon",
        Some(daemon.cpu_clock()),
    )
    .await?;
    let daemon_rss_kib = daemon.memory_kib().map(|m| m.0);
    daemon.stop().await;
    Ok(Level {
        in_flight,
        ceiling: top,
        hookyard: got,
        daemon_rss_kib,
    })
}

/// `measure`, with the server's CPU time read when the warm-up ends and
/// when the measurement does.
async fn measure_with_cpu(
    common: &Common,
    args: &IntakeArgs,
    in_flight: usize,
    addr: SocketAddr,
    label: &str,
    clock: Option<CpuClock>,
) -> anyhow::Result<Measured> {
    let warmup = common.warmup;
    let at_start = tokio::spawn(async move {
        tokio::time::sleep(warmup).await;
        clock.and_then(CpuClock::read)
    });
    let mut measured = measure(common, args, in_flight, addr, label).await?;
    let at_end = clock.and_then(CpuClock::read);
    let at_start = at_start.await.ok().flatten();
    measured.cpu = at_end
        .zip(at_start)
        .map(|(end, start)| end.saturating_sub(start));
    Ok(measured)
}
