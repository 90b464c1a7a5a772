use crossterm::event::KeyCode;
use hookyard::v1::Subscription;
use tonic::Code;

use crate::{
    api::{AdminApi, ApiError},
    app::{App, Flash, Mode, Tab},
    assert_screen,
    forms::Banner,
    net::{Command, ConnState, Update},
    testing::*,
};

fn fake() -> FakeAdmin {
    FakeAdmin::with(|s| {
        let mut leads = subscription("sub-1", "leads-to-crm", &["lead.*"], "endpoint:crm");
        leads.exclude = vec!["lead.test".to_string()];
        s.subscriptions.insert("sub-1".to_string(), leads);
        let mut billing = subscription("sub-2", "billing-all", &["billing.**"], "endpoint:erp");
        billing.tenant_id = "acme".to_string();
        billing.enabled = false;
        s.subscriptions.insert("sub-2".to_string(), billing);
        s.stats.subscriptions = vec![hookyard::v1::SubscriptionStats {
            subscription_id: "sub-1".to_string(),
            matched: 1234,
        }];
    })
}

async fn on_subscriptions(fake: &FakeAdmin) -> App {
    let mut app = App::new("http://127.0.0.1:8081");
    app.apply(Update::Conn(ConnState::Live));
    press(&mut app, KeyCode::Char('2'));
    assert_eq!(app.tab, Tab::Subscriptions);
    settle(&mut app, fake).await;
    app
}

fn form(app: &App) -> &crate::screens::subscriptions::SubscriptionForm {
    match &app.mode {
        Mode::SubscriptionForm(f) => f,
        other => panic!("expected the subscription form, got {other:?}"),
    }
}

#[tokio::test]
async fn table_and_its_states() {
    let fake = fake();
    let app = on_subscriptions(&fake).await;
    assert_screen!("subscriptions", app, 100, 8);
    assert_screen!("subscriptions_80x24", app, 80, 24);

    let mut empty = on_subscriptions(&FakeAdmin::default()).await;
    assert_screen!("subscriptions_empty", empty, 80, 6);
    empty.switch(Tab::Subscriptions);
    empty.subscriptions.list.reload();
    assert_screen!("subscriptions_loading", empty, 80, 6);

    let down = FakeAdmin::with(|s| {
        s.fail_all = Some(ApiError::new(Code::Unauthenticated, "bad token"));
    });
    let failed = on_subscriptions(&down).await;
    assert_screen!("subscriptions_bad_token", failed, 100, 6);
}

#[tokio::test]
async fn creating_through_the_form() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "orders");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "order.*, refund.**");
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    type_text(&mut app, "endpoint:crm");
    assert_screen!("subscription_form_new", app, 80, 24);
    assert_eq!(
        form(&app).subscription().unwrap(),
        Subscription {
            name: "orders".to_string(),
            patterns: vec!["order.*".to_string(), "refund.**".to_string()],
            target: "endpoint:crm".to_string(),
            enabled: true,
            ..Subscription::default()
        }
    );
    press(&mut app, KeyCode::Enter);
    assert!(form(&app).form.saving);
    // A second Enter while saving sends nothing more.
    press(&mut app, KeyCode::Enter);
    let commands = app.take_commands();
    assert_eq!(commands.len(), 1);
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse));
    assert!(matches!(&app.flash, Some(Flash::Info(m)) if m.contains("orders")));
    let names: Vec<_> = app
        .subscriptions
        .list
        .loaded()
        .unwrap()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, ["billing-all", "leads-to-crm", "orders"]);
}

#[tokio::test]
async fn server_validation_errors_appear_beside_their_fields() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "bad name!");
    press(&mut app, KeyCode::Enter);
    fake.state.lock().unwrap().fail_next = Some(ApiError::invalid(&[
        ("name", "must be 1-128 characters of [A-Za-z0-9_.-]"),
        ("patterns", "at least one pattern is required"),
        ("exclude[1]", "`a..b` has an empty segment at 2"),
        ("target", "must be endpoint:<id>"),
    ]));
    settle(&mut app, &fake).await;
    let f = &form(&app).form;
    assert!(!f.saving);
    assert_eq!(
        f.error_of("name"),
        Some("must be 1-128 characters of [A-Za-z0-9_.-]")
    );
    assert_eq!(
        f.error_of("exclude"),
        Some("#2: `a..b` has an empty segment at 2")
    );
    assert_eq!(
        f.fields[f.focus].key, "name",
        "focus moves to the first bad field"
    );
    assert_screen!("subscription_form_errors", app, 100, 24);
    assert_screen!("subscription_form_errors_80x24", app, 80, 24);
    // Typing in a field clears its error only.
    type_text(&mut app, "x");
    let f = &form(&app).form;
    assert_eq!(f.error_of("name"), None);
    assert!(f.error_of("target").is_some());
}

#[tokio::test]
async fn a_stale_version_offers_to_reload() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    // Cursor on `leads-to-crm` (sorted second).
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('e'));
    assert_eq!(form(&app).original.as_ref().unwrap().id, "sub-1");
    // Someone else saves meanwhile.
    let mut theirs = fake.state.lock().unwrap().subscriptions["sub-1"].clone();
    theirs.description = "changed elsewhere".to_string();
    fake.update_subscription(theirs).await.unwrap();

    press(&mut app, KeyCode::End);
    for _ in 0..8 {
        press(&mut app, KeyCode::Tab);
    }
    type_text(&mut app, "mine");
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_eq!(form(&app).form.banner, Some(Banner::Stale));
    assert_screen!("subscription_form_stale", app, 120, 24);

    app.handle_key(ctrl('r'));
    assert_eq!(
        queued(&mut app),
        vec![Command::ReloadSubscription("sub-1".to_string())]
    );
    app.handle_key(ctrl('r'));
    settle(&mut app, &fake).await;
    let f = form(&app);
    assert_eq!(f.original.as_ref().unwrap().version, 4);
    assert_eq!(f.form.value("description"), "changed elsewhere");
    assert!(matches!(f.form.banner, Some(Banner::Info(_))));
    // Now the save goes through.
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse));
}

#[tokio::test]
async fn delete_asks_first_and_space_toggles() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Char('d'));
    assert_screen!("subscription_delete_confirm", app, 80, 10);
    press(&mut app, KeyCode::Char('n'));
    assert!(queued(&mut app).is_empty());
    press(&mut app, KeyCode::Char('d'));
    press(&mut app, KeyCode::Char('y'));
    settle(&mut app, &fake).await;
    assert!(!fake
        .state
        .lock()
        .unwrap()
        .subscriptions
        .contains_key("sub-2"));

    // The remaining one is enabled; space disables it.
    press(&mut app, KeyCode::Char(' '));
    settle(&mut app, &fake).await;
    assert!(!fake.state.lock().unwrap().subscriptions["sub-1"].enabled);
    assert!(!app.subscriptions.list.loaded().unwrap()[0].enabled);
}

#[tokio::test]
async fn t_lights_up_the_subscriptions_an_event_would_reach() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Char('t'));
    type_text(&mut app, "lead.created");
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "{not json");
    press(&mut app, KeyCode::Enter);
    assert!(queued(&mut app).is_empty(), "a bad payload is caught here");
    for _ in 0..9 {
        press(&mut app, KeyCode::Backspace);
    }
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    let matched = app.subscriptions.matched.clone().unwrap();
    assert_eq!(matched.into_iter().collect::<Vec<_>>(), ["sub-1"]);
    assert_screen!("subscriptions_route_test", app, 100, 24);
    press(&mut app, KeyCode::Esc);
    assert!(app.subscriptions.matched.is_none());
}

#[tokio::test]
async fn numbers_refresh_every_few_seconds_while_shown() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    for _ in 0..99 {
        app.on_tick(T0 as u64);
    }
    assert!(queued(&mut app).is_empty());
    app.on_tick(T0 as u64);
    assert_eq!(queued(&mut app), vec![Command::LoadStats]);
    press(&mut app, KeyCode::Char('1'));
    for _ in 0..100 {
        app.on_tick(T0 as u64);
    }
    assert!(queued(&mut app).is_empty(), "not on Live");
}

#[tokio::test]
async fn help_fits_80x24_on_every_screen() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Char('?'));
    assert_screen!("help_subscriptions_80x24", app, 80, 24);
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Char('4'));
    press(&mut app, KeyCode::Char('?'));
    assert_screen!("help_dead_80x24", app, 80, 24);
}

#[tokio::test]
async fn flow_inputs_are_edited_as_name_template_pairs() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Char('n'));
    type_text(&mut app, "welcome");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "lead.created");
    for _ in 0..3 {
        press(&mut app, KeyCode::Tab);
    }
    type_text(&mut app, "flow:onboarding");
    press(&mut app, KeyCode::Tab);
    type_text(&mut app, "email={{ event.payload.email }}; oops");
    press(&mut app, KeyCode::Enter);
    assert!(
        queued(&mut app).is_empty(),
        "caught before asking the daemon"
    );
    assert_eq!(
        form(&app).form.error_of("inputs"),
        Some("`oops` is not name=template")
    );
    assert_screen!("subscription_form_inputs_error", app, 100, 24);
    for _ in 0.."; oops".len() {
        press(&mut app, KeyCode::Backspace);
    }
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    let stored = fake
        .state
        .lock()
        .unwrap()
        .subscriptions
        .values()
        .find(|s| s.name == "welcome")
        .cloned()
        .unwrap();
    assert_eq!(stored.inputs["email"], "{{ event.payload.email }}");
    assert_eq!(stored.target, "flow:onboarding");
}

#[tokio::test]
async fn l_shows_the_subscriptions_deliveries_on_live() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('l'));
    assert_eq!(app.tab, Tab::Live);
    assert_eq!(app.live.filter_text, "sub:leads-to-crm");
    assert_eq!(
        app.take_commands(),
        vec![Command::Watch(hookyard::v1::DeliveryFilter {
            subscription_id: "sub-1".to_string(),
            ..Default::default()
        })]
    );
}

#[tokio::test]
async fn editing_the_filter_sends_it_and_shows_the_servers_error_beside_it() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('e'));
    // From the name to the filter.
    for _ in 0..6 {
        press(&mut app, KeyCode::Tab);
    }
    type_text(&mut app, "event.payload.amount >");
    press(&mut app, KeyCode::Enter);
    let commands = queued(&mut app);
    let [Command::SaveSubscription {
        subscription,
        create: false,
    }] = commands.as_slice()
    else {
        panic!("expected one update, got {commands:?}");
    };
    assert_eq!(subscription.filter, "event.payload.amount >");
    fake.state.lock().unwrap().fail_next = Some(ApiError::invalid(&[(
        "filter",
        "unexpected end of input at 1:23",
    )]));
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    assert_eq!(
        form(&app).form.error_of("filter"),
        Some("unexpected end of input at 1:23")
    );
    assert_screen!("subscription_form_filter_error", app, 100, 24);
    type_text(&mut app, " 100");
    assert_eq!(form(&app).form.error_of("filter"), None);
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse));
    assert_eq!(
        fake.state.lock().unwrap().subscriptions["sub-1"].filter,
        "event.payload.amount > 100"
    );
}

#[tokio::test]
async fn the_ordering_key_reaches_the_save_and_the_servers_error_shows_beside_it() {
    let fake = fake();
    let mut app = on_subscriptions(&fake).await;
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char('e'));
    // From the name to the ordering key, just after the filter.
    for _ in 0..7 {
        press(&mut app, KeyCode::Tab);
    }
    type_text(&mut app, "{{ event.payload.customer_id }");
    press(&mut app, KeyCode::Enter);
    let commands = queued(&mut app);
    let [Command::SaveSubscription {
        subscription,
        create: false,
    }] = commands.as_slice()
    else {
        panic!("expected one update, got {commands:?}");
    };
    assert_eq!(subscription.ordering_key, "{{ event.payload.customer_id }");
    fake.state.lock().unwrap().fail_next = Some(ApiError::invalid(&[(
        "ordering_key",
        "unexpected `}` at 1:30",
    )]));
    for command in commands {
        app.apply(crate::net::execute(&fake, command).await.unwrap());
    }
    assert_eq!(
        form(&app).form.error_of("ordering_key"),
        Some("unexpected `}` at 1:30")
    );
    assert_screen!("subscription_form_ordering_key_error", app, 100, 24);
    type_text(&mut app, "}");
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert!(matches!(app.mode, Mode::Browse));
    assert_eq!(
        fake.state.lock().unwrap().subscriptions["sub-1"].ordering_key,
        "{{ event.payload.customer_id }}"
    );
    // The table shows it, shortened.
    let screen = draw(&app, 160, 8);
    assert!(screen.contains("payload.customer"), "{screen}");
    assert_eq!(
        crate::screens::subscriptions::key_summary("{{ event.payload.customer_id }}"),
        "payload.customer_id"
    );
    assert_eq!(
        crate::screens::subscriptions::key_summary("{{ a }}-{{ b }}"),
        "{{ a }}-{{ b }}"
    );
}
