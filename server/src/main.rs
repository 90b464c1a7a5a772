//! `hookyard`: the daemon's command line. Parses flags and config, sets up
//! logging, binds the listeners and hands over to `hookyard_server::start`.
//!
//! `serve` exits 0 after a shutdown asked for (SIGTERM, Ctrl-C) and 1 when a
//! component stopped by itself or storage failed (see `supervise`), so a
//! service manager (`Restart=on-failure`) starts it again.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hookyard_server::{config, Listeners};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long blocking work (a sync that hangs on a failing disk) may hold up
/// the exit once everything else has stopped.
const BLOCKING_GRACE: Duration = Duration::from_secs(2);

/// glibc's allocator spent a third of the request threads' time in
/// malloc/free under load (events are allocated on one thread and freed on
/// another); mimalloc's per-thread heaps do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hookyard",
    version,
    about = "Event routing daemon: durable intake, pattern routing, signed webhooks."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (SQLite in ./hookyard-data unless configured otherwise).
    Serve {
        /// A YAML config file; HOOKYARD_* environment variables override it.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Apply the storage schema's migrations and exit (`serve` applies them
    /// too; this runs them ahead of a rollout).
    Migrate {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a config file and exit.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// The Admin API from the command line: endpoints, subscriptions,
    /// sources, flows, deliveries, runs, tail, publish.
    Ctl(Box<hookyard_server::ctl::Ctl>),
    /// Shell completions for `hookyard`: bash, zsh, fish, elvish, powershell.
    Completions { shell: clap_complete::Shell },
    /// Copy the SQLite database into FILE, consistently, while the daemon
    /// runs (restore: stop the daemon, put FILE in place of
    /// data_dir/hookyard.db, remove hookyard.db-wal and -shm, start).
    Backup {
        /// Where the copy goes; must not exist.
        file: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config: path } => {
            let config = config::load_for_serve(path.as_deref())?;
            init_logging(config.log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            let served = runtime.block_on(serve(config, path));
            runtime.shutdown_timeout(BLOCKING_GRACE);
            served
        }
        Command::Migrate { config } => {
            let config = config::load_for_serve(config.as_deref())?;
            init_logging(config.log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            let applied = runtime.block_on(hookyard_server::migrate(&config))?;
            let target = config.storage_target();
            match applied.as_slice() {
                [] => println!("{target}: the schema is up to date"),
                versions => println!(
                    "{target}: applied {} migration(s): {}",
                    versions.len(),
                    versions
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
            Ok(())
        }
        Command::Ctl(ctl) => {
            let runtime = tokio::runtime::Runtime::new()?;
            // A refusal is an answer, not a crash: printed plainly, exit 1.
            if let Err(error) = runtime.block_on(hookyard_server::ctl::run(*ctl)) {
                eprintln!("error: {error:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hookyard", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::stdout().write_all(&script);
            Ok(())
        }
        Command::Backup { file, config } => {
            let config = config::load_for_serve(config.as_deref())?;
            let runtime = tokio::runtime::Runtime::new()?;
            let bytes = runtime.block_on(hookyard_server::backup(&config, &file))?;
            println!("{}: {bytes} bytes", file.display());
            Ok(())
        }
        Command::CheckConfig { config: path } => {
            let config = config::load_for_serve(Some(&path))?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime
                .block_on(hookyard_server::check_config(&config))
                .with_context(|| format!("invalid configuration in {}", path.display()))?;
            runtime.shutdown_timeout(BLOCKING_GRACE);
            println!("{} is valid", path.display());
            Ok(())
        }
    }
}

async fn serve(config: config::Config, path: Option<PathBuf>) -> anyhow::Result<()> {
    let listeners = Listeners {
        public: TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("could not listen on {}", config.listen))?,
        admin: TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("could not listen on {}", config.admin_listen))?,
    };
    let shutdown = CancellationToken::new();
    // Handlers in place before anyone can hear "ready": a SIGTERM or SIGHUP
    // sent right after must be handled, not take the default action (exit).
    let signals = Signals::install();
    let token_path = config.admin_token_path();
    let data_dir = config.data_dir.clone();
    let running = hookyard_server::start(config, listeners, shutdown.clone()).await?;
    if running.admin_token_created {
        tracing::info!(path = %token_path.display(), "Wrote a new admin token (mode 0600); hookyard-tui reads it from there.");
    }
    tracing::info!(
        listen = %running.listen,
        admin_listen = %running.admin_listen,
        data_dir = %data_dir.display(),
        "Hookyard is ready."
    );
    // One machine-readable line for scripts and tests that wait for readiness.
    println!(
        "ready listen={} admin_listen={}",
        running.listen, running.admin_listen
    );
    notify_systemd(&format!(
        "READY=1\nSTATUS=serving on {} (admin {})",
        running.listen, running.admin_listen
    ));
    let Signals { stop, hangup } = signals;
    tokio::spawn(async move {
        stop.wait().await;
        tracing::info!("Shutting down.");
        notify_systemd("STOPPING=1");
        shutdown.cancel();
    });
    tokio::spawn(reload_on_hangup(hangup, running.reloader.clone(), path));
    running.wait().await?;
    tracing::info!("Hookyard stopped.");
    Ok(())
}

/// SIGHUP: reads the config file again and applies its declared endpoints,
/// subscriptions, sources and flows (`systemctl reload`). A file that does
/// not load or apply changes nothing; the error is logged and the daemon
/// goes on with what it had.
async fn reload_on_hangup(
    mut hangups: Hangups,
    reloader: hookyard_server::Reloader,
    path: Option<PathBuf>,
) {
    while hangups.next().await {
        let applied = match config::load_for_serve(path.as_deref()) {
            Ok(config) => reloader.apply(&config).await,
            Err(error) => Err(error),
        };
        match applied {
            Ok(()) => tracing::info!("Reloaded the declared resources from the config file."),
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "Reload refused; nothing changed."
                )
            }
        }
    }
}

/// Tells systemd how the daemon is doing when it runs as a `Type=notify`
/// service (`$NOTIFY_SOCKET` set); nothing otherwise. The protocol is one
/// datagram to that socket, a path or, with a leading `@`, an abstract name.
fn notify_systemd(state: &str) {
    #[cfg(unix)]
    {
        let Some(socket_path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        let sent = (|| -> std::io::Result<usize> {
            use std::os::unix::{ffi::OsStrExt, net::UnixDatagram};
            let socket = UnixDatagram::unbound()?;
            let bytes = socket_path.as_bytes();
            #[cfg(target_os = "linux")]
            if let Some(name) = bytes.strip_prefix(b"@") {
                use std::os::linux::net::SocketAddrExt;
                let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                return socket.send_to_addr(state.as_bytes(), &address);
            }
            socket.send_to(state.as_bytes(), std::ffi::OsStr::from_bytes(bytes))
        })();
        if let Err(error) = sent {
            tracing::warn!(%error, "Could not notify systemd.");
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}

/// The signals the daemon handles, registered at once.
struct Signals {
    stop: StopSignals,
    hangup: Hangups,
}

struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

struct Hangups {
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                stop: StopSignals {
                    term: signal(SignalKind::terminate()).ok(),
                    interrupt: signal(SignalKind::interrupt()).ok(),
                },
                hangup: Hangups {
                    hup: signal(SignalKind::hangup()).ok(),
                },
            }
        }
        #[cfg(not(unix))]
        Signals {
            stop: StopSignals {},
            hangup: Hangups {},
        }
    }
}

impl StopSignals {
    /// SIGTERM or Ctrl-C.
    async fn wait(self) {
        #[cfg(unix)]
        {
            let (mut term, mut interrupt) = (self.term, self.interrupt);
            tokio::select! {
                _ = recv(&mut term) => {}
                _ = recv(&mut interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

impl Hangups {
    /// The next SIGHUP; `false` when none can come.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        {
            match &mut self.hup {
                Some(hup) => hup.recv().await.is_some(),
                None => false,
            }
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

#[cfg(unix)]
async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        config::LogFormat::Json => builder.json().init(),
        config::LogFormat::Text => builder.init(),
    }
}
