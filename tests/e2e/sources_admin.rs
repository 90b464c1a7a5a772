//! Sources through the Admin API: create (the token and URL shown once), a
//! browser form post with its preflight, update with optimistic versions,
//! suspend/resume, token rotation with a grace period, and soft delete.

use std::time::Duration;

use hookyard::v1::{
    event_name_rule::Rule, CreateSourceRequest, DeleteSourceRequest, EventNameRule,
    GetSourceRequest, ListSourcesRequest, ResumeSourceRequest, RotateSourceTokenRequest, Source,
    SourceWithToken, SuspendSourceRequest, UpdateSourceRequest,
};
use serde_json::json;

use crate::{
    api::expect_error,
    harness::{Admin, Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
    webhooks::expect_accepted,
};

const SHOP: &str = "https://shop.example.com";

async fn create(admin: &mut Admin, id: &str) -> SourceWithToken {
    admin
        .create_source(CreateSourceRequest {
            source: Some(Source {
                id: id.into(),
                name: "Christmas signup form".into(),
                event_name: Some(EventNameRule {
                    rule: Some(Rule::Fixed("lead.signup".into())),
                }),
                schema_json: r#"{"required": ["email", "first_name"]}"#.into(),
                allowed_origins: vec![SHOP.into()],
                ..Source::default()
            }),
        })
        .await
        .expect("CreateSource")
        .into_inner()
}

fn form_post(daemon: &Daemon, path: &str, origin: &str) -> reqwest::RequestBuilder {
    daemon
        .http
        .post(daemon.url(path))
        .header("origin", origin)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=ada%40example.com&first_name=Ada&business_name=Ada%27s+Salon")
}

fn preflight(daemon: &Daemon, path: &str, origin: &str) -> reqwest::RequestBuilder {
    daemon
        .http
        .request(reqwest::Method::OPTIONS, daemon.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
}

#[tokio::test]
async fn a_browser_form_from_an_allowed_origin_is_accepted_and_others_refused() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let created = create(&mut admin, "signup").await;
    assert_eq!(created.url_path, format!("/webhook/v1/{}", created.token));
    assert!(created.token.len() >= 22);
    let path = created.url_path.clone();

    let ok = preflight(&daemon, &path, SHOP)
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(ok.status().as_u16(), 204);
    let allow_origin = ok.headers().get("access-control-allow-origin");
    assert_eq!(allow_origin.and_then(|v| v.to_str().ok()), Some(SHOP));
    let methods = ok.headers().get("access-control-allow-methods");
    assert!(methods
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("POST")));
    let posted = form_post(&daemon, &path, SHOP).send().await.expect("POST");
    let allow_origin = posted.headers().get("access-control-allow-origin").cloned();
    assert_eq!(
        allow_origin.as_ref().and_then(|v| v.to_str().ok()),
        Some(SHOP)
    );
    expect_accepted(posted).await;
    let got = sink.next().await.json();
    assert_eq!(got["event_name"], "lead.signup");
    assert_eq!(
        got["payload"],
        json!({"email": "ada@example.com", "first_name": "Ada", "business_name": "Ada's Salon"})
    );

    // A CloudEvents sender validating the URL first gets its handshake.
    let handshake = daemon
        .http
        .request(reqwest::Method::OPTIONS, daemon.url(&path))
        .header("webhook-request-origin", "eventgrid.example.com")
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(handshake.status().as_u16(), 200);
    let allowed = handshake.headers().get("webhook-allowed-origin");
    assert_eq!(
        allowed.and_then(|v| v.to_str().ok()),
        Some("eventgrid.example.com")
    );

    let evil = "https://evil.example.com";
    let refused = preflight(&daemon, &path, evil)
        .send()
        .await
        .expect("OPTIONS");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    expect_error(refused, 403, "forbidden").await;
    let refused = form_post(&daemon, &path, evil).send().await.expect("POST");
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    expect_error(refused, 403, "forbidden").await;
    assert!(sink.drain().is_empty(), "a refused form was delivered");

    // A failing field is reported to the allowed origin, readable by its page.
    let missing = daemon
        .http
        .post(daemon.url(&path))
        .header("origin", SHOP)
        .form(&[("email", "ada@example.com")])
        .send()
        .await
        .expect("POST");
    assert!(missing
        .headers()
        .get("access-control-allow-origin")
        .is_some());
    let error = expect_error(missing, 422, "validation_failed").await;
    assert_eq!(error["fields"][0]["pointer"], "/first_name");
}

#[tokio::test]
async fn update_suspend_resume_and_soft_delete() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let created = create(&mut admin, "partner").await;
    let path = created.url_path.clone();
    let send = || form_post(&daemon, &path, SHOP).send();
    expect_accepted(send().await.expect("POST")).await;

    let mut source = created.source.expect("a source");
    let stale_version = source.version;
    source.description = "Partner integration".into();
    let updated = admin
        .update_source(UpdateSourceRequest {
            source: Some(source.clone()),
        })
        .await
        .expect("UpdateSource")
        .into_inner();
    assert_eq!(updated.version, stale_version + 1);
    source.version = stale_version;
    let stale = admin
        .update_source(UpdateSourceRequest {
            source: Some(source),
        })
        .await
        .expect_err("a stale version is refused");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    let mut bad = updated.clone();
    bad.allowed_cidrs = vec!["not-a-cidr".into()];
    bad.schema_json = r#"{"type": "nope"}"#.into();
    let invalid = admin
        .update_source(UpdateSourceRequest { source: Some(bad) })
        .await
        .expect_err("an invalid source is refused");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("allowed_cidrs"), "{invalid:?}");

    admin
        .suspend_source(SuspendSourceRequest {
            id: "partner".into(),
        })
        .await
        .expect("SuspendSource");
    let suspended = expect_error(send().await.expect("POST"), 403, "forbidden").await;
    assert!(suspended["message"]
        .as_str()
        .is_some_and(|m| m.contains("SUSPENDED")));
    admin
        .resume_source(ResumeSourceRequest {
            id: "partner".into(),
        })
        .await
        .expect("ResumeSource");
    expect_accepted(send().await.expect("POST")).await;

    admin
        .delete_source(DeleteSourceRequest {
            id: "partner".into(),
        })
        .await
        .expect("DeleteSource");
    let deleted = expect_error(send().await.expect("POST"), 404, "not_found").await;
    let never = expect_error(
        form_post(
            &daemon,
            "/webhook/v1/tok_never_existed_0123456789abcdefghijk",
            SHOP,
        )
        .send()
        .await
        .expect("POST"),
        404,
        "not_found",
    )
    .await;
    assert_eq!(deleted, never, "deleted and unknown tokens answer alike");
    let kept = admin
        .get_source(GetSourceRequest {
            id: "partner".into(),
        })
        .await
        .expect("a deleted source is still readable")
        .into_inner();
    assert!(kept.deleted_at.is_some());
    let live = admin
        .list_sources(ListSourcesRequest::default())
        .await
        .expect("ListSources")
        .into_inner();
    assert!(live.sources.is_empty());
    assert_eq!(live.unknown_token_rejections, 2);
}

#[tokio::test]
async fn a_rotated_token_works_until_its_grace_period_ends() {
    let sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let old = create(&mut admin, "rotating").await;
    let rotated = admin
        .rotate_source_token(RotateSourceTokenRequest {
            id: "rotating".into(),
            grace_period: Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
        })
        .await
        .expect("RotateSourceToken")
        .into_inner();
    assert_ne!(rotated.token, old.token);
    let status = |path: String| {
        let request = form_post(&daemon, &path, SHOP);
        async move { request.send().await.expect("POST").status().as_u16() }
    };
    assert_eq!(status(old.url_path.clone()).await, 202);
    assert_eq!(status(rotated.url_path.clone()).await, 202);
    let grace_end = rotated
        .source
        .and_then(|s| s.previous_token_expires_at)
        .expect("the old token's expiry is shown");
    assert!(grace_end.seconds > 0);

    // Poll until the grace period is over; the old token must not outlive it
    // by more than the wait.
    let deadline = tokio::time::Instant::now() + WAIT;
    while status(old.url_path.clone()).await == 202 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old token never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(old.url_path.clone()).await, 404);
    assert_eq!(status(rotated.url_path.clone()).await, 202);
}
