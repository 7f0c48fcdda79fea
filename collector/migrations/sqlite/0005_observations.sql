-- What sidecars observe besides edges (issue 13): names looked up through the DNS
-- forwarder, and connections seen going around the proxy (the bypass detector). Totals
-- per key with first and last time; the latest answer's addresses per name.
CREATE TABLE IF NOT EXISTS lookups (
    name        TEXT    NOT NULL,
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    lookups     INTEGER NOT NULL DEFAULT 0,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    -- The latest answer's addresses, space-separated.
    addresses   TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (name, service, environment)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS lookups_by_last_seen ON lookups (last_seen);

CREATE TABLE IF NOT EXISTS bypass (
    address     TEXT    NOT NULL,
    port        INTEGER NOT NULL,
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    -- The name the app resolved the address from, when the sidecar knew it.
    name        TEXT,
    connections INTEGER NOT NULL DEFAULT 0,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (address, port, service, environment)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bypass_by_name ON bypass (name);
CREATE INDEX IF NOT EXISTS bypass_by_service ON bypass (service, environment);
CREATE INDEX IF NOT EXISTS bypass_by_last_seen ON bypass (last_seen);
