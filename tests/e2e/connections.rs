//! Connections against the real daemon: sockets that send nothing, half an
//! HTTP/2 preface or a preface and no request cannot hold the connection
//! permits; idle HTTP/1 and HTTP/2 connections are closed; a long server
//! stream is not; one address may be capped while others are served.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

use crate::{
    api::{http_event, publish_http, Watch},
    harness::{Daemon, TestConfig},
    sink::{Behaviour, TestReceiver},
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const SETTINGS_ACK: &[u8] = &[0, 0, 0, 4, 1, 0, 0, 0, 0];

fn listen_addr(daemon: &Daemon) -> SocketAddr {
    daemon
        .http_base()
        .trim_start_matches("http://")
        .parse()
        .expect("the daemon's address")
}

async fn connect_from(local: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from((local, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.expect("connect")
}

/// Waits for the peer to close; how long it took, or `None` past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// A plain HTTP/1.1 GET of /healthz on `stream`; true when it answered 200.
async fn get_healthz(stream: &mut TcpStream) -> bool {
    let request = b"GET /healthz HTTP/1.1\r\nhost: hookyard\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    // The body is `{"status":"ok"}`: read until it is in.
    while !answer.ends_with(b"}") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    answer.starts_with(b"HTTP/1.1 200")
}

fn tight(max_connections: usize) -> TestConfig {
    TestConfig::new()
        .set("http.max_connections", json!(max_connections))
        .set("http.header_timeout", json!("1s"))
}

/// Holds every permit with `sockets`, then times a real request: it must
/// wait for them (the permits were held) and be served soon after the
/// header timeout (they were let go).
async fn served_despite(daemon: &Daemon, mut sockets: Vec<TcpStream>, what: &str) {
    let start = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(6))
        .build()
        .expect("a client");
    let answer = client.get(daemon.url("/healthz")).send().await;
    let waited = start.elapsed();
    let status = answer.map(|r| r.status().as_u16());
    assert_eq!(
        status.as_ref().ok(),
        Some(&200),
        "{what}: a real client was not served: {status:?}"
    );
    assert!(
        waited >= Duration::from_millis(800),
        "{what}: served after {waited:?}, so the sockets held no permits and the test proves nothing"
    );
    assert!(
        waited < Duration::from_secs(4),
        "{what}: served only after {waited:?}"
    );
    for socket in &mut sockets {
        let closed = closed_within(socket, Duration::from_secs(3)).await;
        assert!(closed.is_some(), "{what}: a socket was left open");
    }
}

#[tokio::test]
async fn sockets_that_send_nothing_or_half_a_request_cannot_hold_the_permits() {
    let daemon = Daemon::start(tight(8)).await;
    let addr = listen_addr(&daemon);

    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(addr).await.expect("connect"));
    }
    served_despite(&daemon, silent, "silent sockets").await;

    let mut partial = Vec::new();
    for _ in 0..8 {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        socket.write_all(&PREFACE[..10]).await.expect("write");
        partial.push(socket);
    }
    served_despite(&daemon, partial, "half an HTTP/2 preface").await;

    let mut preface_only = Vec::new();
    for _ in 0..8 {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        socket.write_all(PREFACE).await.expect("write");
        socket.write_all(SETTINGS).await.expect("write");
        preface_only.push(socket);
    }
    served_despite(&daemon, preface_only, "a preface and no request").await;

    let mut slow_headers = Vec::new();
    for _ in 0..8 {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        socket
            .write_all(b"POST /v1/events HTTP/1.1\r\nhost: x\r\n")
            .await
            .expect("write");
        slow_headers.push(socket);
    }
    served_despite(&daemon, slow_headers, "HTTP/1 headers never finished").await;

    // gRPC still works on the same port afterwards.
    let mut events = daemon.events_client();
    crate::api::publish_grpc(&mut events, crate::api::grpc_event("lead.created")).await;
}

#[tokio::test]
async fn an_idle_http1_connection_is_closed_after_the_idle_timeout() {
    let daemon = Daemon::start(
        TestConfig::new()
            .set("http.idle_timeout", json!("1s"))
            .set("http.header_timeout", json!("5s")),
    )
    .await;
    let mut stream = TcpStream::connect(listen_addr(&daemon))
        .await
        .expect("connect");
    assert!(get_healthz(&mut stream).await);
    // Kept alive for a second request...
    assert!(get_healthz(&mut stream).await);
    // ...then closed once idle for the idle timeout, not the header timeout.
    let closed = closed_within(&mut stream, Duration::from_secs(4))
        .await
        .expect("the idle connection was closed");
    assert!(
        closed >= Duration::from_millis(800),
        "closed after {closed:?}"
    );
}

/// A frame's type and stream, read from a raw HTTP/2 connection.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream_id))
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_and_is_closed() {
    let daemon = Daemon::start(TestConfig::new().set("http.idle_timeout", json!("1s"))).await;
    let mut stream = TcpStream::connect(listen_addr(&daemon))
        .await
        .expect("connect");
    // GET /healthz on stream 1, HPACK from the static table:
    // :method GET, :scheme http, then :path and :authority as literals.
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, 8]);
    block.extend_from_slice(b"hookyard");
    let len = block.len() as u32;
    let mut headers = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8];
    // HEADERS, END_STREAM | END_HEADERS, stream 1.
    headers.extend_from_slice(&[1, 0x05, 0, 0, 0, 1]);
    headers.extend_from_slice(&block);
    stream.write_all(PREFACE).await.expect("write");
    stream.write_all(SETTINGS).await.expect("write");
    stream.write_all(&headers).await.expect("write");

    let mut answered_at = None;
    let mut goaway_at = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let Ok(frame) = tokio::time::timeout(Duration::from_secs(8), read_frame(&mut stream)).await
        else {
            break;
        };
        let Some((kind, flags, stream_id)) = frame else {
            break;
        };
        match kind {
            // SETTINGS from the server: acknowledge, as a client would.
            4 if flags & 1 == 0 => stream.write_all(SETTINGS_ACK).await.expect("write"),
            // DATA that ends stream 1: the answer is complete.
            0 if stream_id == 1 && flags & 1 == 1 => answered_at = Some(Instant::now()),
            7 => {
                goaway_at.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
    }
    let closed_at = Instant::now();
    let answered_at = answered_at.expect("GET /healthz was answered over HTTP/2");
    let goaway_at = goaway_at.expect("a GOAWAY once the connection was idle");
    let idle_for = goaway_at - answered_at;
    assert!(
        idle_for >= Duration::from_millis(800) && idle_for < Duration::from_secs(3),
        "GOAWAY after {idle_for:?} idle"
    );
    // The ping that follows a GOAWAY is not answered here: the connection
    // is dropped after a grace all the same.
    let closed_after = closed_at - goaway_at;
    assert!(
        closed_after < Duration::from_secs(5),
        "closed {closed_after:?} after the GOAWAY"
    );
}

#[tokio::test]
async fn a_server_stream_outlives_the_idle_and_request_timeouts() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(
        TestConfig::crm(&sink.url())
            .set("http.idle_timeout", json!("1s"))
            .set("http.request_timeout", json!("1s")),
    )
    .await;
    let mut admin = daemon.admin_client();
    let mut watch = Watch::all(&mut admin).await;
    // Both timeouts pass with the stream open and nothing on it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let accepted = publish_http(&daemon, &http_event("lead.created")).await;
    sink.next().await;
    let update = watch.next().await;
    assert_eq!(update.event_id, accepted.id);
}

#[tokio::test]
async fn one_address_is_capped_while_others_are_served() {
    let daemon =
        Daemon::start(TestConfig::new().set("http.max_connections_per_ip", json!(4))).await;
    let addr = listen_addr(&daemon);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    let mut fifth = connect_from([127, 0, 0, 1], addr).await;
    let closed = closed_within(&mut fifth, Duration::from_secs(2)).await;
    assert!(
        closed.is_some(),
        "a fifth connection from one address was kept"
    );

    let mut other = connect_from([127, 0, 0, 2], addr).await;
    assert!(
        get_healthz(&mut other).await,
        "another address was not served"
    );
    // The four are still open, and served.
    assert!(get_healthz(&mut held[0]).await);

    // One of the four goes: a new one from the capped address is served.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let mut stream = connect_from([127, 0, 0, 1], addr).await;
        if get_healthz(&mut stream).await {
            again = Some(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "a freed slot was not given back");
}
