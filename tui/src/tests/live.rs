use crossterm::event::KeyCode;
use hookyard::v1::{DeliveryFilter, DeliveryStatus, EndpointState};

use crate::{
    app::{App, Mode},
    assert_screen,
    net::{Command, ConnState, Update},
    testing::*,
};

fn live_app() -> App {
    let mut app = App::new("http://127.0.0.1:8081");
    app.now = T0 as u64 + 10;
    app.apply(Update::Conn(ConnState::Live));
    app
}

/// A delivery that goes pending → in flight → ok, and others behind it.
fn feed(app: &mut App) {
    for id in 1..=4 {
        app.apply(update(delivery(
            id,
            "lead.created",
            DeliveryStatus::Pending,
        )));
    }
    app.apply(update(delivery(
        1,
        "lead.created",
        DeliveryStatus::Succeeded,
    )));
    app.apply(update(delivery(2, "lead.created", DeliveryStatus::Failed)));
    app.apply(update(delivery(
        3,
        "lead.created",
        DeliveryStatus::InFlight,
    )));
    app.apply(update(delivery(
        5,
        "billing.invoice.paid",
        DeliveryStatus::Dead,
    )));
}

#[test]
fn live_shows_deliveries_newest_on_top_updated_in_place() {
    let mut app = live_app();
    feed(&mut app);
    let ids: Vec<u64> = app.live.rows().map(|r| r.delivery.id).collect();
    assert_eq!(ids, vec![5, 4, 3, 2, 1]);
    assert_screen!("live_120x16", app, 120, 16);
}

#[test]
fn live_at_80x24() {
    let mut app = live_app();
    feed(&mut app);
    assert_screen!("live_80x24", app, 80, 24);
}

#[test]
fn live_empty_and_connecting() {
    let app = App::new("http://127.0.0.1:8081");
    assert_screen!("live_connecting", app, 80, 8);
}

#[test]
fn live_says_reconnecting_when_the_daemon_goes_away() {
    let mut app = live_app();
    feed(&mut app);
    app.apply(Update::Conn(ConnState::Reconnecting {
        attempt: 2,
        error: "daemon unreachable".to_string(),
    }));
    assert_screen!("live_reconnecting", app, 100, 8);
}

#[test]
fn pausing_buffers_and_counts_until_resumed() {
    let mut app = live_app();
    feed(&mut app);
    press(&mut app, KeyCode::Char(' '));
    app.apply(update(delivery(6, "lead.updated", DeliveryStatus::Pending)));
    app.apply(update(delivery(7, "lead.updated", DeliveryStatus::Pending)));
    assert_eq!(app.live.waiting(), 2);
    assert_eq!(app.live.rows().count(), 5);
    assert_screen!("live_paused", app, 100, 10);
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(app.live.waiting(), 0);
    assert_eq!(app.live.rows().next().unwrap().delivery.id, 7);
}

#[test]
fn the_buffer_is_bounded() {
    let mut app = live_app();
    for id in 0..(crate::screens::live::ROWS as u64 + 50) {
        app.apply(update(delivery(
            id,
            "lead.created",
            DeliveryStatus::Pending,
        )));
    }
    assert_eq!(app.live.rows().count(), crate::screens::live::ROWS);
    // An evicted delivery that changes again comes back as a new row.
    app.apply(update(delivery(
        3,
        "lead.created",
        DeliveryStatus::Succeeded,
    )));
    assert_eq!(app.live.rows().next().unwrap().delivery.id, 3);
}

#[test]
fn slash_sets_a_server_side_filter_and_restarts_the_stream() {
    let mut app = live_app();
    feed(&mut app);
    app.take_commands();
    press(&mut app, KeyCode::Char('/'));
    type_text(&mut app, "lead.* status:bogus");
    press(&mut app, KeyCode::Enter);
    assert!(matches!(&app.mode, Mode::Filter { error: Some(_), .. }));
    assert_screen!("live_filter_error", app, 100, 6);
    for _ in 0..5 {
        press(&mut app, KeyCode::Backspace);
    }
    type_text(&mut app, "dead endpoint:crm");
    press(&mut app, KeyCode::Enter);
    assert!(matches!(app.mode, Mode::Browse));
    let expected = DeliveryFilter {
        status: DeliveryStatus::Dead.into(),
        endpoint_id: "crm".to_string(),
        event_name: "lead.*".to_string(),
        ..DeliveryFilter::default()
    };
    assert_eq!(app.take_commands(), vec![Command::Watch(expected)]);
    assert_eq!(app.live.rows().count(), 0, "a new filter starts afresh");
    assert_screen!("live_filtered_empty", app, 100, 6);
}

#[test]
fn header_shows_rates_over_the_last_minute() {
    let mut app = live_app();
    feed(&mut app);
    let s = app.live.stats.summary(app.now);
    assert_eq!(s.success_rate, Some(1.0 / 3.0));
    assert!(s.events_per_sec > 0.0);
}

#[tokio::test]
async fn enter_opens_the_detail_and_r_retries() {
    let fake = FakeAdmin::with(|s| {
        s.details.insert(2, detail(2));
        s.deliveries
            .push(delivery(2, "lead.created", DeliveryStatus::Failed));
        s.endpoints.insert(
            "crm".to_string(),
            endpoint(
                "crm",
                "https://crm.example.com/hook",
                EndpointState::Enabled,
            ),
        );
    });
    let mut app = live_app();
    settle(&mut app, &fake).await;
    feed(&mut app);
    app.take_commands();
    // Rows: 5, 4, 3, 2, 1; go to #2.
    for _ in 0..3 {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::Enter);
    assert_eq!(queued(&mut app), vec![Command::LoadDetail(2)]);
    assert_screen!("detail_loading", app, 80, 6);
    app.apply(Update::Detail(2, fake.get_delivery_now(2)));
    assert_screen!("detail", app, 100, 40);
    press(&mut app, KeyCode::Char('r'));
    settle(&mut app, &fake).await;
    assert_eq!(fake.state.lock().unwrap().retried, vec![2]);
    assert_screen!("detail_retried_80x24", app, 80, 24);
    press(&mut app, KeyCode::Esc);
    assert!(matches!(app.mode, Mode::Browse));
}

#[tokio::test]
async fn detail_of_a_missing_delivery_says_so() {
    let fake = FakeAdmin::default();
    let mut app = live_app();
    feed(&mut app);
    press(&mut app, KeyCode::Enter);
    settle(&mut app, &fake).await;
    assert_screen!("detail_not_found", app, 80, 5);
}

#[test]
fn q_quits() {
    let mut app = live_app();
    press(&mut app, KeyCode::Char('q'));
    assert!(app.should_quit());
}

#[test]
fn help_lists_the_keys() {
    let mut app = live_app();
    press(&mut app, KeyCode::Char('?'));
    assert_screen!("help", app, 80, 24);
}

#[test]
fn live_at_200x60() {
    let mut app = live_app();
    feed(&mut app);
    assert_screen!("live_200x60", app, 200, 60);
}

/// Colours are not in the text snapshots; read them off the buffer.
#[test]
fn statuses_are_coloured() {
    use ratatui::{backend::TestBackend, style::Color, Terminal};

    let mut app = live_app();
    feed(&mut app);
    let mut terminal = Terminal::new(TestBackend::new(100, 12)).unwrap();
    terminal
        .draw(|frame| crate::ui::render(&app, frame))
        .unwrap();
    let buffer = terminal.backend().buffer();
    // The table starts on the fifth line (tabs, stats, filter, header).
    let colour_of = |word: &str| -> Color {
        for y in 4..buffer.area.height {
            let line: String = (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect();
            if let Some(x) = line.find(&format!(" {word} ")) {
                let x = line[..x + 1].chars().count() as u16;
                return buffer[(x, y)].fg;
            }
        }
        panic!("`{word}` is not on screen");
    };
    assert_eq!(colour_of("dead"), Color::Red);
    assert_eq!(colour_of("failed"), Color::Yellow);
    assert_eq!(colour_of("ok"), Color::Green);
    assert_eq!(colour_of("in flight"), Color::Cyan);
}

#[test]
fn live_shows_the_latest_deliveries_on_connect_without_overwriting_a_streamed_change() {
    let mut app = live_app();
    app.apply(update(delivery(
        3,
        "lead.created",
        DeliveryStatus::Succeeded,
    )));
    // Newest first, as ListDeliveries answers; 3 came by the stream already.
    app.apply(Update::Recent(vec![
        delivery(3, "lead.created", DeliveryStatus::Pending),
        delivery(2, "lead.updated", DeliveryStatus::Failed),
        delivery(1, "lead.created", DeliveryStatus::Succeeded),
    ]));
    let rows: Vec<(u64, i32)> = app
        .live
        .rows()
        .map(|r| (r.delivery.id, r.delivery.status))
        .collect();
    assert_eq!(
        rows,
        [
            (2, DeliveryStatus::Failed as i32),
            (1, DeliveryStatus::Succeeded as i32),
            (3, DeliveryStatus::Succeeded as i32),
        ],
        "the listed ones are added, the streamed row keeps its newer state"
    );
}
