-- Attempts record what they sent and the response's headers (`domain::Exchange`, as JSON
-- text): the latest attempt in its delivery's row, earlier ones in `attempts`. Rows from
-- before this, and attempts a node of an older build records during a rolling upgrade,
-- have none.
ALTER TABLE deliveries ADD COLUMN latest_exchange text;
ALTER TABLE attempts ADD COLUMN exchange text;
