-- The callee's view and the address book (issue 14).
--
-- Which side of a call an instance stands on ('caller': beside its service, counting the
-- calls it makes; 'callee': an inbound sidecar in front of its service), and the names an
-- inbound sidecar declared (--inbound-host, space-separated): the hosts it witnesses, so
-- that its silence about them is evidence.
ALTER TABLE instances ADD COLUMN side TEXT NOT NULL DEFAULT 'caller';
ALTER TABLE instances ADD COLUMN inbound_hosts TEXT NOT NULL DEFAULT '';

-- Calls to a service seen by its inbound sidecars, per name the caller dialed and per
-- caller address, in hourly buckets (hour = last_seen / 3600000): a caller address is
-- attributed to whoever held it when the calls were made, so the time stays with the
-- counts. `address` is the caller's IP, or '(other)' for callers folded at --max-peers.
CREATE TABLE IF NOT EXISTS inbound (
    host           TEXT    NOT NULL,
    port           INTEGER NOT NULL,
    scheme         TEXT    NOT NULL,
    -- The callee: the service the inbound sidecar stands in front of.
    service        TEXT    NOT NULL,
    environment    TEXT    NOT NULL,
    address        TEXT    NOT NULL,
    hour           INTEGER NOT NULL,
    requests       INTEGER NOT NULL DEFAULT 0,
    connections    INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    bytes_sent     INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    PRIMARY KEY (host, port, scheme, service, environment, address, hour)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbound_by_last_seen ON inbound (last_seen);

-- The address book: merged intervals during which an instance held an address (from its
-- batches' trusted periods, as coverage). Addresses are reused by other pods later, so
-- the history is kept, not just the latest holder.
CREATE TABLE IF NOT EXISTS addresses (
    address  TEXT    NOT NULL,
    instance TEXT    NOT NULL,
    start    INTEGER NOT NULL,
    "end"    INTEGER NOT NULL,
    PRIMARY KEY (address, instance, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS addresses_by_end ON addresses ("end");
