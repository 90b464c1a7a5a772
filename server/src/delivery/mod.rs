//! Delivery: getting committed deliveries to tenant endpoints. The dispatcher
//! decides when each delivery is attempted; the sender makes one signed HTTP
//! attempt (with an endpoint's OAuth2 token and TLS client when it has
//! them); the retry policy, the circuit breaker, signing and the SSRF guard
//! are pure pieces the two share.

pub mod breaker;
pub mod dispatcher;
pub mod endpoint_tls;
pub mod health;
pub mod limits;
pub mod oauth;
pub mod request;
pub mod retry;
pub mod sender;
pub mod signing;
pub mod ssrf;

pub use dispatcher::{Control, Dispatcher, DispatcherConfig};
pub use sender::Sender;
