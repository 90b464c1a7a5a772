//! A bound on gRPC calls: `http.request_timeout` from the request until the
//! response headers. A unary call (including the reading of its message)
//! answers within it or gets DEADLINE_EXCEEDED; a server stream
//! (WatchDeliveries, WatchRuns) has its headers out at once, and its body is
//! not bounded, so it lives as long as its client wants. HTTP routes have
//! their own timeout, which answers in HTTP terms.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::Response,
};

pub fn bound_grpc_calls(router: axum::Router, limit: Duration) -> axum::Router {
    router.layer(middleware::from_fn_with_state(limit, bound))
}

async fn bound(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => tonic::Status::deadline_exceeded(format!(
            "the call did not finish within {} (http.request_timeout)",
            humantime::format_duration(limit)
        ))
        .into_http(),
    }
}
