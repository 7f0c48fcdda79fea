-- whouses collector schema, version 1 (SQLite). Times are unix milliseconds.

CREATE TABLE IF NOT EXISTS edges (
    id             INTEGER PRIMARY KEY,
    host           TEXT    NOT NULL,
    port           INTEGER NOT NULL,
    scheme         TEXT    NOT NULL,
    service        TEXT    NOT NULL,
    environment    TEXT    NOT NULL,
    requests       INTEGER NOT NULL DEFAULT 0,
    connections    INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    bytes_sent     INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    UNIQUE (host, port, scheme, service, environment)
);
CREATE INDEX IF NOT EXISTS edges_by_service ON edges (service, environment);
CREATE INDEX IF NOT EXISTS edges_by_last_seen ON edges (last_seen);

-- Hourly buckets: `since` windows and retention. hour = last_seen / 3600000.
CREATE TABLE IF NOT EXISTS edge_hours (
    edge_id        INTEGER NOT NULL,
    hour           INTEGER NOT NULL,
    requests       INTEGER NOT NULL DEFAULT 0,
    connections    INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    bytes_sent     INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    PRIMARY KEY (edge_id, hour)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edge_hours_by_hour ON edge_hours (hour);

CREATE TABLE IF NOT EXISTS instances (
    instance          TEXT PRIMARY KEY,
    service           TEXT    NOT NULL,
    environment       TEXT    NOT NULL,
    first_report      INTEGER NOT NULL,
    last_report       INTEGER NOT NULL,
    observed_until    INTEGER NOT NULL,
    last_seq          INTEGER NOT NULL,
    seq_floor         INTEGER NOT NULL DEFAULT 0,
    started_at        INTEGER NOT NULL,
    flush_interval_ms INTEGER NOT NULL,
    reports           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS instances_by_service ON instances (service, environment);

-- Merged observation intervals per instance (from batches' period_start..period_end).
CREATE TABLE IF NOT EXISTS coverage (
    instance TEXT    NOT NULL,
    start    INTEGER NOT NULL,
    "end"    INTEGER NOT NULL,
    PRIMARY KEY (instance, start)
) WITHOUT ROWID;

-- Stored batches, for idempotency on (instance, seq).
CREATE TABLE IF NOT EXISTS seen (
    instance TEXT    NOT NULL,
    seq      INTEGER NOT NULL,
    received INTEGER NOT NULL,
    PRIMARY KEY (instance, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_by_received ON seen (received);
