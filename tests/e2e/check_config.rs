//! `hookyard check-config` makes every check `serve` makes: a file it
//! refuses, `serve` refuses for the same reason, and a file it passes
//! starts.

use serde_json::json;

use crate::harness::{check_config, refused_start, Daemon, EndpointSpec, TestConfig};

/// Files broken in the ways an operator's file breaks: each caught where it
/// enters (the endpoint, the subscription, the source, the flow).
fn broken() -> Vec<(&'static str, TestConfig)> {
    vec![
        (
            "endpoints[0]",
            TestConfig::new().endpoint(EndpointSpec::new("crm", "ftp://127.0.0.1:9/hook")),
        ),
        (
            "(bad-pattern)",
            TestConfig::crm("http://127.0.0.1:9/hook").subscription(
                "bad-pattern",
                &["lead.*x"],
                &[],
                "endpoint:crm",
            ),
        ),
        (
            "sources[0]",
            TestConfig::new().source(json!({
                "id": "web", "name": "web", "token_env": "HOOKYARD_CHECK_CONFIG_UNSET",
                "event_name": {"fixed": "form.submitted"},
            })),
        ),
        (
            "flow `f1`",
            TestConfig::new().flow(json!({
                "id": "f1",
                "steps": [{"id": "a", "http": {"url": "{{ nope(", "method": "POST"}}],
            })),
        ),
    ]
}

#[tokio::test]
async fn what_check_config_refuses_serve_refuses_and_what_it_passes_starts() {
    for (what, config) in broken() {
        let (checked, check_err) = check_config(config.clone()).await;
        assert!(!checked.success(), "check-config passed a broken {what}");
        assert!(
            check_err.contains(what),
            "check-config should name {what}: {check_err}"
        );
        let (served, serve_err) = refused_start(config).await;
        assert!(!served.success(), "serve started with a broken {what}");
        assert!(
            serve_err.contains(what),
            "serve should name {what}: {serve_err}"
        );
    }

    let good = TestConfig::crm("http://127.0.0.1:9/hook");
    let (checked, check_err) = check_config(good.clone()).await;
    assert!(
        checked.success(),
        "check-config refused a good file: {check_err}"
    );
    Daemon::start(good).await;
}
