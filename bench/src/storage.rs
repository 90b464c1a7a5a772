//! Where the benchmark daemons keep their data: SQLite in each daemon's temp
//! data dir (the default), or PostgreSQL, either a throwaway cluster of the
//! harness's own (`scripts/postgres start`, stopped at the end) or a server
//! the user names. Every daemon start gets a database of its own, so every
//! run starts empty, as a fresh SQLite data dir does.
//!
//! With its own cluster the harness also knows the postmaster's pid, so it
//! can count PostgreSQL's CPU time next to the daemon's (`CpuClock::tree`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    },
};

use anyhow::{bail, Context};
use sqlx::{Connection, Executor, PgConnection};

use crate::daemon::CpuClock;

#[derive(Debug, Clone, Default)]
pub enum Storage {
    #[default]
    Sqlite,
    Postgres(Arc<Postgres>),
}

impl Storage {
    pub fn label(&self) -> &'static str {
        match self {
            Storage::Sqlite => "sqlite",
            Storage::Postgres(_) => "postgres",
        }
    }

    /// Stops the harness's own cluster, if there is one. Also done on drop;
    /// this one reports failures.
    pub fn shutdown(&self) -> anyhow::Result<()> {
        match self {
            Storage::Postgres(pg) => pg.stop_cluster(),
            Storage::Sqlite => Ok(()),
        }
    }
}

/// A PostgreSQL server the daemons get their databases from.
#[derive(Debug)]
pub struct Postgres {
    /// Logs in as a role that may CREATE DATABASE.
    url: String,
    cluster: Option<Cluster>,
    next: AtomicU32,
}

/// A cluster made by `scripts/postgres start`.
#[derive(Debug)]
struct Cluster {
    script: PathBuf,
    dir: PathBuf,
    stopped: AtomicBool,
}

/// A database made for one daemon.
#[derive(Debug)]
pub struct Database {
    pub url: String,
    name: String,
}

impl Postgres {
    /// Starts a cluster of its own with the repository's `scripts/postgres`.
    pub fn start_cluster() -> anyhow::Result<Postgres> {
        let script = repo_root()?.join("scripts/postgres");
        eprintln!("starting PostgreSQL: {} start", script.display());
        let output = Command::new(&script)
            .arg("start")
            .output()
            .with_context(|| format!("run {} start", script.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let value = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::to_string)
        };
        let dir = value("HOOKYARD_TEST_POSTGRES_DIR=").map(PathBuf::from);
        let cluster = dir.map(|dir| Cluster {
            script: script.clone(),
            dir,
            stopped: AtomicBool::new(false),
        });
        if !output.status.success() {
            bail!(
                "{} start failed ({}):\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let url = value("HOOKYARD_TEST_POSTGRES_URL=")
            .context("scripts/postgres start printed no HOOKYARD_TEST_POSTGRES_URL")?;
        let cluster =
            cluster.context("scripts/postgres start printed no HOOKYARD_TEST_POSTGRES_DIR")?;
        eprintln!("PostgreSQL cluster in {}", cluster.dir.display());
        Ok(Postgres {
            url,
            cluster: Some(cluster),
            next: AtomicU32::new(0),
        })
    }

    /// A server someone else runs; its CPU time is not counted.
    pub fn existing(url: String) -> Postgres {
        Postgres {
            url,
            cluster: None,
            next: AtomicU32::new(0),
        }
    }

    /// Makes an empty database for one daemon.
    pub async fn fresh_database(&self) -> anyhow::Result<Database> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "hookyard_bench_{}_{n}_{:x}",
            std::process::id(),
            nanos % 0xffff_ffff
        );
        let mut conn = PgConnection::connect(&self.url)
            .await
            .context("connect to PostgreSQL to create a database")?;
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        conn.close().await.ok();
        Ok(Database {
            url: with_database(&self.url, &name)?,
            name,
        })
    }

    /// Drops a daemon's database once the daemon is gone, so a long session
    /// does not fill the disk.
    pub async fn drop_database(&self, db: &Database) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.url).await?;
        conn.execute(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name).as_str())
            .await?;
        conn.close().await.ok();
        Ok(())
    }

    /// CPU time of the cluster's server processes (the postmaster and its
    /// children), when the harness started the cluster.
    pub fn cpu_clock(&self) -> Option<CpuClock> {
        let cluster = self.cluster.as_ref()?;
        let pid_file = std::fs::read_to_string(cluster.dir.join("data/postmaster.pid")).ok()?;
        let pid = pid_file.lines().next()?.trim().parse().ok()?;
        Some(CpuClock::tree(pid))
    }

    fn stop_cluster(&self) -> anyhow::Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        if cluster.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        eprintln!("stopping PostgreSQL in {}", cluster.dir.display());
        let status = Command::new(&cluster.script)
            .arg("stop")
            .arg(&cluster.dir)
            .status()
            .with_context(|| format!("run {} stop", cluster.script.display()))?;
        if !status.success() {
            bail!(
                "{} stop {} failed ({status})",
                cluster.script.display(),
                cluster.dir.display()
            );
        }
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop_cluster() {
            eprintln!("{error:#}");
        }
    }
}

/// `url` with its database (the path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .with_context(|| "a PostgreSQL URL starts with postgres://".to_string())?;
    let (authority, after) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let query = after.find('?').map_or("", |at| &after[at..]);
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// The repository holding `scripts/postgres`: found from the current
/// directory upwards, else where this crate was built.
fn repo_root() -> anyhow::Result<PathBuf> {
    let has_script = |dir: &Path| dir.join("scripts/postgres").is_file();
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(dir) = cwd.ancestors().find(|d| has_script(d)) {
            return Ok(dir.to_path_buf());
        }
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"));
    built
        .ancestors()
        .find(|d| has_script(d))
        .map(Path::to_path_buf)
        .context("found no scripts/postgres above the current directory or the bench crate")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database() {
        let url = "postgres://hookyard:pw@127.0.0.1:5432/hookyard";
        assert_eq!(
            with_database(url, "b1").unwrap(),
            "postgres://hookyard:pw@127.0.0.1:5432/b1"
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "b1").unwrap(),
            "postgres://u@h/b1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:1", "b1").unwrap(),
            "postgres://u@h:1/b1"
        );
    }
}
