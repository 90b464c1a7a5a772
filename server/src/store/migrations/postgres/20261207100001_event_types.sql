-- The optional event-type catalog: a JSON Schema (as JSON text) that the
-- payload of every event whose name matches `pattern` must satisfy. One
-- type per pattern. Deletes are hard: nothing refers to an event type.
-- Every node caches the compiled catalog, so a change bumps the catalog
-- version like endpoints, subscriptions, sources and flows do.

CREATE TABLE event_types (
    id           TEXT    PRIMARY KEY,
    pattern      TEXT    NOT NULL UNIQUE,
    description  TEXT    NOT NULL,
    schema       TEXT    NOT NULL,
    version      BIGINT  NOT NULL,
    created_ms   BIGINT  NOT NULL,
    updated_ms   BIGINT  NOT NULL
);

CREATE TRIGGER event_types_catalog_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON event_types
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
