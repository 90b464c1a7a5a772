//! Serving connections: an accept loop over hyper-util's HTTP/1 + HTTP/2
//! builder, so one port speaks both HTTP intake and gRPC. It bounds the
//! number of open connections (a permit is taken before `accept`) and, as an
//! option, those from one address; it closes connections that send no
//! request in time or sit idle (`connection`), and drains open connections
//! on shutdown. A permit can therefore not be held by a socket that sends
//! nothing.

mod connection;
pub mod deadline;
mod per_ip;
pub mod tls;

use std::{sync::Arc, time::Duration};

use axum::extract::ConnectInfo;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use ipnet::IpNet;
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::{either::Either, sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use self::{
    connection::{Activity, Timeouts, Tracked},
    per_ip::PerIp,
};

/// How long open connections get to finish on shutdown.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// HTTP/2 pings on a connection that has been quiet this long...
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// ...and the connection is dropped when the answer takes longer: the peer is gone.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct ConnectionLimits {
    /// For the first request's headers (HTTP/1), or the HTTP/2 preface and
    /// first request.
    pub header_timeout: Duration,
    /// With no request in progress.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Open connections from one address; 0 is no cap.
    pub max_per_ip: usize,
    /// Addresses never capped per address: proxies speak for many clients.
    pub uncapped: Vec<IpNet>,
    /// TLS, when configured: the handshake runs in the connection's task,
    /// bounded by `header_timeout` like a request's headers.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) {
    let builder = builder(&limits);
    let timeouts = Timeouts {
        header: limits.header_timeout,
        idle: limits.idle_timeout,
    };
    let per_ip = Arc::new(PerIp::new(limits.max_per_ip, limits.uncapped.clone()));
    let connections = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.try_acquire(peer.ip()) else {
            // Debug only: whoever is over the cap could otherwise fill the log.
            tracing::debug!(%peer, "Refused a connection: too many open from this address.");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        // The peer address, for handlers that check where a request comes from.
        let app = app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        );
        let service = TowerToHyperService::new(Tracked::new(app, activity.clone()));
        let shutdown = shutdown.clone();
        let builder = builder.clone();
        let tls = limits.tls.clone();
        connections.spawn(async move {
            // One serving path for both: the TLS stream, or the socket as is.
            let io = match tls {
                None => Either::Left(stream),
                Some(acceptor) => match handshake(&acceptor, stream, timeouts.header).await {
                    Ok(stream) => Either::Right(stream),
                    Err(why) => {
                        tracing::debug!(%peer, why, "TLS handshake failed.");
                        drop((permit, slot));
                        return;
                    }
                },
            };
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            connection::drive(
                connection,
                |c| c.graceful_shutdown(),
                &activity,
                timeouts,
                &shutdown,
            )
            .await;
            drop((permit, slot));
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_DEADLINE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("Some connections were still open at the shutdown deadline.");
    }
}

/// The TLS handshake, bounded like a request's headers.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    limit: Duration,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, String> {
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no handshake within {limit:?}")),
    }
}

fn builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT);
    builder
}
