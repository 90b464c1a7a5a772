//! Inbound signatures, made the way each scheme documents them — computed
//! here, independently of the server — verify; tampered, stale, empty and
//! truncated ones are refused with 401.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::{
    api::expect_error,
    harness::{Daemon, TestConfig},
    sink::{Behaviour, TestReceiver},
    webhooks::{expect_accepted, post, source, token_for},
};

/// The Standard Webhooks test vector's secret, message id, timestamp and body.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TIMESTAMP: i64 = 1614265330;
const SW_BODY: &str = r#"{"test": 2432232314}"#;
const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
/// GitHub's documented example.
const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_BODY: &str = "Hello, World!";
const GH_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
const STRIPE_SECRET: &str = "whsec_test_stripe_endpoint_secret";
const HMAC_SECRET: &str = "a-shared-secret-for-generic-hmac";

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// `v1,<base64 HMAC of "{id}.{ts}.{body}">` with the whsec_ key's bytes.
fn standard_signature(id: &str, ts: i64, body: &str) -> String {
    let key = BASE64
        .decode(SW_SECRET.trim_start_matches("whsec_"))
        .expect("base64");
    format!(
        "v1,{}",
        BASE64.encode(hmac(&key, format!("{id}.{ts}.{body}").as_bytes()))
    )
}

/// Stripe's documented construction: `t=<ts>,v1=<hex HMAC of "{t}.{body}">`.
fn stripe_header(ts: i64, body: &str, secret: &str) -> String {
    let signature = hex::encode(hmac(secret.as_bytes(), format!("{ts}.{body}").as_bytes()));
    format!("t={ts},v1={signature}")
}

async fn daemon(sink: &TestReceiver) -> Daemon {
    let config = TestConfig::crm(&sink.url())
        .source(source(
            "sw",
            "lead.sw",
            json!({"signature": {"scheme": "standard_webhooks", "secret": SW_SECRET}}),
        ))
        .source(source(
            "gh",
            "lead.gh",
            json!({"signature": {"scheme": "github", "secret": GH_SECRET}}),
        ))
        .source(source(
            "stripe",
            "lead.stripe",
            json!({"signature": {"scheme": "stripe", "secret": STRIPE_SECRET}}),
        ))
        .source(source(
            "hmac",
            "lead.hmac",
            json!({"signature": {"scheme": "hmac_sha256", "secret": HMAC_SECRET,
                "header": "x-signature", "encoding": "base64"}}),
        ));
    Daemon::start(config).await
}

fn signed(
    daemon: &Daemon,
    id: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: &str,
) -> reqwest::RequestBuilder {
    let mut request = post(daemon, &token_for(id))
        .header("content-type", content_type)
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request
}

#[tokio::test]
async fn standard_webhooks_signatures() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = daemon(&sink).await;
    let send = |ts: i64, body: &'static str, signature: String| {
        signed(
            &daemon,
            "sw",
            "application/json",
            &[
                ("webhook-id", SW_ID.to_string()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", signature),
            ],
            body,
        )
        .send()
    };
    // The published vector, as is: right signature, but five years old.
    assert_eq!(
        standard_signature(SW_ID, SW_TIMESTAMP, SW_BODY),
        SW_SIGNATURE
    );
    let stale = send(SW_TIMESTAMP, SW_BODY, SW_SIGNATURE.into())
        .await
        .expect("post");
    expect_error(stale, 401, "invalid_signature").await;
    // Signed now, with several signatures (a rotation): passes.
    let ts = now();
    let good = standard_signature(SW_ID, ts, SW_BODY);
    let several = format!("v1,bm90IGl0 {good}");
    let first = expect_accepted(send(ts, SW_BODY, several).await.expect("post")).await;
    assert_eq!(first["duplicate"], false);
    // The sender's retry (same webhook-id) is answered, not routed again.
    let retry = expect_accepted(send(ts, SW_BODY, good.clone()).await.expect("post")).await;
    assert_eq!(retry["duplicate"], true);
    assert_eq!(retry["id"], first["id"]);
    // Tampered body, empty and truncated signatures: refused.
    let tampered = send(ts, r#"{"test": 2432232315}"#, good.clone())
        .await
        .expect("post");
    expect_error(tampered, 401, "invalid_signature").await;
    for bad in [
        String::new(),
        "v1,".into(),
        good[..good.len() - 6].to_string(),
    ] {
        let response = send(ts, SW_BODY, bad).await.expect("post");
        expect_error(response, 401, "invalid_signature").await;
    }
    let missing = signed(&daemon, "sw", "application/json", &[], SW_BODY)
        .send()
        .await
        .expect("post");
    expect_error(missing, 401, "invalid_signature").await;
}

#[tokio::test]
async fn github_signatures() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = daemon(&sink).await;
    // GitHub's example body is not JSON; posted as a form it is accepted,
    // and the signature covers the raw bytes.
    let form = "application/x-www-form-urlencoded";
    let header = |sig: &str| vec![("x-hub-signature-256", sig.to_string())];
    let ok = signed(&daemon, "gh", form, &header(GH_SIGNATURE), GH_BODY)
        .send()
        .await
        .expect("post");
    expect_accepted(ok).await;
    assert_eq!(sink.next().await.json()["event_name"], "lead.gh");
    let truncated = &GH_SIGNATURE[..40];
    for (body, sig) in [
        ("Hello, World?", GH_SIGNATURE),
        (GH_BODY, truncated),
        (GH_BODY, "sha256="),
        (GH_BODY, ""),
    ] {
        let response = signed(&daemon, "gh", form, &header(sig), body)
            .send()
            .await
            .expect("post");
        expect_error(response, 401, "invalid_signature").await;
    }
}

#[tokio::test]
async fn stripe_and_generic_hmac_signatures() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = daemon(&sink).await;
    let body = r#"{"id":"evt_1","type":"invoice.paid","data":{"object":{}}}"#;
    let json = "application/json";
    let ts = now();
    let good = stripe_header(ts, body, STRIPE_SECRET);
    let other = stripe_header(ts, body, "whsec_some_other_secret_value");
    // Several v1 signatures (Stripe sends more during a secret roll).
    let several = format!("{other},{}", good.split(',').nth(1).expect("v1"));
    // The second post repeats Stripe's event id: a duplicate, routed once.
    for (header, duplicate) in [(good.clone(), false), (several, true)] {
        let response = signed(
            &daemon,
            "stripe",
            json,
            &[("stripe-signature", header)],
            body,
        )
        .send()
        .await
        .expect("post");
        assert_eq!(expect_accepted(response).await["duplicate"], duplicate);
    }
    let stale = stripe_header(ts - 600, body, STRIPE_SECRET);
    for header in [other, stale, format!("t={ts},v1="), "t=,v1=00".into()] {
        let response = signed(
            &daemon,
            "stripe",
            json,
            &[("stripe-signature", header)],
            body,
        )
        .send()
        .await
        .expect("post");
        expect_error(response, 401, "invalid_signature").await;
    }
    let tampered = signed(&daemon, "stripe", json, &[("stripe-signature", good)], "{}")
        .send()
        .await
        .expect("post");
    expect_error(tampered, 401, "invalid_signature").await;

    let generic = BASE64.encode(hmac(HMAC_SECRET.as_bytes(), body.as_bytes()));
    let ok = signed(
        &daemon,
        "hmac",
        json,
        &[("x-signature", generic.clone())],
        body,
    )
    .send()
    .await
    .expect("post");
    expect_accepted(ok).await;
    let hex_instead = hex::encode(hmac(HMAC_SECRET.as_bytes(), body.as_bytes()));
    for sig in [hex_instead, generic[..10].to_string(), String::new()] {
        let response = signed(&daemon, "hmac", json, &[("x-signature", sig)], body)
            .send()
            .await
            .expect("post");
        expect_error(response, 401, "invalid_signature").await;
    }
}
