-- Sources: partners and forms posting to /webhook/v1/{token}. Only token
-- hashes are stored; a rotated-out token keeps working until its expiry.
-- Deleting a source sets deleted_ms (soft delete) and keeps the row.

CREATE TABLE sources (
    id                          TEXT    PRIMARY KEY,
    name                        TEXT    NOT NULL,
    description                 TEXT    NOT NULL,
    token_hash                  BLOB    NOT NULL UNIQUE,
    previous_token_hash         BLOB,
    previous_token_expires_ms   INTEGER,
    status                      TEXT    NOT NULL,
    tenant_id                   TEXT,
    policy                      TEXT    NOT NULL,
    version                     INTEGER NOT NULL,
    created_ms                  INTEGER NOT NULL,
    updated_ms                  INTEGER NOT NULL,
    deleted_ms                  INTEGER
);
