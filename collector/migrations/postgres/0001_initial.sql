-- whouses collector schema, version 1 (PostgreSQL). Times are unix milliseconds, counts
-- BIGINT that saturate at 2^63 - 1 (sat_add). Names sort byte-wise (COLLATE "C"), as in
-- SQLite, so both backends answer in the same order.

-- a + b for counters, stopping at the largest count instead of failing with "bigint out
-- of range" (b is a non-negative count). A plain SQL function: the planner inlines it.
CREATE FUNCTION sat_add(a BIGINT, b BIGINT) RETURNS BIGINT
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN a > 9223372036854775807 - b THEN 9223372036854775807 ELSE a + b END $$;

-- One row per (service, environment, host, port, scheme): totals, first/last seen, and the
-- edge's current hour bucket (cur_*). No index on last_seen or the counters: every batch
-- updates them, and without an index on them the update stays HOT (in the same page, no
-- index writes); fillfactor leaves the room it needs.
CREATE TABLE edges (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host               TEXT COLLATE "C" NOT NULL,
    port               INTEGER NOT NULL,
    scheme             TEXT COLLATE "C" NOT NULL,
    service            TEXT COLLATE "C" NOT NULL,
    environment        TEXT COLLATE "C" NOT NULL,
    requests           BIGINT NOT NULL DEFAULT 0,
    connections        BIGINT NOT NULL DEFAULT 0,
    errors             BIGINT NOT NULL DEFAULT 0,
    bytes_sent         BIGINT NOT NULL DEFAULT 0,
    bytes_received     BIGINT NOT NULL DEFAULT 0,
    first_seen         BIGINT NOT NULL,
    last_seen          BIGINT NOT NULL,
    cur_hour           BIGINT,
    cur_requests       BIGINT NOT NULL DEFAULT 0,
    cur_connections    BIGINT NOT NULL DEFAULT 0,
    cur_errors         BIGINT NOT NULL DEFAULT 0,
    cur_bytes_sent     BIGINT NOT NULL DEFAULT 0,
    cur_bytes_received BIGINT NOT NULL DEFAULT 0,
    cur_first_seen     BIGINT NOT NULL DEFAULT 0,
    cur_last_seen      BIGINT NOT NULL DEFAULT 0,
    UNIQUE (host, port, scheme, service, environment)
) WITH (fillfactor = 70);
CREATE INDEX edges_by_service ON edges (service, environment);

-- Hourly buckets older than the edge's current hour; folded into edge_days after
-- --hourly-for. A bucket's counts are in exactly one of cur_*, edge_hours, edge_days.
CREATE TABLE edge_hours (
    edge_id        BIGINT NOT NULL,
    hour           BIGINT NOT NULL,
    requests       BIGINT NOT NULL DEFAULT 0,
    connections    BIGINT NOT NULL DEFAULT 0,
    errors         BIGINT NOT NULL DEFAULT 0,
    bytes_sent     BIGINT NOT NULL DEFAULT 0,
    bytes_received BIGINT NOT NULL DEFAULT 0,
    first_seen     BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    -- The counts ride in the key's index: a `since` query reads an edge's buckets with
    -- an index-only scan, one short range per edge (SQLite's WITHOUT ROWID table does the
    -- same by clustering).
    PRIMARY KEY (edge_id, hour) INCLUDE (requests, connections, errors, bytes_sent,
        bytes_received, first_seen, last_seen)
);
CREATE INDEX edge_hours_by_hour ON edge_hours (hour);

CREATE TABLE edge_days (
    edge_id        BIGINT NOT NULL,
    day            BIGINT NOT NULL,
    requests       BIGINT NOT NULL DEFAULT 0,
    connections    BIGINT NOT NULL DEFAULT 0,
    errors         BIGINT NOT NULL DEFAULT 0,
    bytes_sent     BIGINT NOT NULL DEFAULT 0,
    bytes_received BIGINT NOT NULL DEFAULT 0,
    first_seen     BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    PRIMARY KEY (edge_id, day) INCLUDE (requests, connections, errors, bytes_sent,
        bytes_received, first_seen, last_seen)
);
CREATE INDEX edge_days_by_day ON edge_days (day);

-- Per sidecar instance, bound to its service at its first batch. Ingest locks this row
-- (FOR UPDATE) before anything else of the instance: batches of one instance are applied
-- one transaction at a time, whichever replica receives them.
CREATE TABLE instances (
    instance          TEXT COLLATE "C" PRIMARY KEY,
    service           TEXT COLLATE "C" NOT NULL,
    environment       TEXT COLLATE "C" NOT NULL,
    first_report      BIGINT NOT NULL,
    last_report       BIGINT NOT NULL,
    observed_until    BIGINT NOT NULL,
    last_seq          BIGINT NOT NULL,
    seq_floor         BIGINT NOT NULL DEFAULT 0,
    started_at        BIGINT NOT NULL,
    flush_interval_ms BIGINT NOT NULL,
    reports           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX instances_by_service ON instances (service, environment);

-- Merged observation intervals per instance.
CREATE TABLE coverage (
    instance TEXT COLLATE "C" NOT NULL,
    start    BIGINT NOT NULL,
    "end"    BIGINT NOT NULL,
    PRIMARY KEY (instance, start)
);
CREATE INDEX coverage_by_start ON coverage (start);

-- Stored batches, for idempotency on (instance, seq): the INSERT … ON CONFLICT DO NOTHING
-- of this row decides which delivery of a batch is stored.
CREATE TABLE seen (
    instance TEXT COLLATE "C" NOT NULL,
    seq      BIGINT NOT NULL,
    received BIGINT NOT NULL,
    PRIMARY KEY (instance, seq)
);
CREATE INDEX seen_by_received ON seen (received);
