-- Window sums in one row per edge (issue 15): every hourly and daily bucket row carries
-- `calls_before`, the edge's calls (requests + connections) in all of its buckets before
-- this one — the current bucket excluded, pruned buckets included — so the calls from a
-- bucket on are the edge's totals minus that bucket's `calls_before`. `check` of a host
-- with a thousand callers reads one bucket row per caller instead of every bucket in the
-- window.
--
-- A row moved from the current bucket gets it exactly (the totals minus the current
-- bucket, which is newer than every stored row). A late batch writing an older hour
-- cannot know it cheaply: its row gets NULL and the edge's `stale_after` (an hour) says
-- that rows after it miss those calls. Readers fall back to summing buckets for such an
-- edge; the upkeep recomputes its rows and clears the mark.
ALTER TABLE edge_hours ADD COLUMN calls_before INTEGER;
ALTER TABLE edge_days ADD COLUMN calls_before INTEGER;
ALTER TABLE edges ADD COLUMN stale_after INTEGER;
-- Rows stored before this migration: every edge with bucket rows is recomputed.
UPDATE edges SET stale_after = -9223372036854775808
WHERE EXISTS (SELECT 1 FROM edge_hours WHERE edge_id = edges.id)
   OR EXISTS (SELECT 1 FROM edge_days WHERE edge_id = edges.id);
CREATE INDEX IF NOT EXISTS edges_stale ON edges (stale_after) WHERE stale_after IS NOT NULL;
