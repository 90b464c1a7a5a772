//! SIGHUP re-reads the config file and applies its declared resources
//! without a restart; a file with a mistake changes nothing and the daemon
//! goes on.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    api::publish_http,
    harness::{Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

/// Publishes `name` until it matches `matched` subscriptions.
async fn until_matched(daemon: &Daemon, name: &str, matched: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let accepted = publish_http(daemon, &json!({"name": name, "payload": {}})).await;
        if accepted.matched == matched {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still matches {} subscriptions, not {matched}",
            accepted.matched
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_applies_a_new_subscription_and_refuses_a_broken_file() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let config = TestConfig::crm(&sink.url());
    let mut daemon = Daemon::start(config.clone()).await;
    until_matched(&daemon, "order.created", 0).await;

    daemon.reload_with(
        config
            .clone()
            .subscription("orders", &["order.*"], &[], "endpoint:crm"),
    );
    until_matched(&daemon, "order.created", 1).await;

    // A pattern that does not parse: refused, nothing changes.
    daemon.reload_with(
        config
            .clone()
            .subscription("orders", &["order.*"], &[], "endpoint:crm")
            .subscription("broken", &["bad..pattern"], &[], "endpoint:crm")
            .subscription("refunds", &["refund.*"], &[], "endpoint:crm"),
    );
    let deadline = Instant::now() + WAIT;
    while !daemon.log().contains("Reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        daemon.log().contains("broken"),
        "the refusal names the entry"
    );
    until_matched(&daemon, "refund.created", 0).await;
    until_matched(&daemon, "order.created", 1).await;
}
