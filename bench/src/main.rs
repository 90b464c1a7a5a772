//! `hookyard-bench`: one command per scenario. Each starts what it needs (the
//! release `hookyard` binary in a temp data dir, the ceiling server, the
//! sink), prints a table and writes JSON (`target/bench/<scenario>.json`
//! unless `--json` says otherwise).
//!
//! cargo build --release -p hookyard-bench -p hookyard-server
//! target/release/hookyard-bench intake-http
//! target/release/hookyard-bench --storage postgres intake-http
//! target/release/hookyard-bench --storage postgres --nodes 1,2,3 end-to-end

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hookyard_bench::{
    daemon, load, nodes,
    scenarios::{
        self, backlog, end_to_end, fanout, flows,
        intake::{self, Generator},
        isolation, Common,
    },
    storage::{Postgres, Storage},
};

#[derive(Parser)]
#[command(name = "hookyard-bench", about = "Hookyard's benchmark scenarios")]
struct Cli {
    #[command(subcommand)]
    command: Scenario,
    /// Where the daemons store: SQLite in each one's temp data dir, or
    /// PostgreSQL (a cluster of the harness's own, started with
    /// scripts/postgres and stopped at the end, unless --postgres-url names
    /// a server), with a fresh database for every daemon.
    #[arg(long, global = true, value_enum, default_value = "sqlite")]
    storage: StorageArg,
    /// An existing PostgreSQL to use instead of a cluster of the harness's
    /// own (implies --storage postgres); the role must be allowed to
    /// CREATE DATABASE. PostgreSQL's CPU is not counted then.
    #[arg(long, global = true)]
    postgres_url: Option<String>,
    /// Daemons sharing one PostgreSQL database, one run per count (e.g.
    /// `1,2,3`); the load is spread round robin over them. PostgreSQL only;
    /// intake-http, intake-grpc, intake-grpc-batch, end-to-end and fanout.
    #[arg(long, global = true, value_delimiter = ',', default_value = "1")]
    nodes: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StorageArg {
    Sqlite,
    Postgres,
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// Measured time (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before measuring.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// The daemon binary (default: `hookyard` beside this one, or $HOOKYARD_BIN).
    #[arg(long)]
    hookyard: Option<PathBuf>,
    /// Where the JSON goes (default: target/bench/<scenario>.json).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Scenario {
    /// HTTP POST /v1/events, closed loop (or --rate), vs the ceiling.
    IntakeHttp {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        /// Requests per second (open loop).
        #[arg(long)]
        rate: Option<f64>,
        /// Event ids spread like random UUIDs instead of in order.
        #[arg(long)]
        random_ids: bool,
        /// Who makes the load: the harness's own generator, `wrk` (installed
        /// with apt-get if missing; closed loop only), or both, each against
        /// its own ceiling run.
        #[arg(long, value_enum, default_value = "both")]
        generator: GeneratorArg,
    },
    /// gRPC Publish, vs the ceiling.
    IntakeGrpc {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Requests in flight; a list (`16,64`) runs one level each.
        #[arg(long, value_delimiter = ',', default_value = "64")]
        concurrency: Vec<usize>,
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        #[arg(long)]
        rate: Option<f64>,
        /// Event ids spread like random UUIDs instead of in order.
        #[arg(long)]
        random_ids: bool,
    },
    /// gRPC PublishBatch, vs the ceiling.
    IntakeGrpcBatch {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Requests in flight; a list (`16,64`) runs one level each.
        #[arg(long, value_delimiter = ',', default_value = "16,64")]
        concurrency: Vec<usize>,
        #[arg(long, default_value_t = 256)]
        payload: usize,
        #[arg(long)]
        rate: Option<f64>,
        /// Event ids spread like random UUIDs instead of in order.
        #[arg(long)]
        random_ids: bool,
    },
    /// Fixed-rate publishing, latency until the sink receives the webhook.
    EndToEnd {
        #[command(flatten)]
        common: CommonArgs,
        /// Events per second, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        rates: Vec<f64>,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        /// Endpoints (paths on the sink) the events are spread over, each
        /// event to one; default 1, or 6 when --nodes asks for more than one
        /// daemon, so that every daemon holds endpoint leases.
        #[arg(long)]
        endpoints: Option<usize>,
        /// Ordering keys the events are spread over (the endpoints order by
        /// `{{ event.payload.key }}`, event n carries `"key": "k<n mod N>"`);
        /// 0: unordered.
        #[arg(long, default_value_t = 0)]
        ordering_keys: u64,
    },
    /// One event to 10 endpoints.
    Fanout {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        /// Events per second published.
        #[arg(long, default_value_t = 2000.0)]
        rate: f64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        #[arg(long, default_value_t = 1024)]
        payload: usize,
    },
    /// Flow runs started over HTTP: runs/s closed loop, then start and
    /// first-step latency at fixed rates.
    Flows {
        #[command(flatten)]
        common: CommonArgs,
        /// Runs per second, one phase each.
        #[arg(long, value_delimiter = ',', default_value = "1000")]
        rates: Vec<f64>,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Runs started first that wait for a day (e.g. 100000).
        #[arg(long, default_value_t = 0)]
        waiting: u64,
    },
    /// Route lookup cost with 10 / 1 000 / 100 000 subscriptions (criterion).
    Routing {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Endpoint down while N events arrive, then up: drain rate, peak RSS.
    Backlog {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 256)]
        payload: usize,
        /// The daemon's `delivery.memory_queue`.
        #[arg(long, default_value_t = 20_000)]
        memory_queue: usize,
        /// Ordering keys the events are spread over (the endpoint orders by
        /// `{{ event.payload.key }}`, event n carries `"key": "k<n mod N>"`);
        /// 0: unordered.
        #[arg(long, default_value_t = 0)]
        ordering_keys: u64,
    },
    /// A healthy endpoint's latency while another has a backlog due and
    /// refuses connections (after a baseline without the backlog).
    Isolation {
        #[command(flatten)]
        common: CommonArgs,
        /// Events routed to the dead endpoint first.
        #[arg(long, default_value_t = 1_000_000)]
        backlog: u64,
        /// PublishBatch size for the backlog.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// PublishBatch calls in flight for the backlog.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Events per second to the healthy endpoint (HTTP, open loop).
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long, default_value_t = 1024)]
        payload: usize,
        /// Skip the run without the backlog.
        #[arg(long)]
        no_baseline: bool,
    },
    /// The ceiling server alone (the scenarios start it themselves).
    #[command(hide = true)]
    Ceiling,
    /// Runs `wrk` with these arguments, installing the Debian package first
    /// if it is missing (e.g. `hookyard-bench wrk -t2 -c64 -d10s URL`).
    Wrk {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum GeneratorArg {
    Harness,
    Wrk,
    Both,
}

impl GeneratorArg {
    fn generators(self) -> Vec<Generator> {
        match self {
            GeneratorArg::Harness => vec![Generator::Harness],
            GeneratorArg::Wrk => vec![Generator::Wrk],
            GeneratorArg::Both => vec![Generator::Harness, Generator::Wrk],
        }
    }
}

fn common(name: &str, args: &CommonArgs, storage: &Storage, nodes: &[usize]) -> Common {
    Common {
        storage: storage.clone(),
        nodes: nodes.to_vec(),
        hookyard: args.hookyard.clone().unwrap_or_else(daemon::default_binary),
        warmup: args.warmup,
        duration: args.duration,
        json: args
            .json
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("target/bench/{name}.json"))),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let starts_daemons = !matches!(
        cli.command,
        Scenario::Ceiling | Scenario::Wrk { .. } | Scenario::Routing { .. }
    );
    let several = matches!(
        cli.command,
        Scenario::IntakeHttp { .. }
            | Scenario::IntakeGrpc { .. }
            | Scenario::IntakeGrpcBatch { .. }
            | Scenario::EndToEnd { .. }
            | Scenario::Fanout { .. }
    );
    if !several && cli.nodes != [1] {
        anyhow::bail!(
            "--nodes is for intake-http, intake-grpc, intake-grpc-batch, end-to-end and fanout; this scenario runs one daemon"
        );
    }
    if cli.postgres_url.is_none() && cli.storage == StorageArg::Sqlite {
        nodes::check(&cli.nodes, &Storage::Sqlite)?;
    }
    let storage = match (&cli.postgres_url, cli.storage) {
        _ if !starts_daemons => Storage::Sqlite,
        (Some(url), _) => Storage::Postgres(Arc::new(Postgres::existing(url.clone()))),
        (None, StorageArg::Postgres) => Storage::Postgres(Arc::new(Postgres::start_cluster()?)),
        (None, StorageArg::Sqlite) => Storage::Sqlite,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(async {
        tokio::select! {
            result = run(cli.command, &storage, &cli.nodes) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // The scenario's daemons are killed when dropped; stop them before the
    // PostgreSQL they use.
    drop(runtime);
    let stopped = storage.shutdown();
    result.and(stopped)
}

async fn run(command: Scenario, storage: &Storage, nodes: &[usize]) -> anyhow::Result<()> {
    nodes::check(nodes, storage)?;
    let common = |name: &str, args: &CommonArgs| common(name, args, storage, nodes);
    {
        match command {
            Scenario::Ceiling => hookyard_bench::ceiling::serve().await,
            Scenario::Wrk { args } => {
                let wrk = hookyard_bench::wrk::ensure().await?;
                let status = tokio::process::Command::new(wrk)
                    .args(args)
                    .status()
                    .await?;
                std::process::exit(status.code().unwrap_or(1));
            }
            Scenario::IntakeHttp {
                common: c,
                connections,
                payload,
                rate,
                random_ids,
                generator,
            } => {
                let args = intake::IntakeArgs {
                    protocol: intake::Protocol::Http,
                    connections,
                    in_flight: vec![connections],
                    batch: 1,
                    payload,
                    rate,
                    ids: ids(random_ids),
                    generators: generator.generators(),
                };
                intake::run("intake-http", &common("intake-http", &c), &args).await
            }
            Scenario::IntakeGrpc {
                common: c,
                connections,
                concurrency,
                payload,
                rate,
                random_ids,
            } => {
                let args = intake::IntakeArgs {
                    protocol: intake::Protocol::Grpc,
                    connections,
                    in_flight: concurrency,
                    batch: 1,
                    payload,
                    rate,
                    ids: ids(random_ids),
                    generators: vec![Generator::Harness],
                };
                intake::run("intake-grpc", &common("intake-grpc", &c), &args).await
            }
            Scenario::IntakeGrpcBatch {
                common: c,
                batch,
                connections,
                concurrency,
                payload,
                rate,
                random_ids,
            } => {
                let args = intake::IntakeArgs {
                    protocol: intake::Protocol::Grpc,
                    connections,
                    in_flight: concurrency,
                    batch,
                    payload,
                    rate,
                    ids: ids(random_ids),
                    generators: vec![Generator::Harness],
                };
                intake::run("intake-grpc-batch", &common("intake-grpc-batch", &c), &args).await
            }
            Scenario::EndToEnd {
                common: c,
                rates,
                connections,
                payload,
                endpoints,
                ordering_keys,
            } => {
                let several = nodes.iter().any(|&n| n > 1);
                let args = end_to_end::EndToEndArgs {
                    rates,
                    endpoints: endpoints.unwrap_or(if several { 6 } else { 1 }),
                    connections,
                    payload,
                    ordering_keys,
                };
                end_to_end::run(&common("end-to-end", &c), &args).await
            }
            Scenario::Fanout {
                common: c,
                endpoints,
                rate,
                connections,
                payload,
            } => {
                let args = fanout::FanoutArgs {
                    endpoints,
                    rate,
                    connections,
                    payload,
                };
                fanout::run(&common("fanout", &c), &args).await
            }
            Scenario::Flows {
                common: c,
                rates,
                connections,
                waiting,
            } => {
                let args = flows::FlowsArgs {
                    rates,
                    connections,
                    waiting,
                };
                flows::run(&common("flows", &c), &args).await
            }
            Scenario::Routing { common: c } => scenarios::routing::run(&common("routing", &c)),
            Scenario::Backlog {
                common: c,
                events,
                batch,
                concurrency,
                payload,
                memory_queue,
                ordering_keys,
            } => {
                let args = backlog::BacklogArgs {
                    events,
                    batch,
                    concurrency,
                    payload,
                    memory_queue,
                    ordering_keys,
                };
                backlog::run(&common("backlog", &c), &args).await
            }
            Scenario::Isolation {
                common: c,
                backlog,
                batch,
                concurrency,
                rate,
                connections,
                payload,
                no_baseline,
            } => {
                let args = isolation::IsolationArgs {
                    backlog,
                    batch,
                    concurrency,
                    rate,
                    connections,
                    payload,
                    baseline: !no_baseline,
                };
                isolation::run(&common("isolation", &c), &args).await
            }
        }
    }
}

/// `10s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("`{text}` is not a duration like 10s, 500ms or 2m"))
}

fn ids(random: bool) -> load::Ids {
    if random {
        load::Ids::Random
    } else {
        load::Ids::Ordered
    }
}
