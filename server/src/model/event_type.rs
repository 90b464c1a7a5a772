//! An event type: the JSON Schema that the payloads of the events whose name
//! matches a pattern must satisfy. The catalog of event types is optional:
//! an event that no type's pattern matches is taken as it is.

/// One entry of the event-type catalog, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    pub id: String,
    /// An event name pattern (`order.*`, `billing.**`), the grammar of
    /// subscriptions. Unique: one schema per pattern.
    pub pattern: String,
    pub description: String,
    /// The JSON Schema as JSON text (an object; draft 2020-12 unless its
    /// `$schema` says otherwise). Compiled when written and when loaded.
    pub schema: String,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
}
