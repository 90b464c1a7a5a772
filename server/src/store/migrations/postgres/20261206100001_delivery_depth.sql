-- Delivery depth: endpoint options (format, transform, rate limit,
-- disable_after, auth) as one JSON column; secret rotation's grace; why and
-- since when the daemon considers an endpoint failing; subscription filters;
-- the other subscriptions a delivery stands for when several matched one
-- endpoint (one delivery per event and endpoint).
ALTER TABLE endpoints ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
ALTER TABLE endpoints ADD COLUMN previous_secret TEXT;
ALTER TABLE endpoints ADD COLUMN previous_secret_until_ms BIGINT;
ALTER TABLE endpoints ADD COLUMN disabled_reason TEXT;
ALTER TABLE endpoints ADD COLUMN failing_since_ms BIGINT;
ALTER TABLE subscriptions ADD COLUMN filter TEXT;
ALTER TABLE deliveries ADD COLUMN also_subscriptions TEXT;
