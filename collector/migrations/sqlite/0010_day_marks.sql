-- The window's first daily row, found where the host's other callers' rows are (issue
-- 15): `check` of a host with a thousand callers looks up, for each caller's edge, the
-- daily row of the window's first day. Through the primary key (edge, day) that is one
-- leaf page per edge, scattered over the whole table; through this index, keyed by day
-- first and carrying `calls_before`, the rows of one day lie together in a few hundred
-- pages and the lookup reads no table row. The day index it replaces was (day) alone;
-- this one serves the same range scans (prune, the fold's checks).
DROP INDEX IF EXISTS edge_days_by_day;
CREATE INDEX IF NOT EXISTS edge_days_by_day ON edge_days (day, edge_id, calls_before);
-- `check` reads the callee-side instances (inbound sidecars) on every call: through this
-- partial index, the few there are, not a scan of every instance a fleet's restarts
-- left behind.
CREATE INDEX IF NOT EXISTS instances_callee ON instances (service, environment, instance)
WHERE side = 'callee' OR inbound_hosts != '';
