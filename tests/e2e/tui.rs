//! The real `hookyard-tui` binary in a real pseudo-terminal against a real
//! daemon: an event shows up on Live, a subscription made through the form
//! routes the next event; a flow run started through the API shows up on
//! Runs, opens with its steps and is cancelled. The screen is read by a terminal emulator
//! (`vt100`), and every wait is on the screen's contents with a deadline.

use std::{
    io::{Read, Write},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

use crate::{
    api::{http_event, publish_http},
    harness::{built_binary, Daemon, TestConfig, WAIT},
    runs::started,
    sink::{Behaviour, TestReceiver},
};

const ROWS: u16 = 30;
const COLS: u16 = 120;
/// How often the screen is looked at while waiting for it to change.
const POLL: Duration = Duration::from_millis(50);

/// The TUI running in a pseudo-terminal, its output fed to an emulator.
struct Terminal {
    screen: Arc<Mutex<vt100::Parser>>,
    keys: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    // Kept open: dropping the master hangs up the terminal.
    _master: Box<dyn MasterPty + Send>,
}

impl Terminal {
    fn start(args: &[&str]) -> Terminal {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        let mut command = CommandBuilder::new(built_binary("hookyard-tui"));
        command.args(args);
        command.env("TERM", "xterm-256color");
        for var in ["HOOKYARD_ADDR", "HOOKYARD_TOKEN", "HOOKYARD_DATA_DIR"] {
            command.env_remove(var);
        }
        let child = pty
            .slave
            .spawn_command(command)
            .expect("start hookyard-tui in the terminal");
        let mut output = pty
            .master
            .try_clone_reader()
            .expect("the terminal's output");
        let keys = pty.master.take_writer().expect("the terminal's input");
        let screen = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let feed = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = output.read(&mut buf) {
                if n == 0 {
                    break;
                }
                feed.lock().expect("the screen lock").process(&buf[..n]);
            }
        });
        Terminal {
            screen,
            keys,
            child,
            _master: pty.master,
        }
    }

    fn contents(&self) -> String {
        self.screen
            .lock()
            .expect("the screen lock")
            .screen()
            .contents()
    }

    /// Waits until every one of `texts` is on one line of the screen.
    async fn wait_for_line(&self, texts: &[&str]) -> String {
        self.wait_for(&format!("a line with {texts:?}"), |line| {
            texts.iter().all(|t| line.contains(t))
        })
        .await
    }

    /// Waits until a line of the screen satisfies `test`.
    async fn wait_for(&self, what: &str, test: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let contents = self.contents();
            if let Some(line) = contents.lines().find(|line| test(line)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {WAIT:?}; the screen:\n{contents}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn send(&mut self, keys: &str) {
        self.keys
            .write_all(keys.as_bytes())
            .expect("type into the terminal");
        self.keys.flush().expect("flush the terminal input");
    }

    async fn wait_for_exit(&mut self) -> portable_pty::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("the TUI's status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the TUI did not exit within {WAIT:?}; the screen:\n{}",
                self.contents()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Terminal {
    /// The TUI left the alternate screen and showed the cursor again.
    async fn wait_until_restored(&self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let restored = {
                let parser = self.screen.lock().expect("the screen lock");
                !parser.screen().alternate_screen() && !parser.screen().hide_cursor()
            };
            if restored {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal was not restored within {WAIT:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[tokio::test]
async fn live_view_and_a_subscription_made_in_the_form_route_the_next_event() {
    let mut sink = TestReceiver::start(Behaviour::Always(200)).await;
    let mut daemon = Daemon::start(TestConfig::crm(&sink.url())).await;
    let addr = format!("http://{}", daemon.admin_addr());
    let token = daemon.admin_token();
    let mut tui = Terminal::start(&["--addr", &addr, "--token", &token]);
    tui.wait_for_line(&["1 Live", "● live"]).await;

    // An event published now shows up on Live, delivered.
    let lead = publish_http(&daemon, &http_event("lead.created")).await;
    assert_eq!(lead.matched, 1);
    tui.wait_for_line(&["lead.created", "endpoint:crm", "ok", "200"])
        .await;
    assert_eq!(sink.next().await.json()["event_name"], "lead.created");

    // Nothing routes `order.*` yet.
    let unrouted = publish_http(&daemon, &http_event("order.placed")).await;
    assert_eq!(unrouted.matched, 0);

    // A new subscription, through the form.
    tui.send("2");
    tui.wait_for_line(&["leads-to-crm", "lead.*"]).await;
    tui.send("n");
    tui.wait_for_line(&["New subscription"]).await;
    tui.send("orders-to-crm\torder.*\t\t\tendpoint:crm");
    // The value typed, not the field's hint.
    tui.wait_for("the typed target", |line| {
        line.contains("target") && line.contains("endpoint:crm") && !line.contains("e.g.")
    })
    .await;
    tui.send("\r");
    tui.wait_for_line(&["saved subscription `orders-to-crm`"])
        .await;
    tui.wait_for_line(&["orders-to-crm", "order.*", "endpoint:crm", "yes"])
        .await;

    // The next order is routed by it, and Live shows the delivery.
    tui.send("1");
    tui.wait_for_line(&["lead.created", "ok"]).await;
    let order = publish_http(&daemon, &http_event("order.placed")).await;
    assert_eq!(order.matched, 1);
    tui.wait_for_line(&["order.placed", "endpoint:crm", "ok", "200"])
        .await;
    let received = sink.next().await;
    assert_eq!(received.json()["event_name"], "order.placed");

    // The daemon dies and comes back: the screen says so, and the stream
    // resumes. (A crash rather than SIGTERM: the daemon's graceful shutdown
    // waits for open watch streams until its deadline.)
    daemon.kill9().await;
    let line = tui.wait_for_line(&["reconnecting…"]).await;
    assert!(
        line.contains("1 Live"),
        "the state is on the top line: {line}"
    );
    daemon.restart().await;
    tui.wait_for_line(&["1 Live", "● live"]).await;
    let after = publish_http(&daemon, &http_event("lead.updated")).await;
    assert_eq!(after.matched, 1);
    tui.wait_for_line(&["lead.updated", "endpoint:crm", "ok", "200"])
        .await;

    tui.send("q");
    let status = tui.wait_for_exit().await;
    assert!(status.success(), "hookyard-tui exited with {status:?}");
    tui.wait_until_restored().await;
}

#[tokio::test]
async fn runs_screen_follows_a_run_started_through_the_api_and_cancels_it() {
    let drip = serde_json::json!({
        "id": "drip",
        "description": "Mails a lead an hour later",
        "inputs": {"email": {"type": "email", "required": true}},
        "correlate_by": "{{ inputs.email }}",
        "steps": [
            {"id": "later", "delay": "1h", "log": "mail {{ inputs.email }}"},
            {"id": "done", "log": "done"}
        ]
    });
    let daemon = Daemon::start(TestConfig::new().flow(drip)).await;
    let addr = format!("http://{}", daemon.admin_addr());
    let token = daemon.admin_token();
    let mut tui = Terminal::start(&["--addr", &addr, "--token", &token]);
    tui.wait_for_line(&["1 Live", "● live"]).await;

    tui.send("6");
    tui.wait_for_line(&["no runs yet"]).await;
    tui.wait_for_line(&["filter:", "● live"]).await;
    // Started after the screen opened: it arrives through WatchRuns.
    started(
        &daemon,
        "drip",
        serde_json::json!({"email": "ada@example.com"}),
    )
    .await;
    tui.wait_for_line(&["drip", "waiting", "ada@example.com", "later"])
        .await;

    tui.send("\r");
    tui.wait_for_line(&["Steps (2)"]).await;
    tui.wait_for_line(&["later", "waiting"]).await;
    tui.send("c");
    tui.wait_for_line(&["Cancel run"]).await;
    tui.send("y");
    tui.wait_for_line(&["cancelled"]).await;
    tui.wait_for_line(&["Run ", "cancelled", "flow drip"]).await;

    // A second cancel: the daemon says it is over, and the footer says so.
    tui.send("c");
    tui.wait_for_line(&["Cancel run"]).await;
    tui.send("y");
    tui.wait_for_line(&["not cancelled", "already finished"])
        .await;

    // Esc alone: followed at once by a key, a terminal reads Alt-<key>.
    tui.send("\x1b");
    tui.wait_for_line(&["drip", "cancelled", "ada@example.com"])
        .await;
    tui.send("7");
    tui.wait_for_line(&[
        "drip",
        "v1",
        "Mails a lead an hour later",
        "2: later → done",
        "no",
    ])
    .await;
    tui.send("v");
    tui.wait_for_line(&["Flow drip v1", "definition"]).await;

    tui.send("\x1b");
    tui.wait_for_line(&["id", "version", "description"]).await;
    tui.send("q");
    let status = tui.wait_for_exit().await;
    assert!(status.success(), "hookyard-tui exited with {status:?}");
}
