-- The dispatcher claims due deliveries one endpoint at a time (a bounded
-- window per endpoint), so the due index leads with the endpoint. It also
-- serves "which endpoints have work waiting, and from when" at start and the
-- per-endpoint backlog counts.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_endpoint_due ON deliveries (endpoint_id, next_attempt_ms, id)
    WHERE status IN ('pending', 'failed');
