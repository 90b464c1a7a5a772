//! `intake-http`, `intake-grpc`, `intake-grpc-batch`: durable intake against
//! the ceiling, with the same load, one after the other. The daemon routes
//! every event (a subscription exists) but no pattern matches, so intake is
//! measured alone; delivery has its own scenarios.
//!
//! Over HTTP each level is measured with the harness's generator and with
//! `wrk` (`Generator`), each against its own ceiling, so a ratio is never
//! taken against a ceiling the generator itself capped.
//!
//! With `--nodes 1,2,3` (PostgreSQL) each level and generator measures the
//! ceiling once, then one cluster of each size on a fresh database, the
//! load spread round robin over the daemons' public addresses: HTTP
//! connection `k` (harness) or wrk thread `k` goes to daemon `k mod n`;
//! gRPC call `k` to daemon `k mod n`, over ceil(connections / n) HTTP/2
//! connections per daemon. The CPU column is all the daemons' together.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::bail;
use serde_json::json;

use super::{run_prefix, Common};
use crate::{
    ceiling::Ceiling,
    daemon::{CpuClock, CpuSum, DaemonSpec},
    load::{self, GrpcWorker, HttpWorker, Ids, Plan},
    nodes::Nodes,
    report::{self, Latency, Table, LATENCY_HEADERS},
    wrk::{self, WrkPlan},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

/// Who makes the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generator {
    /// `load::run` with `HttpWorker`s or `GrpcWorker`s.
    Harness,
    /// `wrk` with a Lua script (HTTP, closed loop only).
    Wrk,
}

impl Generator {
    fn label(self) -> &'static str {
        match self {
            Generator::Harness => "harness",
            Generator::Wrk => "wrk",
        }
    }
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
    /// One run of each level per generator, in this order.
    pub generators: Vec<Generator>,
}

struct Measured {
    events_per_s: f64,
    requests_per_s: f64,
    latency: Latency,
    errors: u64,
    first_error: Option<String>,
    requests: u64,
    elapsed: Duration,
    /// The server's CPU time (user + system) over the measured window; with
    /// several daemons, all of theirs.
    cpu: Option<Duration>,
    /// PostgreSQL's (all its server processes), when the daemon stores there.
    pg_cpu: Option<Duration>,
    /// wrk only: answers other than 202 (counted in `errors` too) and 202s
    /// that said `"duplicate":true`.
    non_202: Option<u64>,
    duplicates: Option<u64>,
}

impl Measured {
    fn pg_cpu_per_event_us(&self) -> Option<f64> {
        let events = self.events_per_s * self.elapsed.as_secs_f64();
        self.pg_cpu
            .filter(|_| events > 0.0)
            .map(|cpu| cpu.as_secs_f64() * 1e6 / events)
    }

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
    addrs: &[SocketAddr],
    label: &str,
) -> anyhow::Result<Measured> {
    if addrs.is_empty() {
        bail!("no server to load");
    }
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
                .map(|k| {
                    HttpWorker::new(
                        addrs[k % addrs.len()],
                        "bench.intake",
                        &prefix,
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
        Protocol::Grpc => {
            // Per daemon, its share of the connections (at least one).
            let per_server = args.connections.max(1).div_ceil(addrs.len());
            let channels = addrs
                .iter()
                .map(|&addr| {
                    (0..per_server)
                        .map(|_| load::grpc_channel(addr))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let workers = (0..in_flight)
                .map(|k| {
                    let server = &channels[k % channels.len()];
                    GrpcWorker::new(
                        server[(k / channels.len()) % server.len()].clone(),
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
        pg_cpu: None,
        non_202: None,
        duplicates: None,
    })
}

/// A warm-up run of wrk, then the measured one with the server's CPU time
/// read between the two and after.
async fn measure_wrk(
    common: &Common,
    args: &IntakeArgs,
    wrk_path: &Path,
    addrs: &[SocketAddr],
    label: &str,
    clocks: Clocks,
) -> anyhow::Result<Measured> {
    let plan = |duration: Duration, tag: &str| WrkPlan {
        threads: wrk_threads(args.connections, addrs.len()),
        connections: args.connections,
        duration,
        prefix: run_prefix(&format!("{label}-{tag}")),
        name: "bench.intake".to_string(),
        body_bytes: args.payload,
    };
    if !common.warmup.is_zero() {
        wrk::run(wrk_path, addrs, &plan(common.warmup, "warmup")).await?;
    }
    let cpu_before = clocks.read();
    let o = wrk::run(wrk_path, addrs, &plan(common.duration, "wrk")).await?;
    let cpu_after = clocks.read();
    let ok = o.requests.saturating_sub(o.non_202);
    Ok(Measured {
        events_per_s: report::rate(ok, o.elapsed),
        requests_per_s: report::rate(ok, o.elapsed),
        latency: o.latency,
        errors: o.errors(),
        first_error: o.first_error(),
        requests: o.requests,
        elapsed: o.elapsed,
        cpu: spent(cpu_before.0, cpu_after.0),
        pg_cpu: spent(cpu_before.1, cpu_after.1),
        non_202: Some(o.non_202),
        duplicates: Some(o.duplicates),
    })
}

/// One wrk thread per core, as the `wrk -t2` on this 2-core machine the
/// ceiling was checked with; with several servers, rounded up to a multiple
/// of their number, since each thread sends to one server (`-t3` for 3 on 2
/// cores); never more threads than connections.
fn wrk_threads(connections: usize, servers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let servers = servers.max(1);
    (cores.div_ceil(servers) * servers).min(connections).max(1)
}

pub async fn run(name: &str, common: &Common, args: &IntakeArgs) -> anyhow::Result<()> {
    let mut args = args.clone();
    let wrk_path = prepare_wrk(&mut args).await?;
    let mut levels = Vec::with_capacity(args.in_flight.len());
    for &in_flight in &args.in_flight {
        let mut runs = Vec::with_capacity(args.generators.len());
        for &generator in &args.generators {
            let run = measure_level(common, &args, in_flight, generator, wrk_path.as_deref());
            runs.push(run.await?);
        }
        levels.push(Level { in_flight, runs });
    }

    let mut headers = vec![
        "in flight",
        "generator",
        "server",
        "nodes",
        "req/s",
        "events/s",
        "ratio",
    ];
    headers.extend(LATENCY_HEADERS);
    headers.extend(["errors", "cpu us/ev", "pg cpu us/ev"]);
    let mut table = Table::new(&headers);
    for level in &levels {
        for run in &level.runs {
            let rows = std::iter::once(("ceiling", "-".to_string(), &run.ceiling)).chain(
                run.hookyard
                    .iter()
                    .map(|n| ("hookyard", n.nodes.to_string(), &n.measured)),
            );
            for (label, nodes, m) in rows {
                let cpu = m.cpu_per_event_us();
                let mut row = vec![
                    level.in_flight.to_string(),
                    run.generator.label().to_string(),
                    label.to_string(),
                    nodes,
                    report::thousands(m.requests_per_s),
                    report::thousands(m.events_per_s),
                    format!("{:.2}", run.ratio_of(m)),
                ];
                row.extend(m.latency.cells());
                row.push(m.errors.to_string());
                row.push(cpu.map_or_else(|| "-".to_string(), |us| format!("{us:.2}")));
                let pg = m.pg_cpu_per_event_us();
                row.push(pg.map_or_else(|| "-".to_string(), |us| format!("{us:.2}")));
                table.row(row);
            }
        }
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".to_string(),
    };
    println!(
        "\n{name} on {}: {} connections, batch {}, payload {} B, {mode}, {:?} after {:?} warm-up\n{}",
        common.storage.label(),
        args.connections,
        args.batch,
        args.payload,
        common.duration,
        common.warmup,
        table.render()
    );
    println!(
        "cpu us/ev: the server's CPU time (user + system) over the measured window, per event \
         (with several nodes, all the daemons' together); pg cpu us/ev: PostgreSQL's, all its \
         server processes (own cluster only)."
    );
    for level in &levels {
        for line in level.comparison() {
            println!("{line}");
        }
    }
    let mut refused = Vec::new();
    for level in &levels {
        for run in &level.runs {
            let measured = std::iter::once(("ceiling".to_string(), &run.ceiling)).chain(
                run.hookyard
                    .iter()
                    .map(|n| (format!("hookyard on {} node(s)", n.nodes), &n.measured)),
            );
            for (label, m) in measured {
                let at = format!(
                    "{label} at {} in flight ({})",
                    level.in_flight,
                    run.generator.label()
                );
                if let Some(error) = &m.first_error {
                    println!("{at}: first error of {}: {error}", m.errors);
                }
                if m.non_202.unwrap_or(0) > 0 || m.duplicates.unwrap_or(0) > 0 {
                    refused.push(format!(
                        "{at}: {} answers other than 202, {} duplicates; first: {}",
                        m.non_202.unwrap_or(0),
                        m.duplicates.unwrap_or(0),
                        m.first_error.as_deref().unwrap_or("-")
                    ));
                }
            }
        }
    }
    let value = json!({
        "scenario": name,
        "storage": common.storage.label(),
        "nodes": common.nodes,
        "connections": args.connections,
        "batch": args.batch,
        "payload_bytes": args.payload,
        "rate": args.rate,
        "duration_s": common.duration.as_secs_f64(),
        "generators": args.generators.iter().map(|g| g.label()).collect::<Vec<_>>(),
        "levels": levels.iter().map(Level::to_json).collect::<Vec<_>>(),
    });
    report::write_json(&common.json, &value)?;
    println!("wrote {}", common.json.display());
    if !refused.is_empty() {
        bail!(
            "the server did not accept every request as new:\n{}",
            refused.join("\n")
        );
    }
    Ok(())
}

/// Drops wrk where it cannot run (gRPC, open loop) and finds or installs it
/// where it will.
async fn prepare_wrk(args: &mut IntakeArgs) -> anyhow::Result<Option<PathBuf>> {
    if !args.generators.contains(&Generator::Wrk) {
        return Ok(None);
    }
    let unable = match (args.protocol, args.rate) {
        (Protocol::Grpc, _) => Some("wrk speaks HTTP only"),
        (Protocol::Http, Some(_)) => Some("wrk has no open loop (--rate)"),
        (Protocol::Http, None) => None,
    };
    if let Some(reason) = unable {
        if args.generators == [Generator::Wrk] {
            bail!("--generator wrk: {reason}");
        }
        println!("{reason}: measuring with the harness's generator only");
        args.generators.retain(|g| *g != Generator::Wrk);
        return Ok(None);
    }
    Ok(Some(wrk::ensure().await?))
}

/// One load level: per generator, the ceiling and the daemons with the same
/// requests in flight.
struct Level {
    in_flight: usize,
    runs: Vec<Run>,
}

struct Run {
    generator: Generator,
    ceiling: Measured,
    /// One per node count, in the order asked.
    hookyard: Vec<NodesRun>,
}

/// The daemons of one cluster size under the load.
struct NodesRun {
    nodes: usize,
    measured: Measured,
    /// All the daemons' together.
    daemon_rss_kib: Option<u64>,
}

impl Run {
    fn ratio_of(&self, m: &Measured) -> f64 {
        m.events_per_s / self.ceiling.events_per_s.max(1.0)
    }

    fn nodes(&self, nodes: usize) -> Option<&Measured> {
        self.hookyard
            .iter()
            .find(|n| n.nodes == nodes)
            .map(|n| &n.measured)
    }
}

impl Level {
    fn run(&self, generator: Generator) -> Option<&Run> {
        self.runs.iter().find(|r| r.generator == generator)
    }

    /// Per node count, both ratios side by side, and how far the harness's
    /// generator got on the bare server next to wrk.
    fn comparison(&self) -> Vec<String> {
        let (Some(harness), Some(wrk)) = (self.run(Generator::Harness), self.run(Generator::Wrk))
        else {
            return Vec::new();
        };
        harness
            .hookyard
            .iter()
            .filter_map(|h| Some((h.nodes, &h.measured, wrk.nodes(h.nodes)?)))
            .map(|(nodes, h, w)| {
                format!(
                    "{} in flight, {nodes} node(s): daemon/ceiling {:.2} with the harness's \
                     generator, {:.2} with wrk; the harness's generator reached {:.2} of wrk's \
                     ceiling ({} against {} req/s) and {:.2} of wrk's daemon throughput ({} \
                     against {} req/s).",
                    self.in_flight,
                    harness.ratio_of(h),
                    wrk.ratio_of(w),
                    harness.ceiling.requests_per_s / wrk.ceiling.requests_per_s.max(1.0),
                    report::thousands(harness.ceiling.requests_per_s),
                    report::thousands(wrk.ceiling.requests_per_s),
                    h.requests_per_s / w.requests_per_s.max(1.0),
                    report::thousands(h.requests_per_s),
                    report::thousands(w.requests_per_s),
                )
            })
            .collect()
    }

    fn to_json(&self) -> serde_json::Value {
        let summary = |m: &Measured| {
            json!({
                "requests": m.requests,
                "requests_per_s": m.requests_per_s,
                "events_per_s": m.events_per_s,
                "errors": m.errors,
                "first_error": m.first_error,
                "non_202": m.non_202,
                "duplicates": m.duplicates,
                "latency": m.latency,
                "cpu_s": m.cpu.map(|c| c.as_secs_f64()),
                "cpu_us_per_event": m.cpu_per_event_us(),
                "pg_cpu_s": m.pg_cpu.map(|c| c.as_secs_f64()),
                "pg_cpu_us_per_event": m.pg_cpu_per_event_us(),
            })
        };
        let mut by_generator = serde_json::Map::new();
        for run in &self.runs {
            let by_nodes: Vec<_> = run
                .hookyard
                .iter()
                .map(|n| {
                    json!({
                        "nodes": n.nodes,
                        "hookyard": summary(&n.measured),
                        "ratio": run.ratio_of(&n.measured),
                        "daemon_rss_kib": n.daemon_rss_kib,
                    })
                })
                .collect();
            // `hookyard`, `ratio` and `daemon_rss_kib` are the first node
            // count's, as before `--nodes`.
            let first = run.hookyard.first();
            by_generator.insert(
                run.generator.label().to_string(),
                json!({
                    "ceiling": summary(&run.ceiling),
                    "hookyard": first.map(|n| summary(&n.measured)),
                    "ratio": first.map(|n| run.ratio_of(&n.measured)),
                    "daemon_rss_kib": first.and_then(|n| n.daemon_rss_kib),
                    "by_nodes": by_nodes,
                }),
            );
        }
        json!({
            "in_flight": self.in_flight,
            "generators": by_generator,
        })
    }
}

/// The ceiling, then fresh daemons (one cluster per node count), under the
/// same load from `generator`.
async fn measure_level(
    common: &Common,
    args: &IntakeArgs,
    in_flight: usize,
    generator: Generator,
    wrk_path: Option<&Path>,
) -> anyhow::Result<Run> {
    let measure = |addrs: Vec<SocketAddr>, label: &'static str, clocks: Clocks| async move {
        match (generator, wrk_path) {
            (Generator::Wrk, Some(path)) => {
                measure_wrk(common, args, path, &addrs, label, clocks).await
            }
            (Generator::Wrk, None) => bail!("wrk was not prepared"),
            (Generator::Harness, _) => {
                measure_with_cpu(common, args, in_flight, &addrs, label, clocks).await
            }
        }
    };
    let ceiling = Ceiling::spawn().await?;
    let ceiling_addr = match args.protocol {
        Protocol::Http => ceiling.http,
        Protocol::Grpc => ceiling.grpc,
    };
    let clocks = Clocks {
        server: ceiling.cpu_clock().map(|c| CpuSum::of([c])),
        pg: None,
    };
    let top = measure(vec![ceiling_addr], "ceiling", clocks).await?;
    drop(ceiling);

    let spec = DaemonSpec::default().route("nowhere", "http://127.0.0.1:9/", &["other.*"], &["0s"]);
    let mut hookyard = Vec::with_capacity(common.nodes.len());
    for &n in &common.nodes {
        let nodes = Nodes::start(&common.hookyard, &common.storage, &spec, n).await?;
        let clocks = Clocks {
            server: Some(nodes.cpu_clock()),
            pg: nodes.pg_cpu_clock(),
        };
        let got = measure(nodes.listens(), "daemon", clocks).await;
        let daemon_rss_kib = nodes.memory_kib().map(|m| m.0);
        nodes.stop().await;
        hookyard.push(NodesRun {
            nodes: n,
            measured: got?,
            daemon_rss_kib,
        });
    }
    Ok(Run {
        generator,
        ceiling: top,
        hookyard,
    })
}

/// `measure`, with the server's CPU time read when the warm-up ends and
/// when the measurement does.
async fn measure_with_cpu(
    common: &Common,
    args: &IntakeArgs,
    in_flight: usize,
    addrs: &[SocketAddr],
    label: &str,
    clocks: Clocks,
) -> anyhow::Result<Measured> {
    let warmup = common.warmup;
    let at_start = {
        let clocks = clocks.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            clocks.read()
        })
    };
    let mut measured = measure(common, args, in_flight, addrs, label).await?;
    let at_end = clocks.read();
    let at_start = at_start.await.unwrap_or_default();
    measured.cpu = spent(at_start.0, at_end.0);
    measured.pg_cpu = spent(at_start.1, at_end.1);
    Ok(measured)
}

/// The server's CPU clock (all the daemons' together) and, on PostgreSQL,
/// the database's.
#[derive(Debug, Clone)]
struct Clocks {
    server: Option<CpuSum>,
    pg: Option<CpuClock>,
}

impl Clocks {
    fn read(&self) -> (Option<Duration>, Option<Duration>) {
        (
            self.server.as_ref().and_then(CpuSum::read),
            self.pg.and_then(CpuClock::read),
        )
    }
}

fn spent(start: Option<Duration>, end: Option<Duration>) -> Option<Duration> {
    end.zip(start).map(|(end, start)| end.saturating_sub(start))
}
