//! `TestReceiver`: the tenant's webhook endpoint. Every request goes into a
//! channel; the answer follows a script. Also an independent Standard
//! Webhooks signature check.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    Router,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::{
    net::TcpListener,
    sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender},
    task::JoinHandle,
};

use crate::harness::WAIT;

/// How the receiver answers, by the order requests arrive in.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    Always(u16),
    /// `status` for the first `n` requests, then 200.
    FailTimes(u64, u16),
    /// `status` for about `share` of the requests (deterministic), else 200.
    FailShare(f64, u16),
    /// `status` with `webhook-delivery: abort`: do not retry this one.
    Abort(u16),
    /// Each answer takes `delay_ms`; the first `times` requests whose body
    /// contains `marker` get `status`, everything else 200.
    SlowFailMarked {
        delay_ms: u64,
        marker: &'static str,
        times: u64,
        status: u16,
    },
}

impl Behaviour {
    fn status(self, request_number: u64) -> u16 {
        match self {
            Behaviour::Always(status) => status,
            Behaviour::FailTimes(n, status) if request_number < n => status,
            Behaviour::FailTimes(..) => 200,
            Behaviour::Abort(status) => status,
            Behaviour::SlowFailMarked { .. } => 200,
            Behaviour::FailShare(share, status) => {
                // A cheap hash spreads failures over the sequence.
                let bucket = request_number.wrapping_mul(2_654_435_761) % 1000;
                if (bucket as f64) < share * 1000.0 {
                    status
                } else {
                    200
                }
            }
        }
    }
}

#[derive(Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    /// The header's value; panics when it is missing.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` header in {:?}", self.headers))
            .to_str()
            .expect("a visible-ASCII header value")
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct Shared {
    behaviour: Behaviour,
    count: AtomicU64,
    /// Requests that carried `SlowFailMarked`'s marker.
    marked: AtomicU64,
    tx: UnboundedSender<Received>,
}

pub struct TestReceiver {
    addr: SocketAddr,
    rx: UnboundedReceiver<Received>,
    server: JoinHandle<()>,
}

impl TestReceiver {
    pub async fn start(behaviour: Behaviour) -> TestReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let addr = listener.local_addr().expect("the sink's address");
        let (tx, rx) = unbounded_channel();
        let shared = Arc::new(Shared {
            behaviour,
            count: AtomicU64::new(0),
            marked: AtomicU64::new(0),
            tx,
        });
        let app = Router::new().fallback(record).with_state(shared);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the sink serves");
        });
        TestReceiver { addr, rx, server }
    }

    /// The URL to configure as the endpoint.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next request; panics when none comes within [`WAIT`].
    pub async fn next(&mut self) -> Received {
        self.next_within(WAIT).await
    }

    pub async fn next_within(&mut self, limit: Duration) -> Received {
        match tokio::time::timeout(limit, self.rx.recv()).await {
            Ok(Some(received)) => received,
            Ok(None) => panic!("the sink stopped"),
            Err(_) => panic!("the sink received nothing within {limit:?}"),
        }
    }

    /// Receives until every id in `ids` arrived at least once; returns every
    /// request received meanwhile, duplicates and strangers included.
    pub async fn until_ids(&mut self, ids: &[&str], limit: Duration) -> Vec<Received> {
        let mut missing: HashSet<&str> = ids.iter().copied().collect();
        let deadline = tokio::time::Instant::now() + limit;
        let mut all = Vec::new();
        while !missing.is_empty() {
            let received = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(received)) => received,
                Ok(None) => panic!("the sink stopped"),
                Err(_) => panic!("within {limit:?}, the sink never received {missing:?}"),
            };
            missing.remove(received.webhook_id());
            all.push(received);
        }
        all
    }

    /// Whatever has arrived and not been read yet, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1]) {
    let at = Instant::now();
    let number = shared.count.fetch_add(1, Ordering::SeqCst);
    let mut status = shared.behaviour.status(number);
    if let Behaviour::SlowFailMarked {
        delay_ms,
        marker,
        times,
        status: failing,
    } = shared.behaviour
    {
        let marked = body.windows(marker.len()).any(|w| w == marker.as_bytes());
        if marked && shared.marked.fetch_add(1, Ordering::SeqCst) < times {
            status = failing;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let _ = shared.tx.send(Received {
        path: uri.path().to_string(),
        headers,
        body,
        at,
    });
    let status = StatusCode::from_u16(status).expect("a valid status");
    let delivery = match shared.behaviour {
        Behaviour::Abort(_) => "abort",
        _ => "continue",
    };
    (status, [("webhook-delivery", delivery)])
}

/// Checks the Standard Webhooks signature with `secret` (`whsec_<base64>`),
/// written here from the spec rather than borrowed from the server.
pub fn assert_signed(received: &Received, secret: &str) {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("a base64 secret");
    let id = received.webhook_id();
    let timestamp = received.header("webhook-timestamp");

    let seconds: u64 = timestamp
        .parse()
        .unwrap_or_else(|_| panic!("webhook-timestamp {timestamp:?} is not unix seconds"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        seconds.abs_diff(now) < 300,
        "webhook-timestamp {seconds} is far from now ({now})"
    );

    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    let signatures = received.header("webhook-signature");
    assert!(
        signatures.split(' ').any(|s| s == expected),
        "webhook-signature {signatures:?} does not include {expected:?}"
    );
}
