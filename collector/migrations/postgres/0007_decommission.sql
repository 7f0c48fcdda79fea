-- The decommission workflow (issue 16), as SQLite's 0007: watches, the alerts they fired
-- per caller and kind, the notification outbox, leases (one notifier among replicas), and
-- the owners sidecars report. Times are unix ms.

CREATE TABLE watches (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host        TEXT COLLATE "C" NOT NULL,
    replacement TEXT COLLATE "C",
    cutoff      BIGINT NOT NULL,
    notify      TEXT NOT NULL DEFAULT '',
    note        TEXT,
    created     BIGINT NOT NULL
);

CREATE TABLE watch_alerts (
    watch_id      BIGINT NOT NULL,
    kind          TEXT COLLATE "C" NOT NULL,
    service       TEXT COLLATE "C" NOT NULL,
    environment   TEXT COLLATE "C" NOT NULL,
    base          BIGINT NOT NULL DEFAULT 0,
    fired         BIGINT,
    notified      BIGINT,
    mark          BIGINT NOT NULL DEFAULT 0,
    calls         BIGINT NOT NULL DEFAULT 0,
    errors        BIGINT NOT NULL DEFAULT 0,
    first_seen    BIGINT NOT NULL DEFAULT 0,
    last_seen     BIGINT NOT NULL DEFAULT 0,
    notifications BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (watch_id, kind, service, environment)
);

CREATE TABLE watch_deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    watch_id     BIGINT NOT NULL,
    kind         TEXT COLLATE "C" NOT NULL,
    service      TEXT COLLATE "C" NOT NULL,
    environment  TEXT COLLATE "C" NOT NULL,
    url          TEXT NOT NULL,
    body         TEXT NOT NULL,
    created      BIGINT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt BIGINT NOT NULL,
    state        TEXT COLLATE "C" NOT NULL DEFAULT 'pending',
    finished     BIGINT,
    last_error   TEXT
);
CREATE INDEX watch_deliveries_due ON watch_deliveries (state, next_attempt);
CREATE INDEX watch_deliveries_by_watch ON watch_deliveries (watch_id);

CREATE TABLE leases (
    name    TEXT COLLATE "C" PRIMARY KEY,
    holder  TEXT NOT NULL,
    expires BIGINT NOT NULL
);

CREATE TABLE service_owners (
    service     TEXT COLLATE "C" NOT NULL,
    environment TEXT COLLATE "C" NOT NULL,
    owner       TEXT NOT NULL,
    updated     BIGINT NOT NULL,
    PRIMARY KEY (service, environment)
);
