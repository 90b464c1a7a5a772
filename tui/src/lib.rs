//! `hookyard-tui`: the admin terminal UI over the daemon's Admin gRPC API.
//!
//! # Layout
//! - `config`: where the daemon is and which token to present.
//! - `api`: the Admin API as a trait (real client in `grpc`, a fake in tests).
//! - `net`: commands to the daemon run off the UI task; the live stream with
//!   reconnects.
//! - `app`: the state (tab, mode, screens), with its modal keys in `modal`
//!   and the daemon's answers in `update`; `screens/*`: one per screen;
//!   `forms`: editing a record;
//!   `ui`: drawing; `keys`: every binding; `stats`: the live header's rates.
//! - `run`: the event loop: one `select!` over the terminal's events, a
//!   render tick and the updates from the network.

pub mod api;
pub mod app;
pub mod config;
pub mod forms;
pub mod grpc;
pub mod keys;
mod modal;
pub mod net;
pub mod run;
pub mod screens;
pub mod stats;
pub mod ui;
mod update;
pub mod widgets;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
