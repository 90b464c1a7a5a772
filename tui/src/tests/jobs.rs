//! Ordering keys on deliveries and endpoints, resend, and the jobs: replay,
//! bulk retry of dead letters, recover since, and the jobs panel with its
//! progress and cancel.

use crossterm::event::KeyCode;
use hookyard::v1::{
    DeliveryStatus, EndpointState, Job, JobState, ReplayEventsRequest, RetryDeadLettersRequest,
};
use prost_types::Timestamp;

use crate::{
    app::{App, Flash, Mode},
    assert_screen,
    net::{Command, ConnState, Update},
    screens::detail::DetailView,
    testing::*,
};

/// Unix seconds the tests' clock stands at.
const NOW: u64 = T0 as u64 + 3600;

fn fake() -> FakeAdmin {
    FakeAdmin::with(|s| {
        s.subscriptions.insert(
            "sub-1".to_string(),
            subscription("sub-1", "leads-to-crm", &["lead.*"], "endpoint:crm"),
        );
        s.endpoints.insert(
            "crm".to_string(),
            endpoint(
                "crm",
                "https://crm.example.com/hook",
                EndpointState::Enabled,
            ),
        );
        for id in [7, 8] {
            let mut d = delivery(id, "lead.created", DeliveryStatus::Dead);
            d.last_error = "HTTP 500".to_string();
            s.deliveries.push(d);
        }
        let mut parked = delivery(9, "lead.updated", DeliveryStatus::Pending);
        parked.ordering_key = "cust-42".to_string();
        parked.parked = true;
        parked.next_attempt_at = None;
        parked.also_subscription_ids = vec!["sub-2".to_string(), "sub-3".to_string()];
        s.deliveries.push(parked);
        let mut detail = detail(9);
        detail.delivery = s.deliveries.last().cloned();
        s.details.insert(9, detail);
    })
}

async fn on_tab(fake: &FakeAdmin, tab: char) -> App {
    let mut app = App::new("http://127.0.0.1:8081");
    app.now = NOW;
    app.apply(Update::Conn(ConnState::Live));
    press(&mut app, KeyCode::Char(tab));
    settle(&mut app, fake).await;
    app
}

fn ago(seconds: u64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: (NOW - seconds) as i64,
        nanos: 0,
    })
}

#[tokio::test]
async fn a_parked_delivery_says_what_it_waits_for_and_can_be_resent() {
    let fake = fake();
    let mut app = on_tab(&fake, '1').await;
    app.mode = Mode::Detail(Box::new(DetailView::new(9)));
    app.apply(Update::Detail(9, fake.get_delivery_now(9)));
    let screen = draw(&app, 100, 24);
    for words in [
        "parked",
        "waits for an earlier delivery with the same key",
        "ordering key cust-42",
        "also for     sub-2, sub-3",
    ] {
        assert!(screen.contains(words), "{words} missing: {screen}");
    }
    assert!(!screen.contains("next attempt"), "{screen}");
    assert_screen!("delivery_detail_parked", app, 100, 24);

    // `s` asks first; Esc goes back to the detail, `y` resends.
    press(&mut app, KeyCode::Char('s'));
    assert!(matches!(app.mode, Mode::Confirm { .. }));
    assert_screen!("delivery_detail_resend_confirm", app, 100, 24);
    press(&mut app, KeyCode::Esc);
    assert!(matches!(app.mode, Mode::Detail(_)));
    assert!(queued(&mut app).is_empty());
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(queued(&mut app), [Command::Resend(9)]);
    app.apply(
        crate::net::execute(&fake, Command::Resend(9))
            .await
            .unwrap(),
    );
    assert!(matches!(app.mode, Mode::Detail(_)));
    assert_eq!(
        app.flash,
        Some(Flash::Info("resent delivery #9 as #10".to_string()))
    );
    assert_eq!(fake.state.lock().unwrap().resent, [9]);
}

#[tokio::test]
async fn dead_letters_resend_and_bulk_retry_of_one_endpoint_or_all_after_asking() {
    let fake = fake();
    let mut app = on_tab(&fake, '4').await;
    assert_eq!(app.dead.list.len(), 2);

    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(queued(&mut app), [Command::Resend(7)]);

    // b: the selected delivery's endpoint; n says no.
    press(&mut app, KeyCode::Char('b'));
    assert_screen!("dead_retry_endpoint_confirm", app, 100, 10);
    press(&mut app, KeyCode::Char('n'));
    assert!(queued(&mut app).is_empty());
    press(&mut app, KeyCode::Char('b'));
    press(&mut app, KeyCode::Char('y'));
    let of_crm = RetryDeadLettersRequest {
        endpoint_id: "crm".to_string(),
        ..RetryDeadLettersRequest::default()
    };
    assert_eq!(
        queued(&mut app),
        [Command::RetryDeadLetters(of_crm.clone())]
    );

    // B: every endpoint's.
    press(&mut app, KeyCode::Char('B'));
    press(&mut app, KeyCode::Char('y'));
    let commands = queued(&mut app);
    assert_eq!(
        commands,
        [Command::RetryDeadLetters(RetryDeadLettersRequest::default())]
    );

    // The job starts, is followed, and the jobs panel shows it.
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    assert!(matches!(app.mode, Mode::Jobs));
    let commands = queued(&mut app);
    assert!(
        commands.contains(&Command::WatchJob("job-1".to_string())),
        "{commands:?}"
    );
    assert!(commands.contains(&Command::LoadJobs), "{commands:?}");
    assert_eq!(
        fake.state.lock().unwrap().dead_retries,
        [RetryDeadLettersRequest::default()]
    );
}

#[tokio::test]
async fn replay_from_a_subscription_sends_the_request_the_form_describes() {
    let fake = fake();
    let mut app = on_tab(&fake, '2').await;
    press(&mut app, KeyCode::Char('p'));
    let Mode::Replay(form) = &app.mode else {
        panic!("expected the replay form, got {:?}", app.mode);
    };
    assert_eq!(form.form.value("subscription_id"), "sub-1");
    // Nothing leaves without a start.
    press(&mut app, KeyCode::Enter);
    assert!(queued(&mut app).is_empty());
    assert_screen!("replay_form_needs_since", app, 100, 16);
    // The focus is on "since".
    type_text(&mut app, "6h");
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "50");
    press(&mut app, KeyCode::Enter);
    let commands = queued(&mut app);
    assert_eq!(
        commands,
        [Command::ReplayEvents(ReplayEventsRequest {
            subscription_id: "sub-1".to_string(),
            from: ago(6 * 3600),
            per_second: 50,
            ..ReplayEventsRequest::default()
        })]
    );
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    assert!(matches!(app.mode, Mode::Jobs));
}

#[tokio::test]
async fn replay_from_an_endpoint_asks_for_a_pattern_and_shows_the_servers_error() {
    let fake = fake();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('p'));
    type_text(&mut app, "lead.*");
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "30m");
    press(&mut app, KeyCode::Enter);
    let commands = queued(&mut app);
    assert_eq!(
        commands,
        [Command::ReplayEvents(ReplayEventsRequest {
            pattern: "lead.*".to_string(),
            from: ago(30 * 60),
            endpoint_id: "crm".to_string(),
            ..ReplayEventsRequest::default()
        })]
    );
    fake.state.lock().unwrap().fail_next = Some(crate::api::ApiError::invalid(&[(
        "per_second",
        "at most 10000",
    )]));
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    let Mode::Replay(form) = &app.mode else {
        panic!("expected the replay form, got {:?}", app.mode);
    };
    assert_eq!(form.form.error_of("per_second"), Some("at most 10000"));
    assert!(!form.form.saving);
}

#[tokio::test]
async fn recover_asks_since_when() {
    let fake = fake();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('u'));
    assert_screen!("endpoint_recover_form", app, 100, 10);
    type_text(&mut app, "soon");
    press(&mut app, KeyCode::Enter);
    assert!(queued(&mut app).is_empty());
    for _ in 0..4 {
        press(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, "2d");
    press(&mut app, KeyCode::Enter);
    let commands = queued(&mut app);
    assert_eq!(
        commands,
        [Command::RecoverEndpoint {
            endpoint_id: "crm".to_string(),
            since: ago(2 * 86_400),
        }]
    );
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    assert!(matches!(app.mode, Mode::Browse));
    assert_eq!(
        fake.state.lock().unwrap().recovered_since,
        [ago(2 * 86_400)]
    );
}

fn job(id: &str, state: JobState, scanned: u64, deliveries: u64) -> Job {
    Job {
        id: id.to_string(),
        kind: "replay".to_string(),
        description: "replay lead.* received since 11:34:56".to_string(),
        state: state.into(),
        scanned,
        matched: deliveries,
        deliveries,
        started_at: ts(0),
        ..Job::default()
    }
}

#[tokio::test]
async fn the_jobs_panel_shows_progress_as_it_comes_and_c_cancels() {
    let fake = FakeAdmin::with(|s| {
        let mut old = job("job-old", JobState::Failed, 10, 0);
        old.started_at = ts(-600);
        old.kind = "retry_dead_letters".to_string();
        old.error = "the store is read-only".to_string();
        s.jobs = vec![old, job("job-1", JobState::Running, 0, 0)];
    });
    let mut app = on_tab(&fake, '1').await;
    press(&mut app, KeyCode::Char('J'));
    assert!(matches!(app.mode, Mode::Jobs));
    settle(&mut app, &fake).await;
    assert_eq!(app.jobs.len(), 2);
    app.apply(Update::Job(job("job-1", JobState::Running, 500, 120)));
    assert_screen!("jobs_progress", app, 100, 12);
    let screen = draw(&app, 100, 12);
    assert!(screen.contains("500"), "{screen}");
    assert!(screen.contains("120"), "{screen}");

    // The newest is selected; c cancels it.
    press(&mut app, KeyCode::Char('c'));
    let commands = queued(&mut app);
    assert_eq!(commands, [Command::CancelJob("job-1".to_string())]);
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    assert_eq!(
        app.jobs.selected().map(|j| j.state()),
        Some(JobState::Cancelled)
    );
    // An ended job is not cancelled again.
    press(&mut app, KeyCode::Char('c'));
    assert!(queued(&mut app).is_empty());
    assert!(matches!(app.flash, Some(Flash::Error(_))));
    press(&mut app, KeyCode::Esc);
    assert!(matches!(app.mode, Mode::Browse));
}

#[tokio::test]
async fn a_followed_job_that_ends_says_so() {
    let fake = FakeAdmin::default();
    let mut app = on_tab(&fake, '1').await;
    app.apply(Update::Job(job("job-1", JobState::Running, 10, 3)));
    app.apply(Update::Job(job("job-1", JobState::Succeeded, 30, 9)));
    assert_eq!(
        app.flash,
        Some(Flash::Info("job job-1 done: 9 deliveries".to_string()))
    );
}

#[tokio::test]
async fn the_endpoint_form_edits_the_ordering_key_last() {
    let fake = fake();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('e'));
    // Back from the first field wraps to the last: the ordering key.
    press(&mut app, KeyCode::BackTab);
    type_text(&mut app, "{{ event.tenant_id }}");
    press(&mut app, KeyCode::Enter);
    let commands = queued(&mut app);
    let [Command::SaveEndpoint {
        endpoint,
        create: false,
    }] = commands.as_slice()
    else {
        panic!("expected one save, got {commands:?}");
    };
    assert_eq!(endpoint.ordering_key, "{{ event.tenant_id }}");
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    assert_eq!(
        fake.state.lock().unwrap().endpoints["crm"].ordering_key,
        "{{ event.tenant_id }}"
    );
    settle(&mut app, &fake).await;
    // Shown again when the form opens (the last field: the form scrolls to it).
    press(&mut app, KeyCode::Char('e'));
    press(&mut app, KeyCode::BackTab);
    let screen = draw(&app, 100, 24);
    assert!(
        screen.contains("ordering key   {{ event.tenant_id }}"),
        "{screen}"
    );
}
