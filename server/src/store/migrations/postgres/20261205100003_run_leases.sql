-- Which daemon is stepping a flow run. Any daemon may step any due run; the
-- one that inserts (or takes over an expired) row here does, so a step's
-- request is made by one daemon at a time. The row lives while the step
-- does and is deleted after its result commits; its node renews it with
-- its heartbeat, so a long step keeps it, and a crashed node's rows expire
-- after `storage.lease_timeout`. A run's own commit is conditional on where
-- the run stood (step, attempt, version), which fences a node that stalled
-- past its lease: its late result changes nothing.
CREATE TABLE run_leases (
    run_id      TEXT    PRIMARY KEY,
    node_id     TEXT    NOT NULL,
    expires_ms  BIGINT  NOT NULL
);

CREATE INDEX run_leases_node ON run_leases (node_id);
CREATE INDEX endpoint_leases_node ON endpoint_leases (node_id);
