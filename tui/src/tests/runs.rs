//! Runs and Flows: the tables, the run detail, cancel with its confirm,
//! the definition's YAML and starting a run.

use crossterm::event::KeyCode;
use hookyard::v1::{RunState, RunUpdate};
use tonic::Code;

use crate::{
    api::ApiError,
    app::{App, Flash, Mode, Tab},
    assert_screen,
    net::{Command, ConnState, Update},
    screens::runs::RunFilter,
    testing::*,
};

async fn on_tab(fake: &FakeAdmin, tab: char) -> App {
    let mut app = App::new("http://127.0.0.1:8081");
    app.apply(Update::Conn(ConnState::Live));
    press(&mut app, KeyCode::Char(tab));
    app.apply(Update::RunsConn(ConnState::Live));
    settle(&mut app, fake).await;
    app
}

fn runs() -> FakeAdmin {
    FakeAdmin::with(|s| {
        let waiting = run("ada", "noshow-recovery", RunState::Waiting, 30);
        let failed = run("bob", "onboarding", RunState::Failed, 20);
        let done = run("cyd", "noshow-recovery", RunState::Succeeded, 10);
        s.run_details
            .insert("ada".to_string(), run_detail(waiting.clone()));
        s.runs = vec![done, failed, waiting];
        s.flows.insert(
            "noshow-recovery".to_string(),
            flow("noshow-recovery", &["email1", "wait_1d", "email2"], true),
        );
    })
}

fn ids(app: &App) -> Vec<String> {
    let runs = app.runs.list.loaded().expect("the runs loaded");
    runs.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn runs_newest_first_kept_live_by_the_stream() {
    let fake = runs();
    let mut app = on_tab(&fake, '6').await;
    assert_eq!(app.tab, Tab::Runs);
    assert_eq!(ids(&app), ["ada", "bob", "cyd"]);
    assert_screen!("runs", app, 120, 7);
    assert_screen!("runs_80x24", app, 80, 24);

    // A new run goes on top; the cursor stays on the run it was on.
    press(&mut app, KeyCode::Down);
    let newer = run("dee", "onboarding", RunState::Running, 40);
    app.apply(Update::Run(RunUpdate {
        run: Some(newer),
        time: ts(40),
        missed: 0,
    }));
    assert_eq!(ids(&app), ["dee", "ada", "bob", "cyd"]);
    assert_eq!(app.runs.selected_run().unwrap().id, "bob");
    // A change updates its row in place.
    let mut woke = run("ada", "noshow-recovery", RunState::Running, 30);
    woke.current_step = "email2".to_string();
    app.apply(Update::Run(RunUpdate {
        run: Some(woke),
        ..RunUpdate::default()
    }));
    assert_eq!(
        app.runs.list.loaded().unwrap()[1].state(),
        RunState::Running
    );
}

#[tokio::test]
async fn runs_filter_by_state_flow_and_key() {
    let fake = runs();
    let mut app = on_tab(&fake, '6').await;
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "state:sleeping");
    press(&mut app, KeyCode::Enter);
    assert!(matches!(&app.mode, Mode::RunFilter { error: Some(e), .. } if e.contains("waiting")));
    assert_screen!("runs_filter_error", app, 100, 5);
    for _ in 0.."sleeping".len() {
        press(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, "waiting noshow-recovery");
    press(&mut app, KeyCode::Enter);
    let filter = RunFilter {
        flow_id: "noshow-recovery".to_string(),
        state: RunState::Waiting,
        key: String::new(),
    };
    assert_eq!(
        app.take_commands(),
        [
            Command::LoadRuns(filter.clone()),
            Command::WatchRuns(filter.clone())
        ]
    );
    app.apply(Update::Runs(Ok(hookyard::v1::ListRunsResponse {
        runs: fake.state.lock().unwrap().runs.clone(),
        next_page_token: String::new(),
    })));
    assert_eq!(ids(&app), ["ada"], "the table keeps only what matches");
    // The run leaves the state: it leaves the table.
    let woke = run("ada", "noshow-recovery", RunState::Running, 30);
    app.apply(Update::Run(RunUpdate {
        run: Some(woke),
        ..RunUpdate::default()
    }));
    assert!(ids(&app).is_empty());
    assert_screen!("runs_filtered_empty", app, 100, 5);

    press(&mut app, KeyCode::Char('/'));
    for _ in 0.."state:waiting noshow-recovery".len() {
        press(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, "key:bob@example.com");
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_eq!(ids(&app), ["bob"]);
}

#[tokio::test]
async fn runs_empty_and_daemon_down() {
    let app = on_tab(&FakeAdmin::default(), '6').await;
    assert_screen!("runs_empty_80x24", app, 80, 24);

    let down = FakeAdmin::with(|s| {
        s.fail_all = Some(ApiError::new(Code::Unavailable, "tcp connect error"));
    });
    let mut app = on_tab(&down, '6').await;
    app.apply(Update::RunsConn(ConnState::Reconnecting {
        attempt: 2,
        error: "daemon unreachable: tcp connect error".to_string(),
    }));
    assert_screen!("runs_daemon_down", app, 100, 6);
    // The stream is back: the list loads again (it missed what changed).
    down.state.lock().unwrap().fail_all = None;
    down.state.lock().unwrap().runs = runs().state.lock().unwrap().runs.clone();
    app.apply(Update::RunsConn(ConnState::Live));
    settle(&mut app, &down).await;
    assert_eq!(ids(&app).len(), 3);
}

#[tokio::test]
async fn run_detail_shows_the_step_timeline_and_log() {
    let fake = runs();
    let mut app = on_tab(&fake, '6').await;
    press(&mut app, KeyCode::Enter);
    assert!(matches!(&app.mode, Mode::RunDetail(v) if v.is_loading()));
    assert_screen!("run_detail_loading", app, 80, 5);
    settle(&mut app, &fake).await;
    assert_screen!("run_detail", app, 100, 30);
    assert_screen!("run_detail_80x24", app, 80, 24);
    // News about this run reloads it.
    app.apply(Update::Run(RunUpdate {
        run: Some(run("ada", "noshow-recovery", RunState::Running, 30)),
        ..RunUpdate::default()
    }));
    assert_eq!(queued(&mut app), [Command::LoadRun("ada".to_string())]);
    press(&mut app, KeyCode::Esc);

    // A run without a detail (gone meanwhile).
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_screen!("run_detail_not_found", app, 80, 6);
}

#[tokio::test]
async fn cancel_asks_first_and_says_when_the_run_already_finished() {
    let fake = runs();
    let mut app = on_tab(&fake, '6').await;

    // `n` backs out: nothing is sent.
    press(&mut app, KeyCode::Char('c'));
    assert!(matches!(
        &app.mode,
        Mode::Confirm { command, after: None, .. } if **command == Command::CancelRun("ada".to_string())
    ));
    assert_screen!("run_cancel_confirm", app, 80, 12);
    press(&mut app, KeyCode::Char('n'));
    assert!(matches!(app.mode, Mode::Browse));
    assert!(queued(&mut app).is_empty());

    // `y` cancels; the table shows it at once.
    press(&mut app, KeyCode::Char('c'));
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(queued(&mut app), [Command::CancelRun("ada".to_string())]);
    app.apply(Update::RunCancelled(
        "ada".to_string(),
        fake.state.lock().unwrap().runs[2].clone().pipe_cancel(),
    ));
    assert_eq!(
        app.runs.selected_run().unwrap().state(),
        RunState::Cancelled
    );
    assert!(matches!(&app.flash, Some(Flash::Info(m)) if m == "run ada cancelled"));

    // Cancelling a finished run: the daemon's FAILED_PRECONDITION, said plainly.
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('c'));
    press(&mut app, KeyCode::Char('y'));
    settle(&mut app, &fake).await;
    assert!(
        matches!(&app.flash, Some(Flash::Error(m)) if m.contains("already finished")),
        "{:?}",
        app.flash
    );
    assert_screen!("run_cancel_finished_80x24", app, 80, 24);
}

#[tokio::test]
async fn cancel_from_the_detail_comes_back_to_it_reloaded() {
    let fake = runs();
    let mut app = on_tab(&fake, '6').await;
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    press(&mut app, KeyCode::Char('c'));
    assert_screen!("run_detail_cancel_confirm", app, 80, 24);
    press(&mut app, KeyCode::Char('y'));
    settle(&mut app, &fake).await;
    let Mode::RunDetail(view) = &app.mode else {
        panic!("back on the detail, got {:?}", app.mode);
    };
    let detail = view.data.loaded().expect("reloaded");
    assert_eq!(detail.run.as_ref().unwrap().state(), RunState::Cancelled);
    assert_eq!(
        fake.state.lock().unwrap().runs[2].state(),
        RunState::Cancelled
    );
}

#[tokio::test]
async fn help_on_runs() {
    let mut app = on_tab(&runs(), '6').await;
    press(&mut app, KeyCode::Char('?'));
    assert_screen!("help_runs_80x24", app, 80, 24);
}

fn flows() -> FakeAdmin {
    FakeAdmin::with(|s| {
        for (id, steps, webhook) in [
            (
                "noshow-recovery",
                &["email1", "wait_1d", "email2", "wait_2d", "email3"][..],
                true,
            ),
            ("onboarding", &["welcome", "tips"][..], false),
        ] {
            s.flows.insert(id.to_string(), flow(id, steps, webhook));
        }
    })
}

#[tokio::test]
async fn flows_table_and_the_definition() {
    let fake = flows();
    let mut app = on_tab(&fake, '7').await;
    assert_eq!(app.tab, Tab::Flows);
    assert_screen!("flows", app, 120, 5);
    assert_screen!("flows_80x24", app, 80, 24);
    press(&mut app, KeyCode::Char('v'));
    assert_screen!("flow_yaml_80x24", app, 80, 24);
    for _ in 0..4 {
        press(&mut app, KeyCode::Char('j'));
    }
    assert_screen!("flow_yaml_scrolled", app, 80, 8);
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('?'));
    assert_screen!("help_flows_80x24", app, 80, 24);

    let empty = on_tab(&FakeAdmin::default(), '7').await;
    assert_screen!("flows_empty", empty, 80, 5);
    let refused = FakeAdmin::with(|s| {
        s.fail_all = Some(ApiError::new(Code::Unauthenticated, "bad token"));
    });
    let refused = on_tab(&refused, '7').await;
    assert_screen!("flows_bad_token", refused, 80, 5);
}

#[tokio::test]
async fn start_a_run_with_inputs_the_daemon_checks() {
    let fake = flows();
    let mut app = on_tab(&fake, '7').await;
    press(&mut app, KeyCode::Char('r'));
    assert_screen!("start_run_form", app, 80, 12);
    type_text(&mut app, "{oops");
    press(&mut app, KeyCode::Enter);
    // Not JSON: never leaves.
    assert!(queued(&mut app).is_empty());
    let Mode::StartRun(form) = &mut app.mode else {
        panic!("the form closed: {:?}", app.mode);
    };
    assert!(form.form.error_of("inputs").unwrap().contains("not JSON"));
    form.form.fields[1]
        .input
        .set(r#"{"email": "not-an-email"}"#);
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_screen!("start_run_invalid", app, 80, 24);
    let Mode::StartRun(form) = &mut app.mode else {
        panic!("the form closed: {:?}", app.mode);
    };
    assert_eq!(form.form.error_of("inputs"), Some("email: is not an email"));
    form.form.fields[1]
        .input
        .set(r#"{"email": "ada@example.com"}"#);
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse));
    assert!(
        matches!(&app.flash, Some(Flash::Info(m)) if m.contains("started run") && m.contains("created")),
        "{:?}",
        app.flash
    );
    let started = fake.state.lock().unwrap().started.clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].0, "noshow-recovery");
    assert_eq!(started[0].1["email"], "ada@example.com");
}

/// What the fake answers for a cancel, without going through the runner.
trait PipeCancel {
    fn pipe_cancel(self) -> crate::api::ApiResult<hookyard::v1::Run>;
}

impl PipeCancel for hookyard::v1::Run {
    fn pipe_cancel(mut self) -> crate::api::ApiResult<hookyard::v1::Run> {
        self.state = RunState::Cancelled.into();
        self.current_step.clear();
        Ok(self)
    }
}

#[tokio::test]
async fn older_runs_load_past_the_last_row() {
    let fake = FakeAdmin::with(|s| {
        s.runs = (0..250)
            .map(|i| run(&format!("r{i:03}"), "drip", RunState::Waiting, i))
            .collect();
    });
    let mut app = on_tab(&fake, '6').await;
    assert_eq!(ids(&app).len(), crate::net::RUNS_PAGE as usize);
    assert_eq!(ids(&app)[0], "r249", "newest first");
    assert_screen!("runs_more_80x6", app, 80, 6);
    press(&mut app, KeyCode::Char('G'));
    let more = queued(&mut app);
    assert!(
        matches!(&more[..], [Command::MoreRuns { page_token, .. }] if page_token == "200"),
        "{more:?}"
    );
    for command in more {
        if let Some(update) = crate::net::execute(&fake, command).await {
            app.apply(update);
        }
    }
    assert_eq!(ids(&app).len(), 250);
    assert_eq!(ids(&app)[249], "r000");
    press(&mut app, KeyCode::Char('G'));
    assert!(queued(&mut app).is_empty(), "nothing older");
}
