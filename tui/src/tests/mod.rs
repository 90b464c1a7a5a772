//! Screen tests: state changes driven by keys, and snapshots of whole screens
//! on a `TestBackend`, fed by the fake Admin API.

mod jobs;
mod live;
mod net;
mod others;
mod runs;
mod subscriptions;
