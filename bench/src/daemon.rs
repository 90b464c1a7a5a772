//! Starts the real `hookyard` binary (release build) in a temp data dir on
//! ephemeral ports, with a config written for the scenario. A separate
//! process, not `hookyard_server::start` in the harness: the daemon then has
//! its own tokio runtime as in production instead of sharing threads with the
//! load generator, and its memory (`VmRSS`, `VmHWM` in `/proc/<pid>/status`)
//! is its own. With `Storage::Postgres` it stores in a fresh database of its
//! own (`HOOKYARD_STORAGE__POSTGRES_URL`), dropped when the daemon stops;
//! `Daemon::join` starts another on the same database, as a second node of
//! a cluster (`crate::nodes`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
};

use crate::storage::{Database, Postgres, Storage};

/// The parts of the config a scenario chooses.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    pub endpoints: Vec<Value>,
    pub subscriptions: Vec<Value>,
    pub memory_queue: usize,
    pub max_in_flight: u32,
    pub flows: Vec<Value>,
    /// The `ordering_key` of the endpoints `route` adds; `None`: unordered.
    pub ordering_key: Option<String>,
}

impl Default for DaemonSpec {
    fn default() -> DaemonSpec {
        DaemonSpec {
            endpoints: Vec::new(),
            subscriptions: Vec::new(),
            memory_queue: 20_000,
            max_in_flight: 64,
            flows: Vec::new(),
            ordering_key: None,
        }
    }
}

impl DaemonSpec {
    /// Orders the deliveries of the endpoints `route` adds from now on by the
    /// event's `payload.key` (`ordering_key: "{{ event.payload.key }}"`).
    pub fn ordered_by_payload_key(mut self) -> DaemonSpec {
        self.ordering_key = Some("{{ event.payload.key }}".to_string());
        self
    }

    /// Adds endpoint `id` at `url` and a subscription of `patterns` to it.
    pub fn route(
        mut self,
        id: &str,
        url: &str,
        patterns: &[&str],
        retry_schedule: &[&str],
    ) -> DaemonSpec {
        let mut endpoint = json!({
            "id": id,
            "url": url,
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "retry_schedule": retry_schedule,
            "timeout": "10s",
            "max_in_flight": self.max_in_flight,
        });
        if let Some(key) = &self.ordering_key {
            endpoint["ordering_key"] = json!(key);
        }
        self.endpoints.push(endpoint);
        self.subscriptions.push(json!({
            "name": format!("to-{id}"),
            "patterns": patterns,
            "target": format!("endpoint:{id}"),
        }));
        self
    }
}

pub struct Daemon {
    child: Child,
    pub listen: SocketAddr,
    pub pid: u32,
    dir: TempDir,
    /// On PostgreSQL: the server and this daemon's database, when the
    /// daemon owns it (it was the first of its cluster).
    database: Option<(Arc<Postgres>, Database)>,
    /// On PostgreSQL: the database it stores in, its own or its cluster's.
    postgres_url: Option<String>,
}

impl Daemon {
    pub async fn start(
        binary: &Path,
        storage: &Storage,
        spec: &DaemonSpec,
    ) -> anyhow::Result<Daemon> {
        let database = match storage {
            Storage::Sqlite => None,
            Storage::Postgres(pg) => Some((pg.clone(), pg.fresh_database().await?)),
        };
        let url = database.as_ref().map(|(_, db)| db.url.clone());
        Daemon::launch(binary, spec, url, database).await
    }

    /// Starts another daemon on `first`'s PostgreSQL database (a node of the
    /// same cluster). It does not own the database: `first` drops it when it
    /// stops, so stop this one first.
    pub async fn join(binary: &Path, first: &Daemon, spec: &DaemonSpec) -> anyhow::Result<Daemon> {
        let url = first
            .postgres_url()
            .context("only a daemon on PostgreSQL can have others join its database")?
            .to_string();
        Daemon::launch(binary, spec, Some(url), None).await
    }

    /// The database URL this daemon stores in, on PostgreSQL.
    pub fn postgres_url(&self) -> Option<&str> {
        self.postgres_url.as_deref()
    }

    async fn launch(
        binary: &Path,
        spec: &DaemonSpec,
        postgres_url: Option<String>,
        database: Option<(Arc<Postgres>, Database)>,
    ) -> anyhow::Result<Daemon> {
        if !binary.exists() {
            bail!(
                "{} is missing; build it first: cargo build --release -p hookyard-server",
                binary.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("hookyard-bench-")
            .tempdir()?;
        let config = json!({
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            "data_dir": dir.path().join("data"),
            "api_keys": [{"name": "bench", "key": crate::API_KEY}],
            "delivery": {
                "allow_private_targets": ["127.0.0.0/8"],
                "memory_queue": spec.memory_queue,
                "max_in_flight": spec.max_in_flight,
            },
            "endpoints": spec.endpoints,
            "subscriptions": spec.subscriptions,
            "flows": spec.flows,
        });
        let config_path = dir.path().join("hookyard.yaml");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
        let log = std::fs::File::create(dir.path().join("hookyard.log"))?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HOOKYARD_") {
                command.env_remove(key);
            }
        }
        if let Some(url) = &postgres_url {
            command.env("HOOKYARD_STORAGE__POSTGRES_URL", url);
        }
        let mut child = command.spawn().context("start hookyard")?;
        let pid = child.id().context("the daemon's pid")?;
        let stdout = child.stdout.take().context("the daemon's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let log_path = dir.path().join("hookyard.log");
        let log_tail = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .with_context(|| {
                format!(
                    "the daemon was not ready within 30 s; its log:\n{}",
                    log_tail()
                )
            })??
            .with_context(|| {
                format!(
                    "the daemon exited before it was ready; its log:\n{}",
                    log_tail()
                )
            })?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let listen = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("listen="))
            .context("listen= in the ready line")?
            .parse()?;
        Ok(Daemon {
            child,
            listen,
            pid,
            dir,
            database,
            postgres_url,
        })
    }

    /// Current and peak resident memory, in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Samples the daemon's resident memory every 100 ms until dropped.
    pub fn rss_sampler(&self) -> RssSampler {
        RssSampler::start(self.pid)
    }

    /// Reads the daemon's CPU time from anywhere, e.g. a task that samples it
    /// when a warm-up ends.
    pub fn cpu_clock(&self) -> CpuClock {
        CpuClock::of(self.pid)
    }

    /// PostgreSQL's CPU time (all its server processes), when the daemon
    /// stores in a cluster the harness started.
    pub fn pg_cpu_clock(&self) -> Option<CpuClock> {
        self.database.as_ref().and_then(|(pg, _)| pg.cpu_clock())
    }

    /// The last `lines` lines of the daemon's log (stderr, `RUST_LOG=warn`).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("hookyard.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        if let Some((pg, db)) = &self.database {
            if let Err(error) = pg.drop_database(db).await {
                eprintln!("could not drop the daemon's database: {error:#}");
            }
        }
    }
}

/// The release `hookyard` next to this executable, unless `HOOKYARD_BIN` says.
pub fn default_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOOKYARD_BIN") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hookyard")))
        .unwrap_or_else(|| PathBuf::from("target/release/hookyard"))
}

/// The highest resident memory seen by sampling `VmRSS`. The kernel's own
/// peak (`VmHWM`) catches spikes between samples; this one can be read for a
/// phase of a run (e.g. while the endpoint is down).
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(0));
        let task = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    if let Some(rss) = rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        RssSampler { peak, task }
    }

    /// KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A process's current resident memory, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A process's CPU time (user + system), from `/proc/<pid>/stat`; or, for
/// a process tree such as PostgreSQL's, the parent's with all its children's.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    pid: u32,
    tree: bool,
}

impl CpuClock {
    pub fn of(pid: u32) -> CpuClock {
        CpuClock { pid, tree: false }
    }

    /// The CPU time of `pid` and of its direct children, live or gone.
    ///
    /// PostgreSQL's backends come and go (one per connection, plus workers),
    /// so a reading sums, per process, what each has used: the parent's own
    /// time, every child alive now (found by its ppid in `/proc/*/stat`),
    /// and the children that have exited, which the kernel adds to the
    /// parent's `cutime` and `cstime` once the parent (the postmaster) has
    /// reaped them. The difference of two readings then counts a child
    /// alive at either end, or born and gone in between. What it misses: a
    /// child that exited but is not reaped yet at a reading, and a child
    /// that exits between the scan of `/proc` and the parent's own reading
    /// (counted twice or not at all); and every figure is in 10 ms ticks.
    pub fn tree(pid: u32) -> CpuClock {
        CpuClock { pid, tree: true }
    }

    pub fn read(self) -> Option<Duration> {
        let ticks = if self.tree {
            let children: u64 = std::fs::read_dir("/proc")
                .ok()?
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(proc_stat)
                .filter(|stat| stat.ppid == self.pid)
                .map(|stat| stat.utime + stat.stime)
                .sum();
            let parent = proc_stat(self.pid)?;
            parent.utime + parent.stime + parent.cutime + parent.cstime + children
        } else {
            let stat = proc_stat(self.pid)?;
            stat.utime + stat.stime
        };
        // USER_HZ is 100 on Linux.
        Some(Duration::from_millis(ticks * 10))
    }
}

/// The CPU time of several processes added up: the daemons of a cluster
/// (`Nodes`), so a CPU column counts all of them, as one daemon's did.
/// A reading is `None` when any of them cannot be read (one has exited).
#[derive(Debug, Clone)]
pub struct CpuSum(Arc<[CpuClock]>);

impl CpuSum {
    pub fn of(clocks: impl IntoIterator<Item = CpuClock>) -> CpuSum {
        CpuSum(clocks.into_iter().collect())
    }

    pub fn read(&self) -> Option<Duration> {
        self.0.iter().map(|clock| clock.read()).sum()
    }
}

/// The fields of `/proc/<pid>/stat` the CPU clock reads, in ticks.
struct ProcStat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(ProcStat {
        ppid: u32::try_from(field(1)?).ok()?,
        utime: field(11)?,
        stime: field(12)?,
        cutime: field(13)?,
        cstime: field(14)?,
    })
}
