-- The callee's view and the address book (issue 14), as SQLite's 0006.
--
-- Which side of a call an instance stands on ('caller' or 'callee'), and the names an
-- inbound sidecar declared (--inbound-host, space-separated).
ALTER TABLE instances ADD COLUMN side TEXT COLLATE "C" NOT NULL DEFAULT 'caller';
ALTER TABLE instances ADD COLUMN inbound_hosts TEXT COLLATE "C" NOT NULL DEFAULT '';

-- Calls to a service seen by its inbound sidecars, per name the caller dialed and per
-- caller address, in hourly buckets: a caller address is attributed to whoever held it
-- when the calls were made. `address` is the caller's IP, or '(other)'.
CREATE TABLE inbound (
    host           TEXT COLLATE "C" NOT NULL,
    port           INTEGER NOT NULL,
    scheme         TEXT COLLATE "C" NOT NULL,
    service        TEXT COLLATE "C" NOT NULL,
    environment    TEXT COLLATE "C" NOT NULL,
    address        TEXT COLLATE "C" NOT NULL,
    hour           BIGINT NOT NULL,
    requests       BIGINT NOT NULL DEFAULT 0,
    connections    BIGINT NOT NULL DEFAULT 0,
    errors         BIGINT NOT NULL DEFAULT 0,
    bytes_sent     BIGINT NOT NULL DEFAULT 0,
    bytes_received BIGINT NOT NULL DEFAULT 0,
    first_seen     BIGINT NOT NULL,
    last_seen      BIGINT NOT NULL,
    PRIMARY KEY (host, port, scheme, service, environment, address, hour)
);
CREATE INDEX inbound_by_last_seen ON inbound (last_seen);

-- The address book: merged intervals during which an instance held an address.
CREATE TABLE addresses (
    address  TEXT COLLATE "C" NOT NULL,
    instance TEXT COLLATE "C" NOT NULL,
    start    BIGINT NOT NULL,
    "end"    BIGINT NOT NULL,
    PRIMARY KEY (address, instance, start)
);
CREATE INDEX addresses_by_end ON addresses ("end");
