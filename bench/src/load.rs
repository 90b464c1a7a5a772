//! The load generator. `run` drives workers in one of two modes:
//! - closed loop: each worker sends its next request as soon as the last one
//!   was answered (N in flight);
//! - open loop: request `i` is due at `start + i / rate`, spread over the
//!   workers; latency counts from that intended time, so a stall that delays
//!   later sends shows up in their latency instead of being hidden
//!   (coordinated omission).
//!
//! Workers are HTTP/1.1 keep-alive connections (`HttpWorker`) or gRPC calls
//! (`GrpcWorker`: Publish, or PublishBatch of a batch size).

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hookyard::v1::{
    events_client::EventsClient, publish_result, Event, PublishBatchRequest, PublishRequest,
};
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::report;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One source of requests; `call(i)` sends request number `i` and answers
/// how many events were acknowledged.
pub trait Worker: Send + 'static {
    fn call(&mut self, i: u64) -> BoxFuture<'_, Result<u64, String>>;
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub workers: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests per second over all workers; `None` is closed loop.
    pub rate: Option<f64>,
    /// Stop after this many requests (all workers together), if set.
    pub limit: Option<u64>,
}

pub struct Outcome<W> {
    pub workers: Vec<W>,
    /// Request latency in µs, for requests intended inside the measured window.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub events: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the start of the measured window to the last answer in it.
    pub elapsed: Duration,
    /// When request 0 was due; request `i` of an open loop is due at
    /// `start + i / rate`.
    pub start: Instant,
}

struct Tally {
    latency: Histogram<u64>,
    requests: u64,
    events: u64,
    errors: u64,
    first_error: Option<String>,
    last_done: Instant,
}

/// While the target refuses, don't spin on it.
const ERROR_PAUSE: Duration = Duration::from_millis(1);

pub async fn run<W: Worker>(plan: Plan, workers: Vec<W>) -> Outcome<W> {
    let count = workers.len().max(1) as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + plan.warmup;
    let end = measure_from + plan.duration;
    let mut tasks = Vec::new();
    for (k, mut worker) in workers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally {
                latency: report::histogram(),
                requests: 0,
                events: 0,
                errors: 0,
                first_error: None,
                last_done: measure_from,
            };
            let mut i = k as u64;
            loop {
                let intended = match plan.rate {
                    Some(rate) => start + Duration::from_secs_f64(i as f64 / rate),
                    None => Instant::now().max(start),
                };
                if intended >= end || plan.limit.is_some_and(|limit| i >= limit) {
                    break;
                }
                // Only when it is ahead: tokio's timer rounds a deadline up
                // to its next 1 ms tick, even one already past, so sleeping
                // before every closed-loop request capped each connection
                // near one request per millisecond.
                if intended > Instant::now() {
                    tokio::time::sleep_until(intended.into()).await;
                }
                let result = worker.call(i).await;
                let done = Instant::now();
                if intended >= measure_from {
                    tally.requests += 1;
                    tally.last_done = tally.last_done.max(done);
                    match &result {
                        Ok(events) => {
                            tally.events += events;
                            report::record(&mut tally.latency, done - intended);
                        }
                        Err(error) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert_with(|| error.clone());
                        }
                    }
                }
                if result.is_err() && plan.rate.is_none() {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                i += count;
            }
            (worker, tally)
        }));
    }
    let mut outcome = Outcome {
        workers: Vec::new(),
        latency: report::histogram(),
        requests: 0,
        events: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        start,
    };
    let mut last_done = measure_from;
    for task in tasks {
        let Ok((worker, tally)) = task.await else {
            continue;
        };
        outcome.workers.push(worker);
        let _ = outcome.latency.add(&tally.latency);
        outcome.requests += tally.requests;
        outcome.events += tally.events;
        outcome.errors += tally.errors;
        if outcome.first_error.is_none() {
            outcome.first_error = tally.first_error;
        }
        last_done = last_done.max(tally.last_done);
    }
    outcome.elapsed = last_done.saturating_duration_since(measure_from);
    outcome
}

/// A JSON object of about `bytes` bytes.
pub fn payload(bytes: usize) -> String {
    let pad = bytes.saturating_sub(40).max(1);
    format!(
        r#"{{"email":"ada@example.com","pad":"{}"}}"#,
        "x".repeat(pad)
    )
}

/// `payload(bytes)` with an ordering key in front (`{"key":"k7",...}`),
/// padded less by the key's length, so it stays about `bytes` long.
pub fn keyed_payload(bytes: usize, key: u64) -> String {
    let field = format!(r#""key":"k{key}","#);
    let rest = payload(bytes.saturating_sub(field.len()));
    format!("{{{field}{}", &rest[1..])
}

/// The ordering key (`k<n>`, see `keyed_payload`) of the `j`-th event of
/// request `i` with batches of `batch`: event number `i * batch + j` modulo
/// `keys`, so consecutive events take consecutive keys.
pub fn key_of(i: u64, j: usize, batch: usize, keys: u64) -> u64 {
    (i * batch as u64 + j as u64) % keys.max(1)
}

/// The id of request `i`'s event (`j`-th in its batch) in a run.
pub fn event_id(prefix: &str, i: u64, j: usize) -> String {
    format!("{prefix}-{i}-{j}")
}

/// How event ids are made: in order (`<run>-<request>-<n>`, neighbours in a
/// B-tree), or spread like random UUIDs (v4), as many publishers send them:
/// each insert then lands on a different page of the id index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ids {
    #[default]
    Ordered,
    Random,
}

impl Ids {
    pub fn make(self, prefix: &str, i: u64, j: usize) -> String {
        match self {
            Ids::Ordered => event_id(prefix, i, j),
            Ids::Random => uuid_like(prefix, i, j),
        }
    }
}

/// A UUID v4 layout filled from a hash of the run, request and position:
/// unique within a run, spread evenly, and cheap for the load generator.
fn uuid_like(prefix: &str, i: u64, j: usize) -> String {
    use std::hash::BuildHasher;
    let state = std::hash::RandomState::new();
    let half = |salt: u8| state.hash_one((prefix, i, j, salt));
    let (a, b) = (half(0), half(1));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// How many bytes of padding make an event posted over HTTP (id, name and
/// a `pad` field as payload) about `body_bytes` long; `wrk`'s script pads
/// the same.
pub fn pad_len(prefix: &str, name: &str, body_bytes: usize) -> usize {
    let overhead =
        format!(r#"{{"id":"{prefix}-0000000-0","name":"{name}","payload":{{"pad":""}}}}"#).len();
    body_bytes.saturating_sub(overhead).max(1)
}

/// What an `HttpWorker` posts.
#[derive(Debug, Clone)]
enum Target {
    /// `POST /v1/events`, an event of this name.
    Events { name: String },
    /// `POST /v1/flows/{flow}/runs`, with input `n` naming the request.
    FlowRuns { path: String },
}

/// One HTTP/1.1 keep-alive connection posting `POST /v1/events` (or starting
/// flow runs); reconnects after an error.
pub struct HttpWorker {
    addr: SocketAddr,
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
    authorization: HeaderValue,
    prefix: String,
    ids: Ids,
    /// Size of the whole body, about.
    body_bytes: usize,
    pad: String,
    /// Ordering keys the events are spread over (`"key":"k<i mod keys>"`
    /// in the payload); 0: none.
    keys: u64,
    /// When set, the time each acknowledged request `i` was answered.
    pub acks: Option<Vec<(u64, Instant)>>,
}

impl HttpWorker {
    pub fn new(addr: SocketAddr, name: &str, prefix: &str, body_bytes: usize) -> HttpWorker {
        HttpWorker {
            addr,
            target: Target::Events {
                name: name.to_string(),
            },
            sender: None,
            authorization: HeaderValue::from_str(&format!("Bearer {}", crate::API_KEY))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
            prefix: prefix.to_string(),
            ids: Ids::Ordered,
            body_bytes,
            pad: "x".repeat(pad_len(prefix, name, body_bytes)),
            keys: 0,
            acks: None,
        }
    }

    /// Gives event `i` the ordering key `k<i mod keys>` (`"key"` in the
    /// payload, the body about as long as before); 0: no key.
    pub fn with_keys(mut self, keys: u64) -> HttpWorker {
        self.keys = keys;
        self
    }

    /// Starts runs of `flow` instead, each with input `n` = the request's
    /// event id (so a step can send it on as its `webhook-id`).
    pub fn flow_runs(addr: SocketAddr, flow: &str, prefix: &str) -> HttpWorker {
        let mut worker = HttpWorker::new(addr, "", prefix, 0);
        worker.target = Target::FlowRuns {
            path: format!("/v1/flows/{flow}/runs"),
        };
        worker
    }

    pub fn record_acks(mut self) -> HttpWorker {
        self.acks = Some(Vec::new());
        self
    }

    pub fn with_ids(mut self, ids: Ids) -> HttpWorker {
        self.ids = ids;
        self
    }

    pub fn body_bytes(&self) -> usize {
        self.body_bytes
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| "no connection".to_string())
    }

    async fn post(&mut self, i: u64) -> Result<u64, String> {
        let id = self.ids.make(&self.prefix, i, 0);
        let (path, body) = match &self.target {
            Target::Events { name } if self.keys > 0 => {
                let key = format!(r#""key":"k{}","#, key_of(i, 0, 1, self.keys));
                let pad = &self.pad[..self.pad.len().saturating_sub(key.len()).max(1)];
                (
                    "/v1/events",
                    format!(r#"{{"id":"{id}","name":"{name}","payload":{{{key}"pad":"{pad}"}}}}"#),
                )
            }
            Target::Events { name } => (
                "/v1/events",
                format!(
                    r#"{{"id":"{id}","name":"{name}","payload":{{"pad":"{}"}}}}"#,
                    self.pad
                ),
            ),
            Target::FlowRuns { path } => (path.as_str(), format!(r#"{{"inputs":{{"n":"{id}"}}}}"#)),
        };
        let request = Request::post(path)
            .header(header::HOST, "hookyard")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, self.authorization.clone())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let sender = self.connect().await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let result = sender.send_request(request).await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                self.sender = None;
                return Err(format!("request: {error}"));
            }
        };
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        if status.is_success() {
            if let Some(acks) = &mut self.acks {
                acks.push((i, Instant::now()));
            }
            Ok(1)
        } else {
            Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body.to_bytes())
            ))
        }
    }
}

impl Worker for HttpWorker {
    fn call(&mut self, i: u64) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(self.post(i))
    }
}

/// gRPC `Publish` (batch 1) or `PublishBatch` on a shared channel.
pub struct GrpcWorker {
    client: EventsClient<Channel>,
    authorization: MetadataValue<Ascii>,
    name: String,
    prefix: String,
    ids: Ids,
    batch: usize,
    payload: Bytes,
    payload_bytes: usize,
    /// Ordering keys the events are spread over; 0: none.
    keys: u64,
    pub acks: Option<Vec<(u64, Instant)>>,
}

/// A lazily connected HTTP/2 channel (one TCP connection).
pub fn grpc_channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy())
}

impl GrpcWorker {
    pub fn new(
        channel: Channel,
        name: &str,
        prefix: &str,
        batch: usize,
        payload_bytes: usize,
    ) -> GrpcWorker {
        GrpcWorker {
            client: EventsClient::new(channel),
            authorization: format!("Bearer {}", crate::API_KEY)
                .parse()
                .unwrap_or_else(|_| MetadataValue::from_static("")),
            name: name.to_string(),
            prefix: prefix.to_string(),
            ids: Ids::Ordered,
            batch: batch.max(1),
            payload: Bytes::from(payload(payload_bytes)),
            payload_bytes,
            keys: 0,
            acks: None,
        }
    }

    /// Gives the `j`-th event of request `i` the ordering key
    /// `key_of(i, j, batch, keys)` (`keyed_payload`); 0: no key.
    pub fn with_keys(mut self, keys: u64) -> GrpcWorker {
        self.keys = keys;
        self
    }

    pub fn with_ids(mut self, ids: Ids) -> GrpcWorker {
        self.ids = ids;
        self
    }

    pub fn record_acks(mut self) -> GrpcWorker {
        self.acks = Some(Vec::new());
        self
    }

    fn event(&self, i: u64, j: usize) -> Event {
        Event {
            id: self.ids.make(&self.prefix, i, j),
            name: self.name.clone(),
            payload: if self.keys > 0 {
                keyed_payload(self.payload_bytes, key_of(i, j, self.batch, self.keys)).into_bytes()
            } else {
                self.payload.to_vec()
            },
            ..Event::default()
        }
    }

    async fn publish(&mut self, i: u64) -> Result<u64, String> {
        let acked = if self.batch == 1 {
            let mut request = tonic::Request::new(PublishRequest {
                event: Some(self.event(i, 0)),
            });
            request
                .metadata_mut()
                .insert("authorization", self.authorization.clone());
            self.client
                .publish(request)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            1
        } else {
            let events = (0..self.batch).map(|j| self.event(i, j)).collect();
            let mut request = tonic::Request::new(PublishBatchRequest { events });
            request
                .metadata_mut()
                .insert("authorization", self.authorization.clone());
            let response = self
                .client
                .publish_batch(request)
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            let results = response.into_inner().results;
            let ok = results
                .iter()
                .filter(|r| matches!(r.result, Some(publish_result::Result::Ok(_))))
                .count() as u64;
            if ok < self.batch as u64 {
                return Err(format!(
                    "{} of {} events refused",
                    self.batch as u64 - ok,
                    self.batch
                ));
            }
            ok
        };
        if let Some(acks) = &mut self.acks {
            acks.push((i, Instant::now()));
        }
        Ok(acked)
    }
}

impl Worker for GrpcWorker {
    fn call(&mut self, i: u64) -> BoxFuture<'_, Result<u64, String>> {
        Box::pin(self.publish(i))
    }
}
