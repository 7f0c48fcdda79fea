-- As SQLite's 0010: the window's first daily row of each caller's edge is looked up by
-- (day, edge) in an index carrying `calls_before`, where one day's rows lie together
-- (an index-only scan), instead of by (edge, day) through the primary key, one scattered
-- page per edge. The day index it replaces was (day) alone.
DROP INDEX IF EXISTS edge_days_by_day;
CREATE INDEX edge_days_by_day ON edge_days (day, edge_id) INCLUDE (calls_before);
-- `check` reads the callee-side instances on every call: the few there are, through this
-- partial index, not a scan of every instance a fleet's restarts left behind.
CREATE INDEX instances_callee ON instances (service, environment, instance)
WHERE side = 'callee' OR inbound_hosts <> '';
