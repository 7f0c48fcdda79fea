-- What sidecars observe besides edges: names looked up through the DNS forwarder, and
-- connections seen going around the proxy (the bypass detector). Totals per key with
-- first and last time; the latest answer's addresses per name. As SQLite's 0005.
CREATE TABLE lookups (
    name        TEXT COLLATE "C" NOT NULL,
    service     TEXT COLLATE "C" NOT NULL,
    environment TEXT COLLATE "C" NOT NULL,
    lookups     BIGINT NOT NULL DEFAULT 0,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    -- The latest answer's addresses, space-separated.
    addresses   TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, service, environment)
);
CREATE INDEX lookups_by_last_seen ON lookups (last_seen);

CREATE TABLE bypass (
    address     TEXT COLLATE "C" NOT NULL,
    port        INTEGER NOT NULL,
    service     TEXT COLLATE "C" NOT NULL,
    environment TEXT COLLATE "C" NOT NULL,
    -- The name the app resolved the address from, when the sidecar knew it.
    name        TEXT COLLATE "C",
    connections BIGINT NOT NULL DEFAULT 0,
    first_seen  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    PRIMARY KEY (address, port, service, environment)
);
CREATE INDEX bypass_by_name ON bypass (name);
CREATE INDEX bypass_by_service ON bypass (service, environment);
CREATE INDEX bypass_by_last_seen ON bypass (last_seen);
