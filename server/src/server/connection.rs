//! One connection's life after `accept`. hyper bounds part of it (HTTP/1
//! header reads, HTTP/2 keep-alive pings); this bounds the rest:
//! - the first request must arrive within `header_timeout`. hyper-util's
//!   auto builder waits for the first bytes (to tell HTTP/1 from HTTP/2)
//!   with no timer, and an HTTP/2 peer may send its preface and then
//!   nothing: either would hold a connection permit for ever;
//! - a connection with no request in progress for `idle_timeout` is closed.
//!   An idle HTTP/2 peer answers keep-alive pings for ever, so pings alone
//!   never end it.
//!
//! A request is in progress from its headers until its response body is
//! done, so a long server stream (WatchDeliveries) keeps its connection.
//! Closing is graceful (HTTP/2 GOAWAY, so a client retries what was not
//! taken); a peer that does not finish within `CLOSE_GRACE` is dropped.

use std::{
    future::Future,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Body, http::Request, response::Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::body::{Frame, SizeHint};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;
use tower::Service;

/// How long a closing connection's peer gets to finish once nothing is in
/// progress (answer the GOAWAY's ping, read the last response).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// What the connection's requests report to its driver.
pub struct Activity {
    opened: Instant,
    seen_request: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` at which the last request ended.
    idle_since_ms: AtomicU64,
    ended: Notify,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            seen_request: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            ended: Notify::new(),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.seen_request.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn snapshot(&self, closing_since: Option<Instant>) -> Snapshot {
        let idle_since_ms = self.idle_since_ms.load(Ordering::Acquire);
        Snapshot {
            opened: self.opened,
            seen_request: self.seen_request.load(Ordering::Acquire),
            in_flight: self.in_flight.load(Ordering::Acquire),
            idle_since: self.opened + Duration::from_millis(idle_since_ms),
            closing_since,
        }
    }
}

/// One request in progress; dropped with its response body.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let ms = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.fetch_max(ms, Ordering::AcqRel);
        if activity.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.ended.notify_one();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    opened: Instant,
    seen_request: bool,
    in_flight: usize,
    idle_since: Instant,
    closing_since: Option<Instant>,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Look again at this instant, or when a request ends (`None`).
    Wait(Option<Instant>),
    /// Start a graceful close.
    Close,
    /// Drop the connection now.
    Drop,
}

/// What to do with a connection now: a pure function of what it reported.
fn verdict(s: Snapshot, now: Instant, timeouts: Timeouts) -> Verdict {
    let at = |deadline: Instant| {
        if now >= deadline {
            None
        } else {
            Some(Verdict::Wait(Some(deadline)))
        }
    };
    if let Some(since) = s.closing_since {
        // Requests in progress end on their own bounds (request_timeout,
        // or the client leaving a stream).
        if s.in_flight > 0 {
            return Verdict::Wait(None);
        }
        return at(since + CLOSE_GRACE).unwrap_or(Verdict::Drop);
    }
    if !s.seen_request {
        return at(s.opened + timeouts.header).unwrap_or(Verdict::Drop);
    }
    if s.in_flight > 0 {
        return Verdict::Wait(None);
    }
    at(s.idle_since + timeouts.idle).unwrap_or(Verdict::Close)
}

/// Serves `connection` until it ends, is found idle or silent, or the daemon
/// stops; `close` starts its graceful close.
pub async fn drive<C: Future>(
    connection: C,
    close: impl Fn(Pin<&mut C>),
    activity: &Activity,
    timeouts: Timeouts,
    shutdown: &CancellationToken,
) {
    let mut connection = pin!(connection);
    let mut closing_since = None;
    loop {
        let now = Instant::now();
        let wake = match verdict(activity.snapshot(closing_since), now, timeouts) {
            Verdict::Drop => return,
            Verdict::Close => {
                close(connection.as_mut());
                closing_since = Some(now);
                continue;
            }
            Verdict::Wait(wake) => wake,
        };
        let timer = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = activity.ended.notified() => {}
            _ = timer => {}
            _ = shutdown.cancelled(), if closing_since.is_none() => {
                close(connection.as_mut());
                closing_since = Some(Instant::now());
            }
        }
    }
}

/// The app with each request counted in progress until its response body
/// is done.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity }
    }
}

impl<S, B> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
{
    type Response = Response<TrackedBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<TrackedBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let in_flight = self.activity.begin();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

pub struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(1),
        idle: Duration::from_secs(60),
    };

    fn fresh(opened: Instant) -> Snapshot {
        Snapshot {
            opened,
            seen_request: false,
            in_flight: 0,
            idle_since: opened,
            closing_since: None,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_connection_without_a_first_request_is_dropped_at_the_header_timeout() {
        let t0 = Instant::now();
        let s = fresh(t0);
        assert_eq!(verdict(s, t0, TIMEOUTS), Verdict::Wait(Some(t0 + secs(1))));
        assert_eq!(verdict(s, t0 + secs(1), TIMEOUTS), Verdict::Drop);
    }

    #[test]
    fn a_request_in_progress_is_never_cut_however_long() {
        let t0 = Instant::now();
        let s = Snapshot {
            seen_request: true,
            in_flight: 1,
            ..fresh(t0)
        };
        assert_eq!(verdict(s, t0 + secs(3600), TIMEOUTS), Verdict::Wait(None));
    }

    #[test]
    fn an_idle_connection_is_closed_at_the_idle_timeout_counted_from_its_last_request() {
        let t0 = Instant::now();
        let s = Snapshot {
            seen_request: true,
            idle_since: t0 + secs(30),
            ..fresh(t0)
        };
        assert_eq!(
            verdict(s, t0 + secs(60), TIMEOUTS),
            Verdict::Wait(Some(t0 + secs(90)))
        );
        assert_eq!(verdict(s, t0 + secs(90), TIMEOUTS), Verdict::Close);
    }

    #[test]
    fn a_closing_connection_gets_a_grace_then_is_dropped_unless_busy() {
        let t0 = Instant::now();
        let closing = Snapshot {
            seen_request: true,
            closing_since: Some(t0),
            ..fresh(t0)
        };
        assert_eq!(
            verdict(closing, t0, TIMEOUTS),
            Verdict::Wait(Some(t0 + CLOSE_GRACE))
        );
        assert_eq!(verdict(closing, t0 + CLOSE_GRACE, TIMEOUTS), Verdict::Drop);
        let busy = Snapshot {
            in_flight: 2,
            ..closing
        };
        assert_eq!(verdict(busy, t0 + secs(600), TIMEOUTS), Verdict::Wait(None));
        // A daemon stopping before a silent connection sent anything.
        let silent = Snapshot {
            closing_since: Some(t0),
            ..fresh(t0)
        };
        assert_eq!(verdict(silent, t0 + CLOSE_GRACE, TIMEOUTS), Verdict::Drop);
    }

    #[tokio::test]
    async fn requests_report_progress_until_their_body_is_dropped() {
        let activity = Arc::new(Activity::new());
        let first = activity.begin();
        let second = activity.begin();
        let s = activity.snapshot(None);
        assert!(s.seen_request);
        assert_eq!(s.in_flight, 2);
        drop(first);
        assert_eq!(activity.snapshot(None).in_flight, 1);
        drop(second);
        assert_eq!(activity.snapshot(None).in_flight, 0);
        // The last one to end wakes the driver.
        tokio::time::timeout(Duration::from_secs(1), activity.ended.notified())
            .await
            .expect("a notification when the last request ended");
    }
}
