//! TLS: with `tls: {cert, key}` both listeners speak HTTPS (HTTP intake and
//! gRPC share the port over ALPN), plain HTTP is refused, `hookyard ctl`
//! connects with `--ca-file`; outbound, `delivery.ca_file` trusts an
//! endpoint behind a private CA.

use std::{path::Path, sync::Arc};

use hookyard::v1::{events_client::EventsClient, PublishRequest};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{rustls, TlsAcceptor};

use crate::{
    api::{grpc_event, http_event},
    harness::{built_binary, Daemon, EndpointSpec, TestConfig, API_KEY, WAIT},
    sink::{Behaviour, TestReceiver},
};

/// A self-signed certificate for 127.0.0.1 and localhost, as PEM files.
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("a certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).expect("write the certificate");
    std::fs::write(&key, made.key_pair.serialize_pem()).expect("write the key");
    (cert, key)
}

/// An HTTPS endpoint that answers 200 to every request and counts them.
async fn https_sink(
    cert: &Path,
    key: &Path,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("read the certificate")
        .collect::<Result<_, _>>()
        .expect("PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("the key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("a server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                // One request per connection: headers, then the body.
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            let _ = tx.send(text);
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                                .await;
                            let _ = stream.shutdown().await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("https://127.0.0.1:{}/hook", addr.port()), rx)
}

#[tokio::test]
async fn both_listeners_speak_tls_and_endpoints_behind_a_private_ca_are_trusted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key) = certificate(dir.path());
    let (sink_url, mut sink) = https_sink(&cert, &key).await;
    let plain_sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(
        TestConfig::new()
            .route_leads(EndpointSpec::new("crm", &sink_url))
            .endpoint(EndpointSpec::new("plain", &plain_sink.url()))
            .set("tls", json!({"cert": cert, "key": key}))
            .set("delivery.ca_file", json!(cert)),
    )
    .await;
    let port = daemon
        .http_base()
        .rsplit(':')
        .next()
        .expect("a port")
        .to_string();
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).expect("read")).expect("PEM"),
        )
        .build()
        .expect("a client");

    let answer = https
        .post(format!("https://127.0.0.1:{port}/v1/events"))
        .bearer_auth(API_KEY)
        .json(&http_event("lead.created"))
        .send()
        .await
        .expect("POST over TLS");
    assert_eq!(answer.status(), 202);
    // Delivered to the HTTPS endpoint whose certificate only ca_file vouches for.
    let request = tokio::time::timeout(WAIT, sink.recv())
        .await
        .expect("the HTTPS endpoint was called")
        .expect("a request");
    assert!(request.starts_with("POST /hook"), "{request}");

    let plain = daemon
        .http
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .bearer_auth(API_KEY)
        .json(&http_event("lead.created"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP to a TLS listener is refused");

    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(std::fs::read(&cert).expect("read")),
    );
    let channel = tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .expect("a URL")
        .tls_config(tls)
        .expect("TLS")
        .connect()
        .await
        .expect("gRPC over TLS");
    let key: tonic::metadata::MetadataValue<_> =
        format!("Bearer {API_KEY}").parse().expect("a header");
    let mut events = EventsClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", key.clone());
        Ok(r)
    });
    events
        .publish(PublishRequest {
            event: Some(grpc_event("lead.created")),
        })
        .await
        .expect("Publish over TLS");

    let admin_port = daemon.admin_addr().port();
    let listed = tokio::process::Command::new(built_binary("hookyard"))
        .args(["ctl", "--json", "endpoints", "list"])
        .env("HOOKYARD_ADDR", format!("https://localhost:{admin_port}"))
        .env("HOOKYARD_TOKEN", daemon.admin_token())
        .env("HOOKYARD_CA_FILE", &cert)
        .output()
        .await
        .expect("hookyard ctl");
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && stdout.contains("\"crm\""),
        "ctl over TLS: {stdout}{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}
