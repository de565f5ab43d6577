-- hookgate schema, version 1: the delivery queue and the saved webhook configurations.
-- Table names are unqualified: the connection's search_path picks the schema.
--
-- No foreign keys: deliveries and their event are only ever written together, by the
-- enqueue transaction, and a foreign key's check would take a KEY SHARE lock on the event
-- row for every delivery inserted (a write to the event's tuple) on the hottest path.
-- Times are epoch milliseconds (bigint), as everywhere in the store, except the
-- configurations' ISO 8601 strings, which the API shows as stored.

CREATE TABLE events (
    id          uuid PRIMARY KEY,
    event_type  text NOT NULL,
    project_id  text,
    timestamp   double precision NOT NULL,
    -- The canonical payload JSON, byte for byte as it is sent: text, not jsonb.
    payload     text NOT NULL,
    created_at  bigint NOT NULL
);

CREATE TABLE deliveries (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           uuid NOT NULL UNIQUE,
    event_id     uuid NOT NULL,
    -- The destination's concurrency key (scheme, host and port), for per-destination budgets.
    dest_key     text NOT NULL,
    webhook_url  text NOT NULL,
    -- JSON of the destination as it was when the event was accepted.
    destination  text NOT NULL,
    status       text NOT NULL
        CHECK (status IN ('queued', 'in_flight', 'succeeded', 'failed', 'skipped')),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- `attempts` when the delivery was last (re)queued; the retry budget counts from here.
    budget_start integer NOT NULL DEFAULT 0 CHECK (budget_start >= 0),
    -- Queued: when the next attempt is due. In flight: when the lease ends, after which
    -- any node may claim the delivery again.
    due_at       bigint NOT NULL,
    -- The claim's lease; every write by the engine is guarded by it.
    lease_token  uuid,
    last_error   text,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL
);

-- The claim scan: due work oldest first, with its destination, from the index alone.
CREATE INDEX deliveries_due ON deliveries (due_at) INCLUDE (dest_key)
    WHERE status IN ('queued', 'in_flight');
-- Finished deliveries by status, newest first, for the operations list. Queued and
-- in-flight rows stay out: they change status twice on the hot path.
CREATE INDEX deliveries_finished ON deliveries (status, seq)
    WHERE status IN ('succeeded', 'failed', 'skipped');
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE attempts (
    delivery_id     uuid NOT NULL,
    number          integer NOT NULL,
    started_at      bigint NOT NULL,
    duration_ms     bigint NOT NULL,
    response_status integer,
    error           text,
    response_body   text,
    PRIMARY KEY (delivery_id, number)
);

CREATE TABLE webhook_configs (
    seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id             uuid NOT NULL UNIQUE,
    tenant_id      text NOT NULL,
    -- The configuration fields except the secret, as the API accepted them (JSON).
    settings       text NOT NULL,
    signing_secret text,
    created_at     text NOT NULL,
    updated_at     text NOT NULL
);
CREATE INDEX webhook_configs_tenant ON webhook_configs (tenant_id, seq);
