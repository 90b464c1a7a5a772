//! Supervision of the daemon's long-lived components: the writer (with its
//! commit thread and syncer), the checkpointer, the dispatcher, the flow
//! engine and the two servers.
//!
//! Each is meant to run as long as the daemon. One that ends while the
//! daemon is not shutting down (with an error, a panic, or just by
//! returning) leaves a process that still answers but no longer does its
//! job: a dead dispatcher means 202s for events nobody delivers, a dead
//! writer means every publish fails while a load balancer keeps sending
//! traffic. Limping on is worse than stopping, so the first such end is
//! fail-stop:
//! 1. readiness turns off at once (`/readyz` answers 503; gRPC health on both
//!    listeners answers NOT_SERVING) and the component is logged at ERROR by
//!    name;
//! 2. background work (dispatcher, flow engine) stops;
//! 3. the listeners stay open for `LINGER`, so health checks and clients see
//!    NOT_SERVING and 503 + Retry-After rather than a refused connection,
//!    then close and drain, for at most `DRAIN`;
//! 4. `Running::wait` returns the failure and `main` exits non-zero, for the
//!    service manager to restart the daemon.
//!
//! The restart is the recovery: everything acknowledged is in storage, and
//! the dispatcher and the flow engine take up what is due from there when
//! they start. A shutdown asked for (SIGTERM) turns readiness off and drains
//! the same way, without the linger.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::watch,
    task::{JoinError, JoinHandle, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tonic_health::{server::HealthReporter, ServingStatus};

/// How long the listeners stay open after a component failed.
const LINGER: Duration = Duration::from_secs(3);
/// How long components get to finish once the listeners close: open
/// requests, and the writer committing the results of attempts still in
/// flight (each holds it open until its request ends or times out).
const DRAIN: Duration = Duration::from_secs(5);
/// A component that ended cleanly while the daemon runs is often the echo of
/// another's failure (the checkpointer ends when the writer it serves dies):
/// the cause gets this long to be reported first.
const ECHO_GRACE: Duration = Duration::from_millis(200);

/// Whether the daemon takes traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Serving,
    /// Shutting down as asked.
    Stopping,
    /// A component stopped; the daemon exits for a restart.
    Failed {
        component: &'static str,
    },
}

/// What readiness checks read; cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<watch::Sender<Readiness>>);

impl Health {
    fn new() -> Health {
        Health(Arc::new(watch::channel(Readiness::Serving).0))
    }

    pub fn readiness(&self) -> Readiness {
        self.0.borrow().clone()
    }

    fn fail(&self, component: &'static str) {
        self.0.send_if_modified(|readiness| match readiness {
            Readiness::Failed { .. } => false,
            _ => {
                *readiness = Readiness::Failed { component };
                true
            }
        });
    }

    fn stopping(&self) {
        self.0.send_if_modified(|readiness| match readiness {
            Readiness::Serving => {
                *readiness = Readiness::Stopping;
                true
            }
            _ => false,
        });
    }

    /// Sets `service` and the server as a whole (`""`) NOT_SERVING on
    /// `reporter` once the daemon stops serving. Spawn it beside the server.
    pub async fn mirror_to(self, reporter: HealthReporter, service: &'static str) {
        let mut readiness = self.0.subscribe();
        // An error means the supervisor is gone: not serving either.
        let _ = readiness.wait_for(|r| *r != Readiness::Serving).await;
        for name in [service, ""] {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
    }
}

/// A component stopped while the daemon was running.
#[derive(Debug, thiserror::Error)]
#[error("the {component} stopped: {reason}")]
pub struct Failure {
    pub component: &'static str,
    pub reason: String,
}

/// How a component's task ended: `()` or a `Result` with a printable error.
pub trait Outcome {
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Display> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Runs the components, notices the first that stops, and drains.
pub struct Supervisor {
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    running: HashMap<&'static str, usize>,
    health: Health,
    /// Cancelled from outside to shut down.
    shutdown: CancellationToken,
    /// Stops background work (dispatcher, flow engine).
    work: CancellationToken,
    /// Closes the listeners (and ends the streams served on them).
    serving: CancellationToken,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken) -> Supervisor {
        Supervisor {
            tasks: JoinSet::new(),
            running: HashMap::new(),
            health: Health::new(),
            work: shutdown.child_token(),
            serving: shutdown.child_token(),
            shutdown,
        }
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The token background components stop on.
    pub fn work(&self) -> CancellationToken {
        self.work.clone()
    }

    /// The token the servers (and their streams) stop on.
    pub fn serving(&self) -> CancellationToken {
        self.serving.clone()
    }

    /// Spawns `task` as the component `name`.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Outcome + Send + 'static,
    {
        self.watch(name, tokio::spawn(task));
    }

    /// Supervises a component already spawned.
    pub fn watch<T>(&mut self, name: &'static str, task: JoinHandle<T>)
    where
        T: Outcome + Send + 'static,
    {
        *self.running.entry(name).or_default() += 1;
        self.tasks
            .spawn(async move { (name, how_it_ended(task.await)) });
    }

    /// Waits until every component has stopped: after a shutdown, or after
    /// the first component that stopped by itself (then returned). Gives up
    /// on components still running `DRAIN` after the listeners closed.
    pub async fn wait(mut self) -> Result<(), Failure> {
        let mut failure: Option<Failure> = None;
        let mut close_at: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        // A clean end while running, held back for ECHO_GRACE.
        let mut echo: Option<(&'static str, Instant)> = None;
        loop {
            tokio::select! {
                ended = self.tasks.join_next() => match ended {
                    None => {
                        if let Some((name, _)) = echo.take() {
                            failure.get_or_insert_with(|| self.clean_end(name));
                        }
                        break;
                    }
                    Some(Ok((name, Ok(())))) if failure.is_none() && echo.is_none() && !self.work.is_cancelled() => {
                        self.forget(name);
                        echo = Some((name, Instant::now() + ECHO_GRACE));
                    }
                    Some(Ok((name, result))) => {
                        if let Some(stopped) = self.ended(name, result) {
                            if failure.is_none() && !self.serving.is_cancelled() {
                                close_at = Some(Instant::now() + LINGER);
                            }
                            failure.get_or_insert(stopped);
                        }
                    }
                    Some(Err(error)) => tracing::error!(%error, "A supervision task failed."),
                },
                _ = sleep_until(echo.map(|(_, at)| at)), if echo.is_some() => {
                    if let Some((name, _)) = echo.take() {
                        if failure.is_none() {
                            if !self.serving.is_cancelled() {
                                close_at = Some(Instant::now() + LINGER);
                            }
                            failure = Some(self.clean_end(name));
                        }
                    }
                }
                _ = self.shutdown.cancelled(), if deadline.is_none() => {
                    self.health.stopping();
                    close_at = None;
                    deadline = Some(Instant::now() + DRAIN);
                }
                _ = sleep_until(close_at), if close_at.is_some() => {
                    close_at = None;
                    self.serving.cancel();
                    deadline = Some(Instant::now() + DRAIN);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let still: Vec<_> = self.running.keys().collect();
                    tracing::error!(components = ?still, "Components still running at the drain deadline; stopping without them.");
                    break;
                }
            }
        }
        match failure {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// `name` is no longer running.
    fn forget(&mut self, name: &'static str) {
        if let Some(count) = self.running.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                self.running.remove(name);
            }
        }
    }

    /// A component that ended cleanly while the daemon ran, and no other
    /// failure came first: that is the failure.
    fn clean_end(&mut self, name: &'static str) -> Failure {
        let reason = "it ended while the daemon was running".to_string();
        tracing::error!(component = name, %reason, "A component stopped; the daemon stops for a restart.");
        self.health.fail(name);
        self.work.cancel();
        Failure {
            component: name,
            reason,
        }
    }

    /// Records that `name` ended; a failure unless the daemon is stopping
    /// and it ended cleanly.
    fn ended(&mut self, name: &'static str, result: Result<(), String>) -> Option<Failure> {
        self.forget(name);
        let reason = match result {
            Err(reason) => reason,
            Ok(()) if self.work.is_cancelled() => {
                tracing::debug!(component = name, "Stopped.");
                return None;
            }
            Ok(()) => "it ended while the daemon was running".to_string(),
        };
        tracing::error!(component = name, %reason, "A component stopped; the daemon stops for a restart.");
        self.health.fail(name);
        self.work.cancel();
        Some(Failure {
            component: name,
            reason,
        })
    }
}

fn how_it_ended<T: Outcome>(joined: Result<T, JoinError>) -> Result<(), String> {
    match joined {
        Ok(outcome) => outcome.into_result(),
        Err(error) if error.is_panic() => Err(format!(
            "it panicked: {}",
            panic_message(error.into_panic())
        )),
        Err(error) => Err(error.to_string()),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message.to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "(no message)".to_string()
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Request;
    use tonic_health::{
        pb::HealthCheckRequest,
        pb::{health_check_response::ServingStatus as Status, health_server::Health as _},
        server::HealthService,
    };

    use super::*;

    /// A component that runs until `token` is cancelled.
    async fn until(token: CancellationToken) {
        token.cancelled().await
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_that_returns_fails_the_daemon_after_the_linger() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let (health, work, serving) =
            (supervisor.health(), supervisor.work(), supervisor.serving());
        supervisor.spawn("dispatcher", async {});
        supervisor.spawn("flow engine", until(work.clone()));
        supervisor.spawn("public server", until(serving.clone()));
        let started = Instant::now();
        let failure = supervisor.wait().await.expect_err("a failure");
        assert_eq!(failure.component, "dispatcher");
        assert_eq!(
            health.readiness(),
            Readiness::Failed {
                component: "dispatcher"
            }
        );
        assert!(work.is_cancelled() && serving.is_cancelled());
        assert!(
            !shutdown.is_cancelled(),
            "the caller's token is the caller's"
        );
        // A clean end waits ECHO_GRACE for a cause to be reported first;
        // then the listeners stay open for the linger and drain at once.
        assert_eq!(started.elapsed(), ECHO_GRACE + LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_end_right_after_a_failure_is_not_reported_as_the_cause() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        let (health, work) = (supervisor.health(), supervisor.work());
        // The checkpointer ends cleanly when the writer it serves dies; the
        // writer's error comes a moment later and is the one reported.
        supervisor.spawn("checkpointer", async {});
        supervisor.spawn("writer", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<(), _>("the commit thread stopped".to_string())
        });
        supervisor.spawn("flow engine", until(work.clone()));
        let failure = supervisor.wait().await.expect_err("a failure");
        assert_eq!(failure.component, "writer");
        assert_eq!(
            health.readiness(),
            Readiness::Failed {
                component: "writer"
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_a_failure_that_names_the_component_and_the_message() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        let work = supervisor.work();
        fn explode() {
            panic!("disk on fire")
        }
        supervisor.spawn("checkpointer", async { explode() });
        supervisor.spawn("dispatcher", until(work));
        let failure = supervisor.wait().await.expect_err("a failure");
        assert_eq!(failure.component, "checkpointer");
        assert!(
            failure.reason.contains("disk on fire"),
            "{}",
            failure.reason
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_during_a_shutdown_still_fails_the_daemon() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let work = supervisor.work();
        supervisor.spawn("writer", async move {
            work.cancelled().await;
            Err::<(), _>("could not flush the log to disk")
        });
        shutdown.cancel();
        let failure = supervisor.wait().await.expect_err("a failure");
        assert_eq!(failure.component, "writer");
    }

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_drains_and_gives_up_on_what_does_not_stop() {
        let shutdown = CancellationToken::new();
        let mut supervisor = Supervisor::new(shutdown.clone());
        let (health, work) = (supervisor.health(), supervisor.work());
        supervisor.spawn("flow engine", until(work));
        supervisor.spawn("admin server", std::future::pending::<()>());
        let waited = tokio::spawn(supervisor.wait());
        tokio::task::yield_now().await;
        assert_eq!(health.readiness(), Readiness::Serving);
        let started = Instant::now();
        shutdown.cancel();
        let stopped = waited.await.expect("the supervisor");
        assert!(stopped.is_ok(), "a shutdown is not a failure: {stopped:?}");
        assert_eq!(health.readiness(), Readiness::Stopping);
        assert_eq!(started.elapsed(), DRAIN);
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_health_turns_not_serving_when_a_component_stops() {
        let mut supervisor = Supervisor::new(CancellationToken::new());
        let (reporter, _) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("hookyard.v1.Events", ServingStatus::Serving)
            .await;
        let mirrored = tokio::spawn(
            supervisor
                .health()
                .mirror_to(reporter.clone(), "hookyard.v1.Events"),
        );
        let service = Arc::new(HealthService::from_health_reporter(reporter));
        let status = |name: &'static str| {
            let service = service.clone();
            async move {
                let request = Request::new(HealthCheckRequest {
                    service: name.to_string(),
                });
                let response = service.check(request).await.expect("a known service");
                response.into_inner().status
            }
        };
        assert_eq!(status("hookyard.v1.Events").await, Status::Serving as i32);
        supervisor.spawn("dispatcher", async {});
        supervisor.wait().await.expect_err("a failure");
        mirrored.await.expect("the mirror");
        for name in ["hookyard.v1.Events", ""] {
            assert_eq!(status(name).await, Status::NotServing as i32, "{name:?}");
        }
    }
}
