//! The event loop: one `select!` over the terminal's events, a render tick
//! and the updates coming back from the network. Drawing happens on the tick
//! and only when something changed, so a flood of deliveries costs at most
//! `FPS` frames a second.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures::StreamExt;
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

use crate::{
    api::AdminApi,
    app::App,
    config::Connection,
    grpc::GrpcAdmin,
    net::{Runner, Update},
    ui,
};

const FPS: u64 = 20;
/// Bounded: a burst of deliveries waits in the network task, not in memory here.
const UPDATES: usize = 4096;
/// Updates applied per wake-up before the loop looks at keys again.
const BATCH: usize = 2048;

pub async fn run(connection: Connection) -> anyhow::Result<()> {
    let api: Arc<dyn AdminApi> = Arc::new(GrpcAdmin::new(
        &connection.addr,
        &connection.token,
        connection.ca_file.as_deref(),
    )?);
    // Installs a panic hook that restores the terminal before the message.
    let mut terminal = ratatui::init();
    let result = event_loop(&mut terminal, api, &connection.addr).await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    api: Arc<dyn AdminApi>,
    addr: &str,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<Update>(UPDATES);
    let mut runner = Runner::new(api, tx);
    let mut app = App::new(addr);
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / FPS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut dirty = true;
    let plain = ui::no_color();
    loop {
        runner.run(app.take_commands());
        if app.should_quit() {
            return Ok(());
        }
        tokio::select! {
            _ = tick.tick() => {
                app.on_tick(unix_now());
                if dirty || app.animating() {
                    terminal.draw(|frame| {
                        ui::render(&app, frame);
                        if plain {
                            ui::strip_colors(frame.buffer_mut());
                        }
                    })?;
                    dirty = false;
                }
            }
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => {
                    app.handle_key(key);
                    dirty = true;
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            Some(update) = rx.recv() => {
                app.now = unix_now();
                app.apply(update);
                for _ in 0..BATCH {
                    match rx.try_recv() {
                        Ok(update) => app.apply(update),
                        Err(_) => break,
                    }
                }
                dirty = true;
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
