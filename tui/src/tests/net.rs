//! The runner's streams: the live stream's backoff while the daemon is away,
//! then live again; a job followed until it ends.

use std::{sync::Arc, time::Duration};

use hookyard::v1::{DeliveryStatus, DeliveryUpdate};
use tokio::sync::mpsc;

use crate::{
    net::{Command, ConnState, Runner, Update},
    testing::*,
};

fn conn(update: &Update) -> Option<ConnState> {
    match update {
        Update::Conn(state) => Some(state.clone()),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn the_stream_reconnects_with_backoff_and_resumes() {
    let fake = Arc::new(FakeAdmin::with(|s| {
        s.watch_failures = 3;
        s.watch_updates = vec![DeliveryUpdate {
            delivery: Some(delivery(1, "lead.created", DeliveryStatus::Succeeded)),
            ..DeliveryUpdate::default()
        }];
    }));
    let (tx, mut rx) = mpsc::channel(64);
    let mut runner = Runner::new(fake.clone(), tx);
    let started = tokio::time::Instant::now();
    runner.run(vec![Command::Watch(Default::default())]);

    // The latest deliveries come first, before the stream is opened.
    assert!(matches!(
        rx.recv().await.expect("the watch task runs"),
        Update::Recent(_)
    ));
    let mut seen = Vec::new();
    while seen.len() < 7 {
        seen.push(rx.recv().await.expect("the watch task runs"));
    }
    let states: Vec<_> = seen.iter().map(conn).collect();
    let reconnecting = |attempt| {
        Some(ConnState::Reconnecting {
            attempt,
            error: "daemon unreachable: connection refused".to_string(),
        })
    };
    assert_eq!(states[0], Some(ConnState::Connecting));
    assert_eq!(
        states[1..4],
        [reconnecting(1), reconnecting(2), reconnecting(3)]
    );
    assert_eq!(states[4], Some(ConnState::Live));
    assert!(matches!(&seen[5], Update::Delivery(u) if u.delivery.as_ref().unwrap().id == 1));
    // The stream ended (the daemon went away): reconnecting again, from the
    // shortest backoff since it had been live.
    assert!(matches!(
        &seen[6],
        Update::Conn(ConnState::Reconnecting { attempt: 1, .. })
    ));
    // 250 ms + 500 ms + 1 s of backoff before it was live.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1750) && waited < Duration::from_millis(2000),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_is_said_once_and_not_retried() {
    let fake = Arc::new(FakeAdmin::with(|s| {
        s.fail_all = Some(crate::api::ApiError::new(
            tonic::Code::Unauthenticated,
            "bad token",
        ));
    }));
    let (tx, mut rx) = mpsc::channel(64);
    let mut runner = Runner::new(fake, tx);
    runner.run(vec![Command::Watch(Default::default())]);
    assert_eq!(conn(&rx.recv().await.unwrap()), Some(ConnState::Connecting));
    let refused = conn(&rx.recv().await.unwrap());
    assert!(
        matches!(&refused, Some(ConnState::Refused(e)) if e.contains("token refused")),
        "{refused:?}"
    );
    let mut app = crate::app::App::new("http://127.0.0.1:8081");
    app.apply(Update::Conn(refused.unwrap()));
    crate::assert_screen!("live_bad_token_80x24", app, 80, 24);
    // Nothing more: the task ended.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn the_runs_stream_reports_its_own_state_and_reconnects() {
    let fake = Arc::new(FakeAdmin::with(|s| {
        s.run_updates = vec![hookyard::v1::RunUpdate {
            run: Some(run("ada", "drip", hookyard::v1::RunState::Waiting, 0)),
            ..Default::default()
        }];
    }));
    let (tx, mut rx) = mpsc::channel(64);
    let mut runner = Runner::new(fake, tx);
    runner.run(vec![Command::WatchRuns(Default::default())]);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(rx.recv().await.expect("the watch task runs"));
    }
    assert!(matches!(seen[0], Update::RunsConn(ConnState::Connecting)));
    assert!(matches!(seen[1], Update::RunsConn(ConnState::Live)));
    assert!(matches!(&seen[2], Update::Run(u) if u.run.as_ref().unwrap().id == "ada"));
    // The fake's stream ended, as a daemon going away would end it.
    assert!(matches!(
        &seen[3],
        Update::RunsConn(ConnState::Reconnecting { attempt: 1, .. })
    ));
    // The deliveries' stream is not this one: it was never started.
    assert!(!seen.iter().any(|u| matches!(u, Update::Conn(_))));
}

#[tokio::test]
async fn a_watched_job_reports_each_page_then_ends_quietly() {
    use hookyard::v1::{Job, JobState};
    let job = |scanned, state: JobState| Job {
        id: "job-1".to_string(),
        state: state.into(),
        scanned,
        ..Job::default()
    };
    let fake = Arc::new(FakeAdmin::with(|s| {
        s.job_updates = vec![
            job(0, JobState::Running),
            job(500, JobState::Running),
            job(800, JobState::Succeeded),
        ];
    }));
    let (tx, mut rx) = mpsc::channel(64);
    let mut runner = Runner::new(fake.clone(), tx);
    runner.run(vec![Command::WatchJob("job-1".to_string())]);
    let mut scanned = Vec::new();
    for _ in 0..3 {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Update::Job(job))) => scanned.push((job.scanned, job.state())),
            other => panic!("expected a job update, got {other:?}"),
        }
    }
    assert_eq!(
        scanned,
        [
            (0, JobState::Running),
            (500, JobState::Running),
            (800, JobState::Succeeded)
        ]
    );
    // The stream ended with the job: nothing more, no list read.
    assert!(tokio::time::timeout(Duration::from_millis(100), rx.recv())
        .await
        .is_err());
}

#[tokio::test]
async fn a_job_stream_that_breaks_reads_the_list_once() {
    let fake = Arc::new(FakeAdmin::with(|s| {
        s.fail_all = Some(crate::api::ApiError::new(
            tonic::Code::Unavailable,
            "connection refused",
        ));
    }));
    let (tx, mut rx) = mpsc::channel(64);
    let mut runner = Runner::new(fake.clone(), tx);
    runner.run(vec![Command::WatchJob("job-1".to_string())]);
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(Update::Jobs(Err(e)))) => assert_eq!(e.code, tonic::Code::Unavailable),
        other => panic!("expected the jobs list, got {other:?}"),
    }
}
