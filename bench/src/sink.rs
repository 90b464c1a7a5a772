//! The webhook sink: a tenant's endpoint that records the arrival time of
//! every request by `webhook-id`, so end-to-end latency and delivery
//! throughput can be measured, and that misbehaves on request: it fails a
//! share of requests, answers slowly, or closes the connection without an
//! answer. Which requests misbehave is decided by a hash of their arrival
//! number, so a run is repeatable.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle};

#[derive(Debug, Clone, Copy)]
pub struct SinkConfig {
    /// Share of requests answered with `fail_status`.
    pub fail_share: f64,
    pub fail_status: u16,
    /// Share of requests whose connection is closed without an answer.
    pub close_share: f64,
    /// How long every answer waits.
    pub delay: Duration,
}

impl Default for SinkConfig {
    fn default() -> SinkConfig {
        SinkConfig {
            fail_share: 0.0,
            fail_status: 500,
            close_share: 0.0,
            delay: Duration::ZERO,
        }
    }
}

/// What the sink did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Failed(u16),
    Closed,
}

/// One request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    pub answer: Answer,
}

#[derive(Default)]
struct Records {
    by_id: HashMap<String, Vec<Arrival>>,
}

struct Shared {
    config: SinkConfig,
    count: AtomicU64,
    delivered: AtomicU64,
    records: Mutex<Records>,
    changed: Notify,
}

pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Sink {
    /// Listens on an ephemeral loopback port.
    pub async fn start(config: SinkConfig) -> std::io::Result<Sink> {
        Sink::start_on(([127, 0, 0, 1], 0).into(), config).await
    }

    /// Listens on `addr` (e.g. a port reserved earlier, to come up "late").
    pub async fn start_on(addr: SocketAddr, config: SinkConfig) -> std::io::Result<Sink> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            count: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            records: Mutex::default(),
            changed: Notify::new(),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        Ok(Sink {
            addr,
            shared,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint URL for `path` (e.g. `/hook`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received, whatever their answer.
    pub fn requests(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// Requests answered 2xx.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Every request for `id`, in arrival order.
    pub fn arrivals(&self, id: &str) -> Vec<Arrival> {
        self.records().by_id.get(id).cloned().unwrap_or_default()
    }

    /// The first 2xx-answered arrival of each id.
    pub fn first_delivered(&self) -> HashMap<String, Instant> {
        self.records()
            .by_id
            .iter()
            .filter_map(|(id, arrivals)| {
                arrivals
                    .iter()
                    .find(|a| a.answer == Answer::Ok)
                    .map(|a| (id.clone(), a.at))
            })
            .collect()
    }

    /// Every 2xx-answered arrival per id.
    pub fn all_delivered(&self) -> HashMap<String, Vec<Instant>> {
        self.records()
            .by_id
            .iter()
            .map(|(id, arrivals)| {
                let ok = arrivals
                    .iter()
                    .filter(|a| a.answer == Answer::Ok)
                    .map(|a| a.at)
                    .collect();
                (id.clone(), ok)
            })
            .collect()
    }

    /// When the first request arrived.
    pub fn first_arrival(&self) -> Option<Instant> {
        self.records()
            .by_id
            .values()
            .filter_map(|a| a.first().map(|a| a.at))
            .min()
    }

    /// When the last request answered 2xx arrived.
    pub fn last_delivery(&self) -> Option<Instant> {
        self.records()
            .by_id
            .values()
            .flat_map(|a| a.iter().filter(|a| a.answer == Answer::Ok).map(|a| a.at))
            .max()
    }

    /// Ids among `ids` that were not answered 2xx yet.
    pub fn missing<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let records = self.records();
        ids.into_iter()
            .filter(|id| {
                !records
                    .by_id
                    .get(id.as_str())
                    .is_some_and(|a| a.iter().any(|a| a.answer == Answer::Ok))
            })
            .cloned()
            .collect()
    }

    /// Waits until `delivered() >= target` or `limit` passes; returns whether
    /// it got there.
    pub async fn wait_delivered(&self, target: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.shared.changed.notified();
            if self.delivered() >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.delivered() >= target;
            }
        }
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.shared
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(shared.clone(), request));
            // An error is how a request is dropped unanswered; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// A request to drop its connection: hyper closes it without an answer.
#[derive(Debug)]
struct Hangup;

impl std::fmt::Display for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closing the connection on purpose")
    }
}

impl std::error::Error for Hangup {}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Hangup> {
    let at = Instant::now();
    let number = shared.count.fetch_add(1, Ordering::Relaxed);
    let id = request
        .headers()
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Read the whole body, as a real endpoint would.
    let _ = request.into_body().collect().await;
    let config = shared.config;
    let answer = decide(&config, number);
    {
        let mut records = shared
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        records
            .by_id
            .entry(id)
            .or_default()
            .push(Arrival { at, answer });
    }
    if !config.delay.is_zero() {
        tokio::time::sleep(config.delay).await;
    }
    let status = match answer {
        Answer::Closed => {
            shared.changed.notify_waiters();
            return Err(Hangup);
        }
        Answer::Failed(status) => {
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        Answer::Ok => {
            shared.delivered.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK
        }
    };
    shared.changed.notify_waiters();
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = status;
    Ok(response)
}

fn decide(config: &SinkConfig, number: u64) -> Answer {
    // A cheap multiplicative hash spreads the misbehaviour over the sequence.
    let bucket = (number.wrapping_mul(2_654_435_761) % 10_000) as f64 / 10_000.0;
    if bucket < config.close_share {
        Answer::Closed
    } else if bucket < config.close_share + config.fail_share {
        Answer::Failed(config.fail_status)
    } else {
        Answer::Ok
    }
}
