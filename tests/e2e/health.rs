//! Liveness and readiness answer without credentials.

use reqwest::StatusCode;

use crate::harness::{Daemon, TestConfig};

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let daemon = Daemon::start(TestConfig::new()).await;
    for path in ["/healthz", "/readyz"] {
        let response = daemon
            .http
            .get(daemon.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    }
}
