//! Without an allowlist, outbound delivery refuses loopback addresses.

use hookyard::v1::DeliveryStatus;

use crate::{
    api::{get_delivery, http_event, publish_http, Watch},
    harness::{Daemon, EndpointSpec, TestConfig},
    sink::{Behaviour, TestReceiver},
};

#[tokio::test]
async fn loopback_targets_are_refused_without_an_allowlist() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let endpoint = EndpointSpec::new("crm", &sink.url()).retry_schedule(&["0s"]);
    let config = TestConfig::new()
        .deny_private_targets()
        .route_leads(endpoint);
    let daemon = Daemon::start(config).await;
    let mut admin = daemon.admin_client();
    let mut watch = Watch::all(&mut admin).await;

    let event = publish_http(&daemon, &http_event("lead.created")).await;
    assert_eq!(event.matched, 1);
    let delivery = watch
        .until(&event.id, &[DeliveryStatus::Failed, DeliveryStatus::Dead])
        .await;

    let detail = get_delivery(&mut admin, delivery.id).await;
    let attempt = detail.attempts.first().expect("a recorded attempt");
    assert_eq!(attempt.status_code, 0, "no HTTP answer: {attempt:?}");
    let error = attempt.error.to_lowercase();
    assert!(
        ["127.0.0.1", "loopback", "not allowed"]
            .iter()
            .any(|word| error.contains(word)),
        "the error should say why the address was refused: {:?}",
        attempt.error
    );
    assert!(sink.drain().is_empty(), "the request reached the sink");
}
