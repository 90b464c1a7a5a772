-- Hookyard's schema. Times are milliseconds since the Unix epoch.

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    name         TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    tenant_id    TEXT,
    time_ms      INTEGER NOT NULL,
    payload      TEXT    NOT NULL,
    attributes   TEXT    NOT NULL,
    body_hash    BLOB    NOT NULL,
    matched      INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL
);

CREATE TABLE endpoints (
    id                 TEXT    PRIMARY KEY,
    url                TEXT    NOT NULL,
    tenant_id          TEXT,
    secret             TEXT    NOT NULL,
    headers            TEXT    NOT NULL,
    timeout_ms         INTEGER,
    retry_schedule_ms  TEXT,
    max_in_flight      INTEGER,
    state              TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    version            INTEGER NOT NULL,
    created_ms         INTEGER NOT NULL,
    updated_ms         INTEGER NOT NULL
);

CREATE TABLE subscriptions (
    id           TEXT    PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    patterns     TEXT    NOT NULL,
    exclude      TEXT    NOT NULL,
    tenant_id    TEXT,
    target       TEXT    NOT NULL,
    enabled      INTEGER NOT NULL,
    description  TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq         INTEGER NOT NULL REFERENCES events (seq),
    subscription_id   TEXT    NOT NULL,
    endpoint_id       TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms   INTEGER,
    last_status_code  INTEGER,
    last_error        TEXT,
    last_duration_ms  INTEGER,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL
);

-- What the dispatcher reloads: deliveries still to be attempted, by due time.
CREATE INDEX deliveries_due ON deliveries (next_attempt_ms) WHERE status IN ('pending', 'failed');
CREATE INDEX deliveries_event ON deliveries (event_seq);
CREATE INDEX deliveries_status ON deliveries (status, id);
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, id);
CREATE INDEX deliveries_subscription ON deliveries (subscription_id, id);

CREATE TABLE attempts (
    delivery_id      INTEGER NOT NULL REFERENCES deliveries (id),
    number           INTEGER NOT NULL,
    started_ms       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    status_code      INTEGER,
    error            TEXT,
    response_body    TEXT    NOT NULL,
    request_headers  TEXT    NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
