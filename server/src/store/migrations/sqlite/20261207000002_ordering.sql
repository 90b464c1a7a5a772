-- Ordering keys: a subscription's key template (an endpoint's lives in its
-- options), and each delivery's rendered key. A delivery behind an earlier
-- unfinished one with the same endpoint and key waits with next_attempt_ms
-- at the largest value ("parked") until that one finishes; the index finds
-- a key's unfinished deliveries in publish order.
ALTER TABLE subscriptions ADD COLUMN ordering_key TEXT;
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
CREATE INDEX deliveries_ordering ON deliveries (endpoint_id, ordering_key, id)
    WHERE ordering_key IS NOT NULL AND status IN ('pending', 'failed');
