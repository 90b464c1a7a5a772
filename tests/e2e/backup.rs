//! `hookyard backup FILE` while the daemon runs and takes events; restoring
//! the copy (a data dir holding it as `hookyard.db`) starts a daemon that has
//! the events and the configuration made before the backup.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use hookyard::v1::{CreateSubscriptionRequest, GetSubscriptionRequest, Subscription};

use crate::{
    api::{http_event, listed_event_ids, publish_http},
    harness::{Daemon, TestConfig, WAIT},
    sink::{Behaviour, TestReceiver},
};

#[tokio::test]
async fn a_backup_taken_under_load_restores_events_and_configuration() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let mut admin = daemon.admin_client();
    let made = admin
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                name: "orders".to_string(),
                patterns: vec!["order.*".to_string()],
                target: "endpoint:crm".to_string(),
                enabled: true,
                ..Subscription::default()
            }),
        })
        .await
        .expect("CreateSubscription")
        .into_inner();
    let mut before = Vec::new();
    for _ in 0..30 {
        before.push(publish_http(&daemon, &http_event("lead.created")).await.id);
    }
    let expected: Vec<&str> = before.iter().map(String::as_str).collect();
    sink.until_ids(&expected, WAIT).await;

    // Publishing goes on while the copy is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let (client, url) = (daemon.http.clone(), daemon.url("/v1/events"));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let answer = client
                    .post(&url)
                    .bearer_auth(crate::harness::API_KEY)
                    .json(&http_event("lead.created"))
                    .send()
                    .await
                    .expect("POST /v1/events");
                assert_eq!(answer.status(), 202);
                sent += 1;
            }
            sent
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("copy.db");
    let file_arg = file.to_str().expect("a UTF-8 path");
    let (status, stdout, stderr) = daemon.run_subcommand_with("backup", &[file_arg]).await;
    stop.store(true, Ordering::Relaxed);
    let during = load.await.expect("the publisher");
    assert!(status.success(), "hookyard backup: {stdout}{stderr}");
    assert!(during > 0, "events were published while the copy was taken");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("the copy")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the copy is private: {mode:o}");
    }

    // A second backup never overwrites the first.
    let (again, _, stderr) = daemon.run_subcommand_with("backup", &[file_arg]).await;
    assert!(!again.success());
    assert!(stderr.contains("already exists"), "{stderr}");

    // Restore: a data dir with the copy as its database.
    let restored_dir = tempfile::tempdir().expect("a temp dir");
    let data = restored_dir.path().join("data");
    std::fs::create_dir(&data).expect("a data dir");
    std::fs::copy(&file, data.join("hookyard.db")).expect("put the copy in place");
    let restored = Daemon::start(TestConfig::crm(&sink.url()).data_dir(&data)).await;
    let mut admin = restored.admin_client();
    let ids = listed_event_ids(&mut admin).await;
    for id in &before {
        assert!(
            ids.contains(id),
            "event {id} is missing from the restored copy"
        );
    }
    let subscription = admin
        .get_subscription(GetSubscriptionRequest { id: made.id })
        .await
        .expect("the subscription made before the backup")
        .into_inner();
    assert_eq!(subscription.name, "orders");
}
