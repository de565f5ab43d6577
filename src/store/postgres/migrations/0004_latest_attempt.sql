-- The latest attempt of a delivery lives in its row, as on SQLite: the common delivery, one
-- attempt that succeeds, is finished by one update without an `attempts` row. Earlier
-- attempts move to `attempts` when a later one is recorded. Rows from before this keep all
-- their attempts in `attempts`, with these columns empty. The attempt's number is its own
-- column, not `attempts`: a node of an older build, still running beside newer ones during
-- a rolling upgrade, records its attempts in `attempts` and moves `attempts` on, leaving the
-- row's attempt as it was, which then still says which attempt it is.
ALTER TABLE deliveries
    ADD COLUMN latest_number      integer,
    ADD COLUMN latest_started_at  bigint,
    ADD COLUMN latest_duration_ms bigint,
    ADD COLUMN latest_status      integer,
    ADD COLUMN latest_error       text,
    ADD COLUMN latest_body        text;
