-- hookgate schema, version 2: what the nodes of a cluster share besides the queue.

-- Every gateway process on this database, as it last reported itself. Rows of nodes that
-- stopped cleanly are deleted; those of dead nodes are forgotten after an hour.
CREATE TABLE nodes (
    id           uuid PRIMARY KEY,
    listen       text NOT NULL,
    version      text NOT NULL,
    started_at   bigint NOT NULL,
    heartbeat_at bigint NOT NULL,
    in_flight    integer NOT NULL,
    -- Its share of every destination's in-flight cap, from the live nodes it last counted.
    destination_share integer NOT NULL,
    -- [{"name": ..., "sha256": ...}] of the plugins the node serves (JSON).
    plugins      text NOT NULL
);

-- Values every node must agree on; today the API key generated when none is configured.
CREATE TABLE cluster_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
