//! Hookyard's benchmark harness as a library: the binary `hookyard-bench`
//! runs the scenarios; the end-to-end fault tests reuse the sink.
//!
//! # Layout
//! - `load`: the load generator (HTTP/1.1 keep-alive and gRPC; closed loop or
//!   open loop at a fixed rate, latency from the intended send time).
//! - `sink`: the webhook receiver that records arrivals per `webhook-id` and
//!   can fail, slow down or drop connections.
//! - `ceiling`: a bare server that reads the body and answers, storing
//!   nothing: what the machine can do with the same load.
//! - `daemon`: starts the real `hookyard` binary in a temp data dir.
//! - `nodes`: several daemons on one PostgreSQL database (`--nodes`).
//! - `storage`: SQLite, or PostgreSQL (a cluster of its own or a given
//!   server) with a fresh database for every daemon.
//! - `report`: latency summaries, the table on stdout and the JSON file.
//! - `scenarios`: one function per command.
//! - `wrk`: `wrk` as a second HTTP load generator (installed if missing),
//!   to measure the HTTP ceiling with a generator faster than the server.

pub mod ceiling;
pub mod daemon;
pub mod load;
pub mod nodes;
pub mod report;
pub mod scenarios;
pub mod sink;
pub mod storage;
pub mod wrk;

/// The API key every benchmark daemon accepts.
pub const API_KEY: &str = "hy_bench_key_0123456789abcdef";
