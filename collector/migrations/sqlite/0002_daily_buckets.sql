-- Daily buckets: hourly buckets older than --hourly-for are folded into one row per
-- edge and UTC day (day = hour / 24), so long histories stay small and fast.
-- A bucket lives in exactly one of edge_hours and edge_days (the fold moves it).
CREATE TABLE IF NOT EXISTS edge_days (
    edge_id        INTEGER NOT NULL,
    day            INTEGER NOT NULL,
    requests       INTEGER NOT NULL DEFAULT 0,
    connections    INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    bytes_sent     INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    PRIMARY KEY (edge_id, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edge_days_by_day ON edge_days (day);
