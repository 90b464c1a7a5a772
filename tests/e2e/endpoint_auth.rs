//! Outbound authentication per endpoint, against real servers in the test:
//! OAuth2 client credentials (a token server that counts its requests: one
//! fetch for a burst, a new token after expiry, a refused token fetched
//! again, a failing token server recorded and recovered from, the client
//! secret never returned) and mTLS (an HTTPS receiver that requires a client
//! certificate from a private CA, trusted through the endpoint's own
//! `ca_file` only).

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, routing::post, Json, Router};
use base64::Engine as _;
use hookyard::v1::{
    CreateEndpointRequest, CreateSubscriptionRequest, DeliveryStatus, Endpoint, EndpointTls,
    GetEndpointRequest, OAuth2ClientCredentials, Subscription, UpdateEndpointRequest,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{rustls, TlsAcceptor};

use crate::{
    api::{get_delivery, publish_http, Watch},
    harness::{check_config, Admin, Daemon, TestConfig, SECRET, WAIT},
    sink::{Behaviour, TestReceiver},
};

const CLIENT_ID: &str = "hookyard client";
const CLIENT_SECRET: &str = "c1ient:s3cret";
const FINAL: &[DeliveryStatus] = &[DeliveryStatus::Succeeded, DeliveryStatus::Dead];

fn endpoint(id: &str, url: &str) -> Endpoint {
    Endpoint {
        id: id.to_string(),
        url: url.to_string(),
        secret: SECRET.to_string(),
        retry_schedule_ms: vec![0, 300, 300, 300, 300, 300, 300],
        ..Endpoint::default()
    }
}

async fn create(admin: &mut Admin, endpoint: Endpoint) -> Result<Endpoint, tonic::Status> {
    admin
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint),
        })
        .await
        .map(|r| r.into_inner())
}

async fn subscribe(admin: &mut Admin, endpoint: &str) {
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: format!("to-{endpoint}"),
                patterns: vec!["lead.*".into()],
                target: format!("endpoint:{endpoint}"),
                enabled: true,
                ..Subscription::default()
            }),
        })
        .await
        .expect("CreateSubscription");
}

async fn publish(daemon: &Daemon, n: usize) -> String {
    publish_http(
        daemon,
        &json!({"name": "lead.created", "payload": {"n": n}}),
    )
    .await
    .id
}

/// A token endpoint: checks the client's Basic credentials and the grant,
/// answers `tok-<n>` valid for two seconds (or 503 while `down`).
struct TokenServer {
    url: String,
    fetches: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

#[derive(Clone)]
struct TokenState {
    fetches: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl TokenServer {
    async fn start() -> TokenServer {
        let state = TokenState {
            fetches: Arc::new(AtomicU64::new(0)),
            down: Arc::new(AtomicBool::new(false)),
            refused: Arc::new(AtomicU64::new(0)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("an address");
        let app = Router::new()
            .route("/oauth/token", post(token))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            url: format!("http://{addr}/oauth/token"),
            fetches: state.fetches,
            down: state.down,
            refused: state.refused,
        }
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn token(
    State(state): State<TokenState>,
    headers: HeaderMap,
    body: String,
) -> (axum::http::StatusCode, Json<Value>) {
    // RFC 6749 §2.3.1: both parts form-encoded, then Basic.
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("hookyard+client:c1ient%3As3cret")
    );
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    let form: Vec<(String, String)> = form_pairs(&body);
    let grant_ok = form.contains(&("grant_type".into(), "client_credentials".into()))
        && form.contains(&("scope".into(), "webhooks:write".into()))
        && !body.contains("s3cret");
    if !authorized || !grant_ok {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        );
    }
    if state.down.load(Ordering::SeqCst) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "temporarily_unavailable"})),
        );
    }
    // Slow enough that a burst of deliveries all wait on one fetch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = state.fetches.fetch_add(1, Ordering::SeqCst);
    (
        axum::http::StatusCode::OK,
        Json(json!({"access_token": format!("tok-{n}"), "token_type": "Bearer", "expires_in": 2})),
    )
}

fn form_pairs(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace('+', " ").replace("%3A", ":")))
        .collect()
}

fn oauth2(token_url: &str) -> OAuth2ClientCredentials {
    OAuth2ClientCredentials {
        token_url: token_url.to_string(),
        client_id: CLIENT_ID.to_string(),
        client_secret: CLIENT_SECRET.to_string(),
        scope: "webhooks:write".to_string(),
        audience: String::new(),
    }
}

#[tokio::test]
async fn oauth2_tokens_are_fetched_once_per_lifetime_and_sent_as_bearer() {
    let tokens = TokenServer::start().await;
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let mut e = endpoint("crm", &sink.url());
    e.oauth2 = Some(oauth2(&tokens.url));
    e.max_in_flight = 16;
    let created = create(&mut admin, e).await.expect("CreateEndpoint");
    assert_eq!(
        created.oauth2.as_ref().map(|o| o.client_secret.as_str()),
        Some(""),
        "the client secret is never returned"
    );
    let got = admin
        .get_endpoint(GetEndpointRequest { id: "crm".into() })
        .await
        .expect("GetEndpoint")
        .into_inner();
    let shown = got.oauth2.clone().expect("oauth2 is shown");
    assert_eq!(
        (shown.client_id.as_str(), shown.client_secret.as_str()),
        (CLIENT_ID, "")
    );
    assert!(!format!("{got:?}").contains("s3cret"));
    subscribe(&mut admin, "crm").await;

    // A burst: every delivery waits on the one fetch.
    let ids = futures::future::join_all((0..12).map(|n| publish(&daemon, n))).await;
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let received = sink.until_ids(&ids, WAIT).await;
    assert!(received
        .iter()
        .all(|r| r.header("authorization") == "Bearer tok-0"));
    assert_eq!(tokens.fetches(), 1, "one token for the whole burst");
    assert_eq!(tokens.refused.load(Ordering::SeqCst), 0);

    // Two seconds later the token has expired: a new one is fetched.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let id = publish(&daemon, 100).await;
    let received = sink.until_ids(&[&id], WAIT).await;
    assert_eq!(
        received.last().map(|r| r.header("authorization")),
        Some("Bearer tok-1")
    );
    assert_eq!(tokens.fetches(), 2);

    // An update that leaves the secret empty keeps it (tokens still come).
    let mut update = got;
    update.oauth2 = Some(OAuth2ClientCredentials {
        client_secret: String::new(),
        ..oauth2(&tokens.url)
    });
    update.description = "kept secret".into();
    admin
        .update_endpoint(UpdateEndpointRequest {
            endpoint: Some(update),
        })
        .await
        .expect("UpdateEndpoint");
    let id = publish(&daemon, 101).await;
    let received = sink.until_ids(&[&id], WAIT).await;
    assert!(received
        .last()
        .is_some_and(|r| r.header("authorization").starts_with("Bearer tok-")));
    assert_eq!(tokens.refused.load(Ordering::SeqCst), 0);
    let log = daemon.log();
    assert!(!log.contains("s3cret") && !log.contains("tok-0"), "{log}");
}

#[tokio::test]
async fn a_failing_token_endpoint_fails_the_attempt_and_a_401_drops_the_token() {
    let tokens = TokenServer::start().await;
    // The receiver refuses the first request: the token is dropped and the
    // retry fetches another.
    let mut sink = TestReceiver::start(Behaviour::FailTimes(1, 401)).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let mut e = endpoint("crm", &sink.url());
    e.oauth2 = Some(oauth2(&tokens.url));
    create(&mut admin, e).await.expect("CreateEndpoint");
    subscribe(&mut admin, "crm").await;
    let mut watch = Watch::all(&mut admin).await;

    let id = publish(&daemon, 0).await;
    let delivery = watch.until(&id, FINAL).await;
    assert_eq!(delivery.status(), DeliveryStatus::Succeeded);
    let mut received = sink.until_ids(&[&id], WAIT).await;
    received.extend(sink.drain());
    let seen: Vec<&str> = received.iter().map(|r| r.header("authorization")).collect();
    assert_eq!(
        seen,
        ["Bearer tok-0", "Bearer tok-1"],
        "refused, then fetched again"
    );
    assert_eq!(tokens.fetches(), 2);
    let detail = get_delivery(&mut admin, delivery.id).await;
    let mut codes: Vec<_> = detail
        .attempts
        .iter()
        .map(|a| (a.number, a.status_code))
        .collect();
    codes.sort();
    assert_eq!(codes, [(1, 401), (2, 200)]);

    // The token server fails: attempts fail with its error, then succeed.
    tokens.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let id = publish(&daemon, 1).await;
    let failed = watch.until(&id, &[DeliveryStatus::Failed]).await;
    assert!(
        failed
            .last_error
            .starts_with("oauth2 token: token endpoint answered HTTP 503"),
        "{failed:?}"
    );
    tokens.down.store(false, Ordering::SeqCst);
    let done = watch.until(&id, FINAL).await;
    assert_eq!(done.status(), DeliveryStatus::Succeeded);
    let detail = get_delivery(&mut admin, done.id).await;
    assert!(detail
        .attempts
        .iter()
        .any(|a| a.status_code == 0 && a.error.contains("oauth2 token")));
    let delivered = detail
        .attempts
        .iter()
        .find(|a| a.status_code == 200)
        .expect("a delivered attempt");
    assert_eq!(
        delivered
            .request_headers
            .get("authorization")
            .map(String::as_str),
        Some("<redacted>")
    );
}

#[tokio::test]
async fn oauth2_and_basic_are_exclusive_and_each_field_is_checked() {
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let mut e = endpoint("crm", "http://127.0.0.1:9/hook");
    e.oauth2 = Some(OAuth2ClientCredentials {
        token_url: "ftp://nope".into(),
        client_id: String::new(),
        client_secret: String::new(),
        ..OAuth2ClientCredentials::default()
    });
    let status = create(&mut admin, e.clone()).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    for field in [
        "oauth2.token_url",
        "oauth2.client_id",
        "oauth2.client_secret",
    ] {
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    e.oauth2 = Some(oauth2("http://127.0.0.1:9/token"));
    e.basic_auth = Some(hookyard::v1::BasicAuth {
        username: "u".into(),
        password: "p".into(),
    });
    let status = create(&mut admin, e).await.expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("not both"), "{status:?}");
}

/// A private CA and, signed by it, a certificate for 127.0.0.1 and one for
/// a client, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("the CA");
    let server_key = KeyPair::generate().expect("a server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("the server certificate");
    let client_key = KeyPair::generate().expect("a client key");
    let client = CertificateParams::new(vec!["hookyard-client".to_string()])
        .expect("client params")
        .signed_by(&client_key, &ca, &ca_key)
        .expect("the client certificate");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

/// An HTTPS receiver that requires a client certificate signed by `pki.ca`;
/// each request's head goes into the channel, and it answers 200.
async fn mtls_receiver(pki: &Pki) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&pki.ca).expect("the CA") {
        roots.add(cert.expect("PEM")).expect("a root");
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .expect("a client verifier");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .expect("the certificate")
        .collect::<Result<_, _>>()
        .expect("PEM");
    let key = PrivateKeyDer::from_pem_file(&pki.server_key).expect("the key");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .expect("a server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("an address");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        let _ = tx.send(text[..end].to_string());
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    (format!("https://127.0.0.1:{}/hook", addr.port()), rx)
}

#[tokio::test]
async fn mtls_endpoint_is_delivered_with_its_client_certificate_and_private_ca() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pki = pki(dir.path());
    let (url, mut requests) = mtls_receiver(&pki).await;
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let path = |p: &Path| p.display().to_string();

    // The private CA is trusted for this endpoint only, with the client
    // certificate presented.
    let mut with_cert = endpoint("mtls", &url);
    with_cert.tls = Some(EndpointTls {
        client_cert_file: path(&pki.client_cert),
        client_key_file: path(&pki.client_key),
        ca_file: path(&pki.ca),
    });
    let created = create(&mut admin, with_cert).await.expect("CreateEndpoint");
    assert_eq!(
        created.tls.as_ref().map(|t| t.ca_file.clone()),
        Some(path(&pki.ca))
    );
    subscribe(&mut admin, "mtls").await;
    let mut watch = Watch::all(&mut admin).await;
    let id = publish(&daemon, 0).await;
    let delivery = watch.until(&id, FINAL).await;
    assert_eq!(delivery.status(), DeliveryStatus::Succeeded, "{delivery:?}");
    let head = tokio::time::timeout(WAIT, requests.recv())
        .await
        .expect("a request")
        .expect("the receiver runs");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("webhook-id: {id}")),
        "{head}"
    );

    // Only the CA, no client certificate: the receiver refuses the handshake.
    let mut without_cert = endpoint("anonymous", &url);
    without_cert.retry_schedule_ms = vec![0];
    without_cert.tls = Some(EndpointTls {
        ca_file: path(&pki.ca),
        ..EndpointTls::default()
    });
    create(&mut admin, without_cert)
        .await
        .expect("CreateEndpoint");
    admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: "to-anonymous".into(),
                patterns: vec!["order.*".into()],
                target: "endpoint:anonymous".into(),
                enabled: true,
                ..Subscription::default()
            }),
        })
        .await
        .expect("CreateSubscription");
    let id = publish_http(&daemon, &json!({"name": "order.created", "payload": {}}))
        .await
        .id;
    let dead = watch.until(&id, FINAL).await;
    assert_eq!(dead.status(), DeliveryStatus::Dead);
    assert_eq!(dead.last_status_code, 0);
    assert!(
        dead.last_error.contains("connection failed") || dead.last_error.contains("request failed"),
        "a TLS failure is recorded: {dead:?}"
    );

    // Neither the shared client trusts the private CA.
    let mut untrusted = endpoint("untrusted", &url);
    untrusted.retry_schedule_ms = vec![0];
    create(&mut admin, untrusted).await.expect("CreateEndpoint");
    let answer = admin
        .send_test_event(hookyard::v1::SendTestEventRequest {
            endpoint_id: "untrusted".into(),
            ..Default::default()
        })
        .await
        .expect("SendTestEvent")
        .into_inner();
    assert!(!answer.succeeded, "{answer:?}");
    assert!(
        answer
            .attempt
            .as_ref()
            .is_some_and(|a| a.error.to_ascii_lowercase().contains("certificate")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn unusable_tls_files_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let pki = pki(dir.path());
    let other = tempfile::tempdir().expect("a temp dir");
    let stranger = self::pki(other.path());
    let daemon = Daemon::start(TestConfig::new()).await;
    let mut admin = daemon.admin_client();
    let path = |p: &Path| p.display().to_string();
    let cases = [
        (
            path(&pki.client_cert),
            path(&dir.path().join("missing.key")),
            String::new(),
            "tls.client_key_file",
        ),
        (
            path(&pki.client_cert),
            path(&stranger.client_key),
            String::new(),
            "tls.client_key_file",
        ),
        (
            path(&pki.client_key),
            path(&pki.client_key),
            String::new(),
            "tls.client_cert_file",
        ),
        (
            String::new(),
            String::new(),
            path(&pki.client_key),
            "tls.ca_file",
        ),
        (
            path(&pki.client_cert),
            String::new(),
            String::new(),
            "tls.client_key_file",
        ),
    ];
    for (cert, key, ca, field) in cases {
        let mut e = endpoint("bad", "https://127.0.0.1:9/hook");
        e.tls = Some(EndpointTls {
            client_cert_file: cert,
            client_key_file: key,
            ca_file: ca,
        });
        let status = create(&mut admin, e).await.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    let missing = admin
        .get_endpoint(GetEndpointRequest { id: "bad".into() })
        .await
        .expect_err("nothing stored");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // The config file is checked the same way.
    let config = TestConfig::new().set(
        "endpoints",
        json!([{
            "id": "bad",
            "url": "https://127.0.0.1:9/hook",
            "tls": {"client_cert_file": path(&pki.client_cert),
                    "client_key_file": path(&dir.path().join("missing.key"))},
        }]),
    );
    let (status, stderr) = check_config(config).await;
    assert!(!status.success());
    assert!(stderr.contains("tls.client_key_file"), "{stderr}");
}
