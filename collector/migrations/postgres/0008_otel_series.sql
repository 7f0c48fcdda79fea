-- OTLP ingest (issue 17): where each OpenTelemetry service-graph series stands, so that
-- cumulative values become exact deltas across exporter restarts, counter resets and
-- repeated exports. One row per series (its resource, metric, attributes and, for
-- cumulative series, start time); `key` is also the instance its batches are stored
-- under (`otel:<hash>`), so a batch re-sent after a failure is stored once.
CREATE TABLE otel_series (
    key         TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    environment TEXT NOT NULL,
    host        TEXT NOT NULL,
    port        INTEGER NOT NULL,
    -- 'requests' or 'errors': which count the series adds to.
    field       TEXT NOT NULL,
    -- The latest point: the period its delta covers (ms), its value and its delta.
    prev_at     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    value       BIGINT NOT NULL,
    delta       BIGINT NOT NULL,
    -- Whether the latest point's batch is known to be stored.
    stored      BOOLEAN NOT NULL DEFAULT FALSE,
    -- Collector time of the latest change (retention).
    updated     BIGINT NOT NULL
);
CREATE INDEX otel_series_updated ON otel_series (updated);

-- OTLP export (issue 17): which replica pushes the edges. A replica exports only while
-- it holds this lease, renewed every export and taken over by another once it has
-- expired (the holder died), so a receiver never gets the same series from two
-- replicas at once.
CREATE TABLE otel_export_lease (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL
);
