//! The webhook checks, each with a request it refuses and one it lets
//! through: status, caller address (peer and trusted proxy), rate limit,
//! body size / type / syntax, schema, replay. Refusals store nothing and are
//! counted per source and reason.

use hookyard::v1::ListSourcesRequest;
use serde_json::{json, Value};

use crate::{
    api::{expect_error, pointers},
    harness::{Daemon, TestConfig},
    sink::{Behaviour, TestReceiver},
    webhooks::{expect_accepted, post, post_json, source, token_for},
};

fn config(sink: &TestReceiver) -> TestConfig {
    TestConfig::crm(&sink.url())
        .body_limit(1024)
        .trusted_proxies(&["127.0.0.1/32"])
        .source(source("open", "lead.open", json!({})))
        .source(source("off", "lead.off", json!({"status": "inactive"})))
        .source(source("held", "lead.held", json!({"status": "suspended"})))
        .source(source("far", "lead.far", json!({"allowed_cidrs": ["10.0.0.0/8"]})))
        .source(source("near", "lead.near", json!({"allowed_cidrs": ["127.0.0.0/8"]})))
        .source(source(
            "slow",
            "lead.slow",
            json!({"rate_limit": {"per_second": 1, "burst": 2}}),
        ))
        .source(source(
            "strict",
            "lead.strict",
            json!({"schema": {
                "type": "object",
                "required": ["email", "first_name"],
                "properties": {"score": {"type": "integer"}, "email": {"type": "string", "format": "email"}}
            }}),
        ))
        .source(source(
            "typed",
            "unused.name",
            json!({"event_name": {"template": "lead.{{ payload.kind }}"}, "required": ["kind"]}),
        ))
}

#[tokio::test]
async fn each_check_refuses_its_case_and_passes_the_good_one() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(config(&sink)).await;
    let lead = json!({"email": "ada@example.com", "first_name": "Ada"});

    // 1. Unknown token: 404; a known one passes.
    let unknown = post(&daemon, "tok_nobody_0123456789abcdefghijklmnop")
        .json(&lead)
        .send()
        .await
        .expect("post");
    expect_error(unknown, 404, "not_found").await;
    expect_accepted(post_json(&daemon, "open", &lead).await).await;
    let got = sink.next().await.json();
    assert_eq!(got["event_name"], "lead.open");
    assert_eq!(got["payload"], lead);

    // 2. INACTIVE and SUSPENDED: 403 naming the status.
    let off = expect_error(post_json(&daemon, "off", &lead).await, 403, "forbidden").await;
    assert!(
        off["message"]
            .as_str()
            .is_some_and(|m| m.contains("INACTIVE")),
        "{off}"
    );
    let held = expect_error(post_json(&daemon, "held", &lead).await, 403, "forbidden").await;
    assert!(
        held["message"]
            .as_str()
            .is_some_and(|m| m.contains("SUSPENDED")),
        "{held}"
    );

    // 3. Address: the peer (127.0.0.1) is outside 10/8 and inside 127/8; a
    // trusted proxy's X-Forwarded-For hop counts, a client's earlier hop not.
    expect_error(post_json(&daemon, "far", &lead).await, 403, "forbidden").await;
    expect_accepted(post_json(&daemon, "near", &lead).await).await;
    let via_proxy = post(&daemon, &token_for("far"))
        .header("x-forwarded-for", "10.1.2.3")
        .json(&lead)
        .send()
        .await
        .expect("post");
    expect_accepted(via_proxy).await;
    let spoofed = post(&daemon, &token_for("far"))
        .header("x-forwarded-for", "10.1.2.3, 203.0.113.5")
        .json(&lead)
        .send()
        .await
        .expect("post");
    expect_error(spoofed, 403, "forbidden").await;

    // 4. Rate limit: a burst of two passes, the third waits.
    expect_accepted(post_json(&daemon, "slow", &lead).await).await;
    expect_accepted(post_json(&daemon, "slow", &lead).await).await;
    let limited = post_json(&daemon, "slow", &lead).await;
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(retry_after >= 1);
    expect_error(limited, 429, "rate_limited").await;

    // 5. Body: too large, wrong type, malformed (with line and column).
    let big = json!({"email": "x".repeat(2000)});
    expect_error(
        post_json(&daemon, "open", &big).await,
        413,
        "payload_too_large",
    )
    .await;
    let text = post(&daemon, &token_for("open"))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .expect("post");
    expect_error(text, 415, "unsupported_media_type").await;
    let broken = post(&daemon, &token_for("open"))
        .header("content-type", "application/json")
        .body("{\n  \"email\": \n}")
        .send()
        .await
        .expect("post");
    let error = expect_error(broken, 400, "malformed_json").await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 3")),
        "{error}"
    );

    // 7. Schema: every failing field by pointer; a good body passes.
    let bad = json!({"score": "high", "email": 3});
    let error = expect_error(
        post_json(&daemon, "strict", &bad).await,
        422,
        "validation_failed",
    )
    .await;
    let got = pointers(&error);
    for expected in ["/first_name", "/score", "/email"] {
        assert!(
            got.contains(&expected.to_string()),
            "{expected} missing from {error}"
        );
    }
    let good = json!({"email": "ada@example.com", "first_name": "Ada", "score": 87});
    expect_accepted(post_json(&daemon, "strict", &good).await).await;

    // A templated name from the payload, and a required list as a schema.
    expect_error(
        post_json(&daemon, "typed", &json!({})).await,
        422,
        "validation_failed",
    )
    .await;
    expect_accepted(post_json(&daemon, "typed", &json!({"kind": "signup"})).await).await;

    let mut names: Vec<String> = Vec::new();
    for _ in 0..6 {
        names.push(
            sink.next().await.json()["event_name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    names.sort();
    assert_eq!(
        names,
        [
            "lead.far",
            "lead.near",
            "lead.signup",
            "lead.slow",
            "lead.slow",
            "lead.strict"
        ]
    );
    assert!(sink.drain().is_empty(), "a refused request was delivered");

    // Every refusal was counted for its source and reason.
    let listed = daemon
        .admin_client()
        .list_sources(ListSourcesRequest::default())
        .await
        .expect("ListSources")
        .into_inner();
    assert_eq!(listed.unknown_token_rejections, 1);
    let count = |id: &str, reason: &str| {
        listed
            .sources
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.rejections.get(reason).copied())
            .unwrap_or(0)
    };
    assert_eq!(count("off", "inactive"), 1);
    assert_eq!(count("held", "suspended"), 1);
    assert_eq!(count("far", "address_not_allowed"), 2);
    assert_eq!(count("slow", "rate_limited"), 1);
    assert_eq!(count("open", "payload_too_large"), 1);
    assert_eq!(count("open", "unsupported_media_type"), 1);
    assert_eq!(count("open", "malformed_json"), 1);
    assert_eq!(count("strict", "validation_failed"), 1);
}

#[tokio::test]
async fn a_repeated_delivery_id_is_answered_but_routed_once() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(config(&sink)).await;
    let lead = json!({"email": "ada@example.com", "first_name": "Ada"});
    let send = || {
        post(&daemon, &token_for("open"))
            .header("idempotency-key", "delivery-42")
            .json(&lead)
            .send()
    };
    let first = expect_accepted(send().await.expect("post")).await;
    let again = expect_accepted(send().await.expect("post")).await;
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["duplicate"], false);
    assert_eq!(again["duplicate"], true);
    // Without a delivery id, the same body is a new event.
    let other = expect_accepted(post_json(&daemon, "open", &lead).await).await;
    assert_ne!(other["id"], first["id"]);

    let ids: Vec<Value> = vec![
        sink.next().await.json()["id"].clone(),
        sink.next().await.json()["id"].clone(),
    ];
    assert!(
        ids.contains(&first["id"]) && ids.contains(&other["id"]),
        "{ids:?}"
    );
    // A changed body under the same delivery id is a conflict, not a new event.
    let changed = post(&daemon, &token_for("open"))
        .header("idempotency-key", "delivery-42")
        .json(&json!({"email": "eve@example.com", "first_name": "Eve"}))
        .send()
        .await
        .expect("post");
    expect_error(changed, 409, "conflict").await;
    assert!(sink.drain().is_empty(), "a duplicate was routed twice");
}
