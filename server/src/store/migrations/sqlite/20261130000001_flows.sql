-- Flows and their runs. Every version of a definition is kept, because a
-- run finishes on the version it started with. A run's wake-up time is
-- indexed over active runs only: waiting runs cost a row, not a timer.

CREATE TABLE flows (
    id                TEXT    PRIMARY KEY,
    version           INTEGER NOT NULL,
    webhook_key_hash  BLOB,
    created_ms        INTEGER NOT NULL,
    updated_ms        INTEGER NOT NULL
);

CREATE TABLE flow_versions (
    flow_id     TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    yaml        TEXT    NOT NULL,
    created_ms  INTEGER NOT NULL,
    PRIMARY KEY (flow_id, version)
);

CREATE TABLE flow_runs (
    id               TEXT    PRIMARY KEY,
    flow_id          TEXT    NOT NULL,
    flow_version     INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    correlation_key  TEXT,
    inputs           TEXT    NOT NULL,
    trigger          TEXT    NOT NULL,
    trigger_data     TEXT    NOT NULL,
    step_index       INTEGER NOT NULL,
    step_waited      INTEGER NOT NULL,
    attempt          INTEGER NOT NULL,
    attempt_group    INTEGER NOT NULL,
    wake_ms          INTEGER,
    steps            TEXT    NOT NULL,
    error            TEXT,
    created_ms       INTEGER NOT NULL,
    updated_ms       INTEGER NOT NULL
);

CREATE INDEX flow_runs_due ON flow_runs (wake_ms)
    WHERE state IN ('CREATED', 'RUNNING', 'WAITING');
CREATE INDEX flow_runs_key ON flow_runs (flow_id, correlation_key, created_ms)
    WHERE state IN ('CREATED', 'RUNNING', 'WAITING');
CREATE INDEX flow_runs_by_flow ON flow_runs (flow_id, created_ms);
CREATE INDEX flow_runs_by_time ON flow_runs (created_ms);

CREATE TABLE flow_run_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   TEXT    NOT NULL,
    time_ms  INTEGER NOT NULL,
    step_id  TEXT    NOT NULL,
    message  TEXT    NOT NULL
);

CREATE INDEX flow_run_log_run ON flow_run_log (run_id, id);

ALTER TABLE subscriptions ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}';
