-- Window sums in one row per edge (issue 15), as in SQLite's 0009: every hourly and
-- daily bucket row carries `calls_before`, the edge's calls (requests + connections) in
-- all of its buckets before this one (the current bucket excluded, pruned buckets
-- included); the calls from a bucket on are the edge's totals minus it. A late batch's
-- new row gets NULL and the edge's `stale_after` (an hour) marks rows after it as
-- missing those calls, until the upkeep recomputes them; readers sum buckets meanwhile.
-- Adding nullable columns rewrites nothing.
ALTER TABLE edge_hours ADD COLUMN calls_before BIGINT;
ALTER TABLE edge_days ADD COLUMN calls_before BIGINT;
ALTER TABLE edges ADD COLUMN stale_after BIGINT;
UPDATE edges SET stale_after = -9223372036854775808
WHERE EXISTS (SELECT 1 FROM edge_hours WHERE edge_id = edges.id)
   OR EXISTS (SELECT 1 FROM edge_days WHERE edge_id = edges.id);
CREATE INDEX edges_stale ON edges (stale_after) WHERE stale_after IS NOT NULL;
