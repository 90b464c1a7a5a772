-- What several daemons sharing one database need, and SQLite (one daemon,
-- one file) does not: these tables exist on PostgreSQL only.
--
-- Times here are the database's clock, not a node's: every node compares a
-- lease or a heartbeat against the same `now` (clock_timestamp() in ms), so
-- nodes whose clocks disagree still agree on which lease has expired.

-- Every daemon using this database: written at start, `heartbeat_ms` every
-- few seconds. For the Admin API and metrics, and to release a node's leases
-- at once when it stops cleanly. A lease does not depend on this table: a
-- node that vanishes without a word frees its endpoints when their leases
-- expire, whatever its row says.
CREATE TABLE nodes (
    node_id       TEXT    PRIMARY KEY,
    started_ms    BIGINT  NOT NULL,
    heartbeat_ms  BIGINT  NOT NULL
);

-- Which node sends each endpoint's deliveries. The dispatcher keeps a window
-- of deliveries per endpoint in memory, so an endpoint is dispatched by one
-- node at a time (its max_in_flight and ordering hold across the cluster).
-- A node renews its leases before `expires_ms`; a crashed node's leases
-- expire after `storage.lease_timeout` and another node takes them over,
-- adding one to `token`. The token fences a node that paused past its
-- expiry (a GC-like stall, a network partition): every write it makes for
-- the endpoint's deliveries carries its token, and a write whose token is
-- no longer the lease's changes nothing.
-- No foreign key to endpoints: a lease may outlive a deleted endpoint, whose
-- deliveries are still in the table, until its node lets it go.
CREATE TABLE endpoint_leases (
    endpoint_id  TEXT    PRIMARY KEY,
    node_id      TEXT    NOT NULL,
    token        BIGINT  NOT NULL,
    expires_ms   BIGINT  NOT NULL
);

-- The catalog (endpoints, subscriptions, sources, flows) is cached by every
-- node. Each statement that changes it bumps this one row's version and
-- notifies `hookyard_catalog` with the new version when it commits; a node
-- reloads on the notification, and also when a periodic read of the version
-- finds it ahead of what it loaded (a notification is lost when the
-- listening connection drops).
--
-- A row and not a sequence: nextval() is not transactional, so a node could
-- read a version whose change has not committed yet, reload without it, and
-- never reload again. The row is updated in the changing transaction and is
-- seen with it.
--
-- The triggers fire BEFORE each statement, so a catalog change takes this
-- row's lock before any catalog row's: catalog transactions queue here
-- instead of deadlocking on each other's rows. They also fire for a
-- statement that changes no row (an update with a stale version): a reload
-- too many costs little, one too few leaves a node stale.
CREATE TABLE catalog_version (
    only_row  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    version   BIGINT  NOT NULL
);

INSERT INTO catalog_version (version) VALUES (0);

CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    next BIGINT;
BEGIN
    UPDATE catalog_version SET version = version + 1 RETURNING version INTO next;
    PERFORM pg_notify('hookyard_catalog', next::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER endpoints_catalog_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER subscriptions_catalog_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscriptions
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER sources_catalog_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sources
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER flows_catalog_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON flows
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER flow_versions_catalog_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON flow_versions
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
