//! Several Hookyard daemons on one PostgreSQL database, as a cluster behind a
//! load balancer would run them (`--nodes 1,2,3`): the first daemon gets a
//! fresh database, the others are started on the same one with the same
//! spec (so the same config; `storage.lease_timeout` is left at its
//! default). The scenarios spread their requests round robin over the
//! daemons' public addresses and count the CPU time of all of them.
//!
//! Why wait for the leases: each endpoint is sent by one daemon, the holder
//! of its lease, and leases are shared out only every third of the lease
//! timeout (the first daemon takes them all, and hands the extra ones back
//! when it sees the others). A delivery scenario measured before that would
//! measure one daemon sending for all. `wait_leases_spread` reads
//! `endpoint_leases` until every endpoint is held by a live lease, every
//! daemon holds some and none holds more than its fair share.
//!
//! On SQLite there is one daemon per data dir; `check` refuses more.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    daemon::{CpuClock, CpuSum, Daemon, DaemonSpec},
    storage::Storage,
};

/// How long the daemons may take to answer `/readyz`.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long the leases may take to spread: with the default lease timeout
/// of 30 s, two or three rounds of 10 s.
const SPREAD_LIMIT: Duration = Duration::from_secs(90);

/// Refuses node counts the storage cannot run.
pub fn check(nodes: &[usize], storage: &Storage) -> anyhow::Result<()> {
    if nodes.is_empty() || nodes.contains(&0) {
        bail!("--nodes takes node counts of 1 or more, e.g. --nodes 1,2,3");
    }
    if matches!(storage, Storage::Sqlite) && nodes.iter().any(|&n| n > 1) {
        bail!(
            "--nodes above 1 needs --storage postgres (or --postgres-url): several daemons \
             share one PostgreSQL database; SQLite is one file for one daemon"
        );
    }
    Ok(())
}

/// `n` daemons on one database (or one daemon on SQLite).
pub struct Nodes {
    daemons: Vec<Daemon>,
}

impl Nodes {
    /// Starts the first daemon (on a fresh database), then `n - 1` more on
    /// its database, and waits until every one answers `/readyz`.
    pub async fn start(
        binary: &Path,
        storage: &Storage,
        spec: &DaemonSpec,
        n: usize,
    ) -> anyhow::Result<Nodes> {
        check(&[n], storage)?;
        let first = Daemon::start(binary, storage, spec).await?;
        let mut nodes = Nodes {
            daemons: vec![first],
        };
        for _ in 1..n {
            let first = &nodes.daemons[0];
            match Daemon::join(binary, first, spec).await {
                Ok(daemon) => nodes.daemons.push(daemon),
                Err(error) => {
                    nodes.stop().await;
                    return Err(error.context("start another daemon on the same database"));
                }
            }
        }
        if let Err(error) = nodes.wait_ready().await {
            nodes.stop().await;
            return Err(error);
        }
        Ok(nodes)
    }

    pub fn len(&self) -> usize {
        self.daemons.len()
    }

    pub fn is_empty(&self) -> bool {
        self.daemons.is_empty()
    }

    /// The daemons' public addresses, in start order.
    pub fn listens(&self) -> Vec<SocketAddr> {
        self.daemons.iter().map(|d| d.listen).collect()
    }

    /// All the daemons' CPU time together.
    pub fn cpu_clock(&self) -> CpuSum {
        CpuSum::of(self.daemons.iter().map(Daemon::cpu_clock))
    }

    /// PostgreSQL's CPU time, when the harness started the cluster.
    pub fn pg_cpu_clock(&self) -> Option<CpuClock> {
        self.daemons[0].pg_cpu_clock()
    }

    /// Current and peak resident memory of all the daemons added up, in KiB.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        self.daemons
            .iter()
            .map(Daemon::memory_kib)
            .try_fold((0, 0), |(rss, hwm), m| m.map(|(r, h)| (rss + r, hwm + h)))
    }

    /// Until every daemon answers `GET /readyz` with 200.
    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_LIMIT;
        for daemon in &self.daemons {
            loop {
                let answer = readyz(daemon.listen).await;
                match answer {
                    Ok(200) => break,
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(status) => bail!(
                        "the daemon on {} still answers /readyz with {status} after {READY_LIMIT:?}",
                        daemon.listen
                    ),
                    Err(error) => {
                        return Err(error.context(format!(
                            "the daemon on {} did not answer /readyz within {READY_LIMIT:?}",
                            daemon.listen
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// On PostgreSQL, waits until the `endpoints` endpoints are leased,
    /// every daemon holds at least one and none more than ceil(endpoints /
    /// daemons); answers how many each daemon holds, in start order. On
    /// SQLite (one daemon, no leases) answers `None` at once.
    pub async fn wait_leases_spread(&self, endpoints: usize) -> anyhow::Result<Option<Vec<usize>>> {
        let Some(url) = self.daemons[0].postgres_url() else {
            return Ok(None);
        };
        let n = self.daemons.len();
        let share = endpoints.div_ceil(n);
        let started = Instant::now();
        let mut conn = PgConnection::connect(url)
            .await
            .context("connect to the cluster's database to read the leases")?;
        let mut last = Vec::new();
        while started.elapsed() < SPREAD_LIMIT {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT node_id, count(*) FROM endpoint_leases \
                 WHERE expires_ms > (extract(epoch FROM clock_timestamp()) * 1000)::int8 \
                 GROUP BY node_id",
            )
            .fetch_all(&mut conn)
            .await
            .context("read endpoint_leases")?;
            let held: HashMap<String, i64> = rows.into_iter().collect();
            // A daemon is named `host/listen` (its public address).
            last = self
                .daemons
                .iter()
                .map(|d| {
                    let suffix = format!("/{}", d.listen);
                    held.iter()
                        .filter(|(node, _)| node.ends_with(&suffix))
                        .map(|(_, &count)| usize::try_from(count).unwrap_or(0))
                        .sum::<usize>()
                })
                .collect();
            let total: usize = last.iter().sum();
            let spread = endpoints < n || last.iter().all(|&c| c >= 1);
            if total == endpoints && spread && last.iter().all(|&c| c <= share) {
                conn.close().await.ok();
                return Ok(Some(last));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        conn.close().await.ok();
        bail!(
            "the {endpoints} endpoints' leases were not spread over the {n} daemons within \
             {SPREAD_LIMIT:?} (held, in start order: {last:?})"
        )
    }

    /// Stops the daemons that joined, then the first, which drops the
    /// database.
    pub async fn stop(mut self) {
        while let Some(daemon) = self.daemons.pop() {
            daemon.stop().await;
        }
    }
}

/// `GET /readyz` on a fresh connection; the status code.
async fn readyz(addr: SocketAddr) -> anyhow::Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: hookyard\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5 s")??;
    let text = String::from_utf8_lossy(&answer);
    text.lines()
        .next()
        .and_then(|status| status.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", text.lines().next()))
}

/// `[3, 3]`, or `-` where there are no leases (SQLite).
pub fn leases_text(leases: Option<&[usize]>) -> String {
    leases.map_or_else(|| "-".to_string(), |l| format!("{l:?}"))
}
