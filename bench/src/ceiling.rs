//! The ceiling: what this machine can do with the same load when nothing is
//! stored. A bare hyper HTTP/1.1 server that reads the body and answers 202,
//! and a tonic `hookyard.v1.Events` that decodes the request and answers OK.
//! It runs as its own process (`hookyard-bench ceiling`), like the daemon, so
//! both are measured the same way and neither shares the load generator's
//! runtime.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use anyhow::{bail, Context};
use bytes::Bytes;
use hookyard::v1::{
    events_server::{Events, EventsServer},
    publish_result, PublishBatchRequest, PublishBatchResponse, PublishRequest, PublishResponse,
    PublishResult, StartRunRequest, StartRunResponse,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

const ANSWER: &[u8] = br#"{"duplicate":false,"id":"x","matched":0,"seq":1}"#;

/// Serves both ceilings until killed; prints
/// `ready http=ADDR grpc=ADDR` once both listen.
pub async fn serve() -> anyhow::Result<()> {
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    println!(
        "ready http={} grpc={}",
        http.local_addr()?,
        grpc.local_addr()?
    );
    // As the daemon does: without TCP_NODELAY, small answers wait on
    // delayed ACKs and the ceiling would measure 40 ms stalls.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(grpc),
        |stream| {
            if let Ok(stream) = &stream {
                let _ = stream.set_nodelay(true);
            }
            stream
        },
    );
    let grpc_server = tonic::transport::Server::builder()
        .add_service(EventsServer::new(NoopEvents))
        .serve_with_incoming(incoming);
    tokio::spawn(grpc_server);
    loop {
        let (stream, _) = http.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(accept))
                .await;
        });
    }
}

async fn accept(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    request.into_body().collect().await?;
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER)));
    *response.status_mut() = StatusCode::ACCEPTED;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

struct NoopEvents;

#[tonic::async_trait]
impl Events for NoopEvents {
    async fn publish(
        &self,
        request: tonic::Request<PublishRequest>,
    ) -> Result<tonic::Response<PublishResponse>, tonic::Status> {
        let id = request.into_inner().event.map(|e| e.id).unwrap_or_default();
        Ok(tonic::Response::new(PublishResponse {
            id,
            seq: 1,
            duplicate: false,
            matched: 0,
        }))
    }

    async fn publish_batch(
        &self,
        request: tonic::Request<PublishBatchRequest>,
    ) -> Result<tonic::Response<PublishBatchResponse>, tonic::Status> {
        let results = request
            .into_inner()
            .events
            .into_iter()
            .map(|e| PublishResult {
                result: Some(publish_result::Result::Ok(PublishResponse {
                    id: e.id,
                    seq: 1,
                    duplicate: false,
                    matched: 0,
                })),
            })
            .collect();
        Ok(tonic::Response::new(PublishBatchResponse { results }))
    }

    type PublishStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<PublishResult, tonic::Status>> + Send>,
    >;

    /// Answers each event as it comes, in order, storing nothing.
    async fn publish_stream(
        &self,
        request: tonic::Request<tonic::Streaming<PublishRequest>>,
    ) -> Result<tonic::Response<Self::PublishStreamStream>, tonic::Status> {
        use tokio_stream::StreamExt;
        let answers = request.into_inner().map(|request| {
            let id = request?.event.map(|e| e.id).unwrap_or_default();
            Ok(PublishResult {
                result: Some(publish_result::Result::Ok(PublishResponse {
                    id,
                    seq: 1,
                    duplicate: false,
                    matched: 0,
                })),
            })
        });
        Ok(tonic::Response::new(Box::pin(answers)))
    }

    async fn start_run(
        &self,
        _request: tonic::Request<StartRunRequest>,
    ) -> Result<tonic::Response<StartRunResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the ceiling only measures intake",
        ))
    }
}

/// The ceiling process, started from this same executable.
pub struct Ceiling {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
}

impl Ceiling {
    /// The ceiling process's CPU time, to set beside the daemon's.
    pub fn cpu_clock(&self) -> Option<crate::daemon::CpuClock> {
        self.child.id().map(crate::daemon::CpuClock::of)
    }

    pub async fn spawn() -> anyhow::Result<Ceiling> {
        let exe = std::env::current_exe().context("the harness's own path")?;
        let mut child = Command::new(exe)
            .arg("ceiling")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start the ceiling server")?;
        let stdout = child.stdout.take().context("the ceiling's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("the ceiling was not ready within 10 s")??
            .context("the ceiling exited before it was ready")?;
        let field = |name: &str| -> anyhow::Result<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .context("a field of the ready line")?
                .parse()
                .context("an address")
        };
        if !line.starts_with("ready ") {
            bail!("unexpected line from the ceiling: {line}");
        }
        Ok(Ceiling {
            http: field("http=")?,
            grpc: field("grpc=")?,
            child,
        })
    }
}
