-- Destinations an operator paused, until resumed: every node reads them at its heartbeat,
-- so a pause or resume through any node reaches them all, and survives restarts.
CREATE TABLE destination_pauses (
    destination text PRIMARY KEY,
    paused_at   bigint NOT NULL
);
