-- The decommission workflow (issue 16): watches on hosts being retired, the alerts they
-- fired per caller and kind, the notifications queued for those alerts (an outbox:
-- delivered at least once, whatever restarts in between), the lease that lets one
-- collector at a time notify, and the owners sidecars report. Times are unix ms.

-- A watch: calls to `host` after `cutoff` fire, so do failing calls to it.
-- AUTOINCREMENT: an id is never reused, so nothing of a removed watch can attach to a
-- new one.
CREATE TABLE IF NOT EXISTS watches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    host        TEXT    NOT NULL,
    -- The replacement, when the watch tracks a migration (`--to`).
    replacement TEXT,
    cutoff      INTEGER NOT NULL,
    -- Notification URLs, one per line.
    notify      TEXT    NOT NULL DEFAULT '',
    note        TEXT,
    created     INTEGER NOT NULL
);

-- One row per (watch, kind, caller): a failing-calls baseline (`base`: the caller's
-- failing calls when the watch began) and, once fired, the state that deduplicates
-- notifications: when it fired and was last notified, and `mark` (traffic: the caller's
-- last call at the last notification; failing calls: its failing-call total then), with
-- the numbers the last notification carried.
CREATE TABLE IF NOT EXISTS watch_alerts (
    watch_id      INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    service       TEXT    NOT NULL,
    environment   TEXT    NOT NULL,
    base          INTEGER NOT NULL DEFAULT 0,
    fired         INTEGER,
    notified      INTEGER,
    mark          INTEGER NOT NULL DEFAULT 0,
    calls         INTEGER NOT NULL DEFAULT 0,
    errors        INTEGER NOT NULL DEFAULT 0,
    first_seen    INTEGER NOT NULL DEFAULT 0,
    last_seen     INTEGER NOT NULL DEFAULT 0,
    notifications INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (watch_id, kind, service, environment)
) WITHOUT ROWID;

-- The outbox: one row per notification and URL, written in the same transaction as the
-- alert state that decided it; sent, retried with backoff, then marked delivered or
-- failed (and pruned after a week).
CREATE TABLE IF NOT EXISTS watch_deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    watch_id     INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    service      TEXT    NOT NULL,
    environment  TEXT    NOT NULL,
    url          TEXT    NOT NULL,
    body         TEXT    NOT NULL,
    created      INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL,
    -- pending, delivered or failed.
    state        TEXT    NOT NULL DEFAULT 'pending',
    finished     INTEGER,
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS watch_deliveries_due ON watch_deliveries (state, next_attempt);
CREATE INDEX IF NOT EXISTS watch_deliveries_by_watch ON watch_deliveries (watch_id);

-- Leases: who may run a singleton job (the notifier) until when.
CREATE TABLE IF NOT EXISTS leases (
    name    TEXT    PRIMARY KEY,
    holder  TEXT    NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;

-- The owner a service's sidecars report (`--owner`), the latest per service.
CREATE TABLE IF NOT EXISTS service_owners (
    service     TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    updated     INTEGER NOT NULL,
    PRIMARY KEY (service, environment)
) WITHOUT ROWID;
