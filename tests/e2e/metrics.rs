//! `GET /metrics` on the admin listener, scraped after real traffic and
//! parsed by the official Prometheus client's parser (Python
//! `prometheus_client`, installed by `scripts/python-env`): the counts match
//! what was sent, delivered and refused.

use std::{collections::BTreeMap, process::Stdio};

use hookyard::v1::PublishRequest;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::{
    api::{grpc_event, http_event, publish_http},
    harness::{Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

/// Parses the exposition with `prometheus_client.parser` and prints every
/// sample as JSON: [name, labels, value].
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps(samples))
"#;

/// Sample name and sorted labels -> value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

async fn scrape(daemon: &Daemon) -> Samples {
    let response = daemon
        .http
        .get(format!("http://{}/metrics", daemon.admin_addr()))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("a content type")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("the exposition");
    parse(&text).await
}

async fn parse(text: &str) -> Samples {
    let mut child = tokio::process::Command::new(crate::harness::python())
        .arg("-c")
        .arg(PARSE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start Python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("write the exposition");
    drop(stdin);
    let out = child.wait_with_output().await.expect("Python ends");
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&out.stdout).expect("samples as JSON");
    samples
        .into_iter()
        .map(|(name, labels, value)| ((name, labels.into_iter().collect()), value))
        .collect()
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    key.sort();
    samples
        .get(&(name.to_string(), key))
        .copied()
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} among {:#?}", samples.keys()))
}

#[tokio::test]
async fn a_scrape_counts_what_came_in_what_was_refused_and_what_was_delivered() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(publish_http(&daemon, &http_event("lead.created")).await.id);
    }
    let invalid = daemon
        .post_events()
        .json(&json!({"name": "Not A Name!", "payload": {}}))
        .send()
        .await
        .expect("POST an invalid event");
    assert_eq!(invalid.status(), 422);
    let published = daemon
        .events_client()
        .publish(PublishRequest {
            event: Some(grpc_event("lead.created")),
        })
        .await
        .expect("Publish")
        .into_inner();
    ids.push(published.id);
    let expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    sink.until_ids(&expected, WAIT).await;

    // Results are counted once committed; give the last one a moment.
    let deadline = tokio::time::Instant::now() + WAIT;
    let samples = loop {
        let samples = scrape(&daemon).await;
        let key = (
            "hookyard_attempts_total".to_string(),
            vec![
                ("endpoint".to_string(), "crm".to_string()),
                ("outcome".to_string(), "success".to_string()),
            ],
        );
        if samples.get(&key) == Some(&4.0) || tokio::time::Instant::now() > deadline {
            break samples;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let events = "hookyard_events_total";
    assert_eq!(
        value(
            &samples,
            events,
            &[("door", "http"), ("outcome", "accepted")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            events,
            &[("door", "http"), ("outcome", "invalid")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            events,
            &[("door", "grpc"), ("outcome", "accepted")]
        ),
        1.0
    );
    assert_eq!(value(&samples, "hookyard_routed_total", &[]), 4.0);
    let crm = [("endpoint", "crm")];
    assert_eq!(
        value(
            &samples,
            "hookyard_attempts_total",
            &[("endpoint", "crm"), ("outcome", "success")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "hookyard_deliveries_total",
            &[("endpoint", "crm"), ("status", "succeeded")]
        ),
        4.0
    );
    assert_eq!(
        value(&samples, "hookyard_attempt_duration_seconds_count", &crm),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "hookyard_attempt_duration_seconds_bucket",
            &[("endpoint", "crm"), ("le", "+Inf")]
        ),
        4.0
    );
    assert_eq!(value(&samples, "hookyard_endpoint_in_flight", &crm), 0.0);
    assert_eq!(value(&samples, "hookyard_endpoint_backlog", &crm), 0.0);
    assert_eq!(
        value(&samples, "hookyard_endpoint_breaker_state", &crm),
        0.0
    );
    assert!(value(&samples, "hookyard_commit_batch_size_count", &[]) >= 1.0);
    assert!(value(&samples, "hookyard_commit_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(
        value(
            &samples,
            "hookyard_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
}

#[tokio::test]
async fn every_response_echoes_the_callers_request_id_or_a_new_one() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let answer = daemon
        .post_events()
        .header("x-request-id", "req-42")
        .json(&http_event("lead.created"))
        .send()
        .await
        .expect("POST /v1/events");
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["x-request-id"], "req-42");

    let refused = daemon
        .post_events()
        .json(&json!({"name": ""}))
        .send()
        .await
        .expect("POST /v1/events");
    assert_eq!(refused.status(), 422);
    let made = refused.headers()["x-request-id"]
        .to_str()
        .expect("an ASCII id");
    assert_eq!(made.len(), 36, "a UUID: {made}");

    let health = daemon
        .http
        .get(format!("http://{}/metrics", daemon.admin_addr()))
        .send()
        .await
        .expect("GET /metrics");
    assert!(health.headers().contains_key("x-request-id"));
}
