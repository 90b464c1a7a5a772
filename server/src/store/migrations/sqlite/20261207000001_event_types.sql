-- The optional event-type catalog: a JSON Schema (as JSON text) that the
-- payload of every event whose name matches `pattern` must satisfy. One
-- type per pattern. Deletes are hard: nothing refers to an event type.

CREATE TABLE event_types (
    id           TEXT    PRIMARY KEY,
    pattern      TEXT    NOT NULL UNIQUE,
    description  TEXT    NOT NULL,
    schema       TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);
