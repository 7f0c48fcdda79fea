-- The newest hourly bucket of each edge lives in the edge's own row (cur_*), so the many
-- batches of one hour update one clustered row instead of a bucket row apiece; when a
-- batch for a newer hour arrives the old bucket moves to edge_hours. A bucket's counts
-- are in exactly one place (cur_*, edge_hours or edge_days) and queries sum all three.
ALTER TABLE edges ADD COLUMN cur_hour INTEGER;
ALTER TABLE edges ADD COLUMN cur_requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN cur_connections INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN cur_errors INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN cur_bytes_sent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN cur_bytes_received INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN cur_first_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE edges ADD COLUMN cur_last_seen INTEGER NOT NULL DEFAULT 0;
