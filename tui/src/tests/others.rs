//! Endpoints, dead letters and sources.

use crossterm::event::KeyCode;
use hookyard::v1::{DeliveryStatus, EndpointState, EndpointStats, Source, SourceStatus};
use tonic::Code;

use crate::{
    api::ApiError,
    app::{App, Flash, Mode, Tab},
    assert_screen,
    net::{Command, ConnState, Update},
    screens::sources::parse_rule,
    testing::*,
};

async fn on_tab(fake: &FakeAdmin, tab: char) -> App {
    let mut app = App::new("http://127.0.0.1:8081");
    app.apply(Update::Conn(ConnState::Live));
    press(&mut app, KeyCode::Char(tab));
    settle(&mut app, fake).await;
    app
}

fn endpoints() -> FakeAdmin {
    FakeAdmin::with(|s| {
        s.endpoints.insert(
            "crm".to_string(),
            endpoint(
                "crm",
                "https://crm.example.com/hook",
                EndpointState::Enabled,
            ),
        );
        let mut gone = endpoint("old", "https://old.example.com/hook", EndpointState::Gone);
        gone.tenant_id = "acme".to_string();
        gone.max_in_flight = 4;
        s.endpoints.insert("old".to_string(), gone);
        s.stats.endpoints = vec![
            EndpointStats {
                endpoint_id: "crm".to_string(),
                succeeded: 990,
                failed: 10,
                backlog: 3,
                last_error: "HTTP 503".to_string(),
                last_error_at: ts(30),
            },
            EndpointStats {
                endpoint_id: "old".to_string(),
                failed: 4,
                last_error: "HTTP 410: endpoint gone".to_string(),
                last_error_at: ts(40),
                ..EndpointStats::default()
            },
        ];
    })
}

#[tokio::test]
async fn endpoints_table_with_numbers_from_stats_and_the_live_stream() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    // Two deliveries to crm in flight on Live.
    for id in [1, 2] {
        app.apply(update(delivery(
            id,
            "lead.created",
            DeliveryStatus::InFlight,
        )));
    }
    assert_eq!(app.tab, Tab::Endpoints);
    assert_screen!("endpoints", app, 100, 6);
    assert_screen!("endpoints_80x24", app, 80, 24);
    let empty = on_tab(&FakeAdmin::default(), '3').await;
    assert_screen!("endpoints_empty", empty, 80, 5);
}

#[tokio::test]
async fn a_new_endpoint_gets_a_secret_shown_once() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "billing");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "https://billing.example.com/hook");
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "X-Env=prod, broken");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "soon");
    press(&mut app, KeyCode::Enter);
    // Parsed here, before asking the daemon.
    assert!(queued(&mut app).is_empty());
    assert_screen!("endpoint_form_local_errors", app, 100, 30);
    let Mode::EndpointForm(form) = &mut app.mode else {
        panic!("the form closed");
    };
    form.form.fields[3].input.set("X-Env=prod");
    form.form.fields[4].input.set("2500");
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    let Mode::Reveal { lines, .. } = &app.mode else {
        panic!("expected the secret, got {:?}", app.mode);
    };
    assert!(lines[0].starts_with("whsec_") && lines[0].len() > 40);
    let stored = fake.state.lock().unwrap().endpoints["billing"].clone();
    assert_eq!(stored.timeout_ms, 2500);
    assert_eq!(stored.headers["X-Env"], "prod");
    press(&mut app, KeyCode::Esc);
    assert!(matches!(app.mode, Mode::Browse));
    // The table only ever shows the hint.
    assert!(!crate::testing::draw(&app, 120, 10).contains("whsec_M"));
}

#[tokio::test]
async fn endpoint_toggle_and_stale_edit() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char(' '));
    settle(&mut app, &fake).await;
    assert_eq!(
        fake.state.lock().unwrap().endpoints["crm"].state(),
        EndpointState::Disabled
    );
    press(&mut app, KeyCode::Char('e'));
    fake.state
        .lock()
        .unwrap()
        .endpoints
        .get_mut("crm")
        .unwrap()
        .version += 1;
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_screen!("endpoint_form_stale", app, 120, 30);
}

#[tokio::test]
async fn failing_endpoints_say_why() {
    let fake = FakeAdmin::with(|s| {
        let mut failing = endpoint(
            "crm",
            "https://crm.example.com/hook",
            EndpointState::Failing,
        );
        failing.disabled_reason = "failing for 5d".to_string();
        s.endpoints.insert("crm".to_string(), failing);
    });
    let mut app = on_tab(&fake, '3').await;
    let screen = crate::testing::draw(&app, 120, 6);
    assert!(screen.contains("failing"), "{screen}");
    assert!(screen.contains("disabled: failing for 5d"), "{screen}");
    assert_screen!("endpoints_failing", app, 120, 6);
    press(&mut app, KeyCode::Char('e'));
    let Mode::EndpointForm(form) = &app.mode else {
        panic!("expected the form, got {:?}", app.mode);
    };
    assert_eq!(form.form.value("disabled_reason"), "failing for 5d");
    // Saved with `enabled` left off, it stays failing, not disabled.
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse), "{:?}", app.mode);
    assert_eq!(
        fake.state.lock().unwrap().endpoints["crm"].state(),
        EndpointState::Failing
    );
    // Space re-enables it from the table.
    press(&mut app, KeyCode::Char(' '));
    settle(&mut app, &fake).await;
    assert_eq!(
        fake.state.lock().unwrap().endpoints["crm"].state(),
        EndpointState::Enabled
    );
}

#[tokio::test]
async fn endpoint_format_rate_limit_disable_after_and_transform() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('e'));
    // From the url to the format.
    for _ in 0..6 {
        press(&mut app, KeyCode::Tab);
    }
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "10/x");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "soon");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, r#"{"text": "{{ event.name }"}"#);
    press(&mut app, KeyCode::Enter);
    assert!(queued(&mut app).is_empty(), "caught before asking");
    let Mode::EndpointForm(form) = &mut app.mode else {
        panic!("the form closed");
    };
    assert_eq!(form.form.value("format"), "cloudevents");
    assert_eq!(
        form.form.error_of("rate_limit"),
        Some("`10/x` is not per second[/burst]")
    );
    assert!(form.form.error_of("disable_after_ms").is_some());
    form.form.fields[8].input.set("10/20");
    form.form.fields[9].input.set("12h");
    press(&mut app, KeyCode::Enter);
    fake.state.lock().unwrap().fail_next = Some(ApiError::invalid(&[
        ("rate_limit.burst", "must be at least per_second"),
        ("transform", "syntax error: unexpected `}` at 1:24"),
    ]));
    settle(&mut app, &fake).await;
    let Mode::EndpointForm(form) = &app.mode else {
        panic!("the form closed");
    };
    assert_eq!(
        form.form.error_of("rate_limit"),
        Some("burst: must be at least per_second")
    );
    assert_eq!(
        form.form.error_of("transform"),
        Some("syntax error: unexpected `}` at 1:24")
    );
    assert_screen!("endpoint_form_new_fields_errors", app, 100, 30);
    let Mode::EndpointForm(form) = &mut app.mode else {
        panic!("the form closed");
    };
    form.form.fields[10]
        .input
        .set(r#"{"text": "{{ event.name }}"}"#);
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse), "{:?}", app.mode);
    let stored = fake.state.lock().unwrap().endpoints["crm"].clone();
    assert_eq!(stored.format(), hookyard::v1::PayloadFormat::Cloudevents);
    assert_eq!(
        stored.rate_limit,
        Some(hookyard::v1::EndpointRateLimit {
            per_second: 10,
            burst: 20
        })
    );
    assert_eq!(stored.disable_after_ms, Some(12 * 3_600_000));
    assert_eq!(stored.transform, r#"{"text": "{{ event.name }}"}"#);
    // Read back as typed.
    press(&mut app, KeyCode::Char('e'));
    let Mode::EndpointForm(form) = &app.mode else {
        panic!("expected the form");
    };
    assert_eq!(form.form.value("rate_limit"), "10/20");
    assert_eq!(form.form.value("disable_after_ms"), "12h");
    assert_eq!(form.form.value("format"), "cloudevents");
}

#[tokio::test]
async fn endpoint_oauth2_and_tls_fields_keep_the_secret_masked_and_scroll_at_80x24() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('e'));
    let Mode::EndpointForm(form) = &mut app.mode else {
        panic!("expected the form");
    };
    for (key, value) in [
        ("oauth2", "https://auth.example/token"),
        ("oauth2_client", "hookyard"),
        ("oauth2_scope", "webhooks"),
        ("tls", "/etc/hookyard/client.pem"),
        ("tls_key", "/etc/hookyard/client.key"),
    ] {
        form.form.focus_on(key);
        type_text_into(form, value);
    }
    form.form.focus_on("oauth2_secret");
    type_text_into(form, "s3cret");
    // The last field is in view on a small terminal, the secret is dots.
    form.form.focus_on("tls_ca");
    let screen = crate::testing::draw(&app, 80, 24);
    assert!(screen.contains("ca file"), "{screen}");
    assert!(screen.contains("••••••"), "{screen}");
    assert!(!screen.contains("s3cret"), "{screen}");
    assert!(screen.contains("Esc cancels"), "the banner stays: {screen}");
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse), "{:?}", app.mode);
    let stored = fake.state.lock().unwrap().endpoints["crm"].clone();
    let oauth2 = stored.oauth2.clone().unwrap_or_default();
    assert_eq!(
        (oauth2.token_url.as_str(), oauth2.client_id.as_str()),
        ("https://auth.example/token", "hookyard")
    );
    assert_eq!(oauth2.client_secret, "s3cret");
    assert_eq!(oauth2.scope, "webhooks");
    let tls = stored.tls.clone().unwrap_or_default();
    assert_eq!(tls.client_key_file, "/etc/hookyard/client.key");
    assert_eq!(tls.ca_file, "");
    // Opened again, the secret field starts empty: empty keeps it.
    press(&mut app, KeyCode::Char('e'));
    let Mode::EndpointForm(form) = &app.mode else {
        panic!("expected the form");
    };
    assert_eq!(form.form.value("oauth2_secret"), "");
    assert_eq!(form.form.value("oauth2"), "https://auth.example/token");
    let saved = form.endpoint().ok().and_then(|e| e.oauth2);
    assert_eq!(saved.map(|o| o.client_secret), Some(String::new()));
}

fn type_text_into(form: &mut crate::screens::endpoints::EndpointForm, text: &str) {
    let keys = crate::keys::KeyBindings::default();
    for c in text.chars() {
        form.form
            .handle_key(&keys, &crossterm::event::KeyEvent::from(KeyCode::Char(c)));
    }
}

#[test]
fn durations_parse_and_print() {
    use crate::screens::endpoints::{duration_text, parse_duration};
    assert_eq!(parse_duration("5d"), Ok(5 * 86_400_000));
    assert_eq!(parse_duration("0s"), Ok(0));
    assert_eq!(parse_duration("0"), Ok(0));
    assert_eq!(parse_duration("250ms"), Ok(250));
    assert!(parse_duration("5 days").is_err());
    assert!(parse_duration("h").is_err());
    assert_eq!(duration_text(5 * 86_400_000), "5d");
    assert_eq!(duration_text(90_000), "90s");
    assert_eq!(duration_text(0), "0s");
}

#[tokio::test]
async fn rotating_asks_first_then_shows_the_new_secret_once() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('r'));
    assert!(matches!(app.mode, Mode::Confirm { .. }));
    press(&mut app, KeyCode::Char('n'));
    assert!(queued(&mut app).is_empty());
    press(&mut app, KeyCode::Char('r'));
    press(&mut app, KeyCode::Char('y'));
    assert_eq!(
        queued(&mut app),
        vec![Command::RotateEndpointSecret("crm".to_string())]
    );
    press(&mut app, KeyCode::Char('r'));
    press(&mut app, KeyCode::Char('y'));
    settle(&mut app, &fake).await;
    let Mode::Reveal { title, lines } = &app.mode else {
        panic!("expected the secret, got {:?}", app.mode);
    };
    assert_eq!(title, "New signing secret of `crm`");
    let secret = lines[0].clone();
    assert!(secret.starts_with("whsec_rotated"), "{secret}");
    assert_screen!("endpoint_secret_rotated", app, 100, 14);
    press(&mut app, KeyCode::Esc);
    assert!(matches!(app.mode, Mode::Browse));
    let screen = crate::testing::draw(&app, 120, 10);
    assert!(!screen.contains(&secret), "only the hint stays: {screen}");
    assert_eq!(
        fake.state.lock().unwrap().endpoints["crm"].version,
        3,
        "rotated on the daemon"
    );
}

#[tokio::test]
async fn t_sends_a_test_event_and_shows_what_came_back() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('t'));
    assert_eq!(
        queued(&mut app),
        vec![Command::SendTestEvent("crm".to_string())]
    );
    press(&mut app, KeyCode::Char('t'));
    settle(&mut app, &fake).await;
    let Mode::Reveal { lines, .. } = &app.mode else {
        panic!("expected the answer, got {:?}", app.mode);
    };
    assert_eq!(lines[0], "delivered: HTTP 200 in 42 ms");
    press(&mut app, KeyCode::Esc);

    fake.state.lock().unwrap().test_event = Some(hookyard::v1::SendTestEventResponse {
        attempt: Some(hookyard::v1::Attempt {
            number: 1,
            duration_ms: 1500,
            status_code: 500,
            error: "HTTP 500".to_string(),
            response_body: "{\n  \"error\": \"database is down\"\n}".to_string(),
            ..Default::default()
        }),
        succeeded: false,
    });
    press(&mut app, KeyCode::Char('t'));
    settle(&mut app, &fake).await;
    assert_screen!("endpoint_test_event_failed", app, 100, 16);
    assert_eq!(fake.state.lock().unwrap().tested, ["crm", "crm"]);
}

#[tokio::test]
async fn recover_requeues_failed_and_dead_deliveries_after_asking() {
    let fake = endpoints();
    {
        let mut s = fake.state.lock().unwrap();
        s.deliveries = vec![
            delivery(1, "lead.created", DeliveryStatus::Failed),
            delivery(2, "lead.created", DeliveryStatus::Dead),
            delivery(3, "lead.created", DeliveryStatus::Succeeded),
        ];
    }
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('u'));
    press(&mut app, KeyCode::Esc);
    assert!(queued(&mut app).is_empty());
    // Empty: all of them.
    press(&mut app, KeyCode::Char('u'));
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_eq!(fake.state.lock().unwrap().recovered_since, [None]);
    assert_eq!(
        app.flash,
        Some(Flash::Info(
            "re-queued 2 failed or dead deliveries of `crm`".to_string()
        ))
    );
    let statuses: Vec<_> = fake
        .state
        .lock()
        .unwrap()
        .deliveries
        .iter()
        .map(|d| d.status())
        .collect();
    assert_eq!(
        statuses,
        [
            DeliveryStatus::Pending,
            DeliveryStatus::Pending,
            DeliveryStatus::Succeeded
        ]
    );
}

#[tokio::test]
async fn help_on_endpoints_lists_rotate_test_and_recover() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    press(&mut app, KeyCode::Char('?'));
    let screen = crate::testing::draw(&app, 80, 24);
    for words in [
        "rotate the signing secret",
        "send a test event",
        "re-queue failed/dead deliveries",
    ] {
        assert!(screen.contains(words), "{words} missing: {screen}");
    }
    assert_screen!("help_endpoints", app, 80, 24);
    assert!(screen.contains("Ctrl-R"), "the last line fits 80x24");
}

fn dead() -> FakeAdmin {
    FakeAdmin::with(|s| {
        for id in [7, 8, 9] {
            let mut d = delivery(id, "lead.created", DeliveryStatus::Dead);
            d.last_error = format!("HTTP 500 after {id} tries");
            s.deliveries.push(d);
        }
        s.deliveries
            .push(delivery(10, "lead.created", DeliveryStatus::Succeeded));
    })
}

#[tokio::test]
async fn dead_letters_retry_one_or_several() {
    let fake = dead();
    let mut app = on_tab(&fake, '4').await;
    assert_eq!(app.dead.list.loaded().unwrap().len(), 3);
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char(' '));
    assert_screen!("dead_marked", app, 100, 8);
    assert_screen!("dead_marked_80x24", app, 80, 24);
    press(&mut app, KeyCode::Char('r'));
    settle(&mut app, &fake).await;
    assert_eq!(fake.state.lock().unwrap().retried, vec![7, 9]);
    assert_eq!(app.dead.list.loaded().unwrap().len(), 1);
    press(&mut app, KeyCode::Char('r'));
    settle(&mut app, &fake).await;
    assert_eq!(fake.state.lock().unwrap().retried, vec![7, 9, 8]);
    assert_screen!("dead_empty_80x24", app, 80, 24);
}

#[tokio::test]
async fn dead_letters_when_the_daemon_is_down() {
    let fake = FakeAdmin::with(|s| {
        s.fail_all = Some(ApiError::new(Code::Unavailable, "tcp connect error"));
    });
    let mut app = on_tab(&fake, '4').await;
    app.apply(Update::Conn(ConnState::Reconnecting {
        attempt: 3,
        error: "daemon unreachable: tcp connect error".to_string(),
    }));
    assert_screen!("dead_daemon_down", app, 100, 6);
    // When the stream is back, the failed list loads again.
    fake.state.lock().unwrap().fail_all = None;
    app.apply(Update::Conn(ConnState::Live));
    settle(&mut app, &fake).await;
    assert!(app.dead.list.loaded().is_some());
}

fn sources() -> FakeAdmin {
    FakeAdmin::with(|s| {
        let source = Source {
            id: "src-a".to_string(),
            name: "contact-form".to_string(),
            status: SourceStatus::Active.into(),
            event_name: parse_rule("template:lead.{{ payload.kind }}"),
            rejections: [("rate_limited".to_string(), 3)].into(),
            version: 1,
            ..Source::default()
        };
        s.sources.insert(source.id.clone(), source);
    })
}

#[tokio::test]
async fn sources_create_shows_the_url_once_and_rotate_suspend() {
    let fake = sources();
    let mut app = on_tab(&fake, '5').await;
    assert_screen!("sources", app, 100, 6);
    assert_screen!("sources_80x24", app, 80, 24);
    press(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "partner");
    for _ in 0..3 {
        press(&mut app, KeyCode::Tab);
    }
    type_text(&mut app, "field:event_type");
    assert_screen!("source_form", app, 100, 20);
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_screen!("source_created_url", app, 100, 12);
    press(&mut app, KeyCode::Enter);
    let created = fake
        .state
        .lock()
        .unwrap()
        .sources
        .values()
        .find(|s| s.name == "partner")
        .cloned()
        .unwrap();
    assert_eq!(created.event_name, parse_rule("field:event_type"));

    press(&mut app, KeyCode::Char('g'));
    press(&mut app, KeyCode::Char('r'));
    press(&mut app, KeyCode::Char('y'));
    settle(&mut app, &fake).await;
    assert!(matches!(&app.mode, Mode::Reveal { lines, .. } if lines[0].contains("tok_rotated")));
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('y'));
    settle(&mut app, &fake).await;
    assert_eq!(
        fake.state.lock().unwrap().sources["src-a"].status(),
        SourceStatus::Suspended
    );
    assert_screen!("sources_suspended", app, 100, 6);
}

#[tokio::test]
async fn a_marks_every_dead_letter_and_r_retries_them_all() {
    let fake = dead();
    let mut app = on_tab(&fake, '4').await;
    press(&mut app, KeyCode::Char('a'));
    assert_eq!(app.dead.marked.len(), 3);
    press(&mut app, KeyCode::Char('a'));
    assert!(app.dead.marked.is_empty(), "a second a clears");
    press(&mut app, KeyCode::Char('a'));
    press(&mut app, KeyCode::Char('r'));
    settle(&mut app, &fake).await;
    assert_eq!(fake.state.lock().unwrap().retried, vec![7, 8, 9]);
    assert!(matches!(&app.flash, Some(crate::app::Flash::Info(m)) if m.contains('3')));
}

#[tokio::test]
async fn no_color_leaves_no_colour_and_marks_the_selection_reversed() {
    let fake = endpoints();
    let app = on_tab(&fake, '2').await;
    let mut terminal =
        ratatui::Terminal::new(ratatui::backend::TestBackend::new(100, 20)).expect("a terminal");
    terminal
        .draw(|frame| {
            crate::ui::render(&app, frame);
            crate::ui::strip_colors(frame.buffer_mut());
        })
        .expect("draw");
    let buffer = terminal.backend().buffer();
    assert!(buffer
        .content
        .iter()
        .all(|c| c.fg == ratatui::style::Color::Reset && c.bg == ratatui::style::Color::Reset));
    assert!(
        buffer
            .content
            .iter()
            .any(|c| c.modifier.contains(ratatui::style::Modifier::REVERSED)),
        "what a background colour marked stays visible"
    );
}

#[tokio::test]
async fn slash_filters_a_list_and_an_empty_filter_shows_every_row() {
    let fake = endpoints();
    let mut app = on_tab(&fake, '3').await;
    assert_eq!(app.tab, Tab::Endpoints);
    let ids = |app: &App| -> Vec<String> {
        app.endpoints
            .list
            .loaded()
            .map(|rows| rows.iter().map(|e| e.id.clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(ids(&app), ["crm", "old"]);

    press(&mut app, KeyCode::Char('/'));
    assert!(matches!(app.mode, Mode::ListFilter { .. }));
    type_text(&mut app, "ACME");
    press(&mut app, KeyCode::Enter);
    assert_eq!(ids(&app), ["old"], "found by its tenant, in any case");
    assert_eq!(
        app.endpoints.list.selected().map(|e| e.id.clone()),
        Some("old".to_string())
    );

    // The filter holds when the list is read again.
    press(&mut app, KeyCode::Char('R'));
    settle(&mut app, &fake).await;
    assert_eq!(ids(&app), ["old"]);

    press(&mut app, KeyCode::Char('/'));
    for _ in 0..4 {
        press(&mut app, KeyCode::Backspace);
    }
    press(&mut app, KeyCode::Enter);
    assert_eq!(ids(&app), ["crm", "old"]);
}

fn event_types() -> FakeAdmin {
    FakeAdmin::with(|s| {
        for (id, pattern, schema) in [
            (
                "order",
                "order.*",
                r#"{"type":"object","required":["amount"],"properties":{"amount":{"type":"number"}}}"#,
            ),
            ("billing", "billing.**", r#"{"type":"object"}"#),
        ] {
            let event_type = hookyard::v1::EventType {
                id: id.to_string(),
                pattern: pattern.to_string(),
                description: format!("{id} events"),
                schema: schema.to_string(),
                version: 1,
                ..Default::default()
            };
            s.event_types.insert(id.to_string(), event_type);
        }
    })
}

#[tokio::test]
async fn event_types_list_with_the_selected_schema_and_delete_after_asking() {
    let fake = event_types();
    let mut app = on_tab(&fake, '8').await;
    assert_eq!(app.tab, Tab::EventTypes);
    assert_screen!("event_types_80x24", app, 80, 24);
    // Sorted by pattern: billing.** first; move to order.* and see its schema.
    press(&mut app, KeyCode::Down);
    let screen = draw(&app, 100, 24);
    assert!(screen.contains("schema of order"), "{screen}");
    assert!(screen.contains("\"amount\""), "{screen}");

    press(&mut app, KeyCode::Char('d'));
    assert!(matches!(&app.mode, Mode::Confirm { question, .. } if question.contains("order")));
    press(&mut app, KeyCode::Char('n'));
    assert!(fake.state.lock().unwrap().event_types.contains_key("order"));
    press(&mut app, KeyCode::Char('d'));
    press(&mut app, KeyCode::Char('y'));
    settle(&mut app, &fake).await;
    assert!(!fake.state.lock().unwrap().event_types.contains_key("order"));
    assert_eq!(app.event_types.list.len(), 1);
    assert!(matches!(&app.flash, Some(Flash::Info(m)) if m.contains("deleted")));
    press(&mut app, KeyCode::Char('?'));
    assert_screen!("help_event_types_80x24", app, 80, 24);
}
