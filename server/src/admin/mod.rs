//! The Admin API (`hookyard.v1.Admin`): endpoints, subscriptions, sources and event types, route
//! testing, the delivery history, retries, and the live feed of delivery
//! changes. It listens on its own address and every call needs the admin token.

pub mod convert;
mod endpoints;
mod event_types;
pub mod feed;
pub mod flows;
pub mod jobs;
pub mod service;
mod source_convert;
mod sources;
mod stats;
pub mod token;
pub mod validate;
mod watch;

pub use service::AdminService;
