-- hookgate schema, version 3: indexes for retention, which deletes finished work past an age.

-- Finished deliveries by when they finished: `updated_at`, which the last attempt's record
-- sets and nothing changes afterwards but a redelivery, which queues the row again (and so
-- takes it out of this index). Appended to at its newest end.
CREATE INDEX deliveries_retention ON deliveries (updated_at)
    WHERE status IN ('succeeded', 'failed', 'skipped');

-- Events by when they were accepted, for the scan that deletes those routed to no
-- destination (an event with deliveries goes with its last one).
CREATE INDEX events_created ON events (created_at, id);
